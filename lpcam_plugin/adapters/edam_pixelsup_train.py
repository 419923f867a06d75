"""RCM + MAM (:class:`~lpcam_plugin.PixelSelfSupervision`) in EDAM's classifier training
(``allenwu97/EDAM`` at ``de0af41``, ``train_EDAM_cls.py``).

``train_EDAM_cls.py`` keeps its whole loop under ``if __name__ == '__main__'``, so there is
nothing to patch: this module is a drop-in for the script. From the EDAM checkout::

    python -m lpcam_plugin.adapters.edam_pixelsup_train <train_EDAM_cls.py's own arguments> [--lpcam_pss_* ...]

What stays EDAM's (re-implemented here step by step, the host's own classes imported):

- the network ``getattr(importlib.import_module(args.network), 'Net')()``, its
  ``get_parameter_groups()`` taken before ``model.train()`` as the script does, the ``--weights``
  initialisation (``.params`` through ``network.resnet38d.convert_mxnet_to_torch``, else
  ``torch.load``) loaded with ``strict=False``, then ``model.train()`` (it returns None; it
  freezes ``not_training`` and every BatchNorm);
- the data ``voc12.data.VOC12EDAMClsDataset(args.train_list, ...)``: image pairs with their
  common class, 20 sampled class ids ``label_idx`` (present classes first, absent ones shuffled)
  and 40 pair labels; transforms ``imutils.RandomResizeLong(256, 512)``, horizontal flip, colour
  jitter (brightness / contrast / saturation 0.3, hue 0.1), ``model.normalize``,
  ``imutils.RandomCrop(args.crop_size)``, ``HWC_to_CHW``; unshuffled, ``drop_last``;
- the loss ``BCEWithLogitsLoss(model(img, label_idx), label)``; the script's ``DataParallel``
  gives each GPU one pair (``Net.forward`` asserts two images): here the pairs of a batch run
  one after the other on one device and the loss is the mean over all of them, the same number
  as the README's ``--batch_size 4`` on four GPUs;
- the optimizer ``tool.torchutils.PolyOptimizer`` with the six groups (lr x1, x2 (no decay), x10,
  x20 (no decay), x1, x1 (no decay)), ``max_step = len(dataset) // batch_size x max_epoches``,
  ``warm_up_step=2000``; the RCM projection joins as a seventh group at ``10 lr`` with
  ``wt_dec`` (as the new layers);
- the weights ``<session_name>/<global_step // 1322>.pth`` = ``model.state_dict()`` written
  every ``max_step // 25`` steps (every step when ``max_step < 25``, where the script divides
  by zero) and once more after the last step, which ``infer_cls.py --weights`` (and this
  package's EDAM adapters) load strictly.

What changes: per step ``total = edam_bce + pss(images, labels, epoch=...)["total"]`` with the
pair images as ``(2B, 3, H, W)`` and each image's 20-class label rebuilt from ``label`` and
``label_idx``; ``pss`` reads ``bn7`` (the "conv6" features, D = 4096) and EDAM's own CAM
``|L2-normalise_channels(mask_layer(bn7))|`` channels 0..19 (:func:`edam_cam_head`) for its
region masks and MAM, has ``cls_weight=0`` (EDAM's classifier is not GAP-linear; its BCE is the
classification term), and ``pss.update_support()`` runs after each optimizer step. The epoch
``pss`` sees is the script's own count, ``global_step // 1322`` (``--lpcam_pss_epoch_steps``);
MAM starts at 30% of the run (the paper's epoch 6 of 20) unless ``--lpcam_pss_mam_start_epoch``
says otherwise. No tensorboard ``runs/`` and no ``<session_name>.log`` are written (logging
instead); ``tensorboardX``, ``prefetch_generator`` and torchvision are not needed.

Device: ``--lpcam_pss_device`` (default ``auto``: CUDA when available). EDAM's
``Net.forward`` calls ``segment_info....cuda()`` unconditionally (``network/resnet38_EDAM_cls.py``,
in ``forward``): on CUDA the forward runs under ``torch.cuda.device(device)``; on any other device
``torch.Tensor.cuda`` is redirected to the model's device for the duration of that call only
(:func:`cuda_calls_to`), so the unchanged network trains on a CPU too.

Resume: at every weights save the training state (F, ``pss.state_dict()``, optimizer with its
``global_step``, loss sums, per-epoch means ``history``) is written atomically to
``<session_name>.pss_train.pt`` (``torch.load(weights_only=True)``); a rerun with the same
settings continues from that step (mid-epoch: each pair's augmentation and label sampling is
drawn from ``(seed, epoch, index)``, dropout from ``(seed, step)``), and trains as the
uninterrupted run would.

One process: the script's ``DataParallel`` is replaced by the loop over pairs; under an
initialised process group (``torchrun``) the adapter refuses to run.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lpcam_plugin.adapters._crop_batches import SeededItems, list_sha256
from lpcam_plugin.adapters._recam_step import _save_state_dict
from lpcam_plugin.adapters._resnet_hosts import resolve_device
from lpcam_plugin.adapters.pixelsup_train import (PAPER_MAM_FRACTION, add_config_options, add_run_options,
                                                  config_from_args, loader_workers)
from lpcam_plugin.core.checkpoints import load_training_state, save_training_state
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

logger = logging.getLogger(__name__)

STATE_FORMAT = "lpcam_plugin.edam_pixelsup_train/1"
METHOD_NAME = "EDAM RCM+MAM classifier training"
#: ``train_EDAM_cls.py`` names its checkpoints ``global_step // 1322`` (steps of one original epoch).
HOST_EPOCH_STEPS = 1322
#: ``PolyOptimizer(..., warm_up_step=2000)`` in the script.
WARM_UP_STEP = 2000
#: The script saves every ``max_step // 25`` steps.
SAVES_PER_RUN = 25
NUM_CLASSES = 20
#: EDAM's ``Net.forward`` samples this many class ids per pair (``sample_num``).
SAMPLE_NUM = 20
#: ``.cuda()`` call sites of EDAM's training forward, named in the device note.
CUDA_LINES = "network/resnet38_EDAM_cls.py Net.forward: segment_info.to(torch.int64).cuda()"


def build_parser() -> argparse.ArgumentParser:
    """``train_EDAM_cls.py``'s arguments (same names and defaults) plus the ``--lpcam_pss_*`` options."""
    parser = argparse.ArgumentParser(prog="python -m lpcam_plugin.adapters.edam_pixelsup_train",
                                     description="EDAM's train_EDAM_cls.py with RCM+MAM (lpcam_plugin)")
    parser.add_argument("--batch_size", default=8, type=int)
    parser.add_argument("--max_epoches", default=1, type=int)
    parser.add_argument("--network", default="network.resnet38_EDAM_cls", type=str)
    parser.add_argument("--lr", default=0.01, type=float)
    parser.add_argument("--num_workers", default=20, type=int)
    parser.add_argument("--wt_dec", default=5e-4, type=float)
    parser.add_argument("--weights", required=True, type=str)
    parser.add_argument("--train_list", default="voc12/EDAM_train.txt", type=str)
    parser.add_argument("--session_name", default="EDAM", type=str)
    parser.add_argument("--crop_size", default=368, type=int)
    parser.add_argument("--voc12_root", required=True, type=str)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse._ArgumentGroup:
    """Add the ``--lpcam_pss_*`` options (those of :mod:`~lpcam_plugin.adapters.pixelsup_train` and
    EDAM's ``--lpcam_pss_epoch_steps``) to ``parser``."""
    group = parser.add_argument_group("RCM+MAM classifier training (lpcam_plugin)")
    add_config_options(group, preset, mam_help="first epoch (global_step // epoch_steps) with MAM (default: "
                                                "round(0.3 x the run's epochs), the paper's 6 of 20)")
    group.add_argument("--lpcam_pss_epoch_steps", type=int, default=None,
                       help=f"steps per epoch as pss counts them (default: the script's {HOST_EPOCH_STEPS})")
    add_run_options(group, checkpoint="<session_name>.pss_train.pt",
                    device="'auto' (CUDA when available), 'cpu', 'cuda:1' ...",
                    workers="DataLoader workers (default: the script's --num_workers)")
    return group


