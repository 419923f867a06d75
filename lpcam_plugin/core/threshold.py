"""The background threshold without ground truth: :func:`auto_threshold`.

A seed mask keeps a pixel as its best present class ``c`` when that class's map is strictly
above the background threshold ``t`` (:func:`lpcam_plugin.core.evaluate.maps_to_prediction`). So
what decides the mask is, per pixel, the best map value ``m(x) = max_c map_c(x)`` over the
classes the image holds, and which class gave it. One pass over the data collects the histogram
of ``m`` per winning class (:class:`ThresholdHistogram`, ``(C, bins)`` counts, memory independent
of the number of images); a rule then reads ``t`` off the histogram, without masks.

The rules (:data:`RULES`) are classical histogram thresholds, each a guess at where the
foreground mode of ``m`` ends and the background mode starts:

- ``"otsu"``: the cut that maximises the between-class variance of the two sides (Otsu, 1979);
- ``"kittler"``: minimum-error thresholding, the Bayes cut of a two-Gaussian mixture fitted to
  the histogram (Kittler & Illingworth, 1986);
- ``"li"``: minimum cross-entropy between the image and its two-level version (Li & Lee, 1993);
- ``"valley"``: the lowest point of the smoothed histogram between the two Otsu class means.

Which rule is the default, and how each scored against the threshold chosen with masks, is
measured by ``benchmarks/study_auto_threshold.py`` and reported in ``docs/evaluation.md``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Union

import numpy as np

from lpcam_plugin.core.formats import check_keyed_maps

logger = logging.getLogger(__name__)

#: Histogram bins over [0, 1]; ``t`` is read off at a bin edge, so this is its resolution.
DEFAULT_BINS = 1000
#: Images per vectorised chunk when whole ``(N, C, H, W)`` arrays are given.
CHUNK_IMAGES = 64
#: Tolerance on the [0, 1] range of max-normalised maps (float16 storage rounds up to 1 + 2**-11).
RANGE_TOLERANCE = 1e-3


@dataclass
class ThresholdHistogram:
    """Streaming histogram of the best present-class map value, per winning class.

    Attributes:
        num_classes: C, the foreground classes (no background).
        bins: histogram bins over [0, 1].
        counts: ``(C, bins)`` int64; ``counts[c, b]`` pixels whose best present class is ``c`` and
            whose best value falls in bin ``b``.
        num_images: images added so far.
    """

    num_classes: int
    bins: int = DEFAULT_BINS
    counts: np.ndarray = field(init=False, repr=False)
    num_images: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if isinstance(self.bins, bool) or not isinstance(self.bins, (int, np.integer)) or self.bins < 16:
            raise ValueError(f"bins must be an int >= 16, got {self.bins!r}")
        self.counts = np.zeros((int(self.num_classes), int(self.bins)), dtype=np.int64)

    def add(self, keys: Any, maps: Any) -> None:
        """Add one image: ``keys`` ``(K,)`` its present classes (0-based), ``maps`` ``(K, H, W)`` in [0, 1]."""
        keys_arr, maps_arr = check_keyed_maps(keys, maps)
        if keys_arr.size == 0:
            raise ValueError(f"image {self.num_images} has no class: every image needs at least one present "
                             "class (an image without labels has no foreground to threshold)")
        if keys_arr.max() >= self.num_classes:
            raise ValueError(f"image {self.num_images}: class {int(keys_arr.max())} is outside the "
                             f"{self.num_classes} classes of the labels")
        if np.unique(keys_arr).size != keys_arr.size:
            raise ValueError(f"image {self.num_images}: class keys {keys_arr.tolist()} repeat a class")
        self._add_values(keys_arr, maps_arr.reshape(keys_arr.size, -1), image=self.num_images)
        self.num_images += 1

    def add_batch(self, maps: np.ndarray, labels: np.ndarray) -> None:
        """Add ``(N, C, H, W)`` maps with ``(N, C)`` multi-hot labels (absent classes are ignored)."""
        for index in range(maps.shape[0]):
            keys = np.flatnonzero(labels[index] > 0)
            self.add(keys, maps[index, keys])

    def _add_values(self, keys: np.ndarray, values: np.ndarray, image: int) -> None:
        values = values.astype(np.float32, copy=False)
        if not np.isfinite(values).all():
            raise ValueError(f"image {image}: the maps hold NaN or inf")
        low, high = float(values.min()), float(values.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(f"image {image}: map values span [{low:.3g}, {high:.3g}]; auto_threshold needs maps "
                             "max-normalised to [0, 1] (divide each map by its max, as the hosts do)")
        best = values.max(axis=0)
        winner = keys[values.argmax(axis=0)]
        index = np.clip((best * self.bins).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(winner * self.bins + index, minlength=self.counts.size).reshape(self.counts.shape)

    @property
    def edges(self) -> np.ndarray:
        """``(bins + 1,)`` bin edges over [0, 1]."""
        return np.linspace(0.0, 1.0, self.bins + 1)

    def total(self) -> np.ndarray:
        """``(bins,)`` counts over every class."""
        return self.counts.sum(axis=0)


def _check_labels(labels: Any) -> np.ndarray:
    array = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if array.ndim != 2:
        raise ValueError(f"labels must be (N, C) multi-hot image labels, got shape {array.shape}")
    if not np.isfinite(array.astype(np.float64)).all():
        raise ValueError("labels hold NaN or inf")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"labels must be multi-hot 0/1, got values {np.unique(array)[:6].tolist()}")
    empty = np.flatnonzero(array.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"{empty.size} image(s) have no positive label, e.g. image {int(empty[0])}: every image "
                         "needs at least one present class")
    return array


def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value.detach().float().cpu().numpy() if hasattr(value, "detach") else value)


def collect_histogram(maps: Union[Any, Iterable[Any]], labels: Any = None, *,
                      bins: int = DEFAULT_BINS, num_classes: Optional[int] = None) -> ThresholdHistogram:
    """One pass over the maps into a :class:`ThresholdHistogram`.

    Args:
        maps: ``(N, C, H, W)`` maps in [0, 1] (array or tensor); or an iterable over images of
            ``(C, H, W)`` maps (with ``labels``) or of ``(keys, (K, H, W) maps)`` pairs (without
            ``labels``; then ``num_classes`` is required), so a dataset need not fit in memory.
        labels: ``(N, C)`` multi-hot image labels; None for ``(keys, maps)`` pairs.
        bins: histogram bins over [0, 1].
        num_classes: C for ``(keys, maps)`` pairs (default: from ``labels``).
    """
    if labels is None:
        if num_classes is None:
            raise ValueError("without labels, give (keys, maps) pairs and num_classes")
        histogram = ThresholdHistogram(num_classes, bins)
        for item in maps:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ValueError("without labels, maps must yield (keys, (K, H, W) maps) pairs")
            histogram.add(item[0], _as_array(item[1]))
        return _checked_nonempty(histogram)
    label_array = _check_labels(labels)
    histogram = ThresholdHistogram(label_array.shape[1] if num_classes is None else num_classes, bins)
    if label_array.shape[1] != histogram.num_classes:
        raise ValueError(f"labels have {label_array.shape[1]} classes but num_classes is {histogram.num_classes}")
    if hasattr(maps, "shape") and hasattr(maps, "ndim"):
        array = maps
        if array.ndim != 4:
            raise ValueError(f"maps must be (N, C, H, W), got shape {tuple(array.shape)}")
        if tuple(array.shape[:2]) != label_array.shape:
            raise ValueError(f"maps {tuple(array.shape)} and labels {label_array.shape} disagree on (N, C)")
        for start in range(0, array.shape[0], CHUNK_IMAGES):
            histogram.add_batch(_as_array(array[start:start + CHUNK_IMAGES]), label_array[start:start + CHUNK_IMAGES])
        return _checked_nonempty(histogram)
    for index, image_maps in enumerate(maps):
        if index >= label_array.shape[0]:
            raise ValueError(f"maps yield more images than the {label_array.shape[0]} rows of labels")
        image = _as_array(image_maps)
        if image.ndim != 3 or image.shape[0] != label_array.shape[1]:
            raise ValueError(f"image {index}: maps must be (C={label_array.shape[1]}, H, W), got {image.shape}")
        keys = np.flatnonzero(label_array[index] > 0)
        histogram.add(keys, image[keys])
    if histogram.num_images != label_array.shape[0]:
        raise ValueError(f"maps yield {histogram.num_images} images but labels have {label_array.shape[0]} rows")
    return _checked_nonempty(histogram)


def _checked_nonempty(histogram: ThresholdHistogram) -> ThresholdHistogram:
    if histogram.num_images == 0:
        raise ValueError("no images: auto_threshold needs at least one image with a present class")
    return histogram


# ------------------------------------------------------------------------------------------ rules


def _otsu(counts: np.ndarray, centres: np.ndarray) -> int:
    """Index ``i``: the cut after bin ``i`` that maximises the between-class variance."""
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    total_weight, total_mass = weight[-1], mass[-1]
    below, above = weight[:-1], total_weight - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * below / total_weight - mass[:-1]) ** 2 / (below * above)
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between))


def _kittler(counts: np.ndarray, centres: np.ndarray) -> int:
    """Index of the minimum-error cut (two Gaussians, Kittler & Illingworth)."""
    p = counts / counts.sum()
    w0 = np.cumsum(p)[:-1]
    m0 = np.cumsum(p * centres)[:-1]
    s0 = np.cumsum(p * centres ** 2)[:-1]
    w1, m1, s1 = 1 - w0, (p * centres).sum() - m0, (p * centres ** 2).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        var0 = s0 / w0 - (m0 / w0) ** 2
        var1 = s1 / w1 - (m1 / w1) ** 2
        cost = 1 + 2 * (w0 * np.log(np.sqrt(var0)) + w1 * np.log(np.sqrt(var1))) \
            - 2 * (w0 * np.log(w0) + w1 * np.log(w1))
    floor = (1.0 / counts.size) ** 2 / 12  # variance of one bin: a side narrower than that is degenerate
    cost[~np.isfinite(cost) | (var0 <= floor) | (var1 <= floor)] = np.inf
    if not np.isfinite(cost).any():
        return _otsu(counts, centres)
    return int(np.argmin(cost))


def _li(counts: np.ndarray, centres: np.ndarray) -> int:
    """Index of the minimum cross-entropy cut (Li & Lee), evaluated at every cut."""
    value = np.maximum(centres, 1e-6)
    weight = np.cumsum(counts)[:-1]
    mass = np.cumsum(counts * value)[:-1]
    total_weight, total_mass = counts.sum(), (counts * value).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = mass / weight
        mean1 = (total_mass - mass) / (total_weight - weight)
        cost = -(mass * np.log(mean0) + (total_mass - mass) * np.log(mean1))
    cost[~np.isfinite(cost)] = np.inf
    if not np.isfinite(cost).any():
        return _otsu(counts, centres)
    return int(np.argmin(cost))


def _valley(counts: np.ndarray, centres: np.ndarray) -> int:
    """Index of the lowest bin of the smoothed histogram between the two Otsu class means."""
    cut = _otsu(counts, centres)
    low_weight, high_weight = counts[:cut + 1].sum(), counts[cut + 1:].sum()
    if low_weight == 0 or high_weight == 0:
        return cut
    low = int(np.searchsorted(centres, (counts[:cut + 1] * centres[:cut + 1]).sum() / low_weight))
    high = int(np.searchsorted(centres, (counts[cut + 1:] * centres[cut + 1:]).sum() / high_weight))
    width = max(counts.size // 50, 1)
    smooth = np.convolve(counts.astype(np.float64), np.ones(2 * width + 1) / (2 * width + 1), mode="same")
    if high - low < 2:
        return cut
    return low + int(np.argmin(smooth[low:high]))


#: The rules: ``(counts (bins,), bin centres (bins,)) -> i``, the cut after bin ``i``.
RULES: Dict[str, Callable[[np.ndarray, np.ndarray], int]] = {
    "otsu": _otsu,
    "kittler": _kittler,
    "li": _li,
    "valley": _valley,
}
#: The rule :func:`auto_threshold` uses unless told otherwise.
DEFAULT_RULE = "otsu"


def threshold_from_counts(counts: np.ndarray, rule: str = DEFAULT_RULE) -> float:
    """``t`` from a ``(bins,)`` histogram of best map values over [0, 1] by ``rule`` (a bin edge)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(RULES)}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or counts.sum() <= 0:
        raise ValueError("the histogram is empty: no pixel of a present class was seen")
    centres = (np.arange(counts.size) + 0.5) / counts.size
    return float((RULES[rule](counts, centres) + 1) / counts.size)


