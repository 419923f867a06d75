"""Which images LPCAM clusters, and for which classes: every image, a bounded per-class cap, or
the reference's COCO sample (docs/design/lpcam-spec.md, Defaults).

A fit plan is a list of ``(image index, classes)`` entries: the image's local features join the
pools of those classes only (None: all the classes it holds). ``"all"`` and ``"capped"`` give each
kept image all its classes;
``"reference"`` reproduces ``split_100`` of the LPCAM reference's COCO step
(``step_coco/make_lpcam.py``): ``np.random.seed(666)``, then for each class in order 100 draws
*with replacement* among the images holding it, each draw feeding that class's pools only (an
image drawn twice for a class counts twice, as in the reference's feature lists).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

#: ``fit_sampling`` values: every image; a seeded cap per class (the package's bounded pools);
#: the reference's per-class draws with replacement (COCO).
FIT_SAMPLINGS = ("all", "capped", "reference")
#: The reference's ``split_100`` seed (``np.random.seed(666)``).
REFERENCE_SEED = 666

#: One fit entry: ``(image index, class indices whose pools it feeds, None = all it holds)``.
FitEntry = Tuple[int, Optional[Tuple[int, ...]]]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, C) multi-hot, got shape {labels.shape}")
    return labels > 0


def capped_indices(labels: np.ndarray, per_class: Optional[int], seed: int) -> List[int]:
    """All images (``per_class`` None), or a seeded random order keeping an image while one of its
    classes has fewer than ``per_class`` images. ``labels``: ``(N, C)`` multi-hot. Sorted indices."""
    present_matrix = _check_labels(labels)
    if per_class is None:
        return list(range(len(present_matrix)))
    order = np.random.default_rng(seed).permutation(len(present_matrix))
    counts = np.zeros(present_matrix.shape[1], np.int64)
    keep = []
    for i in order:
        present = np.nonzero(present_matrix[i])[0]
        if present.size and (counts[present] < per_class).any():
            keep.append(int(i))
            counts[present] += 1
    return sorted(keep)


def reference_draws(labels: np.ndarray, per_class: int = 100, seed: int = REFERENCE_SEED) -> np.ndarray:
    """The reference's ``split_100``: ``(C, per_class)`` image indices, row c drawn with replacement
    among the images holding class c (``np.random.seed(seed)``, then ``np.random.choice`` per class
    in order). A class no image holds gets an empty draw (-1 row), where the reference would raise."""
    present_matrix = _check_labels(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    state = np.random.RandomState(seed)
    draws = np.full((present_matrix.shape[1], per_class), -1, np.int64)
    for c in range(present_matrix.shape[1]):
        holders = np.nonzero(present_matrix[:, c])[0]
        if holders.size:
            draws[c] = state.choice(holders, per_class)
    return draws


def fit_plan(labels: np.ndarray, sampling: str, per_class: Optional[int], seed: int) -> List[FitEntry]:
    """The fit entries of ``sampling`` (one of :data:`FIT_SAMPLINGS`), in image order.

    ``"reference"`` needs ``per_class`` (100 on the COCO preset) and lists an image once per
    (class, draw) it was drawn for, sorted by image so that a loader reads an image's draws together.
    """
    if sampling not in FIT_SAMPLINGS:
        raise ValueError(f"fit sampling must be one of {FIT_SAMPLINGS}, got {sampling!r}")
    if sampling == "reference":
        if per_class is None:
            raise ValueError("fit sampling 'reference' needs images per class (100 in the reference)")
        draws = reference_draws(labels, per_class)
        entries: List[FitEntry] = [(int(i), (c,)) for c in range(draws.shape[0]) for i in draws[c] if i >= 0]
        return sorted(entries, key=lambda entry: (entry[0], entry[1] or ()))
    return [(i, None) for i in capped_indices(labels, per_class if sampling == "capped" else None, seed)]


def plan_ids(entries: Sequence[FitEntry], names: Sequence[str]) -> List[str]:
    """``"<name>"`` per entry, ``"<name>:<classes>"`` when the entry feeds some of its classes only
    (what the fit's fingerprint hashes)."""
    return [names[i] if classes is None else f"{names[i]}:{','.join(map(str, classes))}" for i, classes in entries]


__all__ = ["FIT_SAMPLINGS", "REFERENCE_SEED", "FitEntry", "capped_indices", "fit_plan", "plan_ids",
           "reference_draws"]
