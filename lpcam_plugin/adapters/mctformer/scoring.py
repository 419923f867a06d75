"""Scoring MCTformer ``--cam-npy-dir`` dicts with ``evaluation.py``'s rule and its stopping rule,
on :mod:`lpcam_plugin.core.evaluate`."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from lpcam_plugin.adapters.common.scoring import IOU_MEANS, with_iou_mean
from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core.datasets import DATASETS
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.threshold import folder_threshold


def evaluate(
    predict_dir: PathLike,
    gt_dir: PathLike,
    names: Sequence[str],
    *,
    start: int = 0,
    end: int = 60,
    allow_pickle: bool = False,
    mean: str = "all",
    auto_threshold: bool = False,
    reference_dir: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    dataset: str = "voc",
) -> ev.SweepResult:
    """Score ``--cam-npy-dir`` dicts with ``evaluation.py``'s rule over ``t = start/100 .. (end-1)/100``.

    ``evaluation.py --type npy`` puts the class maps at ``c + 1`` and a constant background ``t`` at
    0 and takes the arg-max, which is :func:`lpcam_plugin.core.evaluate.maps_to_prediction`. The
    whole curve is scored in one pass; :func:`host_best` applies the host's stopping rule to it.

    ``mean="all"`` (default) averages IoU, FP and FN over all labels (21 on VOC), a class absent from
    ground truth and prediction counting 0, as ``evaluation.py`` does (its number on any subset);
    ``mean="present"`` averages over the classes that occur.

    ``dataset="coco"``: 81 labels and ``<gt_dir>/<int id>.png`` ground truth for ``COCO_train2014_<12
    digits>`` names (``mscoco/annToMask.py``'s masks; ``evaluation.py`` itself stops at 21 classes).

    ``auto_threshold=True`` scores one ``t`` instead of the range: the one chosen without masks
    (:func:`lpcam_plugin.core.threshold.folder_threshold`, against the classifier's CAM dicts in
    ``reference_dir`` when given).

    Returns:
        :class:`lpcam_plugin.core.evaluate.SweepResult`.
    """
    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    layout = DATASETS[dataset]
    thresholds = [i / 100.0 for i in range(start, end)]
    if auto_threshold:
        thresholds = [folder_threshold(predict_dir, names, reference_dir=reference_dir, fmt="dict",
                                       allow_pickle=allow_pickle, num_classes=layout.num_classes - 1,
                                       progress=progress).threshold]
    elif reference_dir is not None:
        raise ValueError("reference_dir is read only with auto_threshold=True")
    result = ev.evaluate_folder(predict_dir, gt_dir, list(names), fmt="dict", allow_pickle=allow_pickle,
                                thresholds=thresholds, progress=progress, num_classes=layout.num_classes,
                                gt_name=layout.gt_name)
    return with_iou_mean(result, mean)


def host_best(result: ev.SweepResult) -> Tuple[float, float]:
    """``evaluation.py --curve True``'s answer: walk up the thresholds, stop at the first one whose
    mIoU does not improve; return ``(best threshold, its mIoU)`` (may differ from the global best)."""
    best_t, best_miou = float(result.thresholds[0]), float("-inf")
    for t, miou in zip(result.thresholds, result.miou):
        if not miou > best_miou:
            break
        best_t, best_miou = float(t), float(miou)
    return best_t, best_miou


__all__ = ["evaluate", "host_best"]
