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

Labels: mask ``0`` = background, ``c + 1`` = class ``c``; ``parts`` marks 1 head, 2 body, 3 legs.
Everything is a pure function of the config (tested: same seed, same bytes).
"""
from __future__ import annotations

import colorsys
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

from lpcam_plugin.core.progress import progress_bar

#: Part ids used in :attr:`SyntheticDataset.parts`.
PART_NAMES = ("background", "head", "body", "legs")
_PALETTE_KEY = {"head": "heads", "body": "bodies", "legs": "legs"}
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
    """

    images: np.ndarray
    masks: np.ndarray
    parts: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    ids: List[str]
    context: Dict[int, str]
    config: SyntheticConfig

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class _Texture:
    rgb: Tuple[float, float, float]
    kind: str  # "stripes" | "dots" | "noise" | "waves"
    frequency: float  # cycles per pixel
    angle: float  # radians
    contrast: float


def _hsv(h: float, s: float, v: float) -> Tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (r, g, b)


def _palette(config: SyntheticConfig, rng: np.random.Generator) -> Dict[str, Any]:
    """Draw the class/group/background appearance of one benchmark instance."""
    c_total, groups = config.num_classes, config.num_groups
    hue_offset = rng.random()
    head_hues = (hue_offset + np.arange(c_total) / c_total)[rng.permutation(c_total)]
    heads = [
        _Texture(_hsv(h, 0.9, 0.95), "dots", float(rng.uniform(0.2, 0.3)), float(rng.uniform(0, np.pi)), 0.45)
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
        bodies.append(_Texture(_hsv(hue, 0.55, 0.7), "stripes", 0.12, float(angles[g]), 0.35))
        legs.append(_Texture(_hsv(group_hues[g], 0.35, 0.35), "noise", 0.0, 0.0, 0.25))
    num_bg = groups + config.neutral_backgrounds
    bg_hues = (rng.random() + np.arange(num_bg) / num_bg) % 1.0
    kinds = ("waves", "stripes", "noise")
    backgrounds = [
        _Texture(_hsv(h, 0.3, 0.55), kinds[i % len(kinds)], float(rng.uniform(0.05, 0.1)),
                 float(rng.uniform(0, np.pi)), 0.3)
        for i, h in enumerate(bg_hues[rng.permutation(num_bg)])
    ]
    # background i < groups is the context of the first class of group i
    context = {g * config.group_size: g for g in range(groups)}
    return {"heads": heads, "bodies": bodies, "legs": legs, "backgrounds": backgrounds, "context": context}


def _render(texture: _Texture, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _object_masks(cx: float, cy: float, scale: float, facing: int, yy: np.ndarray,
                  xx: np.ndarray) -> Dict[str, np.ndarray]:
    """Boolean ``(S, S)`` masks of the three parts of one object (``scale`` = width in pixels)."""
    a, b = 0.5 * scale, 0.3 * scale
    body = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
    hx, hy, hr = cx + facing * 0.55 * scale, cy - 0.22 * scale, 0.2 * scale
    head = (xx - hx) ** 2 + (yy - hy) ** 2 <= hr**2
    legs = np.zeros_like(body)
    for offset in (-0.25, 0.25):
        lx = cx + offset * scale
        legs |= (np.abs(xx - lx) <= 0.07 * scale) & (yy >= cy) & (yy <= cy + 0.55 * scale)
    return {"legs": legs, "body": body, "head": head}


def generate(config: SyntheticConfig = SyntheticConfig(), *, progress: bool | None = None) -> SyntheticDataset:
    """Generate the benchmark described by ``config`` (deterministic in ``config.seed``)."""
    rng = np.random.default_rng([config.seed, 0x5EED])
    palette = _palette(config, rng)
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
        classes = image_rng.integers(0, c_total, size=count)
        first = int(classes[0])
        if first in palette["context"] and image_rng.random() < config.context_prob:
            bg_index = palette["context"][first]
        else:
            bg_index = int(image_rng.integers(0, num_bg))
        canvas = _render(palette["backgrounds"][bg_index], yy, xx, image_rng)
        for c in classes:
            scale = image_rng.uniform(*config.object_scale) * size
            margin = 0.6 * scale
            cx, cy = image_rng.uniform(margin, size - margin, size=2)
            cy = min(cy, size - 0.6 * scale)
            facing = 1 if image_rng.random() < 0.5 else -1
            for name, mask in _object_masks(cx, cy, scale, facing, yy, xx).items():
                texture = palette[_PALETTE_KEY[name]][int(c)]
                canvas[mask] = _render(texture, yy, xx, image_rng)[mask]
                masks[index][mask] = int(c) + 1
                parts[index][mask] = PART_NAMES.index(name)
            labels[index, int(c)] = 1.0
        canvas += image_rng.normal(0.0, config.noise_std, size=canvas.shape)
        images[index] = np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)
    names = [f"g{c // config.group_size}c{c % config.group_size}" for c in range(c_total)]
    context = {c: f"context-bg{g}" for c, g in palette["context"].items()}
    ids = [f"syn{config.seed:03d}_{i:05d}" for i in range(config.num_images)]
    return SyntheticDataset(images, masks, parts, labels, names, ids, context, config)


def images_to_tensor(images: np.ndarray) -> "Any":
    """``(N, S, S, 3)`` uint8 -> ``(N, 3, S, S)`` float32 tensor standardised per channel to about N(0, 1)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - PIXEL_MEAN) / PIXEL_STD
