"""Seed-mask evaluation (paper Table 1 and Figure 5d): metrics and the threshold sweep.

The files it reads are in :mod:`lpcam_plugin.core.formats`; ``lpcam eval`` is :mod:`lpcam_plugin.cli.evaluate`.

Conventions (docs/design/lpcam-spec.md, "Evaluation of seed masks"):

- Labels are ``0`` = background, ``c + 1`` = foreground class ``c`` (0-based, aeroplane = 0 on
  VOC), ``ignore_index`` (255) = not scored. ``num_classes`` always counts the background:
  21 for VOC, 81 for COCO.
- A seed mask is the arg-max over ``[t, map_0, ..., map_{K-1}]``: a constant background plane
  ``t`` in front of the class maps of the classes present in the image (``keys``). Ties go to
  the first entry, so a pixel is foreground only where its best map is strictly above ``t``
  (IRN's ``np.pad`` + ``argmax``).
- Confusion matrices have ground truth in rows and prediction in columns.

:func:`sweep` scores every threshold in one pass over the data: per pixel only the best map
value, its class and the ground truth matter, so each image adds one histogram over
(threshold bin, gt, class) and cumulative sums turn those into one confusion matrix per
threshold.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.formats import check_keyed_maps, check_unique, read_cam_folder, read_label_png
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar

logger = logging.getLogger(__name__)

#: Per-class metric names returned by :func:`seed_metrics` (each an ``(n,)`` array).
PER_CLASS_METRICS = ("iou", "fp", "fn", "precision", "recall")
#: Mean metric names returned by :func:`seed_metrics` (floats), in the order of ``PER_CLASS_METRICS``.
MEAN_METRICS = ("miou", "mfp", "mfn", "mprecision", "mrecall")
#: Default background thresholds of ``lpcam eval`` and the demo: 0.00, 0.01, ..., 0.99 (maps are
#: max-normalised to [0, 1), and LPCAM's optimum can sit high, so the sweep covers the whole range).
DEFAULT_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))


# --------------------------------------------------------------------------- metrics


def _check_label_map(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) label map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_gt_range(gt: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Return the boolean mask of scored pixels; raise on labels outside ``[0, num_classes)``."""
    valid = gt != ignore_index
    scored = gt[valid]
    if scored.size and (scored.min() < 0 or scored.max() >= num_classes):
        bad = sorted(set(np.unique(scored[(scored < 0) | (scored >= num_classes)]).tolist()))
        raise ValueError(
            f"ground truth holds label(s) {bad[:5]} outside [0, {num_classes}) and != ignore_index "
            f"{ignore_index}; num_classes counts the background (21 for VOC)"
        )
    return valid


