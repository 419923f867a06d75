"""Small ResNet-style multi-label classifiers for the synthetic benchmark, trained on CPU.

Two networks, both ending in global average pooling and a bias-free 1x1 convolution as the
classifier (attribute ``classifier``, ``weight`` ``(C, D, 1, 1)``, so ``W = weight[:, :, 0, 0]``):

- :class:`ToyResNet` (IRN-like, scaled down): a strided 3x3 stem and stages of basic residual
  blocks. The defaults (stem stride 2, stage strides 2, 2, 1; like IRN's last stage, the final
  stage keeps the resolution) give output stride 8 and D = 128.
- :class:`ToyBottleneckNet`, shaped like ResNet-50's last stage: the same kind of stem and basic
  stages down to output stride 16, then a ``stage4`` of bottleneck blocks (1x1 reduce, 3x3, 1x1
  expand to D = 1024, residual, ReLU after the sum) at stride 1, as IRN runs ResNet-50's stage 4.

The feature map for CAM-style read-outs is the output of the module named by
``FEATURE_LAYER`` (after its ReLU, so non-negative): ``(B, D, S/stride, S/stride)``; the head is
the module named by ``HEAD``. Both names are dotted attribute paths, for hooking
(``model.get_submodule(model.FEATURE_LAYER)``).

Training, feature extraction and checkpoints (plain tensors and JSON-able metadata, read with
``torch.load(weights_only=True)``) are in :mod:`lpcam_plugin.benchmark.training`.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3, 1x1 expand, each with BN, plus the residual, then ReLU.

    ``(B, C_in, h, w) -> (B, C_out, h/s, w/s)``; ``mid`` channels inside. As in torchvision's
    ResNet-50 (v1.5) the stride sits on the 3x3 convolution, and the shortcut is a strided 1x1
    projection with BN when the shape changes.
    """

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _basic_stages(c_in: int, widths: Sequence[int], strides: Sequence[int], blocks_per_stage: int) -> nn.Sequential:
    """Stages of :class:`BasicBlock` (the first block of a stage carries its stride)."""
    stages = []
    for width, stride in zip(widths, strides):
        blocks = [BasicBlock(c_in, width, stride=stride)]
        blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
        stages.append(nn.Sequential(*blocks))
        c_in = width
    return nn.Sequential(*stages)


