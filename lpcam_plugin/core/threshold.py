"""The background threshold without masks: :func:`auto_threshold`.

A seed mask keeps a pixel as its best present class ``c`` when that class's map is strictly above
the background threshold ``t`` (:func:`lpcam_plugin.core.evaluate.maps_to_prediction`). So all that
decides the mask is, per pixel, the best value ``m(x) = max_c map_c(x)`` over the classes the
image holds, and which class gave it. One pass over the data collects the histogram of ``m`` per
winning class (:class:`ThresholdHistogram`: ``(C, bins)`` counts, memory independent of the number
of images, a sum, so the image order does not matter and shards add up); a rule then reads ``t``
off the histogram (:func:`choose_threshold`):

- **without a reference** (``"otsu"``): Otsu's cut (the one that maximises the between-class
  variance) over the *positive* values. A ReLU map's exact zeros are no evidence either way, and
  on the hosts' maps they are a third or more of all pixels: left in, their spike drags Otsu's cut
  down (on the default demo's CAM from 0.39 to 0.34; its best t is 0.44).
- **with a reference** (``"share"``): ``reference`` holds the classifier's plain CAM of the same
  images. Its values are the ones Otsu reads well (a decline from zero plus the objects), so
  Otsu's cut on them gives the share of pixels that are foreground; ``t`` of the maps is then the
  cut that keeps that same share of their pixels. A method that re-ranks pixels (LPCAM scores a
  background cell as high as 0.8 of its map's maximum, so its best ``t`` is 0.85-0.95) changes
  the values, not how much of the image the objects cover.

What each candidate signal scored against the threshold chosen with masks, the dropped ones
included, is in ``docs/evaluation.md`` (reproduced by ``benchmarks/study_auto_threshold.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from lpcam_plugin.core.formats import check_keyed_maps, check_unique, read_cam_folder
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar

logger = logging.getLogger(__name__)

#: Histogram bins over [0, 1]: ``t`` is a bin edge, so this is its resolution.
DEFAULT_BINS = 1000
#: Images per vectorised chunk when whole ``(N, C, H, W)`` arrays are given.
CHUNK_IMAGES = 256
#: Maps held at most per group when a stream is counted (images of one size are counted together).
STREAM_BUFFER_BYTES = 32 * 2 ** 20
#: Tolerance above 1 for max-normalised maps (float16 storage rounds 1 up to 1 + 2**-11).
RANGE_TOLERANCE = 1e-3

#: Per-image maps as :func:`auto_threshold` takes them: ``(N, C, H, W)``, or an iterable of
#: ``(C, H, W)`` arrays (with labels) or of ``(keys (K,), (K, H, W))`` pairs (without).
MapsInput = Union[Any, Iterable[Any]]


@dataclass
class ThresholdHistogram:
    """Streaming histogram of the best present-class map value, per winning class.

    Attributes:
        num_classes: C, the foreground classes (no background).
        bins: histogram bins over [0, 1]; bin 0 holds the exact zeros only, bin ``b >= 1`` the
            values in ``((b - 1) / (bins - 1), b / (bins - 1)]``.
        counts: ``(C, bins)`` int64; ``counts[c, b]`` pixels whose best present class is ``c`` and
            whose best value falls in bin ``b``.
        num_images: images added so far.
    """

    num_classes: int
    bins: int = DEFAULT_BINS
    counts: np.ndarray = field(init=False, repr=False)
    num_images: int = 0

    def __post_init__(self) -> None:
        for name in ("num_classes", "bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.bins < 16:
            raise ValueError(f"bins must be >= 16, got {self.bins}")
        self.counts = np.zeros((int(self.num_classes), int(self.bins)), dtype=np.int64)

    @property
    def edges(self) -> np.ndarray:
        """``(bins,)``: ``edges[b]`` is the upper end of bin ``b`` (0 for the zeros' bin)."""
        return np.linspace(0.0, 1.0, self.bins)

    def add(self, keys: Any, maps: Any) -> "ThresholdHistogram":
        """Add one image: ``keys`` ``(K,)`` its present classes (0-based), ``maps`` ``(K, H, W)`` in [0, 1]."""
        return self.add_images([(keys, maps)])

    def add_images(self, images: Sequence[Tuple[Any, Any]]) -> "ThresholdHistogram":
        """Add images given as ``(keys (K,), maps (K, H, W))`` pairs, all with the same number of pixels."""
        values, image, cls = [], [], []
        for offset, (keys, maps) in enumerate(images):
            keys_arr, maps_arr = check_keyed_maps(keys, maps)
            self._check_keys(keys_arr, f"image {self.num_images + offset}")
            values.append(_as_array(maps_arr).reshape(keys_arr.size, -1))
            image.append(np.full(keys_arr.size, offset))
            cls.append(keys_arr)
        if len({v.shape[1] for v in values}) > 1:
            raise ValueError(f"images {self.num_images}+: add_images takes images of one size at a time")
        if values:
            self._add_present(np.concatenate(values), np.concatenate(image), np.concatenate(cls),
                              f"images {self.num_images}-{self.num_images + len(values) - 1}")
        self.num_images += len(values)
        return self

    def add_batch(self, maps: Any, labels: Any) -> "ThresholdHistogram":
        """Add ``(B, C, H, W)`` maps with ``(B, C)`` multi-hot labels (absent classes' maps are not read)."""
        label_array = check_image_labels(labels, self.num_classes, first=self.num_images)
        if maps.ndim != 4 or tuple(maps.shape[:2]) != label_array.shape:
            raise ValueError(f"maps {tuple(maps.shape)} must be (B, C, H, W) with (B, C) = labels' "
                             f"{label_array.shape}")
        image, cls = np.nonzero(label_array)  # the present (image, class) pairs, image-major, classes ascending
        if hasattr(maps, "detach"):
            present = maps.detach()[torch.from_numpy(image), torch.from_numpy(cls)].float().cpu().numpy()
        else:
            present = np.asarray(maps)[image, cls]
        self._add_present(present.reshape(image.size, -1), image, cls, f"images {self.num_images}+")
        self.num_images += label_array.shape[0]
        return self

    def _check_keys(self, keys: np.ndarray, where: str) -> None:
        if keys.size == 0:
            raise ValueError(f"{where} has no present class: every image needs one (its labels are empty)")
        if keys.max() >= self.num_classes:
            raise ValueError(f"{where}: class {int(keys.max())} is outside the {self.num_classes} classes")
        if np.unique(keys).size != keys.size:
            raise ValueError(f"{where}: keys {keys.tolist()} name a class twice")

    def _add_present(self, maps: np.ndarray, image: np.ndarray, cls: np.ndarray, where: str) -> None:
        """Count the maps ``(P, H*W)`` of the present (image, class) pairs ``(P,)``, grouped by image
        (0, 1, ...); per pixel the best value, won by the first of the image's classes reaching it (argmax)."""
        values = _checked_values(maps, where)
        starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]])
        group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, image.size]))
        rank = np.arange(image.size) - starts[group]  # k-th class of its image
        best = values[starts].copy()  # (images, H*W)
        winner = np.repeat(cls[starts, None].astype(np.int32), values.shape[1], axis=1)
        for k in range(1, int(rank.max()) + 1):  # a later class wins only where strictly higher
            rows = np.flatnonzero(rank == k)
            own, current = values[rows], best[group[rows]]
            winner[group[rows]] = np.where(own > current, cls[rows, None].astype(np.int32), winner[group[rows]])
            best[group[rows]] = np.maximum(own, current)
        self._add_best(best.ravel(), winner.ravel())

    def update(self, other: "ThresholdHistogram") -> "ThresholdHistogram":
        """Add another histogram's counts (another shard of the same data; e.g. one rank's)."""
        if (other.num_classes, other.bins) != (self.num_classes, self.bins):
            raise ValueError(f"histograms differ: ({other.num_classes} classes, {other.bins} bins) vs "
                             f"({self.num_classes}, {self.bins})")
        self.counts += other.counts
        self.num_images += other.num_images
        return self

    def _add_best(self, best: np.ndarray, winner: np.ndarray) -> None:
        """Count best values ``(P,)`` in [0, 1] won by classes ``(P,)``."""
        index = np.where(best > 0, np.ceil(best * (self.bins - 1)), 0)
        index = np.clip(index, 0, self.bins - 1).astype(np.int64)
        self.counts += np.bincount(winner.astype(np.int64) * self.bins + index,
                                   minlength=self.counts.size).reshape(self.counts.shape)


