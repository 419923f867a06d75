"""Which signal sets the background threshold without masks: every candidate against the GT-best t.

    lpcam demo --out lpcam-demo --networks toyresnet bottleneck --seeds 3 --no-figures
    python benchmarks/study_auto_threshold.py lpcam-demo

For every ``<network>/seed<N>/maps.npz`` under the folder (the demo's maps of every read-out),
the script regenerates that seed's masks, sweeps the threshold with them (the GT-best t), and
scores each candidate's t, chosen without masks, by the mIoU it gives minus the GT-best mIoU.
The candidates (docs/evaluation.md, "Choosing t without masks"):

- ``otsu (all)``: Otsu over every pixel's best present-class value, the ReLU zeros included;
- ``otsu``: Otsu over the positive values (:func:`lpcam_plugin.core.threshold.otsu_cut`;
  ``auto_threshold(maps, labels)``);
- ``otsu3 upper``: the upper cut of a three-level Otsu (a zero / background / object split);
- ``image otsu``: the median over images of each image's own positive-value Otsu cut;
- ``share``: the cut keeping the share of pixels that ``otsu`` keeps on the classifier's CAM
  (``auto_threshold(maps, labels, reference=cam)``);
- ``share per class`` / ``otsu per class``: the same, one t per class from the pixels it wins.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from lpcam_plugin.benchmark.readouts import map_key
from lpcam_plugin.benchmark.run import per_image_maps
from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, confusion_matrix, seed_metrics, sweep
from lpcam_plugin.core.threshold import ThresholdHistogram, choose_threshold, otsu_cut

#: A candidate: (the maps' histogram, the CAM's histogram, per-image positive Otsu t's) -> t or (C,) t's.
Candidate = Callable[[ThresholdHistogram, ThresholdHistogram, np.ndarray], object]


def _otsu_all(hist: ThresholdHistogram) -> float:
    counts = hist.counts.sum(axis=0).astype(np.float64)
    shifted = np.concatenate([[0.0], counts])  # otsu_cut leaves bin 0 out: move every bin up one
    return float(hist.edges[max(otsu_cut(shifted) - 1, 0)])


def _otsu3_upper(hist: ThresholdHistogram, levels: int = 100) -> float:
    """Upper cut of the three-level Otsu over ``levels`` coarse bins (exhaustive over cut pairs)."""
    counts = hist.counts.sum(axis=0).astype(np.float64)
    coarse = np.add.reduceat(counts, np.linspace(0, counts.size, levels, endpoint=False).astype(int))
    centres = np.arange(levels, dtype=np.float64)
    weight, mass = np.r_[0.0, np.cumsum(coarse)], np.r_[0.0, np.cumsum(coarse * centres)]
    i, j = np.triu_indices(levels, k=1)
    keep = (i >= 1)
    i, j = i[keep], j[keep]

    def term(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        w = weight[b] - weight[a]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(w > 0, (mass[b] - mass[a]) ** 2 / w, 0.0)

    score = term(np.zeros_like(i), i) + term(i, j) + term(j, np.full_like(j, levels))
    return float(j[np.argmax(score)] / levels)


CANDIDATES: Dict[str, Candidate] = {
    "otsu (all)": lambda h, ref, per: _otsu_all(h),
    "otsu": lambda h, ref, per: choose_threshold(h).threshold,
    "otsu3 upper": lambda h, ref, per: _otsu3_upper(h),
    "image otsu": lambda h, ref, per: float(np.median(per)),
    "share": lambda h, ref, per: choose_threshold(h, ref).threshold,
    "otsu per class": lambda h, ref, per: choose_threshold(h, per_class=True).per_class,
    "share per class": lambda h, ref, per: choose_threshold(h, ref, per_class=True).per_class,
}


def _miou_at(items: List[Tuple[np.ndarray, np.ndarray]], masks: np.ndarray, t: object, num_classes: int) -> float:
    """mIoU (%) of seed masks at one t or at per-class t's ``(C,)``."""
    per_class = np.broadcast_to(np.asarray(t, dtype=np.float64), (num_classes,))
    confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for (keys, maps), mask in zip(items, masks):
        best, cls = maps.max(axis=0), keys[maps.argmax(axis=0)]
        pred = np.where(best > per_class[cls], cls + 1, 0)
        confusion += confusion_matrix(pred, mask.astype(np.int64), num_classes + 1)
    return 100 * seed_metrics(confusion)["miou"]


def study_seed(folder: Path) -> List[Dict[str, object]]:
    """Every read-out of one ``<network>/seed<N>`` folder: GT-best t and mIoU, each candidate's t and gap."""
    stored = np.load(folder / "maps.npz", allow_pickle=False)
    labels = stored["labels"]
    seed = int(folder.name[len("seed"):])
    data = generate(SyntheticConfig(num_images=labels.shape[0], seed=seed), progress=False)
    size, num_classes = data.config.image_size, labels.shape[1]

    def items_of(key: str) -> List[Tuple[np.ndarray, np.ndarray]]:
        return list(per_image_maps(torch.from_numpy(stored[key].astype(np.float32)), labels, size))

    def histogram(items: List[Tuple[np.ndarray, np.ndarray]]) -> ThresholdHistogram:
        hist = ThresholdHistogram(num_classes)
        for keys, maps in items:
            hist.add(keys, maps)
        return hist

    cam = histogram(items_of(map_key("CAM")))
    rows = []
    for key in [k for k in stored.files if k != "labels"]:
        items = items_of(key)
        result = sweep(iter(items), (m.astype(np.int64) for m in data.masks), DEFAULT_THRESHOLDS, num_classes + 1)
        hist = histogram(items)
        per_image = np.array([choose_threshold(ThresholdHistogram(num_classes).add(k, m)).threshold
                              for k, m in items])
        best = 100 * float(result.best["miou"])
        row: Dict[str, object] = {"network": folder.parent.name, "seed": seed, "method": key,
                                  "best_t": result.best_threshold, "best_miou": best}
        for name, candidate in CANDIDATES.items():
            t = candidate(hist, cam, per_image)
            row[name] = {"t": float(np.mean(t)), "gap": _miou_at(items, data.masks, t, num_classes) - best}
        rows.append(row)
        logging.info("%s", json.dumps(row))
    return rows


def render(rows: List[Dict[str, object]]) -> str:
    """Markdown: per read-out, the mean over (network, seed) runs of each candidate's gap, and the worst."""
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    runs = sorted({(str(r["network"]), int(r["seed"])) for r in rows})
    lines = [f"Gap to the GT-best t's mIoU, in points (mean over {len(runs)} runs: "
             + ", ".join(f"{n} seed {s}" for n, s in runs) + "; worst in brackets).", "",
             "| read-out | " + " | ".join(CANDIDATES) + " |", "|---|" + "---|" * len(CANDIDATES)]
    for method in methods + ["all"]:
        sel = [r for r in rows if method in ("all", r["method"])]
        cells = []
        for name in CANDIDATES:
            gaps = [r[name]["gap"] for r in sel]  # type: ignore[index]
            cells.append(f"{np.mean(gaps):+.1f} ({min(gaps):+.1f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an lpcam demo --out folder")
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows: List[Dict[str, object]] = []
    for maps_file in sorted(args.folder.glob("*/seed*/maps.npz")):
        rows += study_seed(maps_file.parent)
    if not rows:
        raise SystemExit(f"no <network>/seed<N>/maps.npz under {args.folder}")
    sys.stdout.write(render(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
