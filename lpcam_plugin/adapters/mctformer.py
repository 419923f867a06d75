"""LPCAM for MCTformer-V2 (``xulianuwa/MCTformer`` at ``9606597``, DeiT-S with 20 class tokens).

Host facts this adapter relies on (hosts.md section 5):

- features: the patch-token map that enters ``model.head``, ``(B, 384, H/16, W/16)`` (patch tokens
  after the last block, no final norm), captured with a forward pre-hook; equivalently the last
  block's tokens ``(B, 20 + N, 384)`` with the 20 class tokens dropped (:func:`feature_hook`);
- selection weight: ``head.weight`` ``(20, 384, 3, 3)`` summed over its taps (``weight_mode``),
  ``head.bias`` passed along and used only with ``use_bias=True`` (the reference uses no bias);
- CAM step: ``engine.generate_attention_maps_ms`` under ``torch.cuda.amp.autocast()``. V2's
  ``forward`` computes PatchCAM = ``relu(head(x))``; :func:`patch` makes ``head`` return LPCAM
  instead, so the unchanged engine does the attention fusion, patch-affinity refinement,
  resizing, target masking, min-max normalisation, ``--cam-npy-dir`` dicts and ``--out-crf``
  ``_1``/``_12`` CRF dicts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.formats import load_class_dict
from lpcam_plugin.adapters._edam_mct_shared import (IOU_MEANS, all_class_maps, as_image_batch, unbatch,
                                                    with_iou_mean, require_lpcam)
from lpcam_plugin.core.io import PathLike

logger = logging.getLogger(__name__)

NUM_CLASSES = 20
#: MCTformer-V2 prepends one class token per class.
NUM_CLASS_TOKENS = 20
HEAD_LAYER = "head"
#: ``run.sh`` / ``run_psa.sh`` settings of the CAM step.
LAYER_INDEX = 3
ATTENTION_TYPES = ("fused", "patchcam")
_HOOK_MARK = "_lpcam_head_hook"


# --------------------------------------------------------------------------- weight and features


#: Why ReCAM (and its compositions) cannot run here: LPCAM is the only read-out of this host.
NO_RECAM_REASON = ("MCTformer-V2 scores classes with class tokens and a 3x3-conv PatchCAM head, not the GAP-linear "
                   "head whose softmax re-activation ReCAM fine-tunes")

def selection_weight(model_or_head: nn.Module, *, mode: str = "sum") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(W (20, D), b (20,) or None)`` from ``model.head`` (a ``Conv2d(D, 20, 3)``), taps reduced by ``mode``."""
    from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

    head = getattr(model_or_head, HEAD_LAYER, model_or_head)
    if not isinstance(head, nn.Conv2d) or head.out_channels != NUM_CLASSES:
        raise ValueError(f"MCTformer-V2's head must be a Conv2d with {NUM_CLASSES} outputs, got {head!r}")
    bias = None if head.bias is None else head.bias.detach().float().clone()
    weight, bias = reduce_conv_head(head.weight.detach().float(), bias, mode=mode)
    return weight.clone(), bias


def feature_hook(model: nn.Module, *, source: str = "head", grid: Optional[Tuple[int, int]] = None) -> Any:
    """A :class:`lpcam_plugin.FeatureHook` that records the ``(B, D, h, w)`` patch-token map.

    ``source="head"``: forward pre-hook on ``model.head`` (its input). ``source="tokens"``: the last
    block's ``(x, attn)`` output, class tokens dropped and patch tokens folded onto ``grid``
    ``(H // 16, W // 16)`` (needed for non-square images) by :func:`lpcam_plugin.tokens_to_map`.
    """
    from lpcam_plugin.core.hooks import FeatureHook, tokens_to_map

    if source == "head":
        return FeatureHook(getattr(model, HEAD_LAYER), capture="input")
    if source == "tokens":
        return FeatureHook(model.blocks[-1], reshape_transform=tokens_to_map(NUM_CLASS_TOKENS, grid))
    raise ValueError(f"source must be 'head' or 'tokens', got {source!r}")


# --------------------------------------------------------------------------- the head hook


