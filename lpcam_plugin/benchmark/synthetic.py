"""A seeded synthetic weakly-supervised segmentation benchmark (images, pixel masks, image labels).

Design (what the generator models and why; measured results in docs/benchmark.md):

- **Classes come in groups** of ``group_size`` (default 3 groups of 2, like cat/dog, cow/sheep,
  bus/train). Every object has three parts, drawn as simple shapes with procedural textures:

  ``head``  a small disc (about 20 % of the object) whose colour and dot pattern are unique to
            the class: the *discriminative* part.
  ``body``  a large ellipse (about 65 %) with its group's colour and stripe orientation, plus a
            weak class-specific tint (``body_specificity`` of the colour distance between the two
            class tints): a part that is *only weakly specific* to the class.
  ``legs``  two bars under the body (about 15 %), identical for all classes of a group: a part
            whose appearance is *shared* with other classes.

  A classifier trained with image-level labels separates the classes most easily by the heads,
  so plain CAM concentrates there; bodies and legs are the false negatives LPCAM targets.
- **Backgrounds co-occur with classes.** There are ``num_groups`` context backgrounds (one per
  group, like rails for trains or water for boats) and ``neutral_backgrounds`` neutral ones.
  The first class of each group has a context: an image whose first object is of that class
  shows its context background with probability ``context_prob``. Every other image picks a
  background uniformly from all of them, so context textures also appear without their class.
  A classifier can lower its loss by scoring the context texture, which turns into CAM false
  positives; LPCAM's context prototypes are meant to subtract exactly this.
- **Nuisance variation:** 1-3 objects per image (classes drawn independently, duplicates
  allowed, later objects occlude earlier ones), random position, scale, facing direction,
  texture phase, stripe angle jitter, colour/brightness jitter and pixel noise.
- The class palette (which hue is whose head, which group has which stripe angle, which context
  texture) is drawn from the seed too, so different seeds are different benchmarks, not only
  different samples.

**Regime B** (:meth:`SyntheticConfig.papers_regime`, the papers' regime; design and reasons in
docs/design/pretrained-regime.md): the same three-part objects at 128 px and 0.62-0.85 of the side
(>= 10 cells on the stride-8 grid, legs at least a cell wide), placed so that >= 80 % of each
object's box is inside the image; 1 or 2 objects; the classes' textures come from the part library
that the pretraining corpus shares (:mod:`lpcam_plugin.benchmark.parts`), and a rider class sits on
a mount class with a stated probability (``pair``: the rider's legs over the mount's back).

Labels: mask ``0`` = background, ``c + 1`` = class ``c``; ``parts`` marks 1 head, 2 body, 3 legs.
Everything is a pure function of the config (tested: same seed, same bytes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lpcam_plugin.benchmark.parts import (
    BOX,
    Texture,
    draw_object,
    hsv,
    object_box,
    part_library,
    place,
    render,
    to_image,
    wsss_triples,
)
from lpcam_plugin.core.progress import progress_bar

#: Part ids used in :attr:`SyntheticDataset.parts`.
PART_NAMES = ("background", "head", "body", "legs")
_PALETTE_KEY = {"head": "heads", "body": "bodies", "legs": "legs"}
#: Where the class textures come from: drawn per seed (regime A) or from the part library (regime B).
PALETTES = ("seeded", "library")
#: Regime B's images per seed: the design's cost rule (the demo stays about 5 minutes on 2 cores) cut the
#: planned 500 to 250 after the first timing run (docs/design/pretrained-regime.md, "Cost").
PAPERS_REGIME_IMAGES = 250
#: A rider's width as a fraction of its mount's.
RIDER_SCALE = (0.6, 0.75)
#: The networks' input standardisation of [0, 1] pixels, every channel (:func:`images_to_tensor`;
#: ``lpcam fit --synthetic`` feeds the same).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator (all defaults documented in the module docstring)."""

    num_images: int = 500
    image_size: int = 80
    num_groups: int = 3
    group_size: int = 2
    neutral_backgrounds: int = 2
    context_prob: float = 0.7
    body_specificity: float = 0.35
    object_scale: Tuple[float, float] = (0.35, 0.55)  # object width as a fraction of the image side
    object_count_probs: Tuple[float, ...] = (0.6, 0.3, 0.1)  # P(1 object), P(2), P(3)
    noise_std: float = 0.04
    seed: int = 0
    palette: str = "seeded"
    min_inside: Optional[float] = None
    pair: Optional[Tuple[int, int, float]] = None

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.num_groups < 1 or self.group_size < 1:
            raise ValueError("num_groups and group_size must be >= 1")
        if not 0.0 <= self.context_prob <= 1.0:
            raise ValueError(f"context_prob must be in [0, 1], got {self.context_prob}")
        if not 0.0 <= self.body_specificity <= 1.0:
            raise ValueError(f"body_specificity must be in [0, 1], got {self.body_specificity}")
        low, high = self.object_scale
        if not 0.05 <= low <= high <= 0.9:
            raise ValueError(f"object_scale must satisfy 0.05 <= low <= high <= 0.9, got {self.object_scale}")
        probs = np.asarray(self.object_count_probs, dtype=np.float64)
        if probs.size == 0 or (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
            raise ValueError(f"object_count_probs must be non-negative and sum to 1, got {self.object_count_probs}")
        if self.palette not in PALETTES:
            raise ValueError(f"palette must be one of {PALETTES}, got {self.palette!r}")
        if self.min_inside is not None and not 0.0 < self.min_inside <= 1.0:
            raise ValueError(f"min_inside must be in (0, 1] or None, got {self.min_inside}")
        if self.pair is not None:
            rider, mount, prob = self.pair
            if not (0 <= rider < self.num_classes and 0 <= mount < self.num_classes and rider != mount
                    and 0.0 <= prob <= 1.0 and self.min_inside is not None):
                raise ValueError(f"pair must be (rider, mount, probability) of two classes with min_inside set, "
                                 f"got {self.pair}")

    @classmethod
    def papers_regime(cls, **changes: Any) -> "SyntheticConfig":
        """Regime B (docs/design/pretrained-regime.md): 250 images of 128 px, objects 0.62-0.85 of the side
        placed with >= 80 % of their box inside, 1 or 2 objects, classes made of the part library,
        class 0 rides class 2 in 60 % of the images whose first object is class 2."""
        settings: Dict[str, Any] = dict(num_images=PAPERS_REGIME_IMAGES, image_size=128, object_scale=(0.62, 0.85),
                                        object_count_probs=(0.55, 0.45), palette="library", min_inside=0.8,
                                        pair=(0, 2, 0.6))
        return cls(**{**settings, **changes})

    @property
    def regime(self) -> str:
        """``"B"`` for a config whose classes come from the part library (:meth:`papers_regime`), else ``"A"``."""
        return "B" if self.palette == "library" else "A"

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``C``."""
        return self.num_groups * self.group_size

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Short stable hash of the config (used to key cached checkpoints)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SyntheticDataset:
    """Generated data.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB.
        masks: ``(N, S, S)`` uint8, 0 = background, ``c + 1`` = class ``c``.
        parts: ``(N, S, S)`` uint8 part ids (:data:`PART_NAMES`).
        labels: ``(N, C)`` float32 multi-hot image labels.
        class_names: ``C`` names; ``ids``: ``N`` image ids.
        context: ``{class: background name}`` for the classes with a context background.
        config: the generating :class:`SyntheticConfig`.
        pair: ``(rider, mount)`` classes of the co-occurring pair (``config.pair``), None without one.
    """

    images: np.ndarray
    masks: np.ndarray
    parts: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    ids: List[str]
    context: Dict[int, str]
    config: SyntheticConfig
    pair: Optional[Tuple[int, int]] = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _palette(config: SyntheticConfig, rng: np.random.Generator) -> Dict[str, Any]:
    """Draw the class/group/background appearance of one benchmark instance."""
    c_total, groups = config.num_classes, config.num_groups
    hue_offset = rng.random()
    head_hues = (hue_offset + np.arange(c_total) / c_total)[rng.permutation(c_total)]
    heads = [
        Texture(hsv(h, 0.9, 0.95), "dots", float(rng.uniform(0.2, 0.3)), float(rng.uniform(0, np.pi)), 0.45)
        for h in head_hues
    ]
    group_hues = (rng.random() + np.arange(groups) / groups) % 1.0
    angles = (rng.random() * np.pi + np.arange(groups) * np.pi / groups)[rng.permutation(groups)]
    bodies, legs = [], []
    for c in range(c_total):
        g, member = divmod(c, config.group_size)
        # class tints within a group are spread +-0.08 in hue around the group hue; specificity scales it
        spread = 0.0 if config.group_size == 1 else (member / (config.group_size - 1) - 0.5) * 0.16
        hue = group_hues[g] + config.body_specificity * spread
        bodies.append(Texture(hsv(hue, 0.55, 0.7), "stripes", 0.12, float(angles[g]), 0.35))
        legs.append(Texture(hsv(group_hues[g], 0.35, 0.35), "noise", 0.0, 0.0, 0.25))
    num_bg = groups + config.neutral_backgrounds
    bg_hues = (rng.random() + np.arange(num_bg) / num_bg) % 1.0
    kinds = ("waves", "stripes", "noise")
    backgrounds = [
        Texture(hsv(h, 0.3, 0.55), kinds[i % len(kinds)], float(rng.uniform(0.05, 0.1)),
                 float(rng.uniform(0, np.pi)), 0.3)
        for i, h in enumerate(bg_hues[rng.permutation(num_bg)])
    ]
    # background i < groups is the context of the first class of group i
    context = {g * config.group_size: g for g in range(groups)}
    return {"heads": heads, "bodies": bodies, "legs": legs, "backgrounds": backgrounds, "context": context}


def _library_palette(config: SyntheticConfig, rng: np.random.Generator) -> Dict[str, Any]:
    """The classes of one papers'-regime benchmark: :func:`~lpcam_plugin.benchmark.parts.wsss_triples`
    of the part library; ``num_groups + neutral_backgrounds`` of its backgrounds, drawn from ``rng``."""
    library = part_library()
    triples = wsss_triples(config.seed, config.num_groups, config.group_size)
    num_bg = config.num_groups + config.neutral_backgrounds
    if num_bg > len(library.backgrounds):
        raise ValueError(f"the part library holds {len(library.backgrounds)} backgrounds, the config asks {num_bg}")
    chosen = rng.permutation(len(library.backgrounds))[:num_bg]
    return {"heads": [library.heads[h] for h, _, _ in triples], "bodies": [library.bodies[b] for _, b, _ in triples],
            "legs": [library.legs[legs] for _, _, legs in triples],
            "backgrounds": [library.backgrounds[i] for i in chosen],
            "context": {g * config.group_size: g for g in range(config.num_groups)}, "triples": triples}


class _Canvas:
    """One image being drawn: its pixels ``(S, S, 3)`` float, its class mask and part mask ``(S, S)``."""

    def __init__(self, pixels: np.ndarray, mask: np.ndarray, parts: np.ndarray, palette: Dict[str, Any],
                 yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> None:
        self.pixels, self.mask, self.parts, self.palette = pixels, mask, parts, palette
        self.yy, self.xx, self.rng = yy, xx, rng

    def draw(self, c: int, cx: float, cy: float, scale: float, facing: int) -> None:
        """Draw an object of class ``c`` over what is there (it occludes earlier objects)."""
        textures = {name: self.palette[key][c] for name, key in _PALETTE_KEY.items()}
        for name, part in draw_object(self.pixels, textures, cx, cy, scale, facing, self.yy, self.xx,
                                      self.rng).items():
            self.mask[part] = c + 1
            self.parts[part] = PART_NAMES.index(name)


def _rider_offset(scale: float, rng: np.random.Generator) -> Tuple[float, float, float]:
    """Where a rider sits on a mount of width ``scale``: ``(dx, dy, rider width)`` from the mount's centre;
    the rider's legs end at the mount's centre line, so they cover its back."""
    rider = rng.uniform(*RIDER_SCALE) * scale
    return rng.uniform(-0.1, 0.1) * scale, -BOX[3] * rider, rider


def _draw_objects(canvas: _Canvas, classes: List[int], rider: Optional[int], config: SyntheticConfig) -> None:
    """Draw ``classes`` in order (and ``rider`` on the first, when given), placed by the config's rule."""
    size, rng = config.image_size, canvas.rng
    for k, c in enumerate(classes):
        scale = rng.uniform(*config.object_scale) * size
        if config.min_inside is None:
            margin = 0.6 * scale
            cx, cy = rng.uniform(margin, size - margin, size=2)
            cy = min(cy, size - 0.6 * scale)
            facing = 1 if rng.random() < 0.5 else -1
            canvas.draw(c, cx, cy, scale, facing)
            continue
        facing = 1 if rng.random() < 0.5 else -1
        on_top = _rider_offset(scale, rng) if rider is not None and k == 0 else None

        def box_at(x: float, y: float, scale: float = scale, facing: int = facing,
                   on_top: Optional[Tuple[float, float, float]] = on_top) -> Tuple[float, float, float, float]:
            x0, x1, y0, y1 = object_box(x, y, scale, facing)
            if on_top is None:
                return x0, x1, y0, y1
            r0, r1, s0, s1 = object_box(x + on_top[0], y + on_top[1], on_top[2], facing)
            return min(x0, r0), max(x1, r1), min(y0, s0), max(y1, s1)

        cx, cy = place(box_at, size, config.min_inside, rng)
        canvas.draw(c, cx, cy, scale, facing)
        if on_top is not None and rider is not None:
            canvas.draw(rider, cx + on_top[0], cy + on_top[1], on_top[2], facing)


def generate(config: SyntheticConfig = SyntheticConfig(), *, progress: bool | None = None) -> SyntheticDataset:
    """Generate the benchmark described by ``config`` (deterministic in ``config.seed``)."""
    rng = np.random.default_rng([config.seed, 0x5EED])
    palette = _palette(config, rng) if config.palette == "seeded" else _library_palette(config, rng)
    size, c_total = config.image_size, config.num_classes
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.zeros((config.num_images, size, size, 3), dtype=np.uint8)
    masks = np.zeros((config.num_images, size, size), dtype=np.uint8)
    parts = np.zeros_like(masks)
    labels = np.zeros((config.num_images, c_total), dtype=np.float32)
    counts = np.arange(1, len(config.object_count_probs) + 1)
    num_bg = len(palette["backgrounds"])
    for index in progress_bar(range(config.num_images), progress=progress, desc="generate", total=config.num_images):
        image_rng = np.random.default_rng([config.seed, index])
        count = int(image_rng.choice(counts, p=config.object_count_probs))
        classes = [int(c) for c in image_rng.integers(0, c_total, size=count)]
        first = classes[0]
        rider = None
        if config.pair is not None and first == config.pair[1] and image_rng.random() < config.pair[2]:
            classes, rider = [first], int(config.pair[0])
        if first in palette["context"] and image_rng.random() < config.context_prob:
            bg_index = palette["context"][first]
        else:
            bg_index = int(image_rng.integers(0, num_bg))
        canvas = _Canvas(render(palette["backgrounds"][bg_index], yy, xx, image_rng), masks[index], parts[index],
                         palette, yy, xx, image_rng)
        _draw_objects(canvas, classes, rider, config)
        labels[index, classes + ([] if rider is None else [rider])] = 1.0
        images[index] = to_image(canvas.pixels, config.noise_std, image_rng)
    names = [f"g{c // config.group_size}c{c % config.group_size}" for c in range(c_total)]
    context = {c: f"context-bg{g}" for c, g in palette["context"].items()}
    ids = [f"syn{config.seed:03d}_{i:05d}" for i in range(config.num_images)]
    pair = None if config.pair is None else (int(config.pair[0]), int(config.pair[1]))
    return SyntheticDataset(images, masks, parts, labels, names, ids, context, config, pair)


def images_to_tensor(images: np.ndarray) -> "Any":
    """``(N, S, S, 3)`` uint8 -> ``(N, 3, S, S)`` float32 tensor standardised per channel to about N(0, 1)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - PIXEL_MEAN) / PIXEL_STD