@dataclass(frozen=True)
class TrainOptions:
    """EDAM's training arguments and the ``--lpcam_pss_*`` options, resolved and checked."""

    config: PixelSupConfig
    network: str
    weights: str
    train_list: str
    voc12_root: str
    session_name: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    crop_size: int
    workers: int
    epoch_steps: int
    checkpoint: Path
    device: str = "auto"
    progress: Optional[bool] = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, pairs: Optional[int] = None) -> "TrainOptions":
        """Read ``args``; ``pairs`` (the dataset's length) sets the default MAM start. One-line
        ``ValueError`` on a bad value."""
        for name in ("network", "weights", "train_list", "voc12_root", "session_name"):
            if not getattr(args, name, None):
                raise ValueError(f"args.{name} is missing: pass train_EDAM_cls.py's arguments")
        for name in ("batch_size", "max_epoches", "crop_size"):
            value = getattr(args, name, None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"--{name} must be an int >= 1, got {value!r}")
        epoch_steps = getattr(args, "lpcam_pss_epoch_steps", None) or HOST_EPOCH_STEPS
        if epoch_steps < 1:
            raise ValueError(f"--lpcam_pss_epoch_steps must be >= 1, got {epoch_steps}")
        max_step = (pairs // args.batch_size) * args.max_epoches if pairs is not None else 0
        config, _, _ = config_from_args(args, math.floor(PAPER_MAM_FRACTION * max_step / epoch_steps + 0.5))
        config = config.replace(cls_weight=0.0)  # EDAM's own BCE is the classification term
        workers = loader_workers(args, getattr(args, "num_workers", 0))
        checkpoint = getattr(args, "lpcam_pss_checkpoint", None) or args.session_name + ".pss_train.pt"
        return cls(config=config, network=args.network, weights=args.weights, train_list=args.train_list,
                   voc12_root=args.voc12_root, session_name=args.session_name, batch_size=args.batch_size,
                   epochs=args.max_epoches, learning_rate=float(getattr(args, "lr", 0.01)),
                   weight_decay=float(getattr(args, "wt_dec", 5e-4)), crop_size=args.crop_size,
                   workers=int(workers), epoch_steps=int(epoch_steps), checkpoint=Path(checkpoint),
                   device=getattr(args, "lpcam_pss_device", None) or "auto",
                   progress=getattr(args, "lpcam_pss_progress", None))

    def fingerprint(self) -> Dict[str, Any]:
        """What a training state depends on; a state written with other values is refused."""
        return {"config": self.config.to_dict(), "network": self.network, "weights": self.weights,
                "train_list_sha256": list_sha256(self.train_list), "batch_size": self.batch_size,
                "epochs": self.epochs, "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                "crop_size": self.crop_size, "epoch_steps": self.epoch_steps}


# ------------------------------------------------------------------------------- host pieces


def edam_cam_head(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """EDAM's ``forward_cam`` on ``bn7`` features: ``|L2-normalise over the 21 channels of
    mask_layer(f)|``, channels 0..19 (class c; channel 20 only takes part in the normalisation)."""
    return torch.abs(F.normalize(model.mask_layer(features)))[:, :NUM_CLASSES]


def image_labels(label: torch.Tensor, label_idx: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each image's 20-class multi-hot label ``(2B, 20)`` from EDAM's pair labels ``(B, 40)`` (the
    first image's 20 sampled classes, then the second's) and ``label_idx`` (20 tensors ``(B,)``:
    every class once, so the rebuilt labels are exact)."""
    batch = label.shape[0]
    index = torch.stack([torch.as_tensor(t).reshape(-1) for t in label_idx], dim=1).long().cpu()  # (B, 20)
    out = torch.zeros(batch, 2, NUM_CLASSES)
    pairs = label.detach().float().cpu().view(batch, 2, SAMPLE_NUM)
    for image in range(2):
        out[:, image].scatter_(1, index, pairs[:, image])
    return out.view(batch * 2, NUM_CLASSES)


class ColorJitter:
    """Random brightness, contrast, saturation (factors in ``[1 - x, 1 + x]``) and hue shift (in
    ``[-hue, hue]`` of a turn), applied in random order to a PIL image, drawn from Python's
    ``random``: the ranges and operations of the ``transforms.ColorJitter(0.3, 0.3, 0.3, 0.1)``
    the script uses (Pillow's enhancers; not bit-identical to torchvision)."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, img: PIL.Image.Image) -> PIL.Image.Image:
        b = random.uniform(1 - self.brightness, 1 + self.brightness)
        c = random.uniform(1 - self.contrast, 1 + self.contrast)
        s = random.uniform(1 - self.saturation, 1 + self.saturation)
        h = random.uniform(-self.hue, self.hue)
        ops = [lambda im: PIL.ImageEnhance.Brightness(im).enhance(b),
               lambda im: PIL.ImageEnhance.Contrast(im).enhance(c),
               lambda im: PIL.ImageEnhance.Color(im).enhance(s),
               lambda im: _shift_hue(im, h)]
        random.shuffle(ops)
        for op in ops:
            img = op(img)
        return img


def _shift_hue(img: PIL.Image.Image, shift: float) -> PIL.Image.Image:
    hue, sat, val = img.convert("HSV").split()
    moved = (np.asarray(hue, np.int16) + int(round(shift * 255))) % 256
    return PIL.Image.merge("HSV", (PIL.Image.fromarray(moved.astype(np.uint8), "L"), sat, val)).convert("RGB")


def _random_flip(img: PIL.Image.Image) -> PIL.Image.Image:
    return img.transpose(PIL.Image.FLIP_LEFT_RIGHT) if random.random() < 0.5 else img


class PairTransform:
    """The script's training transform, torchvision-free (a picklable object for loader workers)."""

    def __init__(self, imutils: Any, normalize: Any, crop_size: int) -> None:
        self.steps = [imutils.RandomResizeLong(256, 512), _random_flip, ColorJitter(0.3, 0.3, 0.3, 0.1), np.asarray,
                      normalize, imutils.RandomCrop(crop_size), imutils.HWC_to_CHW, torch.from_numpy]

    def __call__(self, img: Any) -> Any:
        for step in self.steps:
            img = step(img)
        return img


@contextlib.contextmanager
def cuda_calls_to(device: torch.device) -> Iterator[None]:
    """Run EDAM's training forward on ``device`` despite its unconditional ``.cuda()``.

    On CUDA: under ``torch.cuda.device(device)`` (``.cuda()`` then means ``device``). Elsewhere:
    ``torch.Tensor.cuda`` is ``tensor.to(device)`` inside the block and restored on exit.
    """
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
        return
    original = torch.Tensor.cuda

    def to_device(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor.to(device, non_blocking=bool(kwargs.get("non_blocking", False)))

    torch.Tensor.cuda = to_device  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def host_logits(model: nn.Module, img: torch.Tensor, label_idx: Sequence[torch.Tensor],
                device: torch.device) -> torch.Tensor:
    """EDAM's ``model(img, label_idx)`` for a batch of pairs ``(B, 2, 3, H, W)``, one pair per call
    (what each ``DataParallel`` replica of the script computes), concatenated: ``(B x 40,)``."""
    ids = [torch.as_tensor(t).reshape(-1).to(device) for t in label_idx]
    outputs = []
    with cuda_calls_to(device):
        for k in range(img.shape[0]):
            outputs.append(model(img[k:k + 1], [t[k:k + 1] for t in ids]))
    return torch.cat(outputs)


def _import_host(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"cannot import EDAM's {name} ({error}); run from the EDAM checkout "
                          "(see examples/edam/README.md for what EDAM needs)") from None


def load_initial_weights(model: nn.Module, weights: str) -> None:
    """The script's initialisation: ``.params`` through ``convert_mxnet_to_torch``, else
    ``torch.load``; ``strict=False``."""
    if weights[-7:] == ".params":
        state = _import_host("network.resnet38d").convert_mxnet_to_torch(weights)
    else:
        state = torch.load(weights, map_location="cpu")
    model.load_state_dict(state, strict=False)


def build_optimizer(groups: Sequence[List[nn.Parameter]], pss: PixelSelfSupervision, opts: TrainOptions,
                    max_step: int) -> torch.optim.Optimizer:
    """The script's ``PolyOptimizer`` (six groups, ``warm_up_step=2000``) plus the RCM projection at ``10 lr``."""
    torchutils = _import_host("tool.torchutils")
    lr, wd = opts.learning_rate, opts.weight_decay
    return torchutils.PolyOptimizer([
        {"params": groups[0], "lr": lr, "weight_decay": wd},
        {"params": groups[1], "lr": lr * 2, "weight_decay": 0},
        {"params": groups[2], "lr": lr * 10, "weight_decay": wd},
        {"params": groups[3], "lr": lr * 20, "weight_decay": 0},
        {"params": groups[4], "lr": lr, "weight_decay": wd},
        {"params": groups[5], "lr": lr, "weight_decay": 0},
        {"params": list(pss.parameters()), "lr": lr * 10, "weight_decay": wd},
    ], lr=lr, weight_decay=wd, max_step=max_step, warm_up_step=WARM_UP_STEP)


# ----------------------------------------------------------------------------------- training


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % (2 ** 63)


def _cpu_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


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
    data = _import_host("voc12.data")
    imutils = _import_host("tool.imutils")
    net_module = _import_host(opts.network)
    device = resolve_device(opts.device)
    torch.manual_seed(opts.config.seed)
    model = getattr(net_module, "Net")()
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
    fingerprint = opts.fingerprint()
    loop = {"sums": {key: 0.0 for key in ("total", "edam", "rcm", "mam")}, "history": []}
    if opts.checkpoint.exists():
        state = load_training_state(opts.checkpoint, STATE_FORMAT, METHOD_NAME, fingerprint)
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
                "from pss epoch %d, rcm %s, device %s", opts.network, opts.epochs, steps_per_epoch, opts.batch_size,
                opts.crop_size, opts.epoch_steps, opts.config.mam_start_epoch, opts.config.rcm_form, device)

    def save() -> None:
        step = int(optimizer.global_step)
        _save_state_dict(Path(opts.session_name) / f"{step // HOST_EPOCH_STEPS}.pth", model)
        save_training_state(opts.checkpoint, STATE_FORMAT, fingerprint, model=_cpu_state(model),
                            pss=_cpu_state(pss), optimizer=optimizer.state_dict(), global_step=step,
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
            img = pack[1].to(device, non_blocking=True)
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


if __name__ == "__main__":
    main()


__all__ = ["ColorJitter", "PairTransform", "TrainOptions", "add_arguments", "build_optimizer", "build_parser",
           "cuda_calls_to", "edam_cam_head", "host_logits", "image_labels", "load_initial_weights", "main", "train"]
