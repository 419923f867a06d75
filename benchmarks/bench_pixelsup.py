"""Pixel self-supervision (RCM + MAM) training-step benchmark (run by hand): time and peak memory of
one step against the host's plain classification step on the same model, in one run.

    python benchmarks/bench_pixelsup.py                 # batch 8, 128 x 128 images, 3 timed rounds
    python benchmarks/bench_pixelsup.py --rounds 1 --size 96

The network is :class:`lpcam_plugin.benchmark.toynet.ToyBottleneckNet` (basic-block stages to
output stride 16, a ResNet-50-like bottleneck ``stage4`` expanding to D = 1024, GAP, bias-free
1x1 classifier of 20 classes), BatchNorm in eval mode as IRN trains.

Steps measured:
- plain: multilabel soft-margin on the model's logits, backward, SGD step (IRN's ``train_cam``);
- RCM phase: ``PixelSelfSupervision`` before ``mam_start_epoch``: F at scale 1.0 with gradients,
  G at scales 0.5, 1.0, 2.0 without, RCM + classification loss, then the EMA step;
- RCM + MAM: from ``mam_start_epoch``: F and G at all three scales (six forwards), all losses.

Time: one fresh subprocess builds the three variants (same weights), warms each up, then runs
them in turn ``--rounds`` times and keeps each one's median step time. The clock is the
process's CPU time with ``--threads`` (default 1) threads, so other work on a shared machine
disturbs every variant alike and barely at all. Memory: each variant in a fresh subprocess;
peak extra memory = peak RSS during one step minus the RSS before it.

The "pixel floor" column is the time ratio the pixel counts alone impose, taking a backward
pass as twice a forward: F costs 3 units per pixel count, G 1; the scales' pixel counts are
0.25, 1 and 4 times the image's. Small feature maps run below it on a CPU (per-call overheads
do not grow with the pixels).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from bench_core import peak_mb, reset_peak, rss_mb, run_in_subprocess

CLASSES = 20
VARIANTS = ("plain", "rcm", "rcm_mam")
SCALES = (0.5, 1.0, 2.0)
NAMES = {"plain": "plain classification step (IRN train_cam)",
         "rcm": "pixel self-sup., before mam_start_epoch (4 forwards)",
         "rcm_mam": "pixel self-sup., RCM + MAM (6 forwards)"}


def build(variant: str, batch: int, size: int) -> Callable[[], float]:
    """A closure running one training step of ``variant`` on a fixed batch; returns the loss."""
    from lpcam_plugin.benchmark.toynet import ToyBottleneckNet
    from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

    torch.manual_seed(0)
    model = ToyBottleneckNet(CLASSES)
    model.eval()  # IRN's fixed BatchNorm
    images = torch.randn(batch, 3, size, size)
    labels = (torch.rand(batch, CLASSES) > 0.85).float()
    labels[:, 0] = 1
    params = list(model.parameters())
    pss = None
    if variant != "plain":
        pss = PixelSelfSupervision(model, feature_layer="stage4", head="classifier", num_classes=CLASSES,
                                   scales=SCALES, mam_start_epoch=1)
        params += list(pss.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    epoch = 1 if variant == "rcm_mam" else 0

    def step() -> float:
        if pss is None:
            loss = F.multilabel_soft_margin_loss(model(images), labels)
        else:
            loss = pss(images, labels, epoch=epoch)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if pss is not None:
            pss.update_support()
        return float(loss.detach())

    return step


def time_variants(rounds: int, batch: int, size: int, threads: int) -> Dict[str, float]:
    """Median CPU seconds per step of every variant, run in turn ``rounds`` times after a warm-up."""
    torch.set_num_threads(threads)
    steps = {v: build(v, batch, size) for v in VARIANTS}
    for step in steps.values():
        step()
    seconds: Dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant, step in steps.items():
            start = time.process_time()
            step()
            seconds[variant].append(time.process_time() - start)
    return {v: statistics.median(s) for v, s in seconds.items()}


def memory_variant(variant: str, batch: int, size: int, threads: int) -> float:
    """Peak extra RSS (MB) of one step after a warm-up step."""
    torch.set_num_threads(threads)
    step = build(variant, batch, size)
    step()
    before = rss_mb()
    reset_peak()
    step()
    return peak_mb() - before


def in_subprocess(call: str) -> object:
    return run_in_subprocess("bench_pixelsup", call)


def pixel_floor(variant: str) -> float:
    """The step-time ratio the scales' pixel counts impose (backward = 2 forwards)."""
    pixels = sum(s * s for s in SCALES)
    return {"plain": 1.0, "rcm": (3.0 + pixels) / 3.0, "rcm_mam": (3.0 * pixels + pixels) / 3.0}[variant]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per variant, run in turn (after a warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="image side at scale 1.0")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the measuring processes")
    args = parser.parse_args()
    shape = f"{args.batch}, {args.size}, {args.threads}"
    seconds = in_subprocess(f"time_variants({args.rounds}, {shape})")
    memory = {v: in_subprocess(f"memory_variant({v!r}, {shape})") for v in VARIANTS}
    print(f"\nOne training step, ToyBottleneckNet (D=1024, stride 16), batch {args.batch}, {args.size}x{args.size} "
          f"images, scales {SCALES}, {CLASSES} classes, {args.threads} thread(s), median CPU time of {args.rounds} "
          "interleaved steps")
    print("| step | CPU seconds | time vs plain | pixel floor | peak extra MB | memory vs plain |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        print(f"| {NAMES[variant]} | {seconds[variant]:.3f} | {seconds[variant] / seconds['plain']:.2f}x | "
              f"{pixel_floor(variant):.2f}x | {memory[variant]:.0f} | {memory[variant] / memory['plain']:.2f}x |")


if __name__ == "__main__":
    main()