def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value.detach().float().cpu().numpy() if hasattr(value, "detach") else value)


def _checked_values(values: np.ndarray, where: str, present: Optional[np.ndarray] = None) -> np.ndarray:
    """``values`` as float32 after checking that the scored ones (``present``) are finite and in [0, 1]."""
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(f"{where}: maps must be real numbers, got dtype {values.dtype}")
    values = values.astype(np.float32, copy=False)
    scored = values if present is None else np.where(present, values, 0.0)
    if not np.isfinite(scored).all():
        raise ValueError(f"{where}: the maps hold NaN or inf")
    low, high = float(scored.min(initial=0.0)), float(scored.max(initial=0.0))
    if low < 0 or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{where}: map values span [{low:.3g}, {high:.3g}]; the threshold needs maps "
                         "max-normalised to [0, 1] (each map divided by its maximum, as the hosts write them)")
    return values


def check_image_labels(labels: Any, num_classes: Optional[int] = None, first: int = 0) -> np.ndarray:
    """``(N, C)`` multi-hot image labels as an array; one-line ``ValueError`` for another rank, values
    other than 0/1, NaN, a class count other than ``num_classes``, or an image without a present class."""
    array = _as_array(labels)
    if array.ndim != 2:
        raise ValueError(f"labels must be (N, C) multi-hot image labels, got shape {array.shape}")
    if num_classes is not None and array.shape[1] != num_classes:
        raise ValueError(f"labels have {array.shape[1]} classes, expected {num_classes}")
    if not np.isin(array, (0, 1)).all():  # NaN fails too
        raise ValueError(f"labels must be multi-hot 0/1, got values {np.unique(array)[:6].tolist()}")
    empty = np.flatnonzero(array.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"{empty.size} image(s) have empty labels, e.g. image {first + int(empty[0])}: every "
                         "image needs a present class")
    return array


