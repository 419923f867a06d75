"""The figures of a ``lpcam demo`` run: what each one shows, drawn with :mod:`lpcam_plugin.benchmark.viz`.

``threshold_curve_<network>.png`` (:func:`write_threshold_curve`): mIoU vs background threshold,
one line per method, mean ± std over seeds, both optima and the automatic threshold marked. ``overlays_<network>.png``
(:func:`write_overlays`): for the first seed, per image a row of maps and a row of seed masks.
matplotlib (the ``[viz]`` extra) is needed only when a figure is drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from lpcam_plugin.benchmark.config import DemoConfig, NetworkConfig, SeedResult
from lpcam_plugin.benchmark.report import mean_std
from lpcam_plugin.benchmark.run import upsampled
from lpcam_plugin.benchmark.synthetic import SyntheticDataset
from lpcam_plugin.benchmark.viz import (
    ThresholdCurve,
    label_to_rgb,
    overlay,
    plot_grid,
    plot_threshold_curves,
    voc_palette,
)
from lpcam_plugin.core.evaluate import maps_to_prediction


def overlay_indices(data: SyntheticDataset, count: int) -> List[Tuple[int, int]]:
    """``count`` distinct ``(image index, class)`` pairs: classes in turn, each image at most once."""
    used: set = set()
    picks: List[Tuple[int, int]] = []
    for k in range(count * data.config.num_classes):
        if len(picks) == count:
            break
        c = k % data.config.num_classes
        for index in np.flatnonzero(data.labels[:, c] > 0):
            if int(index) not in used:
                used.add(int(index))
                picks.append((int(index), c))
                break
    return picks


def write_overlays(path: Path, network: NetworkConfig, result: SeedResult, data: SyntheticDataset,
                   maps: Dict[str, torch.Tensor], images: int) -> None:
    """``overlays_<network>.png``: per image a map row (image | each method's map of one class, jet)
    and a mask row (ground truth | each method's seed mask at its best t of this seed)."""
    size = data.config.image_size
    methods = list(maps)
    panels, row_titles = [], []
    for index, c in overlay_indices(data, images):
        keys = np.flatnonzero(data.labels[index] > 0)
        heat = {name: upsampled(maps[name][index, keys], size).numpy() for name in methods}
        position = list(keys).index(c)
        panels.append([data.images[index]] + [overlay(data.images[index], heat[name][position]) for name in methods])
        panels.append([label_to_rgb(data.masks[index].astype(np.int64))]
                      + [label_to_rgb(maps_to_prediction(heat[name], keys, result.sweeps[name].best_threshold))
                         for name in methods])
        row_titles += [f"{data.ids[index]}\nmap of {data.class_names[c]}",
                       "GT / seed masks\n" + ", ".join(data.class_names[int(k)] for k in keys)]
    columns = ["image (top) / GT"] + [f"{name}\nmask @ t={result.sweeps[name].best_threshold:.2f}" for name in methods]
    palette = voc_palette(data.config.num_classes + 1)
    legend = {"background": palette[0], **{name: palette[c + 1] for c, name in enumerate(data.class_names)}}
    plot_grid(panels, path, column_titles=columns, row_titles=row_titles, legend=legend,
              colorbar=("jet", "map value (max-normalised)"), panel_size=1.35,
              title=f"{network.name}, seed {result.seed}: top rows, each method's map of the named class;\n"
                    f"bottom rows, ground truth and each method's seed mask at its best t of seed {result.seed}")


def write_threshold_curve(path: Path, network: NetworkConfig, results: Sequence[SeedResult]) -> None:
    """``threshold_curve_<network>.png``: mIoU vs t per method, mean ± std over seeds, both optima and the
    automatic threshold marked."""
    curves = {}
    for name in results[0].sweeps:
        stack = 100.0 * np.stack([r.sweeps[name].miou for r in results])
        bests = [r.sweeps[name].best for r in results]
        t_best, v_best = mean_std([b["threshold"] for b in bests], 1.0), mean_std([b["miou"] for b in bests])
        several = len(results) > 1
        autos = [r.automatic[name] for r in results if name in r.automatic]
        automatic = ((float(np.mean([a["threshold"] for a in autos])), 100 * float(np.mean([a["miou"] for a in autos])))
                     if len(autos) == len(results) else None)
        curves[name] = ThresholdCurve(results[0].sweeps[name].thresholds, stack.mean(axis=0),
                                      stack.std(axis=0, ddof=1) if several else None,
                                      ((t_best["mean"], t_best["std"], v_best["mean"], v_best["std"])
                                       if several else None), automatic)
    seeds = ", ".join(str(r.seed) for r in results)
    which = f"seeds {seeds}; mean ± std band" if len(results) > 1 else f"seed {seeds}"
    plot_threshold_curves(curves, path, title=f"{network.name}: seed-mask mIoU vs background threshold ({which})")


def write_figures(out: Path, config: DemoConfig, results: Dict[str, List[SeedResult]],
                  shown: Dict[str, Tuple[SyntheticDataset, Dict[str, torch.Tensor]]]) -> None:
    """Both figures of every network of the run into ``out``; ``shown``: each network's first seed's data and maps."""
    for network in config.networks:
        first = results[network.name][0]
        data, maps = shown[network.name]
        write_threshold_curve(out / f"threshold_curve_{network.name}.png", network, results[network.name])
        write_overlays(out / f"overlays_{network.name}.png", network, first, data, maps, config.overlay_images)
