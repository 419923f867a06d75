"""auto_threshold: the background threshold from maps and image labels, without masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lpcam_plugin import auto_threshold
from lpcam_plugin.core.evaluate import maps_to_prediction
from lpcam_plugin.core.threshold import ThresholdHistogram, choose_threshold, collect_histogram

#: Object values lie in [0.55, 1], background values in (0, 0.45] or exactly 0 (ReLU): every t in
#: [0.45, 0.55) separates them, so the ideal t is known.
IDEAL = (0.45, 0.55)


def _scene(n: int = 40, classes: int = 3, size: int = 24, seed: int = 0):
    """``(N, C, S, S)`` maps, ``(N, C)`` labels, ``(N, S, S)`` object masks with a known ideal t."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, classes), dtype=np.int64)
    maps = np.zeros((n, classes, size, size), dtype=np.float32)
    objects = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        present = rng.choice(classes, size=rng.integers(1, classes + 1), replace=False)
        labels[i, present] = 1
        for c in present:
            top, left = rng.integers(0, size - 8, size=2)
            obj = np.zeros((size, size), dtype=bool)
            obj[top:top + rng.integers(4, 9), left:left + rng.integers(4, 9)] = True
            background = np.where(rng.random((size, size)) < 0.4, 0.0, rng.uniform(0.01, IDEAL[0], (size, size)))
            maps[i, c] = np.where(obj, rng.uniform(IDEAL[1], 1.0, (size, size)), background)
            objects[i] |= obj
    return maps, labels, objects


def test_finds_the_known_ideal_threshold_and_its_masks_are_exact():
    maps, labels, objects = _scene()
    t = auto_threshold(maps, labels)
    assert IDEAL[0] <= t < IDEAL[1]
    for i in range(len(maps)):
        keys = np.flatnonzero(labels[i])
        assert np.array_equal(maps_to_prediction(maps[i, keys], keys, t) > 0, objects[i])


def test_a_reference_cam_transfers_its_foreground_share_to_maps_with_other_values():
    # An LPCAM-like read-out: the same ranking of pixels, values squeezed towards 1 (its ideal t is ~0.85-0.89).
    cam, labels, objects = _scene(seed=1)
    squeezed = cam ** 0.2
    ideal = (IDEAL[0] ** 0.2, IDEAL[1] ** 0.2)
    assert not ideal[0] <= auto_threshold(squeezed, labels) < ideal[1]  # its own values mislead Otsu
    choice = choose_threshold(collect_histogram(squeezed, labels), collect_histogram(cam, labels))
    assert choice.rule == "share" and ideal[0] <= choice.threshold < ideal[1]
    assert auto_threshold(squeezed, labels, reference=cam) == choice.threshold
    assert choice.foreground_share == pytest.approx(objects.mean(), abs=1e-9)


def test_foreground_share_is_the_share_of_pixels_strictly_above_t():
    maps, labels, _ = _scene(seed=2)
    choice = choose_threshold(collect_histogram(maps, labels))
    best = np.where(labels[:, :, None, None] > 0, maps, -1).max(axis=1)
    assert choice.foreground_share == pytest.approx(float((best > choice.threshold).mean()), abs=1e-12)


def test_per_class_thresholds_follow_each_class():
    maps, labels, _ = _scene(classes=2, seed=3)
    maps[:, 1] *= 0.5  # class 1's ideal t is halved
    per_class = auto_threshold(maps, labels, per_class=True)
    assert per_class.shape == (2,)
    assert IDEAL[0] <= per_class[0] < IDEAL[1] and IDEAL[0] / 2 <= per_class[1] < IDEAL[1] / 2


def test_the_image_order_does_not_matter():
    maps, labels, _ = _scene(seed=4)
    order = np.random.default_rng(0).permutation(len(maps))
    assert auto_threshold(maps, labels) == auto_threshold(maps[order], labels[order])
    assert auto_threshold(maps, labels, reference=maps ** 2) == auto_threshold(maps[order], labels[order],
                                                                                reference=(maps ** 2)[order])