def collect_histogram(maps: MapsInput, labels: Any = None, *, num_classes: Optional[int] = None,
                      bins: int = DEFAULT_BINS, progress: Optional[bool] = None) -> ThresholdHistogram:
    """One pass over the maps into a :class:`ThresholdHistogram`.

    Args:
        maps: ``(N, C, H, W)`` maps in [0, 1] (array or tensor); or an iterable over images of
            ``(C, H, W)`` maps (with ``labels``) or of ``(keys (K,), (K, H, W) maps)`` pairs (without
            ``labels``; then ``num_classes`` is required), so that a dataset need not fit in memory.
        labels: ``(N, C)`` multi-hot image labels; None for ``(keys, maps)`` pairs.
        num_classes: C (default: from ``labels``).
        bins: histogram bins over [0, 1].
        progress: progress-bar switch (``None``: only on a TTY).
    """
    histogram, items = _histogram_and_items(maps, labels, num_classes, bins)
    for add in progress_bar(items, progress=progress, desc="auto threshold"):
        add(histogram)
    if histogram.num_images == 0:
        raise ValueError("no images: the threshold needs at least one image with a present class")
    return histogram


def _histogram_and_items(maps: MapsInput, labels: Any, num_classes: Optional[int], bins: int
                         ) -> Tuple[ThresholdHistogram, Iterator[Any]]:
    """An empty histogram and an iterator of callables each adding a chunk of ``maps`` to it."""
    if labels is None:
        if num_classes is None:
            raise ValueError("without labels, give (keys, maps) pairs and num_classes")
        return ThresholdHistogram(num_classes, bins), _pair_items(maps)
    label_array = check_image_labels(labels, num_classes)
    histogram = ThresholdHistogram(label_array.shape[1], bins)
    if hasattr(maps, "shape") and hasattr(maps, "ndim"):
        if maps.ndim != 4 or tuple(maps.shape[:2]) != label_array.shape:
            raise ValueError(f"maps must be (N, C, H, W) with (N, C) = labels' {label_array.shape}, "
                             f"got {tuple(maps.shape)}")
        starts = range(0, label_array.shape[0], CHUNK_IMAGES)
        return histogram, (lambda h, s=s: h.add_batch(maps[s:s + CHUNK_IMAGES], label_array[s:s + CHUNK_IMAGES])
                           for s in starts)
    return histogram, _labelled_items(maps, label_array)


def _buffered(pairs: Iterable[Tuple[np.ndarray, np.ndarray]]) -> Iterator[Any]:
    """Callables adding ``(keys, maps)`` pairs to a histogram in groups of one image size (at most
    :data:`STREAM_BUFFER_BYTES` of maps each), so a stream is counted as fast as an array."""
    group: List[Tuple[np.ndarray, np.ndarray]] = []
    size = held = 0
    for keys, maps in pairs:
        pixels = int(np.prod(maps.shape[1:]))
        if group and (pixels != size or held + maps.nbytes > STREAM_BUFFER_BYTES):
            yield lambda h, group=group: h.add_images(group)
            group, held = [], 0
        group.append((keys, maps))
        size, held = pixels, held + maps.nbytes
    if group:
        yield lambda h, group=group: h.add_images(group)


