"""Regime B's data: the part library's classes, the scale of the objects, the rider on its mount, and
the cross-activation read-out."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from lpcam_plugin.benchmark.parts import (
    inside_share,
    object_box,
    object_masks,
    place,
    pretraining_triples,
    wsss_triples,
)
from lpcam_plugin.benchmark.probes import background_prototype_share
from lpcam_plugin.benchmark.run import cross_activation
from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate
from lpcam_plugin.methods.lpcam.bank import PrototypeBank


def test_pretraining_classes_vary_one_part_each_and_share_every_part() -> None:
    triples = pretraining_triples()
    assert len(triples) == 64 and len(set(triples)) == 64
    for family in range(16):
        base, *variants = triples[4 * family:4 * family + 4]
        changed = [[k for k in range(3) if variant[k] != base[k]] for variant in variants]
        assert changed == [[0], [1], [2]]  # each part type separates a pair of classes
    for part in range(3):  # ... and each part texture is shared by several classes
        counts = np.bincount([t[part] for t in triples])
        assert counts.max() >= 2


@pytest.mark.parametrize("seed", range(6))
def test_wsss_classes_are_groups_of_library_parts_never_a_pretraining_class(seed: int) -> None:
    triples = wsss_triples(seed)
    assert not set(triples) & set(pretraining_triples())
    assert len({head for head, _, _ in triples}) == 6
    for g in range(3):
        (h0, b0, l0), (h1, b1, l1) = triples[2 * g:2 * g + 2]
        assert l0 == l1 and b0 // 2 == b1 // 2 and b0 != b1  # shared legs, a body pair of near hues


def test_placement_keeps_the_stated_share_of_the_box_inside() -> None:
    rng = np.random.default_rng(0)
    for scale, facing in itertools.product((80.0, 109.0), (1, -1)):
        for _ in range(50):
            cx, cy = place(lambda x, y, s=scale, f=facing: object_box(x, y, s, f), 128, 0.8, rng)
            assert inside_share(object_box(cx, cy, scale, facing), 128) >= 0.8
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float64)
    masks = object_masks(200, 200, 100, 1, yy, xx)
    union = masks["head"] | masks["body"] | masks["legs"]
    rows, cols = np.nonzero(union)
    x0, x1, y0, y1 = object_box(200, 200, 100, 1)
    assert abs(cols.min() - x0) <= 1 and abs(cols.max() - x1) <= 1 and abs(rows.min() - y0) <= 1
    assert abs(rows.max() - y1) <= 1


@pytest.fixture(scope="module")
def regime_b():
    return generate(SyntheticConfig.papers_regime(num_images=160), progress=False)


def test_objects_span_ten_cells_at_stride_8_and_legs_a_cell(regime_b) -> None:
    config = regime_b.config
    assert config.image_size == 128 and config.object_scale[0] * config.image_size / 8 >= 9.9
    singles = np.flatnonzero(regime_b.labels.sum(1) == 1)
    assert singles.size > 20
    for index in singles:
        body = regime_b.parts[index] == 2
        cols = np.flatnonzero(body.any(0))
        if 0 < cols.min() and cols.max() < 127:  # not cut by the border
            assert cols.max() - cols.min() + 1 >= 10 * 8 - 1
        legs = regime_b.parts[index] == 3
        widths = [np.diff(np.flatnonzero(np.diff(np.r_[0, row, 0]))).max(initial=0) for row in legs if row.any()]
        assert max(widths) >= 8  # a leg at least one stride-8 cell wide


def test_the_rider_sits_on_its_mount_with_the_stated_probability(regime_b) -> None:
    rider, mount = regime_b.pair
    assert (rider, mount) == (0, 2)
    labels = regime_b.labels
    with_mount = labels[:, mount] > 0
    share = labels[with_mount, rider].mean()
    alone = (labels[:, rider] > 0) & ~with_mount
    assert 0.4 < share < 0.85 and alone.sum() > 5  # 0.6 of images led by the mount, and riders alone too
    paired = generate(SyntheticConfig.papers_regime(num_images=60, object_count_probs=(1.0,), pair=(0, 2, 1.0)),
                      progress=False)  # one object per image: every image holding both is a rider on its mount
    both = np.flatnonzero((paired.labels[:, rider] > 0) & (paired.labels[:, mount] > 0))
    assert both.size >= 5 and (paired.labels[both].sum(1) == 2).all()
    for index in both:  # the rider is above the mount, its legs down over the mount's back
        rider_rows = np.flatnonzero((paired.masks[index] == rider + 1).any(1))
        mount_rows = np.flatnonzero((paired.masks[index] == mount + 1).any(1))
        assert rider_rows.min() < mount_rows.min() < rider_rows.max()


def test_regime_a_draws_no_pair_and_regime_b_is_deterministic(regime_b) -> None:
    again = generate(SyntheticConfig.papers_regime(num_images=8), progress=False)
    np.testing.assert_array_equal(again.images, regime_b.images[:8])
    assert generate(SyntheticConfig(num_images=4), progress=False).pair is None
    with pytest.raises(ValueError, match="pair"):
        SyntheticConfig(pair=(0, 2, 0.5))  # a pair needs the placement rule of regime B
    with pytest.raises(ValueError, match="palette"):
        SyntheticConfig(palette="imagenet")


def test_cross_activation_counts_the_other_class_on_its_pixels(regime_b) -> None:
    data = dataclasses.replace(regime_b, images=regime_b.images[:40], masks=regime_b.masks[:40],
                               parts=regime_b.parts[:40], labels=regime_b.labels[:40])
    grid = torch.zeros(40, 6, 16, 16)
    rider, mount = data.pair
    both = (data.labels[:, rider] > 0) & (data.labels[:, mount] > 0)
    assert both.any()
    assert cross_activation(grid, data, 0.5) == {"cross_rider_on_mount": 0.0, "cross_mount_on_rider": 0.0}
    grid[:, rider] = 1.0  # the rider's map everywhere: it covers the whole mount
    out = cross_activation(grid, data, 0.5)
    assert out["cross_rider_on_mount"] == 1.0 and out["cross_mount_on_rider"] == 0.0
    none = dataclasses.replace(data, labels=np.zeros_like(data.labels))
    assert all(np.isnan(v) for v in cross_activation(grid, none, 0.5).values())


def test_a_prototype_whose_cells_are_background_is_counted_as_background() -> None:
    # 2 images of class 0 on a 4 x 4 grid (16 px, 4 px per cell): the left half object, the right background
    masks = np.zeros((2, 16, 16), dtype=np.uint8)
    masks[:, :, :8] = 1
    features = torch.zeros(2, 2, 4, 4)
    features[:, 0, :, :2] = 1.0  # object cells point along e0
    features[:, 1, :, 2:] = 1.0  # background cells along e1
    labels = torch.tensor([[1.0], [1.0]])
    cams = torch.ones(2, 1, 4, 4)  # every cell in the pool
    on_object = PrototypeBank({0: torch.tensor([[1.0, 0.0]])}, {0: torch.tensor([[0.0, 1.0]])}, num_classes=1)
    on_background = PrototypeBank({0: torch.tensor([[1.0, 0.0], [0.0, 1.0]])}, num_classes=1)
    assert background_prototype_share(on_object, features, cams, labels, masks, 0.5) == {"background_prototypes": 0.0}
    assert background_prototype_share(on_background, features, cams, labels, masks, 0.5)["background_prototypes"] == 0.5
    cams[:, :, :, 2:] = 0.0  # the pool holds the object cells only: no prototype's cells are background
    assert background_prototype_share(on_background, features, cams, labels, masks, 0.5)["background_prototypes"] == 0.0
