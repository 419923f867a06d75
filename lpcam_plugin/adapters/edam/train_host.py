"""EDAM's pieces of its classifier training, re-implemented for the RCM+MAM drop-in: the CAM head
``pss`` reads, per-image labels from pair labels, the torchvision-free training transform, the
training forward on any device, the initial weights and the optimizer."""
from __future__ import annotations

import contextlib
import importlib
import random
from typing import Any, Iterator, List, Sequence

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.adapters.edam.train_options import TrainOptions
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

NUM_CLASSES = 20
#: EDAM's ``Net.forward`` samples this many class ids per pair (``sample_num``).
SAMPLE_NUM = 20
#: ``PolyOptimizer(..., warm_up_step=2000)`` in the script.
WARM_UP_STEP = 2000


def edam_cam_head(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """EDAM's ``forward_cam`` on ``bn7`` features ``(B, D, h, w)``: ``|L2-normalise over the 21
    channels of mask_layer(f)|``, channels 0..19 ``(B, 20, h, w)`` (class c; channel 20 only takes
    part in the normalisation)."""
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
    """The script's training transform, torchvision-free (a picklable object for loader workers):
    PIL image -> ``(3, crop, crop)`` float tensor."""

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


def import_host(name: str) -> Any:
    """Import EDAM's module ``name`` from the checkout; a one-line ``ImportError`` naming it otherwise."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"cannot import EDAM's {name} ({error}); run from the EDAM checkout "
                          "(see examples/edam/README.md for what EDAM needs)") from None


def load_initial_weights(model: nn.Module, weights: str) -> None:
    """The script's initialisation: ``.params`` through ``convert_mxnet_to_torch``, else
    ``torch.load``; ``strict=False``."""
    if weights[-7:] == ".params":
        state = import_host("network.resnet38d").convert_mxnet_to_torch(weights)
    else:
        state = torch.load(weights, map_location="cpu")
    model.load_state_dict(state, strict=False)


def build_optimizer(groups: Sequence[List[nn.Parameter]], pss: PixelSelfSupervision, opts: TrainOptions,
                    max_step: int) -> torch.optim.Optimizer:
    """The script's ``PolyOptimizer`` (six groups, ``warm_up_step=2000``) plus the RCM projection at ``10 lr``."""
    torchutils = import_host("tool.torchutils")
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


__all__ = ["NUM_CLASSES", "SAMPLE_NUM", "WARM_UP_STEP", "ColorJitter", "PairTransform",
           "build_optimizer", "cuda_calls_to", "edam_cam_head", "host_logits", "image_labels", "import_host",
           "load_initial_weights"]
