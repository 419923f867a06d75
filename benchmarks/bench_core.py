"""Core benchmarks (run by hand): K-means, map generation, bounded collection.

    python benchmarks/bench_core.py            # all three tables
    python benchmarks/bench_core.py kmeans     # one of: kmeans, maps, collect

Every measurement that involves memory runs in a fresh subprocess, and every ratio is against a
baseline measured in the same invocation. Peak extra memory = peak RSS during the measured call
(the kernel's VmHWM, reset just before it) minus the RSS just before it (input data allocated).
Run on an otherwise idle machine: with the cores shared, small operations stall on thread sync.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

N, DIM, K = 50_000, 2048, 12
REFERENCE_ITERS = 3
LOOP_IMAGES = 2


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_mb() -> float:
    """Peak RSS (VmHWM) since the last :func:`reset_peak`, in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_steps(step: Callable[[], float], steps: int) -> Dict[str, float]:
    """Seconds per call of ``step`` over ``steps`` calls after one warm-up call (allocator, kernels),
    and the peak extra memory (MB) of those calls over the RSS before them."""
    step()
    before = rss_mb()
    reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {"seconds": seconds, "extra_mb": peak_mb() - before}


def clustered(n: int, dim: int, k: int, seed: int = 0) -> torch.Tensor:
    """Non-negative (post-ReLU-like) features around ``k`` random directions."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g)
    which = torch.randint(0, k, (n,), generator=g)
    return torch.relu(centres[which] + 1.5 * torch.randn(n, dim, generator=g))


def mean_cosine(x: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> float:
    unit = centres / centres.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float(((x * unit[labels]).sum(1) / x.norm(dim=1).clamp_min(1e-12)).mean())


def broadcast_reference(x: torch.Tensor, k: int, iters: int) -> Dict[str, float]:
    """The reference style: cosine through an (N, K, D) broadcast temporary, random init, no seed."""
    g = torch.Generator().manual_seed(0)
    centres = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    xn = x / x.norm(dim=1, keepdim=True)
    for _ in range(iters):
        cn = centres / centres.norm(dim=1, keepdim=True)
        sims = (xn[:, None, :] * cn[None, :, :]).sum(-1)
        labels = sims.argmax(1)
        centres = torch.stack([x[labels == j].mean(0) for j in range(k)])
    return {"objective": mean_cosine(x, labels, centres), "iters": iters}


def run_kmeans_method(method: str) -> Dict[str, float]:
    from lpcam_plugin import kmeans

    x = clustered(N, DIM, K)
    before = rss_mb()
    reset_peak()
    start = time.perf_counter()
    if method == "lpcam_plugin (torch)":
        result = kmeans(x, K, seed=0)
        out = {"objective": result.objective, "iters": result.n_iter}
    elif method == "scikit-learn KMeans":
        from sklearn.cluster import KMeans

        unit = (x / x.norm(dim=1, keepdim=True)).numpy()
        model = KMeans(n_clusters=K, n_init=1, random_state=0).fit(unit)
        labels = torch.from_numpy(model.labels_).long()
        centres = torch.stack([x[labels == j].mean(0) for j in range(K)])
        out = {"objective": mean_cosine(x, labels, centres), "iters": model.n_iter_}
    else:
        out = broadcast_reference(x, K, REFERENCE_ITERS)
    seconds = time.perf_counter() - start
    return {**out, "seconds": seconds, "extra_mb": peak_mb() - before}


def run_collect(multiple: int) -> Dict[str, float]:
    from lpcam_plugin import LPCAM

    classes, dim, size, cap = 20, 2048, 32, 2000
    g = torch.Generator().manual_seed(0)
    model = LPCAM(classes, pool_cap=cap, progress=False)
    fg_per_image = 0.3 * size * size
    images = int(multiple * cap * classes / (2 * fg_per_image)) + 1
    start = time.perf_counter()
    for i in range(0, images, 8):
        feats = torch.rand(8, dim, size, size, generator=g)
        labels = torch.zeros(8, classes)
        cams = torch.zeros(8, classes, size, size)
        for b in range(8):
            for c in torch.randperm(classes, generator=g)[:2].tolist():
                labels[b, c] = 1
                cams[b, c, :, : int(0.3 * size)] = 1.0
        model.partial_fit(feats, labels, cams=cams, ids=list(range(i, i + 8)))
    seen = sum(p.count_seen for p in model.foreground_pools_.values()) / classes
    kept = sum(len(p) for p in model.foreground_pools_.values()) / classes
    return {"images": images, "fg_seen_per_class": seen, "fg_kept_per_class": kept,
            "peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - start}


def run_in_subprocess(module: str, call: str) -> Any:
    """``module.call`` (e.g. ``"run_step('plain', 8)"``) evaluated in a fresh Python process that
    imports ``module`` from this folder; its JSON result (the last line it prints)."""
    code = (f"import json, sys; sys.path.insert(0, {sys.path[0]!r}); import {module} as b; "
            f"print(json.dumps(b.{call}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_subprocess(kind: str, arg: str) -> Dict[str, float]:
    return run_in_subprocess("bench_core", f"run_collect({int(arg)})" if kind == "run_collect" else f"{kind}({arg!r})")


def bench_kmeans() -> None:
    rows = {m: in_subprocess("run_kmeans_method", m)
            for m in ("lpcam_plugin (torch)", "scikit-learn KMeans", "broadcast (N,K,D) reference")}
    ours = rows["lpcam_plugin (torch)"]
    sk = rows["scikit-learn KMeans"]
    ref = rows["broadcast (N,K,D) reference"]
    ref_per_iter = ref["seconds"] / ref["iters"]
    print(f"\nK-means, N={N:,} x D={DIM}, K={K}, float32, {torch.get_num_threads()} threads")
    print("| method | seconds | iterations | mean-cosine objective | peak extra MB |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        note = f" ({REFERENCE_ITERS} iters only, {ref_per_iter:.2f} s/iter)" if name.startswith("broadcast") else ""
        print(f"| {name} | {r['seconds']:.2f}{note} | {r['iters']} | {r['objective']:.4f} | {r['extra_mb']:.0f} |")
    print(f"\nspeed-up vs scikit-learn: {sk['seconds'] / ours['seconds']:.1f}x (target >= 3x); "
          f"objective gap {ours['objective'] - sk['objective']:+.4f} (target within 0.005); "
          f"peak extra memory {100 * ours['extra_mb'] / ref['extra_mb']:.1f}% of the broadcast reference "
          "(target < 10%)")


def timed(fn: Callable[[], torch.Tensor], repeats: int, warmup: bool = True) -> Tuple[float, torch.Tensor]:
    """Seconds per call of ``fn`` over ``repeats`` calls (after one warm-up call), and its last output."""
    if warmup:
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def bench_maps() -> None:
    from lpcam_plugin import PrototypeBank, cam_map, lpcam_map

    g = torch.Generator().manual_seed(0)
    classes, protos = 20, 24
    features = torch.relu(torch.randn(16, DIM, 32, 32, generator=g))
    bank = PrototypeBank({c: torch.rand(protos, DIM, generator=g) for c in range(classes)},
                         {c: torch.rand(protos // 2, DIM, generator=g) for c in range(classes)})
    weight = torch.randn(classes, DIM, generator=g)
    cls = list(range(classes))

    def loop(feats: torch.Tensor) -> torch.Tensor:
        out = []
        for c in cls:
            sims = torch.stack([F.cosine_similarity(feats, p[None, :, None, None], dim=1)
                                for p in bank.class_prototypes[c]]).mean(0)
            sims = sims - torch.stack([F.cosine_similarity(feats, q[None, :, None, None], dim=1)
                                       for q in bank.context_prototypes[c]]).mean(0)
            sims = torch.relu(sims)
            out.append(sims / (sims.amax(dim=(-2, -1), keepdim=True) + 1e-5))
        return torch.stack(out, 1)

    t_lpcam, _ = timed(lambda: lpcam_map(features, bank, cls), 5)
    t_cam, _ = timed(lambda: cam_map(features, weight), 5)
    t_conv, _ = timed(lambda: F.conv2d(features, weight[:, :, None, None]), 5)
    few = features[:LOOP_IMAGES]
    t_loop_few, slow = timed(lambda: loop(few), 1, warmup=False)
    t_lpcam_few, fast = timed(lambda: lpcam_map(few, bank, cls), 5)
    diff = float((slow - fast).abs().max())
    print(f"\nLPCAM maps, 20 classes x {protos} class + {protos // 2} context prototypes, features (16, {DIM}, 32, 32)")
    print("| method | ms per batch of 16 | ratio to plain CAM (conv2d) |")
    print("|---|---|---|")
    for name, t in (("lpcam_map (collapsed, one matmul)", t_lpcam), ("cam_map (relu, max-normalised)", t_cam),
                    ("plain CAM: F.conv2d 1x1", t_conv)):
        print(f"| {name} | {1000 * t:.1f} | {t / t_conv:.2f} |")
    print(f"| per-prototype loop (reference style), timed on {LOOP_IMAGES} images, scaled x{16 // LOOP_IMAGES} | "
          f"{1000 * t_loop_few * 16 / LOOP_IMAGES:.0f} | {t_loop_few * 16 / LOOP_IMAGES / t_conv:.0f} |")
    print(f"\nspeed-up vs the loop on the same {LOOP_IMAGES} images: {t_loop_few / t_lpcam_few:.0f}x (target >= 50x); "
          f"cost vs plain 1x1 conv: {t_lpcam / t_conv:.2f}x (target <= 3x); max |loop - lpcam_map| = {diff:.1e}")


def bench_collect() -> None:
    rows: List[Dict[str, float]] = [in_subprocess("run_collect", str(m)) for m in (1, 4)]
    print("\npartial_fit, 20 classes, D=2048, 32x32 maps, pool_cap=2000 (float32)")
    print("| data (x pool cap) | images | fg features seen / class | kept / class | peak RSS MB | seconds |")
    print("|---|---|---|---|---|---|")
    for m, r in zip((1, 4), rows):
        print(f"| {m}x | {r['images']} | {r['fg_seen_per_class']:.0f} | {r['fg_kept_per_class']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
    growth = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
    print(f"\npeak RSS growth from 1x to 4x the data: {100 * growth:+.1f}% (target < 10%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=["kmeans", "maps", "collect"],
                        default=["kmeans", "maps", "collect"])
    args = parser.parse_args()
    for name in args.which:
        {"kmeans": bench_kmeans, "maps": bench_maps, "collect": bench_collect}[name]()


if __name__ == "__main__":
    main()