def _stem(width: int, stride: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU on RGB: ``(B, 3, H, W) -> (B, width, H/stride, W/stride)``."""
    return nn.Sequential(nn.Conv2d(3, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())


class ToyClassifier(nn.Module):
    """What the benchmark needs from a network: features, GAP + bias-free 1x1 head, checkpoints.

    Subclasses build ``self.classifier`` (``nn.Conv2d(D, C, 1, bias=False)``), the module named
    by :attr:`FEATURE_LAYER`, and implement :meth:`features` and :meth:`architecture`.
    """

    #: Dotted name of the module whose output is :meth:`features` (for forward hooks).
    FEATURE_LAYER = ""
    #: Dotted name of the classifier head (``(C, D, 1, 1)`` weight, no bias).
    HEAD = "classifier"
    #: Dotted names of the levels below the feature layer, fine to coarse (F-CAM's skip features).
    SKIP_LAYERS: Tuple[str, ...] = ()

    num_classes: int
    classifier: nn.Conv2d

    def architecture(self) -> Dict[str, Any]:
        """Constructor arguments (JSON-able), as stored in checkpoints."""
        raise NotImplementedError

    @property
    def stride(self) -> int:
        """Output stride of :meth:`features`."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """D, the channel count of :meth:`features`."""
        return int(self.classifier.in_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> unpooled features ``(B, D, H/stride, W/stride)`` (non-negative)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> logits ``(B, C)``: GAP of the features, then the 1x1 classifier."""
        pooled = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def class_weight(self) -> torch.Tensor:
        """The classifier as a ``(C, D)`` matrix (detached copy)."""
        return self.classifier.weight.detach()[:, :, 0, 0].clone()


class ToyResNet(ToyClassifier):
    """Small ResNet: stem, stages of basic blocks, GAP, bias-free 1x1-conv classifier.

    Args:
        num_classes: C (no background).
        widths: channels per stage (D = ``widths[-1]``).
        strides: stride of the first block of each stage (output stride = ``stem_stride * prod(strides)``).
        stem_width, stem_stride: the 3x3 stem convolution.
        blocks_per_stage: residual blocks per stage.

    Features: the output of ``stages`` (:attr:`FEATURE_LAYER`).
    """

    FEATURE_LAYER = "stages"
    SKIP_LAYERS = ("stem", "stages.0", "stages.1")

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
        self.stem = _stem(self.stem_width, self.stem_stride)
        self.stages = _basic_stages(self.stem_width, self.widths, self.strides, self.blocks_per_stage)
        self.classifier = nn.Conv2d(self.widths[-1], self.num_classes, 1, bias=False)

    def architecture(self) -> Dict[str, Any]:
        return {"num_classes": self.num_classes, "widths": list(self.widths), "strides": list(self.strides),
                "stem_width": self.stem_width, "stem_stride": self.stem_stride,
                "blocks_per_stage": self.blocks_per_stage}

    @property
    def stride(self) -> int:
        return self.stem_stride * int(np.prod(self.strides))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> last-stage features ``(B, D, H/stride, W/stride)`` (non-negative)."""
        return self.stages(self.stem(x))


class ToyBottleneckNet(ToyClassifier):
    """A network whose feature layer is shaped like ResNet-50's stage 4, small enough for a CPU.

    ``stem`` -> ``stages`` (basic blocks, down to output stride ``stem_stride * prod(strides)``,
    16 by default) -> ``stage4`` (``blocks`` :class:`Bottleneck` blocks at stride 1: 1x1 reduce
    to ``mid_width``, 3x3, 1x1 expand to ``feature_dim`` with the residual and a ReLU after the
    sum) -> GAP -> bias-free 1x1 ``classifier``. ResNet-50's stage 4 has 3 blocks with 512 mid
    channels expanding to 2048; here 3 blocks, 128 mid channels, 1024 out by default.

    Args:
        num_classes: C (no background).
        widths, strides: the basic-block stages before ``stage4``.
        mid_width: channels inside each bottleneck.
        feature_dim: D, the channels ``stage4`` expands to (>= ``4 * mid_width`` as in ResNet).
        blocks: bottleneck blocks in ``stage4``.
        stem_width, stem_stride: the 3x3 stem convolution.

    Features: the output of ``stage4`` (:attr:`FEATURE_LAYER`).
    """

    FEATURE_LAYER = "stage4"
    SKIP_LAYERS = ("stem", "stages.0", "stages.1", "stages.2")

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        *,
        mid_width: int = 128,
        feature_dim: int = 1024,
        blocks: int = 3,
        stem_width: int = 24,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not widths or len(widths) != len(strides) or blocks < 1 or mid_width < 1:
            raise ValueError("widths and strides must be non-empty and of equal length, blocks and mid_width >= 1")
        if feature_dim < 4 * mid_width:
            raise ValueError(f"feature_dim ({feature_dim}) must be >= 4 * mid_width ({mid_width}): the block expands")
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.strides = tuple(int(s) for s in strides)
        self.mid_width = int(mid_width)
        self.blocks = int(blocks)
        self.stem_width = int(stem_width)
        self.stem_stride = int(stem_stride)
        self.stem = _stem(self.stem_width, self.stem_stride)
        self.stages = _basic_stages(self.stem_width, self.widths, self.strides, 1)
        c_in = self.widths[-1]
        stage4 = []
        for _ in range(self.blocks):
            stage4.append(Bottleneck(c_in, self.mid_width, int(feature_dim)))
            c_in = int(feature_dim)
        self.stage4 = nn.Sequential(*stage4)
        self.classifier = nn.Conv2d(int(feature_dim), self.num_classes, 1, bias=False)

    def architecture(self) -> Dict[str, Any]:
        return {"num_classes": self.num_classes, "widths": list(self.widths), "strides": list(self.strides),
                "mid_width": self.mid_width, "feature_dim": self.feature_dim, "blocks": self.blocks,
                "stem_width": self.stem_width, "stem_stride": self.stem_stride}

    @property
    def stride(self) -> int:
        return self.stem_stride * int(np.prod(self.strides))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``stage4`` features ``(B, D, H/stride, W/stride)`` (non-negative)."""
        return self.stage4(self.stages(self.stem(x)))


#: Network classes by the name stored in checkpoints.
NETWORKS: Dict[str, type] = {"ToyResNet": ToyResNet, "ToyBottleneckNet": ToyBottleneckNet}


def build_network(name: str, num_classes: int, **options: Any) -> ToyClassifier:
    """A fresh network ``NETWORKS[name](num_classes, **options)``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[name](num_classes, **options)
