"""EDAM's network as the CAM step sees it: selection weight, ``bn7`` features, the 8-view
geometry of ``infer_cls.py``, EDAM's own CAM and LPCAM in that geometry (docs/design/hosts.md
section 4).

- features: ``model.bn7`` output = ``forward_as_dict(x)["conv6"]``, ``(B, 4096, h/8, w/8)``, no ReLU
  (cosine similarity handles signed features);
- selection weight: ``mask_layer.weight`` ``(21, 4096, 3, 3)`` summed over its taps, **rows 0..19
  only**. Channel 20 is a spare channel that EDAM's training never selects; it is not a class and
  not background, so it does not enter the selection softmax (the bank is invariant to it; tested);
- geometry of ``infer_cls.py``: 8 views (scales 1, 0.5, 1.5, 2, each followed by its flip), each
  map upsampled bilinearly straight to the image size ``(H, W)``, odd views flipped back, summed,
  divided by the per-class max.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.adapters.common.class_maps import all_class_maps
from lpcam_plugin.adapters.common.items import as_image_batch
from lpcam_plugin.adapters.common.methods import supported
from lpcam_plugin.core.hooks import FeatureHook
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

NUM_CLASSES = 20
#: ``mask_layer`` channel that is neither a class nor background (never selected in training).
SPARE_CHANNEL = 20
FEATURE_LAYER = "bn7"
HEAD_LAYER = "mask_layer"
DEFAULT_NETWORK = "network.resnet38_EDAM_cls"
#: ``infer_cls.py``'s CRF iterations and background power.
CRF_ITERATIONS = 3
CRF_ALPHA = 1
#: Attribute that marks our ``forward_cam`` replacement (its value: the patch handle).
PATCH_MARK = "_lpcam_patch"
#: The registry read-outs this host writes.
METHODS = supported(["lpcam"])
#: Why ReCAM (and its compositions) cannot run here: LPCAM is the only read-out of this host.
NO_RECAM_REASON = ("EDAM's classifier is a 3x3 mask_layer followed by per-class transformers, not the GAP-linear "
                   "head whose softmax re-activation ReCAM fine-tunes")


def prepare_model(model: nn.Module, device: Union[str, torch.device]) -> nn.Module:
    """Put an EDAM ``Net`` in eval mode on ``device`` and return it.

    EDAM's ``resnet38d.Net.train(mode)`` returns None, so ``model.eval()`` returns None too and
    ``model.eval().to(device)`` fails with ``'NoneType' object has no attribute 'to'``: the two
    calls are made separately here.
    """
    model.eval()
    model.to(device)
    return model


def selection_weight(model_or_weight: Union[nn.Module, torch.Tensor], *, mode: str = "sum") -> torch.Tensor:
    """The ``(20, D)`` selection weight: ``mask_layer.weight`` reduced over its taps, rows 0..19.

    Args:
        model_or_weight: an EDAM ``Net`` (its ``mask_layer``) or the ``(21, D, 3, 3)`` weight.
        mode: ``"sum"`` (sum of the 9 taps, docs/design/hosts.md 6.1) or ``"center"`` (centre tap).
    """
    weight = getattr(model_or_weight, HEAD_LAYER).weight if isinstance(model_or_weight, nn.Module) else model_or_weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[0] != NUM_CLASSES + 1:
        raise ValueError(f"EDAM's mask_layer weight must be (21, D, kh, kw), got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    reduced, _ = reduce_conv_head(weight.detach().float(), mode=mode)
    return reduced[:NUM_CLASSES].clone()


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``bn7`` output ``(B, D, h, w)`` for ``images`` ``(B, 3, H, W)``, captured with a forward hook."""
    if not hasattr(model, "forward_as_dict"):
        raise TypeError(f"{type(model).__name__} has no forward_as_dict; expected an EDAM/PSA resnet38d Net")
    with FeatureHook(getattr(model, FEATURE_LAYER)) as hook:
        model.forward_as_dict(images)
        features = hook.features
    if features is None:
        raise RuntimeError(f"{FEATURE_LAYER} did not run in forward_as_dict")
    return features


def view_maps(model: nn.Module, views: Sequence[Any], size: Tuple[int, int],
              map_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """EDAM geometry: ``map_fn`` ``(1, 3, h, w) -> (1, C, h', w')`` per view, upsampled to ``size``,
    odd views flipped back, summed: ``(C, H, W)``."""
    device = next(model.parameters()).device
    total: Optional[torch.Tensor] = None
    for i, view in enumerate(views):
        maps = map_fn(as_image_batch(view, device))
        maps = F.interpolate(maps.float(), size, mode="bilinear", align_corners=False)[0]
        if i % 2 == 1:
            maps = maps.flip(-1)
        total = maps if total is None else total + maps
    if total is None:
        raise ValueError("no views given")
    return total


def divide_by_max(maps: torch.Tensor) -> torch.Tensor:
    """EDAM's ``sum_cam / max`` per class ``(C, H, W)``; an all-zero map stays zero instead of NaN."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))


def lpcam_maps(model: nn.Module, bank: PrototypeBank, views: Sequence[Any], size: Tuple[int, int]) -> torch.Tensor:
    """LPCAM of all 20 classes with EDAM's multi-scale geometry: ``(20, H, W)`` float32 in [0, 1].

    Per view: ``bn7`` features, raw ``relu`` LPCAM (not normalised per view, like ``forward_cam``'s
    per-view output); then upsample, flip back, sum, divide by the max.
    """
    with torch.no_grad():
        summed = view_maps(model, views, size, lambda x: all_class_maps(backbone_features(model, x), bank, NUM_CLASSES))
    return divide_by_max(summed)


def host_cam(model: nn.Module, views: Sequence[Any], size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """EDAM's own CAM (``forward_cam``, 8-view geometry) and the first view's ``bn7`` features.

    Returns:
        ``(cam (20, H, W) in [0, 1], features (D, h, w))``; channel 20 is dropped as ``infer_cls`` does.
    """
    if hasattr(type(model).forward_cam, PATCH_MARK):
        raise RuntimeError("Net.forward_cam is patched with LPCAM; remove the patch before fitting on the host CAM")
    captured: List[torch.Tensor] = []

    def cam_fn(x: torch.Tensor) -> torch.Tensor:
        with FeatureHook(getattr(model, FEATURE_LAYER)) as hook:
            cam = model.forward_cam(x)
            if not captured:
                captured.append(hook.features[0])
        return cam

    with torch.no_grad():
        cam = divide_by_max(view_maps(model, views, size, cam_fn)[:NUM_CLASSES])
    return cam, captured[0]


__all__ = ["CRF_ALPHA", "CRF_ITERATIONS", "DEFAULT_NETWORK", "FEATURE_LAYER", "HEAD_LAYER", "METHODS",
           "NO_RECAM_REASON", "NUM_CLASSES", "PATCH_MARK", "SPARE_CHANNEL", "backbone_features", "divide_by_max",
           "host_cam", "lpcam_maps", "prepare_model", "selection_weight", "view_maps"]
