"""MCTformer-V2 as the CAM step sees it (docs/design/hosts.md section 5): selection weight,
patch-token features, the host's own CAM and its ``--cam-npy-dir`` dicts.

- features: the patch-token map that enters ``model.head``, ``(B, 384, H/16, W/16)`` (patch tokens
  after the last block, no final norm), captured with a forward pre-hook; equivalently the last
  block's tokens ``(B, C + N, 384)`` with the C class tokens dropped (:func:`feature_hook`);
- selection weight: ``head.weight`` ``(C, 384, 3, 3)`` summed over its taps (``weight_mode``),
  ``head.bias`` passed along and used only with ``use_bias=True`` (the reference uses no bias).

C is the model's class count, read from its head (:func:`num_classes`): 20 on VOC (``--data-set
VOC12``), 80 on COCO (``--data-set COCO``); the presets follow it (:data:`PRESETS`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.adapters.common.items import as_image_batch
from lpcam_plugin.adapters.common.methods import supported
from lpcam_plugin.core.formats import load_class_dict
from lpcam_plugin.core.hooks import FeatureHook, tokens_to_map
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

#: The method preset of each class count MCTformer-V2 is trained with (VOC, COCO).
PRESETS = {20: "voc", 80: "coco"}
HEAD_LAYER = "head"
#: ``run.sh`` / ``run_psa.sh`` settings of the CAM step.
LAYER_INDEX = 3
ATTENTION_TYPES = ("fused", "patchcam")
#: Attribute of ``model.head`` that holds our patch handle while the LPCAM hook is on.
HOOK_MARK = "_lpcam_head_hook"
#: The registry read-outs this host writes.
METHODS = supported(["lpcam"])
#: Why ReCAM (and its compositions) cannot run here: LPCAM is the only read-out of this host.
NO_RECAM_REASON = ("MCTformer-V2 scores classes with class tokens and a 3x3-conv PatchCAM head, not the GAP-linear "
                   "head whose softmax re-activation ReCAM fine-tunes")


def num_classes(model_or_head: nn.Module) -> int:
    """The class count C of MCTformer-V2's ``head`` (a ``Conv2d(D, C, 3)``; one class token per class):
    20 (VOC) or 80 (COCO); ``ValueError`` for any other head."""
    head = getattr(model_or_head, HEAD_LAYER, model_or_head)
    if not isinstance(head, nn.Conv2d) or head.out_channels not in PRESETS:
        raise ValueError(f"MCTformer-V2's head must be a Conv2d with {' or '.join(map(str, PRESETS))} outputs, "
                         f"got {head!r}")
    return int(head.out_channels)


def preset_of(model: nn.Module, preset: Optional[str] = None) -> str:
    """``preset`` when given, else the preset of the model's class count (``"voc"`` / ``"coco"``)."""
    return preset or PRESETS[num_classes(model)]


def selection_weight(model_or_head: nn.Module, *, mode: str = "sum") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(W (C, D), b (C,) or None)`` from ``model.head`` (a ``Conv2d(D, C, 3)``), taps reduced by ``mode``."""
    head = getattr(model_or_head, HEAD_LAYER, model_or_head)
    num_classes(head)
    bias = None if head.bias is None else head.bias.detach().float().clone()
    weight, bias = reduce_conv_head(head.weight.detach().float(), bias, mode=mode)
    return weight.clone(), bias


def feature_hook(model: nn.Module, *, source: str = "head", grid: Optional[Tuple[int, int]] = None) -> FeatureHook:
    """A :class:`~lpcam_plugin.core.hooks.FeatureHook` that records the ``(B, D, h, w)`` patch-token map.

    ``source="head"``: forward pre-hook on ``model.head`` (its input). ``source="tokens"``: the last
    block's ``(x, attn)`` output, class tokens dropped and patch tokens folded onto ``grid``
    ``(H // 16, W // 16)`` (needed for non-square images) by :func:`lpcam_plugin.core.hooks.tokens_to_map`.
    """
    if source == "head":
        return FeatureHook(getattr(model, HEAD_LAYER), capture="input")
    if source == "tokens":
        return FeatureHook(model.blocks[-1], reshape_transform=tokens_to_map(num_classes(model), grid))
    raise ValueError(f"source must be 'head' or 'tokens', got {source!r}")


def host_cam(
    model: nn.Module,
    views: Sequence[Any],
    target: Any,
    *,
    attention_type: str = "fused",
    layer_index: int = LAYER_INDEX,
    patch_attn_refine: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The host's own CAM, as ``generate_attention_maps_ms`` computes it, and the first view's features.

    Per view: V2 ``forward(x, return_att=True, n_layers=layer_index, attention_type=...)``,
    optional patch-attention refinement, bilinear resize to the first view's size, multiplied by
    the target ``(C,)``, odd views flipped back; summed; each present class min-max normalised (1e-8).

    Returns:
        ``(cam (C, H, W) float32, zero for absent classes; features (D, h, w) of view 0)``.
    """
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")
    device = next(model.parameters()).device
    target = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    target = target.float().reshape(num_classes(model), 1, 1).to(device)
    size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
    total: Optional[torch.Tensor] = None
    features: Optional[torch.Tensor] = None
    with feature_hook(model, source="head") as hook, torch.no_grad():
        for s, view in enumerate(views):
            _, cams, patch_attn = model(as_image_batch(view, device), return_att=True, n_layers=layer_index,
                                        attention_type=attention_type)
            if features is None:
                features = hook.features[0].float()
            cams = cams.float()
            b, c, h, w = cams.shape
            if patch_attn_refine:
                affinity = patch_attn.float().sum(dim=0)  # (B, N, N) over all layers
                cams = torch.matmul(affinity.unsqueeze(1), cams.reshape(b, c, h * w, 1)).reshape(b, c, h, w)
            cams = F.interpolate(cams, size, mode="bilinear", align_corners=False)[0] * target
            if s % 2 == 1:
                cams = cams.flip(-1)
            total = cams if total is None else total + cams
    if total is None or features is None:
        raise ValueError("no views given")
    present = target.reshape(-1) > 0
    low = total.amin(dim=(1, 2), keepdim=True)
    high = total.amax(dim=(1, 2), keepdim=True)
    normalised = (total - low) / (high - low + 1e-8)
    return torch.where(present.reshape(-1, 1, 1), normalised, torch.zeros_like(normalised)), features


def dict_cam(cam_dir: PathLike, name: str, size: Tuple[int, int], allow_pickle: bool,
             classes: int = 20) -> torch.Tensor:
    """A host ``{c: (H, W)}`` dict as ``(classes, H, W)`` (zeros for classes not in the dict)."""
    data = load_class_dict(Path(cam_dir) / f"{name}.npy", allow_pickle=allow_pickle)
    cam = torch.zeros(classes, *size)
    for c, value in data.items():
        if tuple(np.shape(value)) != tuple(size):
            raise ValueError(f"{cam_dir}/{name}.npy: class {c} map is {np.shape(value)}, the image is {size}")
        cam[c] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return cam


__all__ = ["ATTENTION_TYPES", "HEAD_LAYER", "HOOK_MARK", "LAYER_INDEX", "METHODS", "NO_RECAM_REASON", "PRESETS",
           "dict_cam", "feature_hook", "host_cam", "num_classes", "preset_of", "selection_weight"]
