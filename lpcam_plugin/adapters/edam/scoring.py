"""Scoring EDAM-format dicts with ``eval.py``'s npy rule, on :mod:`lpcam_plugin.core.evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from lpcam_plugin.adapters.common.scoring import IOU_MEANS, with_iou_mean
from lpcam_plugin.adapters.edam.host import NUM_CLASSES
from lpcam_plugin.adapters.edam.labels import prediction, read_saliency
from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core.formats import load_class_dict, read_label_png
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.threshold import folder_threshold


def evaluate(
    predict_dir: PathLike,
    gt_dir: PathLike,
    names: Sequence[str],
    *,
    thetas: Union[float, Sequence[float]] = (0.40, 0.42, 0.44, 0.46, 0.48, 0.50, 0.52, 0.54, 0.56, 0.58),
    alpha: float = 0.0,
    beta: float = 1.0,
    crf: bool = False,
    sal_path: Optional[PathLike] = None,
    allow_pickle: bool = False,
    mean: str = "all",
    auto_threshold: bool = False,
    reference_dir: Optional[PathLike] = None,
    progress: Optional[bool] = None,
) -> ev.SweepResult:
    """Score EDAM-format dicts with ``eval.py``'s npy rule through :mod:`lpcam_plugin.core.evaluate`.

    Predictions follow :func:`~lpcam_plugin.adapters.edam.labels.prediction` (``theta`` is the
    background score, or with ``sal_path`` the saliency cut ``theta * 100``); metrics come from
    :func:`lpcam_plugin.core.evaluate.confusion_matrix` and
    :func:`~lpcam_plugin.core.evaluate.seed_metrics`. Default ``thetas`` = ``eval.py --curve``.
    CRF dicts without saliency do not depend on ``theta``.

    ``mean="all"`` (default) averages IoU, FP and FN over all 21 labels with a class absent from
    ground truth and prediction counting 0, as ``eval.py`` does, so the mIoU equals the script's on
    any subset; ``mean="present"`` averages over the classes that occur (same on VOC train, where
    every class occurs).

    ``auto_threshold=True`` scores one ``theta`` instead of ``thetas``: the background score chosen
    without masks (:func:`lpcam_plugin.core.threshold.folder_threshold`, against the classifier's
    CAM dicts in ``reference_dir`` when given); not with saliency or CRF dicts, whose cut is another.

    Returns:
        :class:`lpcam_plugin.core.evaluate.SweepResult` over ``thetas``.
    """
    if auto_threshold:
        if sal_path is not None or crf:
            raise ValueError("auto_threshold chooses the background score of CAM dicts, not a saliency or CRF cut")
        thetas = folder_threshold(predict_dir, names, reference_dir=reference_dir, fmt="dict",
                                  allow_pickle=allow_pickle, num_classes=NUM_CLASSES, progress=progress).threshold
    elif reference_dir is not None:
        raise ValueError("reference_dir is read only with auto_threshold=True")
    values = [float(thetas)] if np.isscalar(thetas) else [float(t) for t in thetas]
    if not values:
        raise ValueError("thetas must not be empty")
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    n = NUM_CLASSES + 1
    confusion = np.zeros((len(values), n, n), dtype=np.int64)
    for name in progress_bar(names, progress=progress, desc="EDAM eval", total=len(names)):
        cam = load_class_dict(Path(predict_dir) / f"{name}.npy", allow_pickle=allow_pickle)
        gt = read_label_png(Path(gt_dir) / f"{name}.png")
        saliency = read_saliency(sal_path, name) if sal_path is not None else None
        for i, theta in enumerate(values):
            pred = prediction(cam, theta=theta, alpha=alpha, beta=beta, saliency=saliency, crf=crf)
            confusion[i] += ev.confusion_matrix(pred.astype(np.int64), gt, n)
    per_threshold = [ev.seed_metrics(c) for c in confusion]
    metrics = {key: np.stack([np.asarray(m[key], dtype=np.float64) for m in per_threshold])
               for key in ev.PER_CLASS_METRICS + ev.MEAN_METRICS}
    result = ev.SweepResult(thresholds=np.asarray(values), confusion=confusion, metrics=metrics, num_images=len(names))
    return with_iou_mean(result, mean)


__all__ = ["evaluate"]