class LPCAMHeadHook:
    """Forward hook for ``model.head``: returns LPCAM ``(B, 20, h, w)`` float32 in place of its output.

    The maps are computed by :func:`lpcam_plugin.lpcam_map` from the head's input cast to float32
    with autocast disabled, for all 20 classes (the hook does not know the labels; the engine
    zeroes absent classes). Classes without prototypes give zero maps. ``normalize=False`` (default)
    returns the raw ``relu`` similarity, as PatchCAM is raw; the engine min-max normalises the sum.
    """

    def __init__(self, bank: Any, *, normalize: bool = False) -> None:
        if bank.num_classes != NUM_CLASSES:
            raise ValueError(f"MCTformer has {NUM_CLASSES} classes, the bank has {bank.num_classes}")
        self.bank = bank
        self.normalize = normalize

    def __call__(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        features = inputs[0]
        if features.dim() != 4:
            raise ValueError(f"head input must be (B, D, h, w), got {tuple(features.shape)}")
        maps = all_class_maps(features, self.bank, NUM_CLASSES, normalize=self.normalize)
        if maps.shape != output.shape:
            raise RuntimeError(f"LPCAM maps {tuple(maps.shape)} do not match the head output {tuple(output.shape)}")
        return maps


class HeadPatch:
    """Handle of :func:`patch`; :meth:`remove` (idempotent) unregisters the hook."""

    def __init__(self, head: nn.Module, handle: torch.utils.hooks.RemovableHandle, hook: LPCAMHeadHook) -> None:
        self.head = head
        self.hook = hook
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = handle

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def remove(self) -> None:
        """Unregister the hook and forget it on the head."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()
            if getattr(self.head, _HOOK_MARK, None) is self:
                delattr(self.head, _HOOK_MARK)

    def __enter__(self) -> "HeadPatch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def patch(model: nn.Module, bank: Any, *, normalize: bool = False) -> HeadPatch:
    """Make ``model.head`` return LPCAM instead of PatchCAM logits, for the unchanged engine.

    Use it around ``engine.generate_attention_maps_ms``::

        with mctformer.patch(model, bank):
            generate_attention_maps_ms(data_loader, model, device, args)

    With ``--attention-type fused`` the host writes ``mtatt * LPCAM`` (the LPCAM author's
    MCTformer-V2 setting, ``zhaozhengChen/LPCAM#1``); ``patchcam`` writes pure LPCAM. The head's
    training logits are replaced too, so do not train with the patch on.

    Args:
        model: MCTformer-V2 model (``head`` = ``Conv2d(D, 20, 3, padding=1)``).
        bank: fitted 20-class :class:`lpcam_plugin.PrototypeBank` with ``feature_dim == D``.
        normalize: divide each view's map by its max (default: raw, like PatchCAM).

    Returns:
        a :class:`HeadPatch` (context manager) whose ``remove()`` takes the hook off.
    """
    head = getattr(model, HEAD_LAYER, None)
    if not isinstance(head, nn.Conv2d):
        raise TypeError(f"model.head must be the V2 Conv2d head, got {type(head).__name__} (MCTformer-V1 is not supported)")
    if head.in_channels != bank.feature_dim:
        raise ValueError(f"the bank has feature_dim={bank.feature_dim}, model.head expects {head.in_channels}")
    if getattr(head, _HOOK_MARK, None) is not None:
        raise RuntimeError("model.head already carries an LPCAM hook")
    hook = LPCAMHeadHook(bank, normalize=normalize)
    result = HeadPatch(head, head.register_forward_hook(hook), hook)
    setattr(head, _HOOK_MARK, result)
    return result


# --------------------------------------------------------------------------- host CAM and fitting


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
    the target, odd views flipped back; summed; each present class min-max normalised (1e-8).

    Returns:
        ``(cam (20, H, W) float32, zero for absent classes; features (D, h, w) of view 0)``.
    """
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")
    device = next(model.parameters()).device
    target = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    target = target.float().reshape(NUM_CLASSES, 1, 1).to(device)
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


def _dict_cam(cam_dir: PathLike, name: str, size: Tuple[int, int], allow_pickle: bool) -> torch.Tensor:
    """A host ``{c: (H, W)}`` dict as ``(20, H, W)`` (zeros for classes not in the dict)."""
    data = load_class_dict(Path(cam_dir) / f"{name}.npy", allow_pickle=allow_pickle)
    cam = torch.zeros(NUM_CLASSES, *size)
    for c, value in data.items():
        if tuple(np.shape(value)) != tuple(size):
            raise ValueError(f"{cam_dir}/{name}.npy: class {c} map is {np.shape(value)}, the image is {size}")
        cam[c] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return cam


def fit(
    model: nn.Module,
    dataset: Iterable[Tuple[Sequence[Any], Any]],
    *,
    names: Optional[Sequence[str]] = None,
    baseline: str = "fused",
    layer_index: int = LAYER_INDEX,
    patch_attn_refine: bool = True,
    cam_dir: Optional[PathLike] = None,
    allow_pickle: bool = False,
    weight_mode: str = "sum",
    preset: str = "voc",
    config: Any = None,
    bank_path: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    method: str = "lpcam",
    **overrides: Any,
) -> Any:
    """Fit LPCAM prototypes on MCTformer-V2 patch tokens, split by the host's own CAM.

    Args:
        model: MCTformer-V2 in eval mode (no LPCAM patch on it).
        dataset: ``(views, label)`` items as the host's ``VOC12DatasetMS`` yields them (also through
            a ``DataLoader`` with batch size 1): views = each scale then its flip, the first one
            unscaled; its features (``head`` input) are the ones clustered.
        names: image ids in dataset order (the engine names outputs by position in
            ``train_aug_id.txt``); key the pool sampling and ``cam_dir`` files. Default: positions.
        baseline: the host CAM used for the split: ``"fused"`` (attention x PatchCAM, the host's
            seeds) or ``"patchcam"``, computed like the engine (:func:`host_cam`), or ``"cam"``
            (single-scale CAM of the reduced head weight).
        layer_index, patch_attn_refine: the engine's ``--layer-index`` / ``--patch-attn-refine``.
        cam_dir: read the baseline from the host's own ``--cam-npy-dir`` dicts instead (needs
            ``names`` and ``allow_pickle=True``).
        weight_mode: ``"sum"`` or ``"center"`` tap reduction of ``head.weight``.
        preset, config, overrides: passed to :class:`lpcam_plugin.LPCAM` (e.g. ``use_bias=True``
            to add ``head.bias`` to the selection logits).
        bank_path: save the fitted bank there.
        progress: progress-bar switch.
        method: the read-out; only ``"lpcam"`` (ReCAM needs a GAP-linear head, see ``NO_RECAM_REASON``).

    Returns:
        the fitted :class:`lpcam_plugin.LPCAM` (``bank_`` holds the prototypes).
    """
    require_lpcam("MCTformer", method, NO_RECAM_REASON)
    from lpcam_plugin import LPCAM
    from lpcam_plugin.core.progress import progress_bar

    if baseline not in ATTENTION_TYPES + ("cam",):
        raise ValueError(f"baseline must be 'fused', 'patchcam' or 'cam', got {baseline!r}")
    if cam_dir is not None and names is None:
        raise ValueError("cam_dir needs names= (the ids of the dataset items, in order)")
    if getattr(getattr(model, HEAD_LAYER, None), _HOOK_MARK, None) is not None:
        raise RuntimeError("model.head carries the LPCAM patch; remove it before fitting on the host CAM")
    weight, bias = selection_weight(model, mode=weight_mode)
    estimator = LPCAM(NUM_CLASSES, preset, config=config, progress=progress, **overrides)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for index, item in enumerate(progress_bar(dataset, progress=progress, desc="MCTformer features")):
            views, label = item[0], unbatch(item[1])
            name = str(names[index]) if names is not None else index
            labels = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
            labels = labels.float().reshape(1, NUM_CLASSES).cpu()
            if cam_dir is not None or baseline == "cam":
                with feature_hook(model, source="head") as hook:
                    model(as_image_batch(views[0], device), return_att=True, n_layers=layer_index)
                    features = hook.features[0].float()
                if cam_dir is not None:
                    size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
                    cam = _dict_cam(cam_dir, str(name), size, allow_pickle)
                    estimator.partial_fit([features.cpu()], labels, cams=[cam], ids=[name])
                else:
                    estimator.partial_fit([features.cpu()], labels, weight=weight, ids=[name])
            else:
                cam, features = host_cam(model, views, labels, attention_type=baseline, layer_index=layer_index,
                                         patch_attn_refine=patch_attn_refine)
                estimator.partial_fit([features.cpu()], labels, cams=[cam.cpu()], ids=[name])
    estimator.fit_prototypes(weight, bias, metadata={
        "host": "MCTformer-V2", "feature_layer": "head input", "weight": "head.weight",
        "weight_mode": weight_mode, "baseline": "cam_dir" if cam_dir is not None else baseline,
        "layer_index": layer_index, "patch_attn_refine": patch_attn_refine})
    if bank_path is not None:
        estimator.bank_.save(bank_path)
    return estimator


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predict_dir: PathLike,
    gt_dir: PathLike,
    names: Sequence[str],
    *,
    start: int = 0,
    end: int = 60,
    allow_pickle: bool = False,
    mean: str = "all",
    progress: Optional[bool] = None,
) -> Any:
    """Score ``--cam-npy-dir`` dicts with ``evaluation.py``'s rule over ``t = start/100 .. (end-1)/100``.

    ``evaluation.py --type npy`` puts the class maps at ``c + 1`` and a constant background ``t`` at
    0 and takes the arg-max, which is :func:`lpcam_plugin.evaluate.maps_to_prediction`. The whole
    curve is scored in one pass; :func:`host_best` applies the host's stopping rule to it.

    ``mean="all"`` (default) averages IoU, FP and FN over all 21 labels, a class absent from ground
    truth and prediction counting 0, as ``evaluation.py`` does (its number on any subset);
    ``mean="present"`` averages over the classes that occur.

    Returns:
        :class:`lpcam_plugin.evaluate.SweepResult`.
    """
    from lpcam_plugin.core import evaluate as ev

    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    thresholds = [i / 100.0 for i in range(start, end)]
    result = ev.evaluate_folder(predict_dir, gt_dir, list(names), fmt="dict", allow_pickle=allow_pickle,
                                thresholds=thresholds, progress=progress)
    return with_iou_mean(result, mean)


def host_best(result: Any) -> Tuple[float, float]:
    """``evaluation.py --curve True``'s answer: walk up the thresholds, stop at the first one whose
    mIoU does not improve; return ``(best threshold, its mIoU)`` (may differ from the global best)."""
    best_t, best_miou = float(result.thresholds[0]), float("-inf")
    for t, miou in zip(result.thresholds, result.miou):
        if not miou > best_miou:
            break
        best_t, best_miou = float(t), float(miou)
    return best_t, best_miou
