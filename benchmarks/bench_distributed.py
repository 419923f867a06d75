"""Fit and infer throughput of 1 vs N processes (gloo, CPU), with each rank's peak memory.

Run by hand (not part of the test suite)::

    OMP_NUM_THREADS=1 python benchmarks/bench_distributed.py --images 256 --size 96 --procs 1 2

Every configuration is launched the same way (``torch.multiprocessing.spawn``, gloo, a
``file://`` store, one thread per rank), on the same random images and seeded model, and the
ratios are taken within the same invocation. Timings on a shared machine are noisy: compare
the ratios, rerun, and keep the cores free. The prototype banks of all configurations are also
checked for equality (same samples drawn).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import lpcam_plugin as lp
from lpcam_plugin.distributed.api import collect_features, fit_prototypes_distributed, infer_distributed, shard_indices
from lpcam_plugin.distributed.data import ArrayImageDataset, HookedFeatures


def _model(dim: int) -> nn.Sequential:
    """A seeded stride-8 conv net (about 2-3 ResNet blocks of work per pixel); features = module "6"."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(64, dim, 3, 2, 1), nn.ReLU(), nn.Conv2d(dim, dim, 3, 1, 1)).eval()


def _data(n: int, size: int, classes: int) -> ArrayImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = (rng.random((n, classes)) < 0.3).astype(np.float32)
    labels[np.arange(n), np.arange(n) % classes] = 1.0
    return ArrayImageDataset([f"img{i:06d}" for i in range(n)], images, labels)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(rank: int, world: int, args: argparse.Namespace, tmp: str) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # random weights: "no centre passes tau_class"
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    dataset = _data(args.images, args.size, args.classes)
    net = _model(args.dim)
    weight = torch.randn(args.classes, args.dim, generator=torch.Generator().manual_seed(1))
    features = HookedFeatures(net, "6")
    estimator = lp.LPCAM(args.classes, num_clusters=args.clusters, pool_cap=args.pool_cap, progress=False)
    rss_start = _rss_mib()
    dist.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    # fit_distributed, split into its two phases to time them
    collect_features(estimator, features, dataset, weight=weight, indices=shard_indices(len(dataset), rank, world))
    collect_s = time.perf_counter() - start
    bank = fit_prototypes_distributed(estimator, weight)
    if rank == 0:
        bank.save(os.path.join(tmp, "bank.npz"))
    dist.barrier()
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rss_fit = _rss_mib()
    dist.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    infer_distributed(estimator, features, dataset, os.path.join(tmp, "maps"), fallback="cam", weight=weight)
    infer_s, infer_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    report = {"collect_s": collect_s, "fit_s": fit_s, "fit_cpu": fit_cpu, "infer_s": infer_s, "infer_cpu": infer_cpu,
              "rss_start": rss_start, "rss_fit": rss_fit, "rss_end": _rss_mib()}
    Path(tmp, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def run(procs: int, args: argparse.Namespace) -> Dict[str, object]:
    """One configuration in a fresh temporary folder; returns per-rank reports and the bank."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(procs, args, tmp), nprocs=procs, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(procs)]
        bank = lp.PrototypeBank.load(os.path.join(tmp, "bank.npz"))
        files = len(list(Path(tmp, "maps").glob("*.npz")))
    if files != args.images:
        raise RuntimeError(f"{procs} process(es) wrote {files} maps for {args.images} images")
    return {"ranks": ranks, "bank": bank}


def _same_bank(a: lp.PrototypeBank, b: lp.PrototypeBank) -> bool:
    return all(torch.equal(a.class_prototypes[c], b.class_prototypes[c])
               and torch.equal(a.context_prototypes[c], b.context_prototypes[c]) for c in range(a.num_classes))


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=96, help="square image side")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128, help="feature channels D")
    parser.add_argument("--clusters", type=int, default=12)
    parser.add_argument("--pool-cap", type=int, default=2000)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = {p: run(p, args) for p in args.procs}
    base = results[args.procs[0]]
    base_fit = max(r["fit_s"] for r in base["ranks"])
    base_infer = max(r["infer_s"] for r in base["ranks"])
    print(f"{args.images} images {args.size}x{args.size}, C={args.classes}, D={args.dim}, K={args.clusters}, "
          f"pool_cap={args.pool_cap}, 1 thread per process, gloo on CPU")
    print("| procs | fit s (collect + merge/K-means) | fit img/s | fit speed-up | fit CPU s, busiest rank "
          "| infer s | infer img/s | infer speed-up | infer CPU s, busiest rank "
          "| peak RSS per rank, MiB (after import / after fit / end) | bank = 1st config |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for procs, result in results.items():
        fit_s = max(r["fit_s"] for r in result["ranks"])
        collect_s = max(r["collect_s"] for r in result["ranks"])
        infer_s = max(r["infer_s"] for r in result["ranks"])
        rss = "; ".join(f"r{i}: {r['rss_start']:.0f}/{r['rss_fit']:.0f}/{r['rss_end']:.0f}"
                        for i, r in enumerate(result["ranks"]))
        fit_cpu = max(r["fit_cpu"] for r in result["ranks"])
        infer_cpu = max(r["infer_cpu"] for r in result["ranks"])
        print(f"| {procs} | {fit_s:.2f} ({collect_s:.2f} + {fit_s - collect_s:.2f}) | {args.images / fit_s:.1f} "
              f"| {base_fit / fit_s:.2f}x | {fit_cpu:.2f} | {infer_s:.2f} "
              f"| {args.images / infer_s:.1f} | {base_infer / infer_s:.2f}x | {infer_cpu:.2f} | {rss} "
              f"| {_same_bank(base['bank'], result['bank'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
