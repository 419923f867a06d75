"""AMN's own CAM step (``gaviotas/AMN`` ``step/make_amn_cam.py``, route "b"; ``make_amn_cam_coco.py`` on
the ``coco14`` branch) as a
:class:`~lpcam_plugin.adapters.resnet.host.HostSpec`: its head reduced to a selection weight, its
CAM computed the host way (the split baseline), and its file format.

Files go to ``args.amn_cam_out_dir`` as ``{"keys": torch int64 (K,), "cam": torch float32
(1+K, (H-1)//4+1, (W-1)//4+1), "high_res": numpy float32 (1+K, H, W)}`` with channel 0 a
background placeholder (``1 - max`` of the K class maps; every AMN consumer drops it) and
channel i+1 the map of class ``keys[i]``, max-normalised.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from lpcam_plugin.adapters.common.methods import supported
from lpcam_plugin.adapters.resnet.datasets import COCO14, VOC, HostDataset
from lpcam_plugin.adapters.resnet.host import HostSpec, resize
from lpcam_plugin.adapters.resnet.options import HostValues, LPCAMOptions
from lpcam_plugin.core.formats import write_irn_cam
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

HEAD_REDUCTIONS = ("sum", "center")
#: The registry read-outs AMN's own CAM step (route "b") writes; route "a" writes IRN's.
ROUTE_B_METHODS = supported(["lpcam"])


def aspp_selection_weight(classifier: nn.Module, mode: str = "sum",
                          num_classes: int = VOC.num_classes) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reduce AMN's ``classifier = Sequential(Dropout, _ASPP(c0..c3))`` to a ``(C, D)`` weight.

    For a spatially constant feature ``f`` away from the border, each 3x3 dilated branch is the
    linear map ``(kernel summed over taps) . f + bias`` and the branches are summed, so
    ``mode="sum"`` gives ``W = sum_b sum_taps W_b`` and ``b = sum_b b_b``; ``mode="center"``
    keeps the centre taps (what the head computes where the dilated taps fall outside the map).
    Row 0 (background) is dropped: returns ``(W (C, D), b (C,))`` (C = 20 on VOC, 80 on coco14).
    """
    if mode not in HEAD_REDUCTIONS:
        raise ValueError(f"head reduction must be one of {HEAD_REDUCTIONS}, got {mode!r}")
    branches = [m for m in classifier.modules() if isinstance(m, nn.Conv2d)]
    if not branches:
        raise ValueError("the AMN classifier holds no Conv2d branches")
    weight = torch.zeros(branches[0].out_channels, branches[0].in_channels)
    bias = torch.zeros(branches[0].out_channels)
    for conv in branches:
        w, b = reduce_conv_head(conv.weight.detach().float().cpu(),
                                None if conv.bias is None else conv.bias.detach().float().cpu(), mode=mode)
        weight += w
        if b is not None:
            bias += b
    if weight.shape[0] != num_classes + 1:
        raise ValueError(f"expected an AMN head of {num_classes + 1} channels (bg + classes), got {weight.shape[0]}")
    return weight[1:], bias[1:]


def selection_weight(model: nn.Module, mode: str = "sum",
                     num_classes: int = VOC.num_classes) -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """AMN's head as ``(W (C, D), b (C,), description)`` (:func:`aspp_selection_weight`)."""
    weight, bias = aspp_selection_weight(model.classifier, mode, num_classes)
    return weight, bias, f"classifier ASPP branches, taps reduced by {mode}, summed, row 0 dropped"


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max normalisation of ``(C, H, W)`` maps (AMN's, 1e-5)."""
    low, high = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    return (x - low) / (high - low + 1e-5)


def host_cams(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
              name: str, args: HostValues) -> torch.Tensor:
    """AMN's ``make_amn_cam`` high-res CAM of one image, foreground channels only: ``(K, H, W)``.

    ``CAM.forward(x, y)`` per scale resized straight to (H, W), averaged, softmax over the 1 + C
    channels, channels ``[0] + keys + 1`` kept, min-max normalised where the stage-1
    ``ir_label`` PNG is not 0 (raw softmax elsewhere); channel 0 is then dropped. Dropout is off
    here (see ``prepare_model``), unlike in AMN's own step. ``args``: the run's options (or the
    host's namespace), for ``ir_label_out_dir``.
    """
    png = Path(args.ir_label_out_dir) / f"{name}.png"
    if not png.exists():
        raise FileNotFoundError(f"{png}: AMN's CAM needs the stage-1 ir_label PNGs (run cam_to_ir_label first)")
    device = stacks[0].device
    y = label[None].expand(2, label.numel()).to(device=device, dtype=torch.float32)
    logits = torch.stack([resize(model(x, y).float(), size) for x in stacks]).mean(0)
    keys = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(label)[:, 0] + 1]).to(device)
    prob = torch.softmax(logits, dim=0)[keys]
    with Image.open(png) as image:
        ir_label = np.asarray(image.resize((size[1], size[0]), resample=Image.NEAREST))
    not_bg = torch.from_numpy(ir_label != 0).to(device)
    cams = torch.where(not_bg[None], _minmax(prob), prob)
    return cams[1:]


def write(path: Path, keys: torch.Tensor, strided: torch.Tensor, high_res: torch.Tensor) -> None:
    """Save AMN's dict: channel 0 = ``1 - max`` of the class maps (placeholder), then the K maps."""
    def with_bg(maps: torch.Tensor) -> torch.Tensor:
        top = maps.amax(dim=0, keepdim=True) if maps.shape[0] else torch.zeros((1,) + tuple(maps.shape[1:]))
        return torch.cat([(1.0 - top).clamp_(0.0, 1.0), maps])

    write_irn_cam(path, keys, with_bg(strided), with_bg(high_res))


def _extra_fit_key(opts: LPCAMOptions) -> Dict[str, Any]:
    """The route-"b" bank also depends on the stage-1 ``ir_label`` PNGs its baseline reads."""
    return {"ir_label_dir": str(Path(opts.ir_label_out_dir).resolve())}


def spec(head_reduction: str = "sum", dataset: HostDataset = VOC) -> HostSpec:
    """The route-"b" host description (AMN network, weights, output folder and file format) on
    ``dataset`` (VOC, or the ``coco14`` branch's :data:`~.datasets.COCO14`)."""
    if head_reduction not in HEAD_REDUCTIONS:
        raise ValueError(f"lpcam_head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}")
    if dataset not in (VOC, COCO14):
        raise ValueError(f"AMN reads VOC or its coco14 branch's data (--coco14_root), not {dataset.name}")
    return HostSpec(name="amn" if dataset is VOC else f"amn-{dataset.name}", network_arg="amn_network",
                    dataset=dataset, weights_arg="amn_weights_name",
                    out_dir_arg="amn_cam_out_dir",
                    selection_weight=functools.partial(selection_weight, mode=head_reduction,
                                                       num_classes=dataset.num_classes),
                    host_cams=host_cams, write=write, high_res_direct=True, bank_field="amn_bank",
                    extra_fit_key=_extra_fit_key, methods=ROUTE_B_METHODS,
                    methods_note="AMN's own CAM (route b) has a dropout + ASPP head and an IRN-label-"
                                 "conditioned network, not the GAP-linear head ReCAM fine-tunes, and F-CAM's "
                                 "step decodes the stage-1 read-outs; run ReCAM or F-CAM on AMN's stage 1 "
                                 "(route 'a', IRN's CAM network) instead")


__all__ = ["HEAD_REDUCTIONS", "ROUTE_B_METHODS", "aspp_selection_weight", "host_cams", "selection_weight", "spec",
           "write"]
