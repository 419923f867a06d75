"""ReCAM training-step benchmark (run by hand): time and peak memory of one step against the host's
plain classification step, and against the reference's broadcast formulation, in one run.

    python benchmarks/bench_recam.py              # batch 16, features (2048, 32, 32), 3 timed steps
    python benchmarks/bench_recam.py --steps 1    # quicker

The network is ResNet-50's last stage as IRN trains it (three bottleneck blocks, 1024 -> 2048
channels, stride 1 at 32 x 32) on a (16, 1024, 32, 32) input standing for stage 3's output, then
GAP and a bias-free 1x1 classifier of 20 classes: the features ReCAM works on are exactly
ResNet-50-sized, (16, 2048, 32, 32). Without stages 1-3 the plain step is cheaper than the real
one, so the ratios here are upper bounds of the ratios on the full network.

Steps measured (each in a fresh subprocess; peak extra memory = peak RSS during the steps minus
the RSS before them):
- plain: multilabel soft-margin on GAP logits, backward, SGD step (IRN's ``train_cam``);
- ReCAM: plus the ReCAM loss of :mod:`lpcam_plugin.methods.recam.losses` (class features by one bmm);
- ReCAM, broadcast: the same loss with the reference's (B, C, D, h*w) broadcast of class features.
"""
from __future__ import annotations

import argparse
from typing import Dict

import torch
import torch.nn.functional as F
from bench_core import measure_steps, run_in_subprocess
from torch import nn

BATCH, IN_DIM, DIM, SIZE, CLASSES = 16, 1024, 2048, 32, 20
VARIANTS = ("plain", "recam", "recam_broadcast")


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (1x1 reduce, 3x3, 1x1 expand, BatchNorm, residual):
    ``(B, c_in, h, w) -> (B, c_out, h, w)``."""

    def __init__(self, c_in: int, mid: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                                                           nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Stage4Net(nn.Module):
    """ResNet-50 stage 4 (stride 1, as in IRN) + GAP + bias-free 1x1 classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stage4 = nn.Sequential(Bottleneck(IN_DIM, 512, DIM), Bottleneck(DIM, 512, DIM), Bottleneck(DIM, 512, DIM))
        self.classifier = nn.Conv2d(DIM, CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stage4(x).mean(dim=(2, 3), keepdim=True)).flatten(1)


def broadcast_class_features(features: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """The reference's ``cams.unsqueeze(2) * x.unsqueeze(1)`` then a mean over positions: (B, C, D)."""
    b, d = features.shape[:2]
    return (cams.unsqueeze(2) * features.unsqueeze(1)).reshape(b, cams.shape[1], d, -1).mean(-1)


def run_variant(variant: str, steps: int) -> Dict[str, float]:
    from lpcam_plugin.methods.recam import losses

    torch.manual_seed(0)
    model = Stage4Net()
    model.eval()  # IRN's fixed BatchNorm
    sce = nn.Linear(DIM, CLASSES, bias=False)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(sce.parameters()), lr=1e-4, weight_decay=1e-4)
    x = torch.randn(BATCH, IN_DIM, SIZE, SIZE)
    labels = (torch.rand(BATCH, CLASSES) > 0.85).float()
    labels[:, 0] = 1
    if variant == "recam_broadcast":
        losses.class_features = broadcast_class_features  # the reference formulation, same loss otherwise

    def step() -> float:
        features = model.stage4(x)
        weight = model.classifier.weight[:, :, 0, 0]
        if variant == "plain":
            loss = F.multilabel_soft_margin_loss(features.mean(dim=(2, 3)) @ weight.t(), labels)
        else:
            loss = losses.recam_losses(features, labels, weight, sce.weight, 1.0)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    return measure_steps(step, steps)


def in_subprocess(variant: str, steps: int) -> Dict[str, float]:
    return run_in_subprocess("bench_recam", f"run_variant({variant!r}, {steps})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    args = parser.parse_args()
    rows = {v: in_subprocess(v, args.steps) for v in VARIANTS}
    plain = rows["plain"]
    print(f"\nOne training step, ResNet-50 stage 4 -> features ({BATCH}, {DIM}, {SIZE}, {SIZE}), {CLASSES} classes, "
          f"{torch.get_num_threads()} threads, mean of {args.steps} steps")
    print("| step | seconds | time vs plain | peak extra MB | memory vs plain |")
    print("|---|---|---|---|---|")
    names = {"plain": "plain classification step (IRN train_cam)", "recam": "ReCAM step (lpcam_plugin, bmm)",
             "recam_broadcast": "ReCAM step, reference broadcast (B, C, D, hw)"}
    for variant, r in rows.items():
        print(f"| {names[variant]} | {r['seconds']:.2f} | {r['seconds'] / plain['seconds']:.2f}x | "
              f"{r['extra_mb']:.0f} | {r['extra_mb'] / plain['extra_mb']:.2f}x |")
    ours, ref = rows["recam"], rows["recam_broadcast"]
    print(f"\nReCAM vs plain: time {ours['seconds'] / plain['seconds']:.2f}x (target <= 1.3x), memory "
          f"{ours['extra_mb'] / plain['extra_mb']:.2f}x (target <= 1.2x); vs the broadcast reference: time "
          f"{ours['seconds'] / ref['seconds']:.2f}x, memory {ours['extra_mb'] / ref['extra_mb']:.2f}x")


if __name__ == "__main__":
    main()
