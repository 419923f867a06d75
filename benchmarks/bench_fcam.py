"""F-CAM benchmark (run by hand): one decoder training step against the plain partial-CE step, and
decoder inference against the encoder's forward, in one run.

    python benchmarks/bench_fcam.py                  # batch 8, 512 x 512, 1 timed step after a warm-up
    python benchmarks/bench_fcam.py --batch 2 --size 256   # quicker

Training steps (each in a fresh subprocess; peak extra memory = peak RSS during the timed steps
minus the RSS before them, which already holds the inputs):
- plain: the decoder's forward, the partial cross-entropy on sampled seeds, backward, SGD step;
- F-CAM: the same plus the CRF loss and the size term (VOC preset settings: the dense kernel, and the
  seed and CRF settings its ``"auto"`` rules derive at this image size).
Both sample their seeds from the source maps inside the step. The inputs are random tensors
shaped as IRN's ResNet-50 gives them at this image size (``conv1`` 64 and ``stage1`` 256 channels
at stride 4, ``stage2`` 512 at 8, ``stage3`` 1024 and ``stage4`` 2048 at 16), 20 classes with one
to three present per image, and smooth random source maps at stride 16: the decoder is exactly
the one F-CAM trains on IRN (same widths, same resolutions), so its step is measured as it is.

Inference: the decoder's forward (no gradient) against the forward of a ResNet-50-shaped encoder
written here (v1.5 bottlenecks 3-4-6-3, the last stage at stride 1 as in IRN, random weights; no
torchvision), both on the same batch, in one subprocess. The real network costs what this
stand-in costs up to implementation details, so the ratio is the one to expect.
Run on an otherwise idle machine: with the cores shared, the times are noisy.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from bench_core import measure_steps, run_in_subprocess
from torch import nn

CLASSES = 20
#: (name, channels, stride) of IRN's ResNet-50 levels.
LEVELS = [("conv1", 64, 4), ("stage1", 256, 4), ("stage2", 512, 8), ("stage3", 1024, 16), ("stage4", 2048, 16)]
VARIANTS = ("plain", "fcam")


class Bottleneck(nn.Module):
    """ResNet-50 v1.5 block: ``(B, c_in, h, w) -> (B, c_out, h / stride, w / stride)``."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _stage(c_in: int, mid: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    rest = [Bottleneck(c_out, mid, c_out, 1) for _ in range(blocks - 1)]
    return nn.Sequential(Bottleneck(c_in, mid, c_out, stride), *rest)


class ResNet50Encoder(nn.Module):
    """IRN's ResNet-50: ``conv1`` (7x7 stride 2 + max-pool), ``stage1..4`` (strides 1, 2, 2, 1), GAP, 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1))
        self.stage1 = _stage(64, 64, 256, 3, 1)
        self.stage2 = _stage(256, 128, 512, 4, 2)
        self.stage3 = _stage(512, 256, 1024, 6, 2)
        self.stage4 = _stage(1024, 512, 2048, 3, 1)
        self.classifier = nn.Conv2d(2048, CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stage4(self.stage3(self.stage2(self.stage1(self.conv1(x)))))
        return self.classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)


def _inputs(batch: int, size: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {name: torch.relu(torch.randn(batch, c, size // s, size // s, generator=g)) for name, c, s in LEVELS}
    tensors["images"] = torch.randn(batch, 3, size, size, generator=g)
    labels = torch.zeros(batch, CLASSES)
    for b in range(batch):
        labels[b, torch.randperm(CLASSES, generator=g)[:1 + b % 3]] = 1
    tensors["labels"] = labels
    coarse = torch.rand(batch, CLASSES, size // 64, size // 64, generator=g)
    maps = F.interpolate(coarse, size=(size // 16, size // 16), mode="bilinear", align_corners=False)
    tensors["maps"] = maps / maps.amax(dim=(2, 3), keepdim=True)
    return tensors


def _decoder(config: Any) -> nn.Module:
    """The decoder F-CAM builds on IRN's levels (``config``: an ``FCAMConfig``), seeded."""
    from lpcam_plugin.methods.fcam.decoder import FCAMDecoder

    torch.manual_seed(0)
    return FCAMDecoder(LEVELS[-1][1], [c for _, c, _ in reversed(LEVELS[:-1])], CLASSES, config.decoder_channels)


