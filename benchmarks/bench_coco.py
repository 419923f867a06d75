"""LPCAM at COCO's scale (run by hand): the fit and the maps on 80 classes against a VOC-shaped run,
in one invocation.

    python benchmarks/bench_coco.py                  # COCO-shaped 20,000 and 80,000 images, VOC-shaped 20,000
    python benchmarks/bench_coco.py --images 1000 --pool-cap 1000   # quicker: pools full at 1,000 images
    python benchmarks/bench_coco.py --images 1000 --pool-cap 1000 --reference   # + the reference's draws

Each run is a fresh subprocess: ``LPCAM.partial_fit`` over every image in batches of 16 (the
preset's pools: ``pool_cap`` 10,000 per class and pool), ``fit_prototypes`` (K-means and selection
for every class), then the maps of every image's present classes (``lpcam(features, labels)``).
``--pool-cap`` lowers the pools' bound so that a smaller run fills them: memory is flat from 1x to
4x only once the pools are full (a class in a fraction p of the images fills a pool of n features
after about n / (300 p) images).
Features are D = 2048 on a 32 x 32 grid (IRN's stage 4 on a 512-pixel crop): 4 random feature
batches, drawn once and cycled under distinct image ids (the pools' sampling keys derive from the
ids), so the timings hold the method's work, not the generator's. Baseline CAMs: each present class
covers a random 30 % block of the grid. Labels:

- COCO-shaped: 80 classes, independent Bernoulli draws with a Zipf-like frequency (``0.45 k^-a``,
  person-like class 1 in 45 % of images, ``a`` set so that an image holds 2.9 classes on average,
  COCO 2014 train's figure), redrawn when empty; the COCO preset (K = 20, split 0.25);
- VOC-shaped: 20 classes, 1.5 classes per image, first class in 30 %; the VOC preset (K = 12).

``--reference`` adds two COCO-shaped runs whose fit feeds the COCO preset's ``reference`` sample
(:func:`lpcam_plugin.fit_plan`: the reference's ``split_100``, 100 draws per class with replacement,
one class per draw, 8,000 entries whatever the dataset's size) instead of every image: its fit cost
stays the same from 1x to 4x the images, while the maps still cover every image.

Peak RSS is the process's (VmHWM) after the run; seconds per image are measured inside the calls.
Targets (issue 21): peak RSS from 1x to 4x the images within 10 %; COCO's seconds per image
within 1.5x of VOC's. Run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from bench_core import peak_mb, run_in_subprocess

DIM, SIDE, BATCH, DISTINCT_BATCHES = 2048, 32, 16, 4
SHAPES = {"coco": (80, 2.9, 0.45, "coco"), "voc": (20, 1.5, 0.30, "voc")}


def class_frequencies(classes: int, per_image: float, top: float) -> np.ndarray:
    """``top * k^-a`` for k = 1..classes, with ``a`` chosen (bisection) so the frequencies sum to ``per_image``."""
    low, high = 0.0, 5.0
    ranks = np.arange(1, classes + 1, dtype=np.float64)
    for _ in range(60):
        a = (low + high) / 2
        low, high = (a, high) if (top * ranks ** -a).sum() > per_image else (low, a)
    return top * ranks ** -((low + high) / 2)


def draw_labels(images: int, frequencies: np.ndarray, seed: int) -> torch.Tensor:
    """``(images, C)`` multi-hot labels, each class drawn independently, empty rows redrawn."""
    rng = np.random.default_rng(seed)
    labels = rng.random((images, frequencies.size)) < frequencies
    empty = ~labels.any(1)
    while empty.any():
        labels[empty] = rng.random((int(empty.sum()), frequencies.size)) < frequencies
        empty = ~labels.any(1)
    return torch.from_numpy(labels.astype(np.float32))


def fit_batches(labels: torch.Tensor, sampling: str) -> List[Tuple[List[int], torch.Tensor]]:
    """``(image indices, (B, C) labels fed)`` batches of the fit: every image with its labels
    (``"all"``), or the reference's per-class draws, one class each (``"reference"``)."""
    if sampling == "all":
        return [(list(range(start, min(start + BATCH, len(labels)))), labels[start:start + BATCH])
                for start in range(0, len(labels), BATCH)]
    from lpcam_plugin import fit_plan

    entries = fit_plan(labels.numpy(), sampling, 100, seed=0)
    batches = []
    for start in range(0, len(entries), BATCH):
        chunk = entries[start:start + BATCH]
        fed = torch.zeros(len(chunk), labels.shape[1])
        for row, (_, classes) in enumerate(chunk):
            fed[row, list(classes or ())] = 1.0
        batches.append(([index for index, _ in chunk], fed))
    return batches


