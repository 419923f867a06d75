"""What the synthetic images are drawn from: textures, the three-part object, its placement, and the
part library that the pretraining corpus and the papers'-regime benchmark share.

- :class:`Texture` and :func:`render`: a procedural texture (colour and a stripe, dot, wave or
  noise pattern) sampled on the pixel grid.
- :func:`object_masks`: the head, body and legs of one object; :func:`object_box` its bounding box;
  :func:`place`: a position at which a stated share of a box is inside the image.
- :class:`PartLibrary` (:func:`part_library`): 12 head, 12 body (6 pairs of near hues), 6 leg and
  8 background textures, drawn from :data:`CORPUS_SEED`. A class is a *triple* of library indices
  ``(head, body, legs)``. :func:`pretraining_triples` gives the 64 pretraining classes (16 base
  triples, each with 3 variants that differ from it in exactly one part), :func:`wsss_triples` the
  6 classes of one seed of the benchmark (3 groups of 2: a head each, a body pair per group, a
  legs texture per group), never a pretraining triple. docs/design/pretrained-regime.md says why.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

#: The seed of the part library and of the pretraining corpus.
CORPUS_SEED = 1234
#: (class triple) = (head index, body index, legs index) into a :class:`PartLibrary`.
Triple = Tuple[int, int, int]
#: The object's bounding box relative to its centre, in units of its width: (left, right, top, bottom)
#: for an object facing right (the head sits on the facing side).
BOX = (-0.5, 0.75, -0.42, 0.55)


@dataclass(frozen=True)
class Texture:
    """A procedural texture: base colour, pattern kind (``stripes``, ``dots``, ``noise``, ``waves``),
    frequency in cycles per pixel, angle in radians and pattern contrast."""

    rgb: Tuple[float, float, float]
    kind: str
    frequency: float
    angle: float
    contrast: float


def hsv(h: float, s: float, v: float) -> Tuple[float, float, float]:
    """An RGB triple in [0, 1] from hue (taken modulo 1), saturation and value."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (r, g, b)


def render(texture: Texture, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture sampled on the pixel grid ``(S, S)`` -> ``(S, S, 3)`` float in about [0, 1]."""
    angle = texture.angle + rng.normal(0.0, 0.15)
    phase = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    f = 2 * np.pi * texture.frequency
    if texture.kind == "stripes":
        pattern = np.sin(f * u + phase)
    elif texture.kind == "dots":
        pattern = np.sin(f * u + phase) * np.sin(f * v + phase)
    elif texture.kind == "waves":
        pattern = np.sin(f * u + 1.5 * np.sin(0.5 * f * v) + phase)
    else:
        pattern = rng.normal(0.0, 1.0, size=u.shape).clip(-2, 2) / 2
    jitter = rng.normal(0.0, 0.04, size=3) + rng.normal(0.0, 0.05)
    rgb = np.clip(np.asarray(texture.rgb) + jitter, 0.0, 1.0)
    return rgb * (1.0 + texture.contrast * pattern[..., None])


def to_image(pixels: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """``(S, S, 3)`` float pixels in about [0, 1] plus Gaussian pixel noise -> ``(S, S, 3)`` uint8."""
    noisy = pixels + rng.normal(0.0, noise_std, size=pixels.shape)
    return np.clip(noisy * 255.0 + 0.5, 0, 255).astype(np.uint8)


def object_masks(cx: float, cy: float, scale: float, facing: int, yy: np.ndarray,
                 xx: np.ndarray) -> Dict[str, np.ndarray]:
    """Boolean ``(S, S)`` masks ``{"legs", "body", "head"}`` of one object (``scale`` = width in pixels),
    in drawing order. The legs are two bars 0.14 x ``scale`` wide."""
    a, b = 0.5 * scale, 0.3 * scale
    body = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
    hx, hy, hr = cx + facing * 0.55 * scale, cy - 0.22 * scale, 0.2 * scale
    head = (xx - hx) ** 2 + (yy - hy) ** 2 <= hr**2
    legs = np.zeros_like(body)
    for offset in (-0.25, 0.25):
        lx = cx + offset * scale
        legs |= (np.abs(xx - lx) <= 0.07 * scale) & (yy >= cy) & (yy <= cy + 0.55 * scale)
    return {"legs": legs, "body": body, "head": head}


def draw_object(pixels: np.ndarray, textures: Dict[str, Texture], cx: float, cy: float, scale: float, facing: int,
                yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Paint one object's parts over ``pixels`` ``(S, S, 3)`` in place, each with its texture of
    ``textures`` (``{"head", "body", "legs"}``), in :func:`object_masks`' order; returns those masks."""
    masks = object_masks(cx, cy, scale, facing, yy, xx)
    for name, part in masks.items():
        pixels[part] = render(textures[name], yy, xx, rng)[part]
    return masks


def object_box(cx: float, cy: float, scale: float, facing: int) -> Tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)``: the bounding box of :func:`object_masks`' object."""
    left, right, top, bottom = BOX
    if facing < 0:
        left, right = -right, -left
    return cx + left * scale, cx + right * scale, cy + top * scale, cy + bottom * scale


def inside_share(box: Tuple[float, float, float, float], size: int) -> float:
    """The share of ``box`` ``(x0, x1, y0, y1)``'s area inside the image ``[0, size]^2``."""
    x0, x1, y0, y1 = box
    inside = max(0.0, min(x1, size) - max(x0, 0.0)) * max(0.0, min(y1, size) - max(y0, 0.0))
    return inside / max((x1 - x0) * (y1 - y0), 1e-9)


