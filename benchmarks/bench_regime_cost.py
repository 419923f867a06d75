"""What one classifier training step costs at the image sides a benchmark regime may use (run by hand).

    python benchmarks/bench_regime_cost.py                   # 80 (regime A), 128, 160 px; batch 32, 8 steps
    python benchmarks/bench_regime_cost.py --sides 80 96 128 --steps 4

For each toy network of the benchmark (``ToyResNet``, stride 8; ``ToyBottleneckNet``, stride 16)
and each side: seconds per SGD step (forward, soft-margin loss, backward, update) on a random
batch, after one warm-up step, and the ratio to the first side measured in the same run. This sizes
the second benchmark (docs/design/pretrained-regime.md) before anything is generated.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List

import torch
import torch.nn.functional as F
from bench_core import measure_steps

from lpcam_plugin.benchmark.toynet import build_network

NETWORKS = ("ToyResNet", "ToyBottleneckNet")


def step_seconds(network: str, side: int, batch: int, steps: int, classes: int = 6) -> float:
    """Seconds per training step of ``network`` on ``(batch, 3, side, side)`` random images."""
    torch.manual_seed(0)
    model = build_network(network, classes)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, side, side)
    labels = (torch.rand(batch, classes) < 0.3).float()

    def step() -> float:
        loss = F.multilabel_soft_margin_loss(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    return measure_steps(step, steps)["seconds"]


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[80, 128, 160])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.write(f"batch {args.batch}, {args.steps} steps after a warm-up, {torch.get_num_threads()} threads\n\n")
    sys.stdout.write("| network | " + " | ".join(f"{s} px" for s in args.sides) + " |\n")
    sys.stdout.write("|---|" + "---|" * len(args.sides) + "\n")
    for network in NETWORKS:
        times = [step_seconds(network, side, args.batch, args.steps) for side in args.sides]
        cells = [f"{t:.3f} s" + ("" if i == 0 else f" ({t / times[0]:.1f}x)") for i, t in enumerate(times)]
        sys.stdout.write(f"| {network} | " + " | ".join(cells) + " |\n")


if __name__ == "__main__":
    main(sys.argv[1:])