def test_streaming_equals_in_memory_in_every_input_form():
    maps, labels, _ = _scene(seed=5)
    whole = auto_threshold(maps, labels)
    assert auto_threshold(torch.from_numpy(maps), torch.from_numpy(labels)) == whole
    assert auto_threshold(iter(list(maps)), labels) == whole
    # per image (argmax) and per batch (vectorised) count the same winners, ties at 0 included
    assert np.array_equal(collect_histogram(iter(list(maps)), labels).counts, collect_histogram(maps, labels).counts)
    pairs = ((np.flatnonzero(y), m[np.flatnonzero(y)]) for m, y in zip(maps, labels))
    assert auto_threshold(pairs, num_classes=labels.shape[1]) == whole
    shards = [collect_histogram(maps[s:s + 7], labels[s:s + 7]) for s in range(0, len(maps), 7)]
    merged = ThresholdHistogram(labels.shape[1])
    for shard in shards:
        merged.update(shard)
    assert np.array_equal(merged.counts, collect_histogram(maps, labels).counts)
    assert merged.num_images == len(maps)


def test_absent_classes_maps_are_ignored():
    maps, labels, _ = _scene(seed=6)
    noisy = np.where(labels[:, :, None, None] > 0, maps, 1.0).astype(np.float32)
    assert auto_threshold(noisy, labels) == auto_threshold(maps, labels)


@pytest.mark.parametrize("change, message", [
    (lambda m, y: (np.where(m > 0.9, np.nan, m), y), "NaN"),
    (lambda m, y: (m, np.zeros_like(y)), "empty labels"),
    (lambda m, y: (m[:, 0], y), r"\(N, C, H, W\)"),
    (lambda m, y: (m, y[:, :2]), r"\(N, C, H, W\)"),
    (lambda m, y: (m * 3, y), "max-normalised"),
    (lambda m, y: (m, y[:, :, None]), r"\(N, C\)"),
    (lambda m, y: (m, y * 2), "multi-hot"),
])
def test_bad_input_gets_a_one_line_error(change, message):
    maps, labels, _ = _scene(n=6, seed=7)
    bad_maps, bad_labels = change(maps, labels)
    with pytest.raises(ValueError, match=message) as error:
        auto_threshold(bad_maps, bad_labels)
    assert "\n" not in str(error.value)


def test_streams_are_checked_against_the_labels_and_the_reference():
    maps, labels, _ = _scene(n=6, seed=8)
    with pytest.raises(ValueError, match="yield 5 images but labels have 6"):
        auto_threshold(iter(list(maps[:5])), labels)
    with pytest.raises(ValueError, match=r"image 0: maps must be \(C=3, H, W\)"):
        auto_threshold(iter(list(maps[:, :2])), labels)
    with pytest.raises(ValueError, match="num_classes"):
        auto_threshold(iter([]))
    with pytest.raises(ValueError, match="keys, \\(K, H, W\\) maps\\) pairs"):
        auto_threshold(iter(list(maps)), num_classes=3)
    with pytest.raises(ValueError, match="no images"):
        auto_threshold(iter([]), num_classes=3)
    with pytest.raises(ValueError, match=r"maps must be \(N, C, H, W\)"):
        auto_threshold(maps, labels, reference=maps[:, :, :4, :4][:3])


def test_a_stream_of_images_of_several_sizes_counts_as_each_image_alone():
    small, labels, _ = _scene(n=10, size=16, seed=9)
    large, _, _ = _scene(n=10, size=24, seed=10)
    pairs = []
    for i in range(10):
        keys = np.flatnonzero(labels[i])
        pairs.append((keys, (small if i % 3 else large)[i, keys]))
    streamed = collect_histogram(iter(pairs), num_classes=3)
    alone = ThresholdHistogram(3)
    for keys, maps in pairs:
        alone.update(ThresholdHistogram(3).add(keys, maps))
    assert np.array_equal(streamed.counts, alone.counts) and streamed.num_images == alone.num_images == 10
    with pytest.raises(ValueError, match="one size at a time"):
        ThresholdHistogram(3).add_images(pairs[:3])