def confusion_matrix(pred: Any, gt: Any, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Pixel confusion matrix of one label map.

    Args:
        pred: ``(H, W)`` integer prediction, values in ``[0, num_classes)``.
        gt: ``(H, W)`` integer ground truth; ``ignore_index`` pixels are not counted.
        num_classes: number of labels **including background** (21 for VOC).
        ignore_index: ground-truth value that is skipped.

    Returns:
        ``(num_classes, num_classes)`` int64, rows = ground truth, columns = prediction.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    n = int(num_classes)
    pred = _check_label_map(pred, "pred")
    gt = _check_label_map(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    valid = _check_gt_range(gt, n, ignore_index)
    p = pred[valid]
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"pred holds labels outside [0, {n}): min {p.min()}, max {p.max()}")
    return np.bincount(gt[valid] * n + p, minlength=n * n).reshape(n, n).astype(np.int64)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _metrics_from_confusion(confusion: np.ndarray) -> Dict[str, np.ndarray]:
    """Vectorised metrics over the leading axes of ``(..., n, n)`` confusion matrices."""
    conf = confusion.astype(np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    gt_total = conf.sum(axis=-1)  # TP + FN
    pred_total = conf.sum(axis=-2)  # TP + FP
    fn = gt_total - tp
    fp = pred_total - tp
    union = tp + fp + fn
    out = {
        "iou": _safe_ratio(tp, union),
        "fp": _safe_ratio(fp, union),
        "fn": _safe_ratio(fn, union),
        "precision": _safe_ratio(tp, pred_total),
        "recall": _safe_ratio(tp, gt_total),
    }
    for per_class, mean in zip(PER_CLASS_METRICS, MEAN_METRICS):
        out[mean] = _nanmean(out[per_class], axis=-1)
    return out


def seed_metrics(confusion: Any) -> Dict[str, Any]:
    """Table-1 metrics from a confusion matrix (rows gt, columns prediction).

    Per class ``c`` with ``TP``, ``FP``, ``FN`` pixel counts: ``iou`` = TP/(TP+FP+FN),
    ``fp`` = FP/(TP+FP+FN), ``fn`` = FN/(TP+FP+FN), ``precision`` = TP/(TP+FP),
    ``recall`` = TP/(TP+FN); each an ``(n,)`` float64 array, NaN where its denominator is 0
    (IoU/FP/FN: class absent from both gt and prediction; precision: never predicted;
    recall: absent from gt). ``miou``, ``mfp``, ``mfn``, ``mprecision``, ``mrecall`` are the
    NaN-means over classes (so IoU is averaged over the classes present in gt or prediction);
    NaN when no class qualifies. Background (row 0) is included, as in the paper.
    """
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be a square (n, n) matrix, got shape {conf.shape}")
    if not np.issubdtype(conf.dtype, np.integer) and not np.issubdtype(conf.dtype, np.floating):
        raise TypeError(f"confusion must be numeric, got dtype {conf.dtype}")
    if (conf < 0).any():
        raise ValueError("confusion must not hold negative counts")
    raw = _metrics_from_confusion(conf)
    return {key: (float(value) if key in MEAN_METRICS else value) for key, value in raw.items()}


# --------------------------------------------------------------------------- predictions


def maps_to_prediction(maps: Any, keys: Any, threshold: float) -> np.ndarray:
    """Seed mask of one image.

    Args:
        maps: ``(K, H, W)`` class maps (usually max-normalised to [0, 1]).
        keys: ``(K,)`` 0-based class ids of the maps (no background).
        threshold: the constant background score ``t``.

    Returns:
        ``(H, W)`` int64: 0 where no map is strictly above ``t``, else ``keys[argmax] + 1``.
    """
    keys_arr, maps_arr = check_keyed_maps(keys, maps)
    planes = np.concatenate([np.full((1,) + maps_arr.shape[1:], float(threshold)), maps_arr.astype(np.float64)])
    lookup = np.concatenate([[0], keys_arr + 1])
    return lookup[np.argmax(planes, axis=0)]


# --------------------------------------------------------------------------- sweep


@dataclass
class SweepResult:
    """Seed metrics for every background threshold.

    Attributes:
        thresholds: ``(T,)`` increasing thresholds.
        confusion: ``(T, n, n)`` int64 confusion matrices (rows gt, columns prediction).
        metrics: per-class metrics (``"iou"`` ... ``"recall"``) as ``(T, n)`` arrays and the means
            (``"miou"`` ... ``"mrecall"``) as ``(T,)`` arrays.
        num_images: number of images scored.
    """

    thresholds: np.ndarray
    confusion: np.ndarray
    metrics: Dict[str, np.ndarray] = field(repr=False)
    num_images: int = 0

    @property
    def miou(self) -> np.ndarray:
        """``(T,)`` mIoU curve."""
        return self.metrics["miou"]

    @property
    def best_index(self) -> int:
        """Index of the threshold with the highest mIoU (the first one on ties)."""
        curve = self.miou
        if np.all(np.isnan(curve)):
            raise ValueError("no threshold has a defined mIoU (no pixel was scored)")
        return int(np.nanargmax(curve))

    @property
    def best_threshold(self) -> float:
        """Threshold with the highest mIoU."""
        return float(self.thresholds[self.best_index])

    def at(self, index: int) -> Dict[str, Any]:
        """:func:`seed_metrics` of threshold ``index`` plus its ``"threshold"``."""
        out = seed_metrics(self.confusion[index])
        out["threshold"] = float(self.thresholds[index])
        return out

    @property
    def best(self) -> Dict[str, Any]:
        """Metrics at :attr:`best_threshold`."""
        return self.at(self.best_index)

    def curve_drop(self, window: float = 0.1) -> float:
        """Largest mIoU loss, relative to the best, over thresholds within ``±window`` of the best.

        Small values mean a flat curve around the optimum (paper Figure 5d).
        """
        best = self.best_index
        near = np.abs(self.thresholds - self.thresholds[best]) <= window + 1e-9
        return float(self.miou[best] - np.nanmin(self.miou[near]))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary: the curves of the means and the metrics at the best threshold."""
        best = self.best
        return {
            "num_images": self.num_images,
            "thresholds": self.thresholds.tolist(),
            "curves": {name: self.metrics[name].tolist() for name in MEAN_METRICS},
            "best_threshold": best["threshold"],
            "best": {name: best[name] for name in MEAN_METRICS},
            "best_per_class": {name: best[name].tolist() for name in PER_CLASS_METRICS},
        }


def _check_thresholds(thresholds: Iterable[float]) -> np.ndarray:
    """Sorted distinct thresholds ``(T,)``; ``ValueError`` for an empty list, NaN or values outside [0, 1]."""
    values = np.asarray(list(thresholds), dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("thresholds must not be empty")
    bad = values[~((values >= 0.0) & (values <= 1.0))]  # NaN fails both comparisons
    if bad.size:
        raise ValueError(f"thresholds must be in [0, 1] (maps are max-normalised), got {bad[:5].tolist()}")
    return np.unique(values)


def sweep(
    maps: Iterable[Tuple[Any, Any]],
    gts: Iterable[Any],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    num_classes: int = 21,
    *,
    ignore_index: int = 255,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
) -> SweepResult:
    """Score seed masks at every background threshold in one pass over the data.

    Args:
        maps: iterable of ``(keys (K,), maps (K, H, W))`` per image (``K`` may be 0).
        gts: iterable of ``(H, W)`` integer ground truth, same order and length as ``maps``.
        thresholds: background thresholds in [0, 1]; sorted and de-duplicated in the result.
        num_classes: labels **including background** (21 for VOC).
        ignore_index: ground-truth value that is not scored.
        progress: progress-bar switch (``None``: only on a TTY).
        total: number of images, for the progress bar.

    Returns:
        :class:`SweepResult`. Equals calling :func:`maps_to_prediction` and
        :func:`confusion_matrix` for each threshold separately (tested).
    """
    n = int(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    values = _check_thresholds(thresholds)
    num_t = values.size
    # hist[b, g, p]: pixels whose best map exceeds exactly the first b thresholds.
    hist = np.zeros((num_t + 1) * n * n, dtype=np.int64)
    count = 0
    gt_iter = iter(gts)
    for keys, class_maps in progress_bar(maps, progress=progress, desc="evaluate", total=total):
        try:
            gt = next(gt_iter)
        except StopIteration:
            raise ValueError("gts has fewer entries than maps") from None
        gt = _check_label_map(gt, "gt")
        keys_arr, maps_arr = check_keyed_maps(keys, class_maps)
        if keys_arr.size and maps_arr.shape[1:] != gt.shape:  # no keys: all background, at any size
            raise ValueError(f"image {count}: maps are {maps_arr.shape[1:]} but gt is {gt.shape}")
        if keys_arr.size and keys_arr.max() + 1 >= n:
            raise ValueError(f"image {count}: class id {int(keys_arr.max())} "
                             f"needs num_classes > {int(keys_arr.max()) + 1}")
        valid = _check_gt_range(gt, n, ignore_index)
        g = gt[valid]
        if keys_arr.size:
            scored = maps_arr[:, valid].astype(np.float64)
            if not np.all(np.isfinite(scored)):
                raise ValueError(f"image {count}: maps contain NaN/Inf")
            best = np.argmax(scored, axis=0)
            top = scored[best, np.arange(best.size)]
            cls = keys_arr[best] + 1
            bins = np.searchsorted(values, top, side="left")  # number of thresholds strictly below
        else:
            cls = np.zeros_like(g)
            bins = np.zeros_like(g)
        hist += np.bincount((bins * n + g) * n + cls, minlength=hist.size)
        count += 1
    if next(gt_iter, None) is not None:
        raise ValueError("gts has more entries than maps")
    hist = hist.reshape(num_t + 1, n, n)
    # Threshold i: pixels with bin > i keep their class, pixels with bin <= i become background.
    fg = np.cumsum(hist[::-1], axis=0)[::-1][1:]  # fg[i] = sum_{b > i} hist[b]
    bg_rows = np.cumsum(hist.sum(axis=2), axis=0)[:num_t]  # (T, n): per gt row, pixels with bin <= i
    confusion = np.ascontiguousarray(fg)
    # Pixels with bin <= i are predicted background. Images without maps (K == 0) sit in bin 0,
    # so they are background at every threshold.
    confusion[:, :, 0] += bg_rows
    return SweepResult(
        thresholds=values,
        confusion=confusion,
        metrics=_metrics_from_confusion(confusion),
        num_images=count,
    )


def evaluate_folder(
    cams_dir: PathLike,
    gt_dir: PathLike,
    ids: Sequence[str],
    *,
    fmt: str = "auto",
    allow_pickle: bool = False,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    num_classes: int = 21,
    ignore_index: int = 255,
    progress: Optional[bool] = None,
    gt_name: Optional[Callable[[str], str]] = None,
) -> SweepResult:
    """Sweep the CAM files ``cams_dir/<id>.npy`` (``<id>.npz`` for ``fmt="npz"``) against
    ``gt_dir/<gt_name(id)>.png`` (``gt_name``: None for the id itself, VOC's layout;
    :func:`~lpcam_plugin.core.datasets.coco_gt_name` for COCO's ``<int id>.png``).

    Raises ``ValueError`` naming an id listed more than once (it would be scored twice) and
    ``FileNotFoundError`` naming a missing file.
    """
    check_unique(ids)
    gt_dir = Path(gt_dir)
    cams = read_cam_folder(cams_dir, ids, fmt, allow_pickle=allow_pickle)
    gt_files = [gt_dir / f"{image_id if gt_name is None else gt_name(image_id)}.png" for image_id in ids]
    missing = [path for path in gt_files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ground-truth PNG(s) missing in {gt_dir}, e.g. {missing[0].name}")
    gts = (read_label_png(path) for path in gt_files)
    return sweep(cams, gts, thresholds, num_classes, ignore_index=ignore_index, progress=progress, total=len(ids))


__all__ = [
    "DEFAULT_THRESHOLDS",
    "SweepResult",
    "confusion_matrix",
    "evaluate_folder",
    "maps_to_prediction",
    "seed_metrics",
    "sweep",
]
