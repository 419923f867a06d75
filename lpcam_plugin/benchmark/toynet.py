"""A small ResNet-style multi-label classifier for the synthetic benchmark, trained on CPU.

Architecture (IRN-like, scaled down): a strided 3x3 stem, stages of basic residual blocks,
global average pooling and a bias-free 1x1 convolution as the classifier (``classifier.weight``:
``(C, D, 1, 1)``, so ``W = weight[:, :, 0, 0]``). The defaults (stem stride 2, stage strides
2, 2, 1; like IRN's last stage, the final stage keeps the resolution) give output stride 8. The
feature map for CAM/LPCAM is the output of the last stage (after its ReLU): ``(B, D, S/8, S/8)``.

Checkpoints hold plain tensors and JSON-able metadata only, written atomically, and are read
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.io import PathLike, atomic_write

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lpcam_plugin.toynet/1"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection: ``(B, C_in, h, w) -> (B, C_out, h/s, w/s)``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ToyResNet(nn.Module):
    """Small ResNet: stem, stages of basic blocks, GAP, bias-free 1x1-conv classifier.

    Args:
        num_classes: C (no background).
        widths: channels per stage.
        strides: stride of the first block of each stage (output stride = ``stem_stride * prod(strides)``).
        stem_width, stem_stride: the 3x3 stem convolution.
        blocks_per_stage: residual blocks per stage.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        strides: Sequence[int] = (2, 2, 1),
        *,
        stem_width: int = 24,
        stem_stride: int = 2,
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not widths or len(widths) != len(strides) or blocks_per_stage < 1:
            raise ValueError("widths and strides must be non-empty and of equal length, blocks_per_stage >= 1")
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.strides = tuple(int(s) for s in strides)
        self.stem_width = int(stem_width)
        self.stem_stride = int(stem_stride)
        self.blocks_per_stage = int(blocks_per_stage)
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.stem_width, 3, self.stem_stride, 1, bias=False), nn.BatchNorm2d(self.stem_width), nn.ReLU()
        )
        stages = []
        c_in = self.stem_width
        for width, stride in zip(self.widths, self.strides):
            blocks = [BasicBlock(c_in, width, stride=stride)]
            blocks += [BasicBlock(width, width) for _ in range(self.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Conv2d(c_in, self.num_classes, 1, bias=False)

    def architecture(self) -> Dict[str, Any]:
        """Constructor arguments (JSON-able), as stored in checkpoints."""
        return {"num_classes": self.num_classes, "widths": list(self.widths), "strides": list(self.strides),
                "stem_width": self.stem_width, "stem_stride": self.stem_stride, "blocks_per_stage": self.blocks_per_stage}

    @property
    def stride(self) -> int:
        """Output stride of :meth:`features`."""
        return self.stem_stride * int(np.prod(self.strides))

    @property
    def feature_dim(self) -> int:
        """D, the channel count of :meth:`features`."""
        return self.widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> unpooled last-stage features ``(B, D, H/stride, W/stride)`` (non-negative)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> logits ``(B, C)``: GAP of the features, then the 1x1 classifier."""
        pooled = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def class_weight(self) -> torch.Tensor:
        """The classifier as a ``(C, D)`` matrix (detached copy)."""
        return self.classifier.weight.detach()[:, :, 0, 0].clone()


@dataclass(frozen=True)
class TrainConfig:
    """Training schedule for :func:`train_classifier`."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hflip: bool = True
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def train_classifier(
    model: ToyResNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Train ``model`` in place with multi-label soft-margin loss (AdamW, cosine learning rate).

    Args:
        images: ``(N, 3, H, W)`` float inputs; labels: ``(N, C)`` multi-hot.

    Returns:
        ``{"loss": final-epoch mean loss, "train_accuracy": exact-match rate of sign(logits) on the
        training set, "epochs": ...}``. The model is left in eval mode.
    """
    if images.dim() != 4 or labels.dim() != 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images (N, 3, H, W) and labels (N, C) disagree: {tuple(images.shape)} vs {tuple(labels.shape)}")
    if labels.shape[1] != model.num_classes:
        raise ValueError(f"labels have {labels.shape[1]} classes, the model {model.num_classes}")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    num = images.shape[0]
    steps_per_epoch = math.ceil(num / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.MultiLabelSoftMarginLoss()
    model.train()
    epoch_loss = float("nan")
    for _ in progress_bar(range(config.epochs), progress=progress, desc="train classifier", total=config.epochs):
        order = torch.randperm(num, generator=generator)
        total = 0.0
        for start in range(0, num, config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = images[batch], labels[batch]
            if config.hflip:
                flip = torch.rand(x.shape[0], generator=generator) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * batch.numel()
        epoch_loss = total / num
    model.eval()
    logits = predict_logits(model, images)
    accuracy = float(((logits > 0).float() == labels).all(dim=1).float().mean())
    logger.info("classifier trained: loss %.4f, exact-match train accuracy %.3f", epoch_loss, accuracy)
    return {"loss": epoch_loss, "train_accuracy": accuracy, "epochs": float(config.epochs)}


@torch.inference_mode()
def predict_logits(model: ToyResNet, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, C)`` logits in eval mode (the caller's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


@torch.inference_mode()
def extract_features(
    model: ToyResNet, images: torch.Tensor, batch_size: int = 128, *, progress: Optional[bool] = None
) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, D, H/stride, W/stride)`` last-stage features in eval mode."""
    was_training = model.training
    model.eval()
    try:
        starts = range(0, images.shape[0], batch_size)
        chunks = [model.features(images[i : i + batch_size]) for i in progress_bar(starts, progress=progress, desc="features", total=len(starts))]
        return torch.cat(chunks)
    finally:
        model.train(was_training)


def save_checkpoint(path: PathLike, model: ToyResNet, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Save ``model`` (state dict of tensors + architecture + JSON-able ``metadata``) atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: PathLike) -> Tuple[ToyResNet, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); model in eval mode."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    arch = dict(payload["architecture"])
    model = ToyResNet(arch.pop("num_classes"), arch.pop("widths"), arch.pop("strides"), **arch)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload["metadata"]


def set_torch_seed(seed: int) -> None:
    """Seed torch's global generator (weight initialisation) from ``seed``."""
    torch.manual_seed(int(np.uint32(seed)))
