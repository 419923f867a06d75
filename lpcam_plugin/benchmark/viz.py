"""Overlays, label colouring and threshold curves (the ``[viz]`` extra: matplotlib).

Conventions: images are RGB, either uint8 or float in [0, 1]; heat maps are float in [0, 1].
:func:`overlay` blends ``image_weight * image + (1 - image_weight) * colormap(heat)``.
Figures are built with the object API on a bare :class:`matplotlib.figure.Figure` (no pyplot,
so no global figure registry and no backend selection happen here) and written with
``savefig``. matplotlib is imported lazily; without it these functions raise ``ImportError``
naming the extra (``pip install lpcam_plugin[viz]``). :func:`label_to_rgb` needs numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
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
    """Write ``fig`` as PNG through :func:`lpcam_plugin.core.io.atomic_write`."""
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


@dataclass(frozen=True)
class ThresholdCurve:
    """One method's curve over seeds for :func:`plot_threshold_curves` (values as plotted, e.g. in %).

    Attributes:
        thresholds: ``(T,)`` background thresholds.
        mean: ``(T,)`` mean over seeds.
        std: ``(T,)`` sample std over seeds, or ``None`` (one seed: no band).
        seed_best: per-seed optima as ``(mean t, std t, mean value, std value)``, or ``None``
            (one seed: the curve's peak is the seed's best).
        automatic: the threshold chosen without masks (:func:`lpcam_plugin.core.threshold.auto_threshold`)
            as ``(mean t, mean value at it)`` over seeds, or ``None``.
    """

    thresholds: np.ndarray
    mean: np.ndarray
    std: Optional[np.ndarray] = None
    seed_best: Optional[Tuple[float, float, float, float]] = None
    automatic: Optional[Tuple[float, float]] = None


def plot_threshold_curves(
    curves: Mapping[str, ThresholdCurve],
    path: PathLike,
    *,
    title: str = "seed mIoU vs background threshold",
    ylabel: str = "mIoU (%)",
) -> None:
    """Save a line plot of ``{name: curve}`` to ``path``: one line per method, a ±std band.

    Two different optima are marked and labelled, because they differ with several seeds: a
    dot on the **peak of the mean curve** (the best single threshold for all seeds), and a
    cross with ±std error bars at the **mean of the per-seed bests** (each seed at its own best
    threshold; what a mean ± std table of best-threshold rows reports; never below the mean
    curve's peak). The legend under the axes gives both as numbers. A curve with an
    ``automatic`` threshold gets a triangle there (the t chosen without masks, and its value).
    """
    matplotlib = _matplotlib()
    from matplotlib.lines import Line2D

    fig = matplotlib.figure.Figure(figsize=(7.0, 4.2 + 0.28 * len(curves)), dpi=120, layout="constrained")
    ax = fig.subplots()
    handles = []
    several = any(curve.seed_best is not None for curve in curves.values())
    for name, curve in curves.items():
        t, m = np.asarray(curve.thresholds), np.asarray(curve.mean)
        best = int(np.nanargmax(m))
        label = f"{name}: {'mean-curve peak' if several else 'peak'} {m[best]:.1f} @ t={t[best]:.2f}"
        if curve.seed_best is not None:
            t_mean, t_std, v_mean, v_std = curve.seed_best
            label += f"; mean of per-seed bests {v_mean:.1f} ± {v_std:.1f} @ t={t_mean:.2f} ± {t_std:.2f}"
        if curve.automatic is not None:
            label += f"; automatic t={curve.automatic[0]:.2f}: {curve.automatic[1]:.1f}"
        (line,) = ax.plot(t, m, label=label, linewidth=1.8)
        colour = line.get_color()
        if curve.std is not None:
            s = np.asarray(curve.std)
            ax.fill_between(t, m - s, m + s, color=colour, alpha=0.18, linewidth=0)
        ax.plot([t[best]], [m[best]], marker="o", color=colour, markersize=6)
        if curve.seed_best is not None:
            ax.errorbar([t_mean], [v_mean], xerr=[t_std], yerr=[v_std], marker="x", markersize=8, color=colour,
                        capsize=3, linewidth=1)
        if curve.automatic is not None:
            ax.plot([curve.automatic[0]], [curve.automatic[1]], marker="v", color=colour, markersize=7,
                    markeredgecolor="black", markeredgewidth=0.6)
        handles.append(line)
    handles.append(Line2D([], [], marker="o", color="grey", linestyle="none",
                          label="peak of the mean curve" if several else "peak of the curve"))
    if several:
        handles.append(Line2D([], [], marker="x", color="grey", linestyle="none",
                              label="mean ± std of per-seed best (t, mIoU)"))
    if any(curve.automatic is not None for curve in curves.values()):
        handles.append(Line2D([], [], marker="v", color="grey", markeredgecolor="black", linestyle="none",
                              label="automatic t (chosen without masks) and its mIoU" + (", mean over seeds"
                                                                                          if several else "")))
    ax.set_xlabel("background threshold t")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0.0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", fontsize=7, ncol=1, frameon=False)
    _save(fig, path)


def plot_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: PathLike,
    *,
    column_titles: Sequence[str],
    row_titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    legend: Optional[Mapping[str, np.ndarray]] = None,
    colorbar: Optional[Tuple[str, str]] = None,
    panel_size: float = 1.6,
) -> None:
    """Save a grid of RGB panels (``rows[i][j]``: ``(H, W, 3)`` uint8 or float in [0, 1]) to ``path``.

    Args:
        column_titles: one per column, over the first row.
        row_titles: one per row, left of the first column.
        title: figure title.
        legend: ``{label: (3,) uint8 RGB}`` colour swatches under the grid (e.g. class colours).
        colorbar: ``(colormap name, label)``: a colour bar for heat values in [0, 1], right of the grid.
    """
    if not rows:
        raise ValueError("rows must not be empty")
    num_cols = len(column_titles)
    if any(len(row) != num_cols for row in rows):
        raise ValueError(f"every row needs {num_cols} panels")
    matplotlib = _matplotlib()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    # fixed margins in inches (a layout engine costs seconds on a grid this size)
    left, right = (0.75 if row_titles is not None else 0.1), (0.95 if colorbar is not None else 0.1)
    top = 0.45 + (0.1 + 0.17 * (title.count("\n") + 1) if title else 0.0)
    bottom = 0.5 if legend else 0.1
    gap = 0.06
    width = left + right + num_cols * panel_size + (num_cols - 1) * gap
    height = top + bottom + len(rows) * panel_size + (len(rows) - 1) * gap
    fig = matplotlib.figure.Figure(figsize=(width, height), dpi=110)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / panel_size, hspace=gap / panel_size)
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
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.08 / height, va="top")
    if colorbar is not None:
        cmap, label = colorbar
        bar_height = min(4.0, height - top - bottom)
        cax = fig.add_axes(((width - right + 0.12) / width, (height - top - bar_height) / height,
                            0.15 / width, bar_height / height))
        bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax)
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if legend:
        swatches = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="black", linewidth=0.5, label=name)
                    for name, rgb in legend.items()]
        fig.legend(handles=swatches, loc="lower center", bbox_to_anchor=(0.5, 0.05 / height),
                   ncol=min(len(swatches), 8), fontsize=7, frameon=False)
    _save(fig, path)
