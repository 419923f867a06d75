"""Training the benchmark's toy classifiers on CPU, their features, and their cached checkpoints.

:func:`train_classifier` trains a :class:`~lpcam_plugin.benchmark.toynet.ToyClassifier` with the
multi-label soft-margin loss (optionally with RCM + MAM, :class:`~lpcam_plugin.PixelSelfSupervision`);
:func:`extract_features` returns its feature maps. Checkpoints hold plain tensors and JSON-able
metadata only (network name, constructor arguments, state dict), are written atomically and read
with ``torch.load(weights_only=True)``; :func:`load_or_train` reuses one whose key (data, schedule,
architecture) matches.
"""
from __future__ import annotations

import logging
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from lpcam_plugin.benchmark.toynet import NETWORKS, ToyClassifier, build_network
from lpcam_plugin.core.checks import check_positive_int
from lpcam_plugin.core.io import PathLike, atomic_write
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

logger = logging.getLogger(__name__)

#: ``format`` of the checkpoints :func:`save_checkpoint` writes (named after the module that first wrote them).
CHECKPOINT_FORMAT = "lpcam_plugin.toynet/1"


@dataclass(frozen=True)
class TrainConfig:
    """Training schedule for :func:`train_classifier`.

    ``pixelsup``: None trains with the soft-margin loss alone; a dict (possibly empty) of
    :class:`~lpcam_plugin.methods.pixelsup.config.PixelSupConfig` overrides trains with RCM + MAM
    (:class:`~lpcam_plugin.PixelSelfSupervision`) on the same schedule.
    ``backbone_lr_scale``: the learning rate of every parameter but the head's (and RCM's projection)
    as a fraction of ``lr``: 1 from scratch, 0.1 to fine-tune a pretrained backbone (regime B).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hflip: bool = True
    seed: int = 0
    pixelsup: Optional[Dict[str, Any]] = None
    backbone_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.backbone_lr_scale, (int, float)) and 0 < self.backbone_lr_scale <= 1):
            raise ValueError(f"backbone_lr_scale must be in (0, 1], got {self.backbone_lr_scale!r}")

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a dict; ``pixelsup`` only when set and ``backbone_lr_scale`` only when not 1
        (plain schedules keep their earlier cache keys)."""
        out = asdict(self)
        if out["pixelsup"] is None:
            del out["pixelsup"]
        if out["backbone_lr_scale"] == 1.0:
            del out["backbone_lr_scale"]
        return out


def train_classifier(
    model: ToyClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Train ``model`` in place with multi-label soft-margin loss (AdamW, one-cycle learning rate; the
    backbone's rate is ``config.backbone_lr_scale`` x the head's, as the hosts fine-tune a pretrained one).

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
        raise ValueError(f"images (N, 3, H, W) and labels (N, C) disagree: "
                         f"{tuple(images.shape)} vs {tuple(labels.shape)}")
    if labels.shape[1] != model.num_classes:
        raise ValueError(f"labels have {labels.shape[1]} classes, the model {model.num_classes}")
    generator = torch.Generator().manual_seed(config.seed)
    pss = None
    if config.pixelsup is not None:
        pss = PixelSelfSupervision(model, feature_layer=model.FEATURE_LAYER, head=model.HEAD,
                                   num_classes=model.num_classes, **config.pixelsup)
    head = list(model.get_submodule(model.HEAD).parameters()) + (list(pss.parameters()) if pss is not None else [])
    chosen = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in chosen]
    rates = [config.lr * config.backbone_lr_scale, config.lr]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": rates[0]}, {"params": head, "lr": rates[1]}],
                                  lr=config.lr, weight_decay=config.weight_decay)
    num = images.shape[0]
    steps_per_epoch = math.ceil(num / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=rates, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
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
        batches = progress_bar(starts, progress=progress, desc="features", total=len(starts))
        chunks = [model.features(images[i : i + batch_size]) for i in batches]
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
    *,
    reuse: bool = True,
) -> Tuple[ToyClassifier, Dict[str, float], bool]:
    """The network cached at ``path`` when its stored ``key`` equals ``key``, else ``train()`` saved there.

    Args:
        key: JSON-able description of everything the weights depend on (data, schedule, architecture).
        train: returns a trained network and JSON-able stats; called only on a cache miss.
        metadata: extra JSON-able metadata stored beside ``key`` and the stats.
        reuse: False to train even when the cache matches (a file cached with it is gone).

    Returns:
        ``(model in eval mode, stats, cached)``. An unreadable file is logged and retrained.
    """
    if reuse and Path(path).is_file():
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
