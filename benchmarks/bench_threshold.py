"""The cost of choosing the background threshold without masks, beside reading the maps (run by hand).

    python benchmarks/bench_threshold.py              # 10,000 maps of 20 x 32 x 32 (the issue's size)
    python benchmarks/bench_threshold.py --images 2000

The maps are written once to a ``.npy`` file (float32 ``(N, C, H, W)``, max-normalised, VOC-like
labels: 1-3 classes per image); then, each the best of ``--repeats`` runs in this process:

- ``read maps``: ``np.load`` of the file into memory (the baseline: the map I/O, here from the page cache);
- ``auto_threshold(maps, labels)``: the two-argument form on the in-memory array;
- ``auto_threshold(..., reference=cam)``: with a reference of the same size (two histograms);
- ``auto_threshold(iterable)``: the same maps as a stream of per-image ``(C, H, W)`` arrays.

The table gives each time and its ratio to reading the maps measured in the same run.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np

from lpcam_plugin.core.threshold import auto_threshold


def make_maps(path: Path, images: int, classes: int, side: int, seed: int = 0) -> np.ndarray:
    """Write ``(images, classes, side, side)`` float32 maps to ``path`` chunk by chunk; return the ``(N, C)`` labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((images, classes), dtype=np.int64)
    for i in range(images):
        labels[i, rng.choice(classes, size=rng.integers(1, 4), replace=False)] = 1
    maps = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(images, classes, side, side))
    for start in range(0, images, 500):
        chunk = rng.random((min(500, images - start), classes, side, side), dtype=np.float32) ** 3
        maps[start:start + chunk.shape[0]] = chunk / chunk.max(axis=(2, 3), keepdims=True)
    maps.flush()
    del maps
    return labels


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeats`` wall times of ``fn()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "maps.npy"
        labels = make_maps(path, args.images, args.classes, args.side)
        maps = np.load(path)
        reference = np.sqrt(maps)
        rows: List[Tuple[str, float]] = [
            ("read maps (np.load, the baseline)", best_of(args.repeats, lambda: np.load(path))),
            ("auto_threshold(maps, labels)", best_of(args.repeats, lambda: auto_threshold(maps, labels))),
            ("auto_threshold(maps, labels, reference=cam)",
             best_of(args.repeats, lambda: auto_threshold(maps, labels, reference=reference))),
            ("auto_threshold(per-image stream, labels)",
             best_of(args.repeats, lambda: auto_threshold(iter(maps), labels))),
        ]
    base = rows[0][1]
    sys.stdout.write(f"{args.images} maps of {args.classes} x {args.side} x {args.side} float32 "
                     f"({maps.nbytes / 2 ** 20:.0f} MiB), best of {args.repeats}\n\n")
    sys.stdout.write("| step | seconds | ratio to reading the maps |\n|---|---|---|\n")
    for name, seconds in rows:
        sys.stdout.write(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