def run(shape: str, images: int, pool_cap: int, sampling: str = "all") -> Dict[str, float]:
    """One run of ``shape`` ("coco" or "voc") over ``images`` images with pools of ``pool_cap``
    features, the fit fed by ``sampling`` (``"all"`` or ``"reference"``): milliseconds per image and peak RSS."""
    from lpcam_plugin import LPCAM

    classes, per_image, top, preset = SHAPES[shape]
    labels = draw_labels(images, class_frequencies(classes, per_image, top), seed=1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.relu(torch.randn(BATCH, DIM, SIDE, SIDE, generator=g)) for _ in range(DISTINCT_BATCHES)]
    weight = torch.randn(classes, DIM, generator=g)
    model = LPCAM(classes, preset, pool_cap=pool_cap, progress=False)
    fit_seconds = 0.0
    fed_batches = fit_batches(labels, sampling)
    for index, (ids, batch_labels) in enumerate(fed_batches):
        features = batches[index % DISTINCT_BATCHES][:batch_labels.shape[0]]
        cams = torch.zeros(batch_labels.shape[0], classes, SIDE, SIDE)
        corner = torch.randint(0, SIDE - 10, (batch_labels.shape[0], 2), generator=g)
        for b, (y, x) in enumerate(corner.tolist()):
            cams[b, :, y:y + 17, x:x + 18] = 1.0  # 30 % of the grid
        begin = time.perf_counter()
        model.partial_fit(features, batch_labels, cams=cams, ids=ids)
        fit_seconds += time.perf_counter() - begin
    begin = time.perf_counter()
    model.fit_prototypes(weight)
    prototype_seconds = time.perf_counter() - begin
    map_seconds = 0.0
    for index, start in enumerate(range(0, images, BATCH)):
        batch_labels = labels[start:start + BATCH]
        begin = time.perf_counter()
        model(batches[index % DISTINCT_BATCHES][:batch_labels.shape[0]], batch_labels, fallback="cam")
        map_seconds += time.perf_counter() - begin
    kept = sum(len(pool) for pool in model.foreground_pools_.values())
    return {"images": images, "classes_per_image": float(labels.sum(1).mean()), "fit_s": fit_seconds,
            "fit_entries": sum(len(ids) for ids, _ in fed_batches),
            "fit_ms_per_image": 1000 * fit_seconds / images, "prototypes_s": prototype_seconds,
            "maps_ms_per_image": 1000 * map_seconds / images, "fg_kept": kept, "peak_rss_mb": peak_mb()}


def in_subprocess(shape: str, images: int, pool_cap: int, sampling: str = "all") -> Dict[str, float]:
    return run_in_subprocess("bench_coco", f"run({shape!r}, {images}, {pool_cap}, {sampling!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000, help="images of the 1x runs (default 20,000)")
    parser.add_argument("--pool-cap", type=int, default=10_000, help="features per pool (default: the presets' 10,000)")
    parser.add_argument("--reference", action="store_true", help="also the COCO preset's reference draws, 1x and 4x")
    args = parser.parse_args()
    rows = {"VOC-shaped, 1x": in_subprocess("voc", args.images, args.pool_cap),
            "COCO-shaped, 1x": in_subprocess("coco", args.images, args.pool_cap),
            "COCO-shaped, 4x": in_subprocess("coco", 4 * args.images, args.pool_cap)}
    reference = {}
    if args.reference:
        reference = {"COCO-shaped, reference draws, 1x": in_subprocess("coco", args.images, args.pool_cap, "reference"),
                     "COCO-shaped, reference draws, 4x": in_subprocess("coco", 4 * args.images, args.pool_cap,
                                                                       "reference")}
    print(f"\nLPCAM fit + maps, D = {DIM}, {SIDE} x {SIDE} features, batches of {BATCH}, pool_cap {args.pool_cap:,}, "
          f"{torch.get_num_threads()} threads")
    print("| run | images | classes / image | fit entries | fit s | fit ms / image | K-means + selection s | "
          "maps ms / image | fg features kept | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in {**rows, **reference}.items():
        print(f"| {name} | {r['images']:,} | {r['classes_per_image']:.2f} | {r['fit_entries']:,} | {r['fit_s']:.1f} | "
              f"{r['fit_ms_per_image']:.2f} | {r['prototypes_s']:.1f} | {r['maps_ms_per_image']:.2f} | "
              f"{r['fg_kept']:,} | {r['peak_rss_mb']:.0f} |")
    voc, coco, coco4 = rows.values()
    per_image = [(coco[k] / voc[k]) for k in ("fit_ms_per_image", "maps_ms_per_image")]
    growth = coco4["peak_rss_mb"] / coco["peak_rss_mb"] - 1
    print(f"\npeak RSS from 1x to 4x the COCO images: {100 * growth:+.1f}% (target within 10%)")
    print(f"COCO vs VOC per image: fit {per_image[0]:.2f}x, maps {per_image[1]:.2f}x (target <= 1.5x)")
    if reference:
        one, four = reference.values()
        print(f"reference draws from 1x to 4x the images: fit {four['fit_s'] / one['fit_s']:.2f}x "
              f"({one['fit_entries']:,} and {four['fit_entries']:,} entries), "
              f"peak RSS {100 * (four['peak_rss_mb'] / one['peak_rss_mb'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