def place(box_at: Callable[[float, float], Tuple[float, float, float, float]], size: int, min_inside: float,
          rng: np.random.Generator, tries: int = 100) -> Tuple[float, float]:
    """A position ``(cx, cy)``, uniform over those at which at least ``min_inside`` of the box
    ``box_at(cx, cy)`` lies inside the image (rejection sampling; the image centre after ``tries``)."""
    x0, x1, y0, y1 = box_at(0.0, 0.0)
    for _ in range(tries):
        cx = rng.uniform(-x0 - (x1 - x0) * (1 - min_inside), size - x1 + (x1 - x0) * (1 - min_inside))
        cy = rng.uniform(-y0 - (y1 - y0) * (1 - min_inside), size - y1 + (y1 - y0) * (1 - min_inside))
        if inside_share(box_at(cx, cy), size) >= min_inside:
            return float(cx), float(cy)
    return size / 2 - (x0 + x1) / 2, size / 2 - (y0 + y1) / 2


@dataclass(frozen=True)
class PartLibrary:
    """The textures that every class of the pretraining corpus and of the papers'-regime benchmark is
    made of. ``bodies[2p]`` and ``bodies[2p + 1]`` are pair ``p``: near hues, the same stripes."""

    heads: Tuple[Texture, ...]
    bodies: Tuple[Texture, ...]
    legs: Tuple[Texture, ...]
    backgrounds: Tuple[Texture, ...]


#: Hue half-distance within a body pair: regime A's +-0.08 tint spread scaled by its body specificity 0.35.
BODY_PAIR_HUE = 0.08 * 0.35


def part_library(seed: int = CORPUS_SEED) -> PartLibrary:
    """The 12 heads, 12 bodies, 6 legs and 8 backgrounds drawn from ``seed``, styled as regime A's parts."""
    rng = np.random.default_rng([seed, 0x9A27])
    heads = tuple(Texture(hsv(h, 0.9, 0.95), "dots", float(rng.uniform(0.2, 0.3)), float(rng.uniform(0, np.pi)), 0.45)
                  for h in (rng.random() + np.arange(12) / 12)[rng.permutation(12)])
    pair_hues = (rng.random() + np.arange(6) / 6)[rng.permutation(6)]
    angles = (rng.random() * np.pi + np.arange(6) * np.pi / 6)[rng.permutation(6)]
    bodies = tuple(Texture(hsv(pair_hues[p] + sign * BODY_PAIR_HUE, 0.55, 0.7), "stripes", 0.12, float(angles[p]), 0.35)
                   for p in range(6) for sign in (-1, 1))
    leg_kinds = ("noise", "stripes", "dots")
    legs = tuple(Texture(hsv(h, 0.45, 0.4), leg_kinds[i % 3], float(rng.uniform(0.15, 0.25)),
                         float(rng.uniform(0, np.pi)), 0.3)
                 for i, h in enumerate((rng.random() + np.arange(6) / 6)[rng.permutation(6)]))
    bg_kinds = ("waves", "stripes", "noise")
    backgrounds = tuple(Texture(hsv(h, 0.3, 0.55), bg_kinds[i % 3], float(rng.uniform(0.05, 0.1)),
                                float(rng.uniform(0, np.pi)), 0.3)
                        for i, h in enumerate((rng.random() + np.arange(8) / 8)[rng.permutation(8)]))
    return PartLibrary(heads, bodies, legs, backgrounds)


def pretraining_triples(seed: int = CORPUS_SEED) -> List[Triple]:
    """The 64 pretraining classes: 16 distinct base triples, each followed by its 3 variants (base with
    another head, another body, other legs); all 64 distinct."""
    rng = np.random.default_rng([seed, 0x7C1A])
    sizes = (12, 12, 6)
    triples: List[Triple] = []
    while len(triples) < 64:
        base = tuple(int(rng.integers(0, n)) for n in sizes)
        family = [base]
        for part in range(3):
            variant = list(base)
            variant[part] = int((base[part] + rng.integers(1, sizes[part])) % sizes[part])
            family.append(tuple(variant))
        if len(set(family)) == 4 and not set(family) & set(triples):
            triples += family
    return triples


def wsss_triples(seed: int, num_groups: int = 3, group_size: int = 2) -> List[Triple]:
    """The benchmark's ``num_groups x group_size`` classes for ``seed``: distinct heads, group ``g``'s
    classes on the members of one body pair and one legs texture; redrawn until no triple is a
    pretraining triple (VOC's classes are not ImageNet's; their parts are)."""
    if group_size > 2 or num_groups > 6:
        raise ValueError(f"the part library holds 6 body pairs: at most 6 groups of 2, got {num_groups} x {group_size}")
    rng = np.random.default_rng([seed, 0x3B5])
    taken = set(pretraining_triples())
    while True:
        heads = rng.permutation(12)[: num_groups * group_size]
        pairs, legs = rng.permutation(6)[:num_groups], rng.permutation(6)[:num_groups]
        triples = [(int(heads[g * group_size + m]), int(2 * pairs[g] + m), int(legs[g]))
                   for g in range(num_groups) for m in range(group_size)]
        if not set(triples) & taken:
            return triples