def run_step(variant: str, batch: int, size: int, steps: int) -> Dict[str, float]:
    """Time and peak extra memory of ``steps`` decoder training steps (after one warm-up step)."""
    from lpcam_plugin.methods.fcam.config import AUTO, FCAMConfig, odd_stride
    from lpcam_plugin.methods.fcam.decoder import mask_absent, present_channels
    from lpcam_plugin.methods.fcam.losses import fcam_losses
    from lpcam_plugin.methods.fcam.seeds import make_seeds

    config = FCAMConfig.preset("voc")
    x = _inputs(batch, size)
    decoder = _decoder(config)
    optimizer = torch.optim.SGD(decoder.parameters(), lr=config.learning_rate, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    mean = torch.tensor(config.pixel_mean)[None, :, None, None]
    std = torch.tensor(config.pixel_std)[None, :, None, None]
    skips = [x[name] for name, _, _ in reversed(LEVELS[:-1])]
    generator = torch.Generator().manual_seed(0)
    crf_weight, size_weight = (config.crf_weight, config.size_weight) if variant == "fcam" else (0.0, 0.0)
    bg_fraction = None if config.bg_fraction == AUTO else config.bg_fraction
    erosion = odd_stride(size, size // 16) if config.erosion_size == AUTO else config.erosion_size

    def step() -> float:
        maps = F.interpolate(x["maps"], size=(size, size), mode="bilinear", align_corners=False)
        seeds = make_seeds(maps, x["labels"], bg_fraction=bg_fraction, erosion_size=erosion,
                           erosion_iterations=config.erosion_iterations, fg_samples=config.fg_samples,
                           bg_samples=config.bg_samples, dilation=config.seed_dilation, generator=generator,
                           tie_seed=0)
        present = present_channels(x["labels"])
        logits = mask_absent(decoder(x["stage4"], skips, x["images"]), present)
        losses = fcam_losses(logits, present, seeds, x["images"] * std + mean, seg_weight=config.seg_weight,
                             crf_weight=crf_weight, size_weight=size_weight, sigma_rgb=config.crf_sigma_rgb,
                             sigma_xy=config.sigma_xy(size), crf_scale=config.crf_scale, crf_radius=config.crf_radius,
                             elb_t=config.elb_t0, crf_kernel=config.crf_kernel,
                             crf_dense_pixels=config.crf_dense_pixels)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        return float(losses["total"])

    return measure_steps(step, steps)


def run_inference(batch: int, size: int) -> Dict[str, float]:
    """Seconds of the encoder's forward and of the decoder's forward on the same batch (after a warm-up)."""
    from lpcam_plugin.core.hooks import FeatureHook
    from lpcam_plugin.methods.fcam.config import FCAMConfig

    torch.manual_seed(0)
    encoder = ResNet50Encoder().eval()
    decoder = _decoder(FCAMConfig.preset("voc")).eval()
    images = torch.randn(batch, 3, size, size)
    names = [name for name, _, _ in LEVELS]
    times: Dict[str, List[float]] = {"encoder": [], "decoder": []}
    with torch.no_grad():
        for _ in range(2):  # the first round warms up
            hooks = {name: FeatureHook(encoder.get_submodule(name)) for name in names}
            start = time.perf_counter()
            encoder(images)
            times["encoder"].append(time.perf_counter() - start)
            features = {name: hook.features for name, hook in hooks.items()}
            for hook in hooks.values():
                hook.remove()
            start = time.perf_counter()
            decoder(features["stage4"], [features[name] for name in reversed(names[:-1])], images)
            times["decoder"].append(time.perf_counter() - start)
    return {key: value[-1] for key, value in times.items()}


def in_subprocess(call: str) -> Dict[str, float]:
    return run_in_subprocess("bench_fcam", call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="image side (a multiple of 64)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant (after one warm-up)")
    args = parser.parse_args()
    rows = {v: in_subprocess(f"run_step({v!r}, {args.batch}, {args.size}, {args.steps})") for v in VARIANTS}
    infer = in_subprocess(f"run_inference({args.batch}, {args.size})")
    plain = rows["plain"]
    print(f"\nF-CAM decoder on IRN ResNet-50 levels, batch {args.batch}, {args.size} x {args.size}, {CLASSES} classes, "
          f"{torch.get_num_threads()} threads, mean of {args.steps} step(s)")
    print("| training step | seconds | time vs plain | peak extra MB | memory vs plain |")
    print("|---|---|---|---|---|")
    names = {"plain": "plain partial-CE step (decoder + seeds + pCE)", "fcam": "F-CAM step (pCE + CRF + size)"}
    for variant, r in rows.items():
        print(f"| {names[variant]} | {r['seconds']:.2f} | {r['seconds'] / plain['seconds']:.2f}x | "
              f"{r['extra_mb']:.0f} | {r['extra_mb'] / plain['extra_mb']:.2f}x |")
    print("\n| inference (no gradient) | seconds | vs encoder |")
    print("|---|---|---|")
    print(f"| encoder forward (ResNet-50-shaped stand-in) | {infer['encoder']:.2f} | 1.00x |")
    print(f"| F-CAM decoder forward | {infer['decoder']:.2f} | {infer['decoder'] / infer['encoder']:.2f}x |")


if __name__ == "__main__":
    main()