def _pair_items(maps: Iterable[Any]) -> Iterator[Any]:
    def pairs() -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        for index, item in enumerate(maps):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ValueError(f"image {index}: without labels, maps must yield (keys, (K, H, W) maps) pairs")
            yield check_keyed_maps(item[0], _as_array(item[1]))

    return _buffered(pairs())


def _labelled_items(maps: Iterable[Any], labels: np.ndarray) -> Iterator[Any]:
    def pairs() -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        count = 0
        for index, image_maps in enumerate(maps):
            if index >= labels.shape[0]:
                raise ValueError(f"maps yield more images than the {labels.shape[0]} rows of labels")
            image = _as_array(image_maps)
            if image.ndim != 3 or image.shape[0] != labels.shape[1]:
                raise ValueError(f"image {index}: maps must be (C={labels.shape[1]}, H, W), got {image.shape}")
            keys = np.flatnonzero(labels[index] > 0)
            yield keys, image[keys]
            count += 1
        if count != labels.shape[0]:
            raise ValueError(f"maps yield {count} images but labels have {labels.shape[0]} rows")

    return _buffered(pairs())


# ----------------------------------------------------------------------------------------- rules


def otsu_cut(counts: np.ndarray) -> int:
    """Index ``i`` of the positive bins' Otsu cut: pixels in bins ``> i`` are foreground.

    ``counts`` ``(bins,)`` as in :class:`ThresholdHistogram` (bin 0: the exact zeros, left out).
    """
    positive = np.asarray(counts, dtype=np.float64).copy()
    positive[0] = 0.0
    if positive.sum() <= 0:
        return 0
    centres = np.arange(positive.size, dtype=np.float64)
    weight = np.cumsum(positive)
    mass = np.cumsum(positive * centres)
    below, above = weight[:-1], weight[-1] - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below / weight[-1] - mass[:-1]) ** 2 / (below * above)
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between))


def share_above(counts: np.ndarray, cut: int) -> float:
    """Share of the pixels in bins ``> cut`` of ``(bins,)`` counts."""
    counts = np.asarray(counts, dtype=np.float64)
    return float(counts[cut + 1:].sum() / counts.sum())


def share_cut(counts: np.ndarray, share: float) -> int:
    """Index ``i`` whose foreground (bins ``> i``) is the closest to ``share`` of the pixels."""
    counts = np.asarray(counts, dtype=np.float64)
    kept = np.concatenate([np.cumsum(counts[::-1])[::-1][1:], [0.0]]) / counts.sum()  # kept[i]: bins > i
    return int(np.argmin(np.abs(kept - share)))


