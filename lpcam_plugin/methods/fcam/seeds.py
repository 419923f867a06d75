"""Pseudo-label seeds for the decoder, drawn from the source CAMs (docs/design/fcam-spec.md, multi-label).

Per image, from the source maps resized to the image (values in [0, 1]):

- foreground candidates of each present class c: the pixels above the Otsu threshold of c's
  map (256 bins, as the authors' code thresholds ``uint8(255 * map)``) **and** where c is the
  strongest present class, eroded by a square (an erosion that would empty the region is
  skipped, as in the authors' code);
- background candidates: the pixels below the Otsu threshold of the max over the present
  classes' maps, eroded like the foreground (``bg_fraction=None``, the presets' ``"auto"``), or
  the lowest ``bg_fraction`` of the pixels of that max, ties at the cut taken in a random pixel
  order (seeded, :func:`tie_order`), never by pixel position: a ReLU CAM is exactly 0 on much of
  the image, and an order-stable sort would pile the seeds up in the top rows (an image without
  a present class gets no seeds);
- each step samples a few candidates of each region uniformly (``fg_samples`` per present
  class, ``bg_samples`` per image) and dilates them by a square; a pixel claimed by two labels
  is ignored, and so is every pixel not seeded (:data:`IGNORE_INDEX` in the seed map).

Seed maps hold 0 for background and ``c + 1`` for class c, the decoder's channel order.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

#: Label of unseeded pixels (``F.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100
#: Histogram bins of the Otsu threshold (maps in [0, 1] are read as ``uint8(255 * map)``).
OTSU_BINS = 256


class SeedRegions(NamedTuple):
    """Candidate regions of one batch.

    Attributes:
        pairs: ``(R, 2)`` long, the ``(image, class)`` of every present class, row-major.
        foreground: ``(R, H, W)`` bool, the eroded Otsu region of each pair.
        background: ``(B, H, W)`` bool.
    """

    pairs: torch.Tensor
    foreground: torch.Tensor
    background: torch.Tensor


def otsu_foreground(maps: torch.Tensor) -> torch.Tensor:
    """Pixels above each map's Otsu threshold.

    Args:
        maps: ``(M, N)`` values in [0, 1], one map per row.

    Returns:
        ``(M, N)`` bool; all False for a constant map (no threshold separates two classes).
    """
    above, _ = otsu_split(maps)
    return above


def otsu_split(maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(above, separable)``: the pixels above each row's Otsu threshold ``(M, N)`` bool (all False
    for a constant row), and whether a threshold separates two classes in that row ``(M, 1)`` bool."""
    bins = (maps.clamp(0, 1) * (OTSU_BINS - 1)).long()  # truncation, like a uint8 cast
    hist = torch.zeros(maps.shape[0], OTSU_BINS, device=maps.device, dtype=torch.float64)
    hist.scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float64))
    levels = torch.arange(OTSU_BINS, device=maps.device, dtype=torch.float64)
    weight_low = hist.cumsum(1)[:, :-1]  # pixels at or below threshold index i, i = 0 .. 254
    mass_low = (hist * levels).cumsum(1)[:, :-1]
    total, total_mass = hist.sum(1, keepdim=True), (hist * levels).sum(1, keepdim=True)
    weight_high = total - weight_low
    valid = (weight_low > 0) & (weight_high > 0)
    mean_low = mass_low / weight_low.clamp_min(1)
    mean_high = (total_mass - mass_low) / weight_high.clamp_min(1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = torch.where(valid, between, torch.full_like(between, -1.0))
    best = between.argmax(1, keepdim=True)
    separable = valid.any(1, keepdim=True)
    return (bins > best) & separable, separable


def erode(masks: torch.Tensor, size: int, iterations: int) -> torch.Tensor:
    """Binary erosion by a ``size x size`` square, ``iterations`` times; the image border does not erode.

    A mask that an iteration would empty keeps its previous state (and is not eroded further).

    Args:
        masks: ``(M, H, W)`` bool.
    """
    out = masks
    for _ in range(iterations):
        outside = (~out).float().unsqueeze(1)
        eroded = F.max_pool2d(outside, size, stride=1, padding=size // 2).squeeze(1) < 0.5
        emptied = ~eroded.flatten(1).any(1)
        out = torch.where(emptied[:, None, None], out, eroded)
    return out


def dilate(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of ``(M, H, W)`` bool masks by a ``size x size`` square."""
    if size == 1:
        return masks
    return F.max_pool2d(masks.float().unsqueeze(1), size, stride=1, padding=size // 2).squeeze(1) > 0.5


def tie_order(size: int, seed: int) -> torch.Tensor:
    """A random order of ``size`` pixels drawn from ``seed`` (CPU): the order ties are taken in.

    One order per (seed, size), shared by every image and rank, so sharded training sees the same
    seeds as one process.
    """
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def lowest(values: torch.Tensor, count: int, order: torch.Tensor) -> torch.Tensor:
    """The ``count`` lowest values of each row; among equal values, those earlier in ``order``.

    Args:
        values: ``(M, N)``.
        count: how many per row (``0 <= count <= N``).
        order: ``(N,)`` a permutation of the columns (:func:`tie_order`).

    Returns:
        ``(M, N)`` bool, ``count`` set per row.
    """
    order = order.to(values.device)
    ranked = values[:, order].argsort(dim=1, stable=True)[:, :count]  # stable: ties stay in ``order``
    chosen = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    return chosen.scatter_(1, order[ranked], True)


def seed_regions(maps: torch.Tensor, labels: torch.Tensor, *, bg_fraction: Optional[float], erosion_size: int,
                 erosion_iterations: int, tie_seed: int) -> SeedRegions:
    """The foreground candidates of each present class and the background candidates of each image.

    Args:
        maps: ``(B, C, H, W)`` source maps in [0, 1] at the image size.
        labels: ``(B, C)`` multi-hot; classes with ``labels <= 0`` are absent and never seeded.
        bg_fraction: the lowest fraction of the max over present classes that is background;
            None: the pixels below that max's own Otsu threshold, eroded like the foreground
            (none in an image where no threshold separates two classes).
        erosion_size, erosion_iterations: the square erosion of the foreground.
        tie_seed: draws the random pixel order that breaks ties at the background cut (:func:`tie_order`).
    """
    b, c, h, w = maps.shape
    present = labels.to(maps.device) > 0
    masked = maps.masked_fill(~present[:, :, None, None], -1.0)
    strongest = masked.argmax(dim=1)  # (B, H, W); only present classes can win where any is present
    pairs = torch.nonzero(present)
    class_maps = maps[pairs[:, 0], pairs[:, 1]].reshape(len(pairs), h * w)
    foreground = otsu_foreground(class_maps).reshape(len(pairs), h, w)
    foreground &= strongest[pairs[:, 0]] == pairs[:, 1, None, None]
    foreground = erode(foreground, erosion_size, erosion_iterations)
    top = masked.amax(dim=1).reshape(b, h * w)
    if bg_fraction is None:
        above, separable = otsu_split(top.clamp_min(0))
        below = erode((~above & separable).reshape(b, h, w), erosion_size, erosion_iterations)
        background = below.reshape(b, h * w) & present.any(dim=1, keepdim=True)
    else:
        count = int(bg_fraction * h * w)
        background = lowest(top, count, tie_order(h * w, tie_seed)) & present.any(dim=1, keepdim=True)
    return SeedRegions(pairs, foreground, background.reshape(b, h, w))


def sample_pixels(candidates: torch.Tensor, count: Optional[int], generator: torch.Generator) -> torch.Tensor:
    """Up to ``count`` pixels of each row's candidates, uniformly without replacement.

    Args:
        candidates: ``(M, H, W)`` bool.
        count: pixels per row; None keeps every candidate.
        generator: the random stream (any device; the keys are moved to ``candidates``' device).

    Returns:
        ``(M, H, W)`` bool, ``min(count, candidates)`` pixels set per row.
    """
    if count is None or candidates.shape[0] == 0:
        return candidates.clone()
    m, h, w = candidates.shape
    flat = candidates.reshape(m, h * w)
    keys = torch.rand(flat.shape, generator=generator, device=generator.device).to(flat.device)
    keys = keys.masked_fill(~flat, -1.0)
    values, index = keys.topk(min(count, h * w), dim=1)
    chosen = torch.zeros_like(flat)
    chosen.scatter_(1, index, values >= 0)
    return chosen.reshape(m, h, w)


def sample_seeds(regions: SeedRegions, *, fg_samples: Optional[int], bg_samples: Optional[int], dilation: int,
                 generator: torch.Generator) -> torch.Tensor:
    """Sample, dilate and merge the seeds of one batch.

    Returns:
        ``(B, H, W)`` long: 0 background, ``c + 1`` class c, :data:`IGNORE_INDEX` elsewhere and
        where two labels claim a pixel.
    """
    background = dilate(sample_pixels(regions.background, bg_samples, generator), dilation)
    foreground = dilate(sample_pixels(regions.foreground, fg_samples, generator), dilation)
    claims = background.long()
    label_sum = torch.zeros_like(claims)
    images, classes = regions.pairs[:, 0], regions.pairs[:, 1]
    claims.index_add_(0, images, foreground.long())
    label_sum.index_add_(0, images, foreground.long() * (classes + 1)[:, None, None])
    return torch.where(claims == 1, label_sum, torch.full_like(label_sum, IGNORE_INDEX))


def make_seeds(maps: torch.Tensor, labels: torch.Tensor, *, bg_fraction: Optional[float], erosion_size: int,
               erosion_iterations: int, fg_samples: Optional[int], bg_samples: Optional[int], dilation: int,
               generator: torch.Generator, tie_seed: int) -> torch.Tensor:
    """:func:`seed_regions` then :func:`sample_seeds`: ``(B, C, H, W)`` maps -> ``(B, H, W)`` seeds."""
    regions = seed_regions(maps, labels, bg_fraction=bg_fraction, erosion_size=erosion_size,
                           erosion_iterations=erosion_iterations, tie_seed=tie_seed)
    return sample_seeds(regions, fg_samples=fg_samples, bg_samples=bg_samples, dilation=dilation, generator=generator)
