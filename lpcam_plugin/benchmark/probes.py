"""Probes of a fitted method on the benchmark's ground truth, beyond the seed masks.

:func:`background_prototype_share`: how many of LPCAM's selected class prototypes are clusters of
mostly-background cells, the failure that regime A showed (docs/design/pretrained-regime.md).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from lpcam_plugin.methods.lpcam.bank import PrototypeBank


def object_cells(masks: np.ndarray, grid: int) -> torch.Tensor:
    """``(N, C + 1, grid, grid)`` bool: the cells more than half covered by each label of ``(N, S, S)`` masks."""
    labels = torch.from_numpy(masks.astype(np.int64))
    onehot = F.one_hot(labels, int(labels.max()) + 1 if labels.numel() else 1).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(onehot, (grid, grid)) > 0.5


def background_prototype_share(bank: PrototypeBank, features: torch.Tensor, cams: torch.Tensor,
                               labels: torch.Tensor, masks: np.ndarray, split_threshold: float) -> Dict[str, float]:
    """The share of ``bank``'s class prototypes that are clusters of mostly-background cells.

    Each class ``c``'s pool is rebuilt as LPCAM's Stage 1 builds it: the cells of the images labelled
    ``c`` where the max-normalised baseline CAM ``cams[:, c]`` exceeds ``split_threshold``. Every pool
    cell goes to the nearest (cosine) of ``c``'s class and context prototypes; a class prototype is
    *mostly background* when more than half of its cells are not more than half covered by ``c``'s
    ground truth (``masks`` ``(N, S, S)``, 0 = background, ``c + 1`` = class ``c``).

    Args:
        features: ``(N, D, h, w)``; cams: ``(N, C, h, w)`` in [0, 1]; labels: ``(N, C)`` multi-hot.

    Returns:
        ``{"background_prototypes": share}`` (NaN without class prototypes).
    """
    grid = features.shape[-1]
    own = object_cells(masks, grid)
    background = total = 0
    for c in range(bank.num_classes):
        prototypes = bank.class_prototypes[c]
        if prototypes.shape[0] == 0:
            continue
        images = torch.nonzero(labels[:, c] > 0).flatten()
        if images.numel() == 0:
            continue
        pool = cams[images, c] > split_threshold  # (n, h, w)
        cells = features[images].permute(0, 2, 3, 1)[pool].float()  # (m, D)
        covered = own[images, c + 1][pool] if own.shape[1] > c + 1 else torch.zeros(cells.shape[0], dtype=torch.bool)
        centres = torch.cat([prototypes, bank.context_prototypes[c]]).float()
        nearest = (F.normalize(cells, dim=1) @ F.normalize(centres, dim=1).T).argmax(1)
        for k in range(prototypes.shape[0]):
            members = nearest == k
            total += 1
            if members.any() and float((~covered[members]).float().mean()) > 0.5:
                background += 1
    return {"background_prototypes": background / total if total else float("nan")}
