"""The RCM+MAM training loop of EDAM's classifier (``train_EDAM_cls.py`` at ``de0af41`` with
:class:`~lpcam_plugin.methods.pixelsup.module.PixelSelfSupervision`; docs/design/pixelsup-spec.md)
and its command-line entry. See :mod:`lpcam_plugin.adapters.edam_pixelsup_train` for what stays
EDAM's and what changes."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from lpcam_plugin.adapters.common.checkpoints import cpu_state, save_state_dict
from lpcam_plugin.adapters.common.crop_batches import SeededItems
from lpcam_plugin.adapters.common.workers import resolve_device
from lpcam_plugin.adapters.edam.train_host import (
    NUM_CLASSES,
    SAMPLE_NUM,
    PairTransform,
    build_optimizer,
    edam_cam_head,
    host_logits,
    image_labels,
    import_host,
    load_initial_weights,
)
from lpcam_plugin.adapters.edam.train_options import HOST_EPOCH_STEPS, TrainOptions, build_parser
from lpcam_plugin.core.checkpoints import resume_state, save_training_state
from lpcam_plugin.core.identity import module_digest
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

logger = logging.getLogger(__name__)

STATE_FORMAT = "lpcam_plugin.edam_pixelsup_train/1"
METHOD_NAME = "EDAM RCM+MAM classifier training"
#: The script saves every ``max_step // 25`` steps.
SAVES_PER_RUN = 25


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % (2 ** 63)


def _check_one_process() -> None:
    if (dist.is_available() and dist.is_initialized()) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("the EDAM RCM+MAM training adapter runs in one process (the pairs of a batch run one "
                         "after the other); launch it without torchrun / an initialised process group")


def train(args: argparse.Namespace) -> Tuple[nn.Module, PixelSelfSupervision]:
    """Train ``args.network``'s ``Net`` the way ``train_EDAM_cls.py`` does, with RCM + MAM; write
    ``<session_name>/<ep>.pth`` and the training state; return ``(model, pss)`` on the device.

    Run from the EDAM checkout (its ``network``, ``voc12`` and ``tool`` packages are imported).
    """
    _check_one_process()
    opts = TrainOptions.from_args(args)  # argument errors before any import of the host
    data = import_host("voc12.data")
    imutils = import_host("tool.imutils")
    net_module = import_host(opts.network)
    device = resolve_device(opts.device)
    torch.manual_seed(opts.config.seed)
    model = net_module.Net()
    dataset = data.VOC12EDAMClsDataset(opts.train_list, voc12_root=opts.voc12_root,
                                       transform=PairTransform(imutils, model.normalize, opts.crop_size))
    opts = TrainOptions.from_args(args, pairs=len(dataset))
    steps_per_epoch = len(dataset) // opts.batch_size
    max_step = steps_per_epoch * opts.epochs
    if max_step == 0:
        raise ValueError(f"{opts.train_list} has {len(dataset)} pairs, fewer than one batch of {opts.batch_size}")
    groups = model.get_parameter_groups()  # before model.train(), as the script
    load_initial_weights(model, opts.weights)
    model.to(device)
    model.train()  # returns None (EDAM): never chained
    pss = PixelSelfSupervision(model, feature_layer="bn7", head=edam_cam_head, num_classes=NUM_CLASSES,
                               config=opts.config, forward_args=(list(range(SAMPLE_NUM)),)).to(device)
    optimizer = build_optimizer(groups, pss, opts, max_step)
    fingerprint = {**opts.fingerprint(), "model_weights": module_digest(model)}
    loop = {"sums": {key: 0.0 for key in ("total", "edam", "rcm", "mam")}, "history": []}
    state = resume_state(opts.checkpoint, STATE_FORMAT, METHOD_NAME, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        pss.load_state_dict(state["pss"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        optimizer.global_step = int(state["global_step"])
        loop = {"sums": dict(state["sums"]), "history": [dict(h) for h in state["history"]]}
        logger.info("EDAM RCM+MAM: resuming %s at step %d of %d", opts.checkpoint, optimizer.global_step, max_step)
    save_every = max(max_step // SAVES_PER_RUN, 1)
    Path(opts.session_name).mkdir(parents=True, exist_ok=True)
    seeded = SeededItems(dataset, opts.config.seed)
    bce = nn.BCEWithLogitsLoss()
    logger.info("EDAM RCM+MAM: %s, %d epochs of %d steps (batch %d pairs, crop %d), pss epoch = step // %d, MAM "
                "from pss epoch %d, EMA momentum %s, rcm %s, device %s", opts.network, opts.epochs, steps_per_epoch,
                opts.batch_size, opts.crop_size, opts.epoch_steps, opts.config.mam_start_epoch,
                opts.config.ema_momentum, opts.config.rcm_form, device)

    def save() -> None:
        step = int(optimizer.global_step)
        save_state_dict(Path(opts.session_name) / f"{step // HOST_EPOCH_STEPS}.pth", model)
        save_training_state(opts.checkpoint, STATE_FORMAT, fingerprint, model=cpu_state(model),
                            pss=cpu_state(pss), optimizer=optimizer.state_dict(), global_step=step,
                            sums=loop["sums"], history=loop["history"])

    while optimizer.global_step < max_step:
        epoch, offset = divmod(int(optimizer.global_step), steps_per_epoch)
        seeded.set_epoch(epoch)
        indices = list(range(offset * opts.batch_size, steps_per_epoch * opts.batch_size))
        loader = DataLoader(seeded, batch_size=opts.batch_size, sampler=indices, num_workers=opts.workers,
                            drop_last=True, pin_memory=device.type == "cuda")
        desc = f"EDAM RCM+MAM epoch {epoch + 1}/{opts.epochs}"
        for pack in progress_bar(loader, progress=opts.progress, desc=desc, total=len(loader)):
            step = int(optimizer.global_step)
            torch.manual_seed(_step_seed(opts.config.seed, step))  # dropout: the same on a resumed run
            img = pack[1].to(device, non_blocking=True)  # (B, 2, 3, crop, crop) pairs
            label = pack[2].view(-1).to(device, non_blocking=True)
            label_idx = pack[3]
            losses = pss(img.view(-1, *img.shape[-3:]), image_labels(pack[2], label_idx).to(device),
                         epoch=step // opts.epoch_steps)
            edam = bce(host_logits(model, img, label_idx, device), label)
            total = edam + losses["total"]
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            pss.update_support()
            for key, value in (("total", total), ("edam", edam), ("rcm", losses["rcm"]), ("mam", losses["mam"])):
                loop["sums"][key] += float(value.detach())
            done = int(optimizer.global_step)
            if done % steps_per_epoch == 0:
                means = {key: value / steps_per_epoch for key, value in loop["sums"].items()}
                loop["history"].append(means)
                loop["sums"] = {key: 0.0 for key in loop["sums"]}
                logger.info("epoch %d/%d: loss %.4f (edam %.4f, rcm %.4f, mam %.4f), step %d, lr %.6f", epoch + 1,
                            opts.epochs, means["total"], means["edam"], means["rcm"], means["mam"], done,
                            optimizer.param_groups[0]["lr"])
            if done % save_every == 0 or done == max_step:
                save()
    logger.info("EDAM RCM+MAM: weights in %s/ (<global_step // %d>.pth), training state %s", opts.session_name,
                HOST_EPOCH_STEPS, opts.checkpoint)
    return model, pss


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry: ``train_EDAM_cls.py``'s arguments plus ``--lpcam_pss_*``. Run from the EDAM checkout."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # EDAM's packages, as ``python train_EDAM_cls.py`` would see them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (ValueError, ImportError) as error:
        if "\n" in str(error):
            raise
        raise SystemExit(f"error: {error}") from None


__all__ = ["METHOD_NAME", "SAVES_PER_RUN", "STATE_FORMAT", "main", "train"]
