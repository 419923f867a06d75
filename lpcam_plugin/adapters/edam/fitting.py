"""Fitting LPCAM prototypes on EDAM: ``bn7`` features per class, split by EDAM's own CAM (or the
single-scale CAM of the selection weight), clustered and selected."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lpcam_plugin.adapters.common.items import as_image_batch, unbatch
from lpcam_plugin.adapters.common.methods import require
from lpcam_plugin.adapters.edam.host import (
    FEATURE_LAYER,
    HEAD_LAYER,
    METHODS,
    NO_RECAM_REASON,
    NUM_CLASSES,
    backbone_features,
    host_cam,
    selection_weight,
)
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.estimator import LPCAM


def fit(
    model: nn.Module,
    dataset: Iterable[Tuple[Any, Sequence[Any], Any]],
    *,
    baseline: str = "host",
    weight_mode: str = "sum",
    preset: str = "voc",
    config: Any = None,
    bank_path: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    method: str = "lpcam",
    **overrides: Any,
) -> LPCAM:
    """Fit LPCAM prototypes on EDAM: collect ``bn7`` features per class, cluster, select.

    Features are the first view's (scale 1, unflipped) ``bn7`` map ``(D, h, w)``, as in the LPCAM
    reference. The split baseline is EDAM's own multi-scale CAM ``(20, H, W)`` (``baseline="host"``,
    ``forward_cam`` with the 8-view geometry, divided by the max) or the single-scale CAM of the
    selection weight (``baseline="cam"``). Image ids (``name``) key the pool sampling
    (order-independent).

    Args:
        model: EDAM ``Net`` in eval mode.
        dataset: ``(name, views, label)`` items as for :func:`lpcam_plugin.adapters.edam.run`.
        baseline: ``"host"`` or ``"cam"``.
        weight_mode: tap reduction of ``mask_layer`` (``"sum"`` or ``"center"``).
        preset, config, overrides: passed to :class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM`.
        bank_path: if given, the fitted bank is saved there.
        progress: progress-bar switch.
        method: the read-out; only ``"lpcam"`` (ReCAM needs a GAP-linear head, see ``NO_RECAM_REASON``).

    Returns:
        the fitted :class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM` (its ``bank_`` holds the prototypes).
    """
    require("EDAM", method, METHODS, NO_RECAM_REASON)
    if baseline not in ("host", "cam"):
        raise ValueError(f"baseline must be 'host' or 'cam', got {baseline!r}")
    weight = selection_weight(model, mode=weight_mode)
    estimator = LPCAM(NUM_CLASSES, preset, config=config, progress=progress, **overrides)
    with torch.inference_mode():
        for item in progress_bar(dataset, progress=progress, desc="EDAM features"):
            name, views, label = unbatch(item[0]), item[1], unbatch(item[2])
            labels = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
            labels = labels.float().reshape(1, NUM_CLASSES).cpu()
            if baseline == "host":
                size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
                cam, features = host_cam(model, views, size)
                estimator.partial_fit([features.float().cpu()], labels, cams=[cam.cpu()], ids=[str(name)])
            else:
                device = next(model.parameters()).device
                features = backbone_features(model, as_image_batch(views[0], device))
                estimator.partial_fit(features.float().cpu(), labels, weight=weight, ids=[str(name)])
    estimator.fit_prototypes(weight, metadata={"host": "EDAM", "feature_layer": FEATURE_LAYER,
                                               "weight": f"{HEAD_LAYER}.weight[:20]", "weight_mode": weight_mode,
                                               "baseline": baseline})
    if bank_path is not None:
        estimator.bank_.save(bank_path)
    return estimator


__all__ = ["fit"]