@dataclass(frozen=True)
class ThresholdChoice:
    """What :func:`choose_threshold` chose, and from what.

    Attributes:
        threshold: ``t`` for all classes.
        per_class: ``(C,)`` thresholds, one per class from the pixels it wins (a class that won no
            pixel gets ``threshold``); None unless asked for.
        rule: ``"otsu"`` (positive values of the maps) or ``"share"`` (the reference's Otsu share).
        foreground_share: share of the pixels of the images above ``threshold``.
        reference_threshold: the reference's own Otsu ``t`` (``"share"`` only).
        num_images: images the histogram holds.
    """

    threshold: float
    rule: str
    foreground_share: float
    num_images: int
    reference_threshold: Optional[float] = None
    per_class: Optional[np.ndarray] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready fields (``per_class`` as a list)."""
        return {"threshold": self.threshold, "rule": self.rule, "foreground_share": self.foreground_share,
                "num_images": self.num_images, "reference_threshold": self.reference_threshold,
                "per_class": None if self.per_class is None else self.per_class.tolist()}


def _cut_of(counts: np.ndarray, reference: Optional[np.ndarray]) -> int:
    if reference is None:
        return otsu_cut(counts)
    return share_cut(counts, share_above(reference, otsu_cut(reference)))


def choose_threshold(histogram: ThresholdHistogram, reference: Optional[ThresholdHistogram] = None, *,
                     per_class: bool = False) -> ThresholdChoice:
    """``t`` from a histogram (rule ``"otsu"``), or matched to a reference's share (rule ``"share"``).

    ``reference`` is the histogram of the classifier's plain CAM over the same images; with
    ``per_class``, each class's share comes from the pixels it wins in the reference.
    """
    if histogram.counts.sum() == 0:
        raise ValueError("the histogram is empty: no image was added")
    if reference is not None and (reference.num_classes, reference.bins) != (histogram.num_classes, histogram.bins):
        raise ValueError(f"the reference has {reference.num_classes} classes and {reference.bins} bins, the maps "
                         f"{histogram.num_classes} and {histogram.bins}")
    total = histogram.counts.sum(axis=0)
    ref_total = None if reference is None else reference.counts.sum(axis=0)
    cut = _cut_of(total, ref_total)
    edges = histogram.edges
    classes = None
    if per_class:
        classes = np.full(histogram.num_classes, edges[cut])
        for c in range(histogram.num_classes):
            own = histogram.counts[c]
            ref = None if reference is None else reference.counts[c]
            if own.sum() > 0 and (ref is None or ref.sum() > 0):
                classes[c] = edges[_cut_of(own, ref)]
    choice = ThresholdChoice(
        threshold=float(edges[cut]), rule="otsu" if reference is None else "share",
        foreground_share=share_above(total, cut), num_images=histogram.num_images,
        reference_threshold=None if ref_total is None else float(edges[otsu_cut(ref_total)]), per_class=classes)
    logger.info("auto threshold: t = %.3f (%s rule%s), %.1f %% of the pixels of %d images foreground",
                choice.threshold, choice.rule,
                "" if reference is None else f", the reference CAM's Otsu t = {choice.reference_threshold:.3f}",
                100 * choice.foreground_share, choice.num_images)
    return choice


def folder_threshold(cams_dir: PathLike, ids: Sequence[str], *, reference_dir: Optional[PathLike] = None,
                     fmt: str = "auto", allow_pickle: bool = False, num_classes: int = 20,
                     progress: Optional[bool] = None) -> ThresholdChoice:
    """:func:`choose_threshold` of the CAM files ``cams_dir/<id>`` (any format of
    :func:`lpcam_plugin.core.formats.read_cam_file`; the files hold each image's classes), against the
    classifier's CAM files in ``reference_dir`` when given. ``num_classes``: C, without background."""
    check_unique(ids)
    histogram = collect_histogram(read_cam_folder(cams_dir, ids, fmt, allow_pickle=allow_pickle),
                                  num_classes=num_classes, progress=progress)
    reference = None if reference_dir is None else collect_histogram(
        read_cam_folder(reference_dir, ids, fmt, allow_pickle=allow_pickle), num_classes=num_classes,
        progress=progress)
    return choose_threshold(histogram, reference)


def auto_threshold(maps: MapsInput, labels: Any = None, *, reference: Optional[MapsInput] = None,
                   per_class: bool = False, num_classes: Optional[int] = None, bins: int = DEFAULT_BINS,
                   progress: Optional[bool] = None) -> Union[float, np.ndarray]:
    """The background threshold ``t`` of seed masks, chosen from the maps and image labels alone (no masks).

    Args:
        maps: class maps, each max-normalised to [0, 1] as the hosts write them: ``(N, C, H, W)``
            (array or tensor), or an iterable over images of ``(C, H, W)`` maps, or, without
            ``labels``, of ``(keys (K,), (K, H, W) maps)`` pairs as the hosts' files hold them.
        labels: ``(N, C)`` multi-hot image labels (absent classes' maps are ignored).
        reference: the classifier's plain CAM of the same images, in the same form and order; when
            given, ``t`` keeps the share of pixels that Otsu's cut keeps on the reference (use it
            for a method whose values are not CAM's: LPCAM, ReCAM+LPCAM).
        per_class: return ``(C,)`` thresholds, one per class, instead of one ``t``.
        num_classes: C for ``(keys, maps)`` pairs.
        bins: histogram resolution over [0, 1].
        progress: progress-bar switch (``None``: only on a TTY).

    Returns:
        ``t`` (a float in [0, 1)), or ``(C,)`` float64 with ``per_class=True``. The same images in
        any order give the same ``t``; an iterable gives what the whole array gives.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = np.where(rng.random((8, 2, 16, 16)) < 0.3, 0.9, 0.2).astype(np.float32)
    >>> round(auto_threshold(maps, np.ones((8, 2))), 1)
    0.2
    """
    histogram = collect_histogram(maps, labels, num_classes=num_classes, bins=bins, progress=progress)
    ref = None
    if reference is not None:
        ref = collect_histogram(reference, labels, num_classes=histogram.num_classes, bins=bins, progress=progress)
        if ref.num_images != histogram.num_images:
            raise ValueError(f"reference has {ref.num_images} images, maps {histogram.num_images}")
    choice = choose_threshold(histogram, ref, per_class=per_class)
    return choice.per_class if per_class else choice.threshold


__all__ = ["ThresholdChoice", "ThresholdHistogram", "auto_threshold", "check_image_labels", "choose_threshold",
           "collect_histogram", "folder_threshold", "otsu_cut", "share_above", "share_cut"]
