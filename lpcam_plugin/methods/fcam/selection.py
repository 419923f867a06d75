"""F-CAM's seed settings chosen on a held-out split with masks, the paper's protocol (Belharbi et
al. choose n⁻ "using the validation set from the set [0.1, 0.7]").

:func:`check_validation` checks the split; :func:`validation_score` scores a fitted decoder on it
(seed-mask mIoU at the best background threshold, :func:`lpcam_plugin.core.evaluate.sweep`);
:func:`candidate_checkpoint` names each candidate's training checkpoint. :meth:`FCAM.fit
<lpcam_plugin.FCAM.fit>` with ``validation=`` trains one decoder per candidate and keeps the best.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from lpcam_plugin.core.checks import check_images, check_multi_hot
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, sweep
from lpcam_plugin.core.io import PathLike

#: The candidates ``fit(..., validation=...)`` tries by default: the data rule (``"auto"``) and the
#: paper's range for n⁻, [0.1, 0.7], in steps of 0.2 (every other setting as configured).
DEFAULT_CANDIDATES: Tuple[Mapping[str, Any], ...] = (
    {"bg_fraction": "auto"}, {"bg_fraction": 0.1}, {"bg_fraction": 0.3}, {"bg_fraction": 0.5},
    {"bg_fraction": 0.7})
#: Ground-truth value that is not scored (VOC's boundary label).
IGNORE_LABEL = 255
#: Images per :meth:`FCAM.predict` call while scoring.
SCORE_BATCH = 16

Validation = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_validation(validation: Any, num_classes: int) -> Validation:
    """``(images (V, 3, H, W), labels (V, C), masks (V, H, W))``: images as the loader's, multi-hot
    labels, integer masks with 0 = background, ``c + 1`` = class c and 255 ignored. One-line
    ``TypeError`` / ``ValueError`` naming what is wrong."""
    if not isinstance(validation, (tuple, list)) or len(validation) != 3:
        raise TypeError("validation must be a tuple (images (V, 3, H, W), labels (V, C), masks (V, H, W)), "
                        f"got {type(validation).__name__}")
    images = check_images(validation[0], "validation images")
    labels = check_multi_hot(validation[1], images.shape[0], num_classes, "validation labels")
    masks = validation[2]
    if not isinstance(masks, torch.Tensor) or masks.is_floating_point() or masks.dtype == torch.bool:
        raise TypeError(f"validation masks must be an integer tensor (V, H, W), got "
                        f"{getattr(masks, 'dtype', type(masks).__name__)}")
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if tuple(masks.shape) != expected:
        raise ValueError(f"validation masks must have shape (V, H, W) = {expected}, got {tuple(masks.shape)}")
    bad = masks[(masks < 0) | ((masks > num_classes) & (masks != IGNORE_LABEL))]
    if bad.numel():
        raise ValueError(f"validation masks hold {sorted(set(bad.unique().tolist()))[:5]}; expected 0 (background), "
                         f"1..{num_classes} (class + 1) or {IGNORE_LABEL} (ignored)")
    return images, labels, masks


def _per_image(maps: torch.Tensor, labels: torch.Tensor) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(keys (K,), maps (K, H, W))`` of each image's present classes."""
    for image_maps, image_labels in zip(maps, labels):
        keys = torch.nonzero(image_labels > 0).flatten()
        yield keys.numpy(), image_maps[keys].numpy()


def validation_score(fcam: Any, model: torch.nn.Module, validation: Validation) -> Tuple[float, float]:
    """``(mIoU, threshold)``: the seed masks of ``fcam.predict`` on the split, scored over
    background + C classes at every threshold of :data:`DEFAULT_THRESHOLDS`; the best one."""
    images, labels, masks = validation
    maps = torch.cat([fcam.predict(model, images[i:i + SCORE_BATCH], labels[i:i + SCORE_BATCH]).cpu()
                      for i in range(0, images.shape[0], SCORE_BATCH)])
    result = sweep(_per_image(maps, labels.cpu()), (m.numpy() for m in masks.cpu()), DEFAULT_THRESHOLDS,
                   num_classes=fcam.num_classes + 1, ignore_index=IGNORE_LABEL, progress=False)
    best = result.best_index
    return float(result.miou[best]), float(result.thresholds[best])


def candidate_checkpoint(checkpoint: Optional[PathLike], index: int) -> Optional[Path]:
    """Candidate ``index``'s training checkpoint beside ``checkpoint``: ``fcam_train.pt`` ->
    ``fcam_train.candidate2.pt`` (None without a checkpoint)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.candidate{index}{path.suffix}")


def check_candidates(candidates: Sequence[Mapping[str, Any]]) -> Tuple[Dict[str, Any], ...]:
    """The candidates as dicts; one-line errors for an empty or malformed grid."""
    if isinstance(candidates, Mapping) or not candidates or not all(isinstance(c, Mapping) for c in candidates):
        raise TypeError("candidates must be a non-empty sequence of dicts of FCAMConfig fields, e.g. "
                        "[{'bg_fraction': 0.1}, {'bg_fraction': 'auto'}]")
    return tuple(dict(c) for c in candidates)


__all__ = ["DEFAULT_CANDIDATES", "check_validation", "validation_score", "candidate_checkpoint", "check_candidates"]
