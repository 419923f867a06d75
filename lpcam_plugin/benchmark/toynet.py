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

Checkpoints hold plain tensors and JSON-able metadata only (network name, constructor
arguments, state dict), written atomically, and are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.io import PathLike, atomic_write
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

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
                "stem_width": self.stem_width, "stem_stride": self.stem_stride, "blocks_per_stage": self.blocks_per_stage}

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


@dataclass(frozen=True)
class TrainConfig:
    """Training schedule for :func:`train_classifier`.

    ``pixelsup``: None trains with the soft-margin loss alone; a dict (possibly empty) of
    :class:`~lpcam_plugin.methods.pixelsup.config.PixelSupConfig` overrides trains with RCM + MAM
    (:class:`~lpcam_plugin.PixelSelfSupervision`) on the same schedule.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hflip: bool = True
    seed: int = 0
    pixelsup: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a dict; ``pixelsup`` only when set (plain schedules keep their pre-RCM cache keys)."""
        out = asdict(self)
        if out["pixelsup"] is None:
            del out["pixelsup"]
        return out


def train_classifier(
    model: ToyClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Train ``model`` in place with multi-label soft-margin loss (AdamW, one-cycle learning rate).

    With ``config.pixelsup`` the loss is :class:`~lpcam_plugin.PixelSelfSupervision`'s total
    (soft-margin + RCM + MAM), its projection joins the optimiser and its SupportNet takes an
    EMA step after every optimiser step; everything else (batches, flips, schedule) is the same.

    Args:
        images: ``(N, 3, H, W)`` float inputs; labels: ``(N, C)`` multi-hot.

    Returns:
        ``{"loss": final-epoch mean loss, "train_accuracy": exact-match rate of sign(logits) on the
        training set, "epochs": ...}``, plus the final-epoch means ``"cls"``, ``"rcm"``, ``"mam"``
        with ``pixelsup``. The model is left in eval mode.
    """
    if images.dim() != 4 or labels.dim() != 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images (N, 3, H, W) and labels (N, C) disagree: {tuple(images.shape)} vs {tuple(labels.shape)}")
    if labels.shape[1] != model.num_classes:
        raise ValueError(f"labels have {labels.shape[1]} classes, the model {model.num_classes}")
    generator = torch.Generator().manual_seed(config.seed)
    pss = None
    if config.pixelsup is not None:
        pss = PixelSelfSupervision(model, feature_layer=model.FEATURE_LAYER, head=model.HEAD,
                                   num_classes=model.num_classes, **config.pixelsup)
    parameters = list(model.parameters()) + (list(pss.parameters()) if pss is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    num = images.shape[0]
    steps_per_epoch = math.ceil(num / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.MultiLabelSoftMarginLoss()
    model.train()
    epoch_loss = float("nan")
    parts: Dict[str, float] = {}
    desc = "train classifier" + (" (RCM + MAM)" if pss is not None else "")
    for epoch in progress_bar(range(config.epochs), progress=progress, desc=desc, total=config.epochs):
        order = torch.randperm(num, generator=generator)
        total = 0.0
        parts = {"cls": 0.0, "rcm": 0.0, "mam": 0.0}
        for start in range(0, num, config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = images[batch], labels[batch]
            if config.hflip:
                flip = torch.rand(x.shape[0], generator=generator) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if pss is None:
                loss = loss_fn(model(x), y)
            else:
                losses = pss(x, y, epoch=epoch)
                loss = losses["total"]
                for key in parts:
                    parts[key] += float(losses[key].detach()) * batch.numel()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if pss is not None:
                pss.update_support()
            total += float(loss.detach()) * batch.numel()
        epoch_loss = total / num
    model.eval()
    logits = predict_logits(model, images)
    accuracy = float(((logits > 0).float() == labels).all(dim=1).float().mean())
    logger.info("classifier trained: loss %.4f, exact-match train accuracy %.3f", epoch_loss, accuracy)
    stats = {"loss": epoch_loss, "train_accuracy": accuracy, "epochs": float(config.epochs)}
    if pss is not None:
        stats.update({key: value / num for key, value in parts.items()})
    return stats


@torch.inference_mode()
def predict_logits(model: ToyClassifier, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, C)`` logits in eval mode (the caller's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


@torch.inference_mode()
def extract_features(
    model: ToyClassifier, images: torch.Tensor, batch_size: int = 128, *, progress: Optional[bool] = None
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


def save_checkpoint(path: PathLike, model: ToyClassifier, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Save ``model`` (network name, state dict of tensors, architecture, JSON-able ``metadata``) atomically."""
    name = type(model).__name__
    if NETWORKS.get(name) is not type(model):
        raise TypeError(f"can only save the networks in NETWORKS ({sorted(NETWORKS)}), got {name}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "network": name,
        "architecture": model.architecture(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: PathLike) -> Tuple[ToyClassifier, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); model in eval mode.

    Checkpoints without a ``"network"`` entry (written before there were two networks) are ToyResNets.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    arch = dict(payload["architecture"])
    model = build_network(payload.get("network", "ToyResNet"), arch.pop("num_classes"), **arch)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload["metadata"]


def load_or_train(
    path: PathLike,
    key: Dict[str, Any],
    train: Callable[[], Tuple[ToyClassifier, Dict[str, float]]],
    metadata: Optional[Dict[str, Any]] = None,
) -> Tuple[ToyClassifier, Dict[str, float], bool]:
    """The network cached at ``path`` when its stored ``key`` equals ``key``, else ``train()`` saved there.

    Args:
        key: JSON-able description of everything the weights depend on (data, schedule, architecture).
        train: returns a trained network and JSON-able stats; called only on a cache miss.
        metadata: extra JSON-able metadata stored beside ``key`` and the stats.

    Returns:
        ``(model in eval mode, stats, cached)``. An unreadable file is logged and retrained.
    """
    if Path(path).is_file():
        try:
            model, meta = load_checkpoint(path)
        except (ValueError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
            logger.warning("ignoring unreadable checkpoint %s: %s", path, error)
        else:
            if meta.get("key") == key:
                logger.info("reusing checkpoint %s", path)
                return model, dict(meta.get("stats", {})), True
            logger.info("checkpoint %s was trained with other settings; retraining", path)
    model, stats = train()
    save_checkpoint(path, model, {**(metadata or {}), "key": key, "stats": stats})
    model.eval()
    return model, stats, False


def set_torch_seed(seed: int) -> None:
    """Seed torch's global generator (weight initialisation) from ``seed``."""
    torch.manual_seed(int(np.uint32(seed)))
