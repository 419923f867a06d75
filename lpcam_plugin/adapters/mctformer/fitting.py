"""Fitting LPCAM prototypes on MCTformer-V2 patch tokens, split by the host's own CAM (computed like
the engine, or read from its ``--cam-npy-dir`` dicts) or the single-scale CAM of the head."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lpcam_plugin.adapters.common.items import as_image_batch, unbatch
from lpcam_plugin.adapters.common.methods import require
from lpcam_plugin.adapters.mctformer.host import (
    ATTENTION_TYPES,
    HEAD_LAYER,
    HOOK_MARK,
    LAYER_INDEX,
    METHODS,
    NO_RECAM_REASON,
    dict_cam,
    feature_hook,
    host_cam,
    num_classes,
    preset_of,
    selection_weight,
)
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.estimator import LPCAM


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
    preset: Optional[str] = None,
    config: Any = None,
    bank_path: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    method: str = "lpcam",
    **overrides: Any,
) -> LPCAM:
    """Fit LPCAM prototypes on MCTformer-V2 patch tokens, split by the host's own CAM.

    Args:
        model: MCTformer-V2 in eval mode (no LPCAM patch on it).
        dataset: ``(views, label)`` items as the host's ``VOC12DatasetMS`` / ``COCOClsDatasetMS`` yields
            them (also through a ``DataLoader`` with batch size 1): views = each scale then its flip,
            the first one unscaled; its features (``head`` input, ``(D, h, w)``) are the ones clustered.
        names: image ids in dataset order (the engine names outputs by position in
            ``train_aug_id.txt``); key the pool sampling and ``cam_dir`` files. Default: positions.
        baseline: the host CAM used for the split: ``"fused"`` (attention x PatchCAM, the host's
            seeds) or ``"patchcam"``, computed like the engine
            (:func:`~lpcam_plugin.adapters.mctformer.host.host_cam`), or ``"cam"`` (single-scale
            CAM of the reduced head weight).
        layer_index, patch_attn_refine: the engine's ``--layer-index`` / ``--patch-attn-refine``.
        cam_dir: read the baseline from the host's own ``--cam-npy-dir`` dicts instead (needs
            ``names`` and ``allow_pickle=True``).
        weight_mode: ``"sum"`` or ``"center"`` tap reduction of ``head.weight``.
        preset, config, overrides: passed to :class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM`
            (e.g. ``use_bias=True`` to add ``head.bias`` to the selection logits); the preset
            defaults to the model's class count (20: ``voc``, 80: ``coco``).
        bank_path: save the fitted bank there.
        progress: progress-bar switch.
        method: the read-out; only ``"lpcam"`` (ReCAM needs a GAP-linear head, see ``NO_RECAM_REASON``).

    Returns:
        the fitted :class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM` (``bank_`` holds the prototypes).
    """
    require("MCTformer", method, METHODS, NO_RECAM_REASON)
    if baseline not in ATTENTION_TYPES + ("cam",):
        raise ValueError(f"baseline must be 'fused', 'patchcam' or 'cam', got {baseline!r}")
    if cam_dir is not None and names is None:
        raise ValueError("cam_dir needs names= (the ids of the dataset items, in order)")
    if getattr(getattr(model, HEAD_LAYER, None), HOOK_MARK, None) is not None:
        raise RuntimeError("model.head carries the LPCAM patch; remove it before fitting on the host CAM")
    weight, bias = selection_weight(model, mode=weight_mode)
    classes = num_classes(model)
    estimator = LPCAM(classes, preset_of(model, preset), config=config, progress=progress, **overrides)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for index, item in enumerate(progress_bar(dataset, progress=progress, desc="MCTformer features")):
            views, label = item[0], unbatch(item[1])
            name = str(names[index]) if names is not None else index
            labels = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
            labels = labels.float().reshape(1, classes).cpu()
            if cam_dir is not None or baseline == "cam":
                with feature_hook(model, source="head") as hook:
                    model(as_image_batch(views[0], device), return_att=True, n_layers=layer_index)
                    features = hook.features[0].float()
                if cam_dir is not None:
                    size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
                    cam = dict_cam(cam_dir, str(name), size, allow_pickle, classes)
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


__all__ = ["fit"]
