"""RCM + MAM (:class:`~lpcam_plugin.methods.pixelsup.module.PixelSelfSupervision`;
docs/design/pixelsup-spec.md) in the classifier training of the IRN-family hosts: IRN's and AMN
stage 1's ``step/train_cam.py``, re-run step by step with the host's own classes.

What stays the host's (``step/train_cam.py`` at ``a2ece00``, byte-identical in AMN except one
``.cuda()``):

- the network ``getattr(importlib.import_module(args.cam_network), 'Net')()`` and its
  ``train()`` override (freezes conv1/bn1);
- the data ``voc12.dataloader.VOC12ClassificationDataset(args.train_list, resize_long=(320,
  640), hor_flip=True, crop_size=512, crop_method="random")``, shuffled, ``drop_last``, batches
  of ``args.cam_batch_size`` (over all processes), ``args.cam_num_epoches`` epochs;
- the optimizer ``misc.torchutils.PolyOptimizer`` with the host's two groups (backbone at
  ``cam_learning_rate``, ``newly_added`` at 10x, both ``cam_weight_decay``) and
  ``max_step = steps per epoch x epochs``; the projection of RCM joins as a third group at the
  new-layer rate (10x);
- the weights file ``args.cam_weights_name + '.pth'`` = ``model.state_dict()`` (CPU tensors),
  which the host's ``make_cam`` (and this package's LPCAM / ReCAM / F-CAM adapters) load
  strictly.

What changes: ``losses = pss(images, labels, epoch=ep)`` (``losses["total"]`` replaces the
host's multilabel soft-margin loss; its ``cls`` term is that same loss) and
``pss.update_support()`` after each optimizer step. The host's per-epoch ``validate`` (it only
prints a loss on ``val_list``) is not run. Each image's random resize/flip/crop is drawn from
``(seed, epoch, index)`` and the order from a ``DistributedSampler`` (one replica in a single
process), so a resumed run and a ``torchrun`` run train on the same batches as one
uninterrupted process.

Resume: after every epoch the training state (F, ``pss.state_dict()``, optimizer with its
``global_step``, epoch, per-epoch loss means ``history``) is written atomically to
``<cam_weights_name>.pss_train.pt`` (``torch.load(weights_only=True)``); a rerun with the same
settings continues from the last finished epoch (the file is kept when training ends, so a rerun
only rewrites the weights).

DDP: under ``torchrun`` (the default process group is initialised from the environment when
nobody did) each rank reads its share of every batch; ``pss`` wraps F in
DistributedDataParallel and all-reduces the prototype sums; rank 0 writes the files.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from lpcam_plugin.adapters.common.checkpoints import cpu_state, save_state_dict
from lpcam_plugin.adapters.common.options import (
    add_config_options,
    add_run_options,
    config_from_args,
    loader_workers,
)
from lpcam_plugin.adapters.common.workers import distributed, is_writer, resolve_device
from lpcam_plugin.adapters.resnet.crop_batches import PackBatches, crop_loader
from lpcam_plugin.adapters.resnet.datasets import VOC
from lpcam_plugin.core.checkpoints import resume_state, save_training_state
from lpcam_plugin.core.identity import module_digest
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.torchrun import init_from_env
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

logger = logging.getLogger(__name__)

STATE_FORMAT = "lpcam_plugin.pixelsup_train/1"
METHOD_NAME = "RCM+MAM classifier training"
#: ``train_cam``'s hard-coded crop (it does not read ``args.cam_crop_size``).
HOST_CROP_SIZE = 512
#: IRN's ``run_sample.py`` defaults of the options ``train_cam`` reads.
HOST_DEFAULTS = {"cam_batch_size": 16, "cam_num_epoches": 5, "cam_learning_rate": 0.1, "cam_weight_decay": 1e-4,
                 "num_workers": 0}


def add_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse._ArgumentGroup:
    """Add the ``--lpcam_pss_*`` options to the host's parser; unset method options take the
    ``--lpcam_pss_preset`` values (:class:`PixelSupConfig`)."""
    group = parser.add_argument_group("RCM+MAM classifier training (lpcam_plugin)")
    add_config_options(group, preset)
    group.add_argument("--lpcam_pss_crop_size", type=int, default=None,
                       help=f"random crop size (default: train_cam's {HOST_CROP_SIZE})")
    add_run_options(group, checkpoint="<cam_weights_name>.pss_train.pt",
                    device="'auto' (CUDA when available; cuda:LOCAL_RANK under torchrun), 'cpu', 'cuda:1' ...",
                    workers="DataLoader workers per process (default: the host's num_workers)")
    return group


@dataclass(frozen=True)
class TrainOptions:
    """The host's training options and the ``--lpcam_pss_*`` options, resolved and checked: the one
    carrier of :func:`train`."""

    config: PixelSupConfig
    preset: str
    network: str
    weights_name: str
    train_list: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    crop_size: int
    workers: int
    checkpoint: Path
    device: str = "auto"
    progress: Optional[bool] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    #: the host's ``args.voc12_root`` (the crop batches read the images there)
    voc12_root: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, steps_per_epoch: int = 0) -> "TrainOptions":
        """Read ``args`` (missing ``--lpcam_pss_*`` attributes take their defaults; ``steps_per_epoch``,
        once the loader is built, sets the EMA's default); one-line ``ValueError`` on a bad value."""
        for name in ("cam_network", "cam_weights_name", "train_list", "voc12_root"):
            if not getattr(args, name, None):
                raise ValueError(f"args.{name} is missing: pass the host's run_sample.py arguments")
        host = {name: getattr(args, name, default) for name, default in HOST_DEFAULTS.items()}
        for name in ("cam_batch_size", "cam_num_epoches"):
            if not isinstance(host[name], int) or isinstance(host[name], bool) or host[name] < 1:
                raise ValueError(f"args.{name} must be an int >= 1, got {host[name]!r}")
        epochs = host["cam_num_epoches"]
        config, preset, overrides = config_from_args(args, steps_per_epoch * epochs, epochs)
        crop = getattr(args, "lpcam_pss_crop_size", None) or HOST_CROP_SIZE
        if crop < 1:
            raise ValueError(f"--lpcam_pss_crop_size must be >= 1, got {crop}")
        workers = loader_workers(args, host["num_workers"])
        checkpoint = getattr(args, "lpcam_pss_checkpoint", None) or args.cam_weights_name + ".pss_train.pt"
        device = getattr(args, "lpcam_pss_device", None) or getattr(args, "lpcam_device", None) or "auto"
        return cls(config=config, preset=preset, network=args.cam_network, weights_name=args.cam_weights_name,
                   train_list=args.train_list, voc12_root=args.voc12_root, batch_size=host["cam_batch_size"],
                   epochs=host["cam_num_epoches"], learning_rate=float(host["cam_learning_rate"]),
                   weight_decay=float(host["cam_weight_decay"]), crop_size=int(crop), workers=int(workers),
                   checkpoint=Path(checkpoint), device=device, progress=getattr(args, "lpcam_pss_progress", None),
                   overrides=overrides)

    def fingerprint(self) -> Dict[str, Any]:
        """What a training state depends on; a state written with other values is refused (not the
        number of processes: a run may resume with another world size)."""
        return {"config": self.config.to_dict(), "network": self.network, "train_list_sha256":
                file_sha256(self.train_list), "batch_size": self.batch_size, "epochs": self.epochs,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay, "crop_size": self.crop_size}


def _broadcast_model(model: nn.Module) -> None:
    """Make every rank start from rank 0's F (the host initialises its new layers randomly)."""
    if distributed():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def build_optimizer(model: nn.Module, pss: PixelSelfSupervision, opts: TrainOptions, max_step: int
                    ) -> torch.optim.Optimizer:
    """The host's ``misc.torchutils.PolyOptimizer`` with ``train_cam``'s groups plus the projection.

    Groups: ``model.trainable_parameters()`` = (backbone at ``lr``, new layers at ``10 lr``),
    both ``weight_decay``; ``pss.parameters()`` (the RCM projection) at ``10 lr``.
    """
    torchutils = importlib.import_module("misc.torchutils")
    backbone, new_layers = model.trainable_parameters()
    lr, wd = opts.learning_rate, opts.weight_decay
    return torchutils.PolyOptimizer([
        {"params": backbone, "lr": lr, "weight_decay": wd},
        {"params": new_layers, "lr": 10 * lr, "weight_decay": wd},
        {"params": list(pss.parameters()), "lr": 10 * lr, "weight_decay": wd},
    ], lr=lr, weight_decay=wd, max_step=max_step)


def _resume(opts: TrainOptions, fingerprint: Dict[str, Any], model: nn.Module, pss: PixelSelfSupervision,
            optimizer: torch.optim.Optimizer, history: List[Dict[str, float]]) -> int:
    """Load the training state when it exists (``history`` gets its per-epoch loss means); return
    the first epoch still to train."""
    state = resume_state(opts.checkpoint, STATE_FORMAT, METHOD_NAME, fingerprint)
    if state is None:
        return 0
    model.load_state_dict(state["model"], strict=True)
    pss.load_state_dict(state["pss"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    optimizer.global_step = int(state["global_step"])
    epoch = int(state["epoch"])
    history[:] = [dict(means) for means in state["history"]]
    logger.info("RCM+MAM training: resuming %s after epoch %d of %d", opts.checkpoint, epoch, opts.epochs)
    return epoch


def _train_epoch(pss: PixelSelfSupervision, optimizer: torch.optim.Optimizer, loader: PackBatches, epoch: int,
                 opts: TrainOptions, device: torch.device) -> Dict[str, float]:
    """One epoch of the host's loop with ``pss``'s losses on ``(images (B, 3, crop, crop), labels
    (B, 20))`` batches; returns the mean of each loss."""
    sums = {"total": 0.0, "cls": 0.0, "rcm": 0.0, "mam": 0.0}
    steps = 0
    desc = f"RCM+MAM train_cam epoch {epoch + 1}/{opts.epochs}"
    for images, labels in progress_bar(loader, progress=opts.progress, desc=desc, total=len(loader)):
        losses = pss(images.to(device), labels.to(device), epoch=epoch)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        pss.update_support()
        for key in sums:
            sums[key] += float(losses[key].detach())
        steps += 1
    return {key: value / max(steps, 1) for key, value in sums.items()}


def train(args: argparse.Namespace) -> Tuple[nn.Module, PixelSelfSupervision]:
    """Train ``args.cam_network``'s ``Net`` the host's way with RCM + MAM; write the host weights
    ``args.cam_weights_name + '.pth'`` (rank 0) and return ``(model, pss)`` on the training device.

    Run from the host's root (its ``voc12``, ``misc`` and ``net`` packages are imported).
    """
    opts = TrainOptions.from_args(args)
    device = resolve_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))
    init_from_env(device=device, min_world_size=2)
    world = dist.get_world_size() if distributed() else 1
    if opts.batch_size % world:
        raise ValueError(f"cam_batch_size {opts.batch_size} is not a multiple of the {world} processes")
    loader = crop_loader(VOC.crops(opts, opts.crop_size), opts.batch_size, opts.workers, opts.config.seed,
                         seeded_items=True)
    if len(loader) == 0:
        raise ValueError(f"{opts.train_list} has fewer images than one batch of {opts.batch_size}")
    opts = TrainOptions.from_args(args, steps_per_epoch=len(loader))  # the EMA follows the run's steps
    torch.manual_seed(opts.config.seed)
    model = importlib.import_module(opts.network).Net()
    model = model.to(device)
    model.train()  # the host's override: freezes conv1 / bn1
    _broadcast_model(model)
    pss = PixelSelfSupervision(model, feature_layer="stage4", head="classifier", num_classes=20,
                               config=opts.config).to(device)
    optimizer = build_optimizer(model, pss, opts, len(loader) * opts.epochs)
    fingerprint = {**opts.fingerprint(), "model_weights": module_digest(model)}
    history: List[Dict[str, float]] = []
    start = _resume(opts, fingerprint, model, pss, optimizer, history)
    logger.info("RCM+MAM train_cam: %s, %d epochs of %d steps (batch %d over %d process(es), crop %d), MAM from "
                "epoch %d, EMA momentum %s, rcm %s, device %s", opts.network, opts.epochs, len(loader),
                opts.batch_size, world, opts.crop_size, opts.config.mam_start_epoch, opts.config.ema_momentum,
                opts.config.rcm_form, device)
    for epoch in range(start, opts.epochs):
        loader.set_epoch(epoch)
        means = _train_epoch(pss, optimizer, loader, epoch, opts, device)
        history.append(means)
        logger.info("epoch %d/%d: loss %.4f (cls %.4f, rcm %.4f, mam %.4f), step %d, lr %.5f", epoch + 1,
                    opts.epochs, means["total"], means["cls"], means["rcm"], means["mam"], optimizer.global_step,
                    optimizer.param_groups[0]["lr"])
        if is_writer():
            save_training_state(opts.checkpoint, STATE_FORMAT, fingerprint, model=cpu_state(model),
                                pss=cpu_state(pss), optimizer=optimizer.state_dict(),
                                global_step=int(optimizer.global_step), epoch=epoch + 1, history=history)
        if distributed():
            dist.barrier()
    weights = Path(opts.weights_name + ".pth")
    if is_writer():
        save_state_dict(weights, model)
        logger.info("RCM+MAM train_cam: saved %s (the host's format) and the training state %s", weights,
                    opts.checkpoint)
    if distributed():
        dist.barrier()
    return model, pss


__all__ = ["HOST_CROP_SIZE", "HOST_DEFAULTS", "METHOD_NAME", "STATE_FORMAT", "TrainOptions", "add_arguments",
           "build_optimizer", "train"]