def auto_threshold(maps: Union[Any, Iterable[Any]], labels: Any = None, *, rule: str = DEFAULT_RULE,
                   per_class: bool = False, bins: int = DEFAULT_BINS,
                   num_classes: Optional[int] = None) -> Union[float, np.ndarray]:
    """The background threshold ``t`` of seed masks, chosen from the maps alone (no masks).

    Args:
        maps: ``(N, C, H, W)`` class maps, each max-normalised to [0, 1] (as the hosts write them);
            or an iterable of per-image ``(C, H, W)`` maps; or, without ``labels``, an iterable of
            ``(keys (K,), maps (K, H, W))`` pairs as the hosts' files hold them.
        labels: ``(N, C)`` multi-hot image labels (absent classes' maps are ignored).
        rule: one of :data:`RULES` (default :data:`DEFAULT_RULE`).
        per_class: return ``(C,)`` thresholds, one per class from the pixels that class wins
            (classes never present get the global ``t``), instead of one ``t``.
        bins: histogram resolution over [0, 1].
        num_classes: C when ``maps`` yields ``(keys, maps)`` pairs.

    Returns:
        ``t`` in (0, 1) (a float), or ``(C,)`` float64 with ``per_class=True``. The same data in
        any image order gives the same ``t`` (a histogram is a sum).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = np.where(rng.random((8, 2, 16, 16)) < 0.3, 0.9, 0.1).astype(np.float32)
    >>> round(auto_threshold(maps, np.ones((8, 2))), 2)
    0.1
    """
    histogram = collect_histogram(maps, labels, bins=bins, num_classes=num_classes)
    t = threshold_from_counts(histogram.total(), rule)
    logger.info("auto_threshold: t = %.3f (%s rule, %d images, %d pixels)", t, rule, histogram.num_images,
                int(histogram.counts.sum()))
    if not per_class:
        return t
    out = np.full(histogram.num_classes, t)
    for c in range(histogram.num_classes):
        if histogram.counts[c].sum() > 0:
            out[c] = threshold_from_counts(histogram.counts[c], rule)
    return out


def thresholds_of_all_rules(histogram: ThresholdHistogram) -> Dict[str, float]:
    """``{rule: t}`` for every rule of :data:`RULES` on one histogram (what the study compares)."""
    return {name: threshold_from_counts(histogram.total(), name) for name in RULES}
