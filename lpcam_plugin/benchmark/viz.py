"""Overlays, label colouring and threshold curves (the ``[viz]`` extra: matplotlib).

Conventions: images are RGB, either uint8 or float in [0, 1]; heat maps are float in [0, 1].
:func:`overlay` blends ``image_weight * image + (1 - image_weight) * colormap(heat)``.
Figures are built with the object API on a bare :class:`matplotlib.figure.Figure` (no pyplot,
so no global figure registry and no backend selection happen here) and written with
``savefig``. matplotlib is imported lazily; without it these functions raise ``ImportError``
naming the extra (``pip install lpcam_plugin[viz]``). :func:`label_to_rgb` needs numpy only.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.io import PathLike


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (makes matplotlib.figure available)
    except Exception as error:  # a broken install can raise more than ImportError
        raise ImportError("plotting needs matplotlib: pip install lpcam_plugin[viz]") from error
    return matplotlib


def _as_float_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    array = array.astype(np.float64)
    if array.min() < 0.0 or array.max() > 1.0:
        raise ValueError("float images must lie in [0, 1] (pass uint8 for 0..255)")
    return array


def _save(fig: Any, path: PathLike) -> None:
    """Write ``fig`` as PNG through :func:`lpcam_plugin.io.atomic_write`."""
    from lpcam_plugin.core.io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")


def overlay(image: np.ndarray, heat: np.ndarray, *, image_weight: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a heat map over an image.

    Args:
        image: ``(H, W, 3)`` RGB, uint8 or float in [0, 1].
        heat: ``(H, W)`` values in [0, 1] (clipped).
        image_weight: weight of the image; the colour-mapped heat gets ``1 - image_weight``.
        cmap: matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` float64 RGB in [0, 1].
    """
    rgb = _as_float_image(image)
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match image {rgb.shape[:2]}")
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    colours = _matplotlib().colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    return image_weight * rgb + (1.0 - image_weight) * colours


def voc_palette(num_labels: int = 256) -> np.ndarray:
    """The PASCAL VOC colour palette: ``(num_labels, 3)`` uint8 (label 255 is white-ish in VOC PNGs)."""
    palette = np.zeros((num_labels, 3), dtype=np.uint8)
    for label in range(num_labels):
        value, r, g, b = label, 0, 0, 0
        for shift in range(8):
            r |= ((value >> 0) & 1) << (7 - shift)
            g |= ((value >> 1) & 1) << (7 - shift)
            b |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


def label_to_rgb(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``(H, W)`` integer labels -> ``(H, W, 3)`` uint8 with VOC colours; ``ignore_index`` is white."""
    labels = np.asarray(mask)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"mask must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    palette = voc_palette(256)
    palette[ignore_index % 256] = 255
    return palette[np.clip(labels, 0, 255)]


def plot_threshold_curves(
    curves: Mapping[str, Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]],
    path: PathLike,
    *,
    title: str = "seed mIoU vs background threshold",
    ylabel: str = "mIoU (%)",
) -> None:
    """Save a line plot of ``{name: (thresholds (T,), mean (T,), std (T,) or None)}`` to ``path``.

    Each curve's maximum is marked; a std band is drawn when given (values as given, e.g. in %).
    """
    matplotlib = _matplotlib()
    fig = matplotlib.figure.Figure(figsize=(6.0, 4.0), dpi=120)
    ax = fig.subplots()
    for name, (thresholds, mean, std) in curves.items():
        t, m = np.asarray(thresholds), np.asarray(mean)
        (line,) = ax.plot(t, m, label=name, linewidth=1.8)
        if std is not None:
            s = np.asarray(std)
            ax.fill_between(t, m - s, m + s, color=line.get_color(), alpha=0.2, linewidth=0)
        best = int(np.nanargmax(m))
        ax.plot([t[best]], [m[best]], marker="o", color=line.get_color())
        ax.annotate(f"{m[best]:.1f} @ {t[best]:.2f}", (t[best], m[best]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xlabel("background threshold t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower center")
    fig.tight_layout()
    _save(fig, path)


def plot_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: PathLike,
    *,
    column_titles: Sequence[str],
    row_titles: Optional[Sequence[str]] = None,
    panel_size: float = 1.6,
) -> None:
    """Save a grid of RGB panels (``rows[i][j]``: ``(H, W, 3)`` uint8 or float in [0, 1]) to ``path``."""
    if not rows:
        raise ValueError("rows must not be empty")
    num_cols = len(column_titles)
    if any(len(row) != num_cols for row in rows):
        raise ValueError(f"every row needs {num_cols} panels")
    matplotlib = _matplotlib()
    fig = matplotlib.figure.Figure(figsize=(panel_size * num_cols, panel_size * len(rows) + 0.3), dpi=120)
    axes = np.asarray(fig.subplots(len(rows), num_cols, squeeze=False))
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = axes[i, j]
            ax.imshow(_as_float_image(panel), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column_titles[j], fontsize=8)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=7)
    fig.tight_layout()
    _save(fig, path)
