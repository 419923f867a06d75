"""The IoU mean of the ``{class: map}`` hosts' own scoring scripts (EDAM ``eval.py``, MCTformer
``evaluation.py``) on top of :mod:`lpcam_plugin.core.evaluate`'s sweeps."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from lpcam_plugin.core.evaluate import SweepResult

#: How a host-specific ``evaluate`` averages per-class IoU: ``"all"`` = over every label, a class
#: absent from both ground truth and prediction counting 0 (EDAM ``eval.py``, MCTformer
#: ``evaluation.py``: ``TP / (T + P - TP + 1e-10)``, then ``np.mean`` over 21); ``"present"`` =
#: over the classes that occur (:func:`lpcam_plugin.core.evaluate.seed_metrics`, IRN's ``np.nanmean``).
IOU_MEANS = ("all", "present")
#: ``(per-class metric, its mean)`` pairs the host rule recomputes.
_HOST_MEANS = (("iou", "miou"), ("fp", "mfp"), ("fn", "mfn"))


class AllClassSweepResult(SweepResult):
    """A :class:`~lpcam_plugin.core.evaluate.SweepResult` whose IoU/FP/FN means count absent classes as 0.

    ``metrics`` already holds the host-rule values (see :func:`with_iou_mean`); :meth:`at` reads
    them instead of recomputing the present-class means.
    """

    def at(self, index: int) -> Dict[str, Any]:
        """The metrics at threshold ``index``, IoU/FP/FN and their means by the host rule."""
        out = super().at(index)
        for per_class, mean in _HOST_MEANS:
            out[per_class] = self.metrics[per_class][index]
            out[mean] = float(self.metrics[mean][index])
        return out


def with_iou_mean(result: SweepResult, mean: str) -> SweepResult:
    """``result`` with its IoU (and FP/FN) means taken by ``mean`` (one of :data:`IOU_MEANS`).

    Per-class metrics are ``(T, C)`` over ``T`` thresholds; the means become ``(T,)``.
    """
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    if mean == "present":
        return result
    metrics = dict(result.metrics)
    for per_class, name in _HOST_MEANS:
        values = np.nan_to_num(np.asarray(metrics[per_class], dtype=np.float64), nan=0.0)
        metrics[per_class] = values
        metrics[name] = values.mean(axis=-1)
    return AllClassSweepResult(thresholds=result.thresholds, confusion=result.confusion, metrics=metrics,
                               num_images=result.num_images)


__all__ = ["IOU_MEANS", "AllClassSweepResult", "with_iou_mean"]
