"""LPCAM for AMN (``gaviotas/AMN``, branch ``voc12``), at either of its two CAM steps.

AMN is IRN plus an AMN network and steps. Its pipeline: stage 1 ``make_cam`` (IRN's CAM) →
``cam_to_ir_label`` → ``train_amn`` → ``make_amn_cam`` → ``eval_amn_cam`` /
``amn_cam_to_ir_label`` → ``train_irn`` → ``make_sem_seg_labels``. LPCAM can replace:

- **route "a"**: the stage-1 CAM. Identical to the IRN adapter (AMN's ``make_cam`` is IRN's):
  IRN-format files in ``args.cam_out_dir``; the ``ir_label`` derived from them then trains AMN
  and masks ``make_amn_cam``.
- **route "b"** (default): AMN's own CAM. ``step.make_amn_cam._work`` is replaced; files go to
  ``args.amn_cam_out_dir`` in AMN's format ``{"keys": torch int64 (K,), "cam": torch float32
  (1+K, (H-1)//4+1, (W-1)//4+1), "high_res": numpy float32 (1+K, H, W)}`` with channel 0 a
  background placeholder (``1 - max`` of the K class maps; every AMN consumer drops it) and
  channel i+1 the LPCAM of class ``keys[i]``, max-normalised. ``eval_amn_cam``,
  ``amn_cam_to_ir_label`` and ``make_sem_seg_labels`` run unchanged. Features: AMN's ``stage4``
  output (unconditioned, deterministic); selection weight: the dropout + ASPP head reduced to
  (20, D) by :func:`aspp_selection_weight`; baseline for the split: AMN's own CAM computed the
  ``make_amn_cam`` way (needs the stage-1 ``ir_label`` PNGs) or read from its files.

Route "b" is the one that reproduces the paper's AMN+LPCAM setting: the paper reports AMN's seed
(the ``eval_amn_cam`` score of AMN's CAM), which only route "b" replaces, and the LPCAM author
ties ``select_thres`` (our ``split_threshold``) to "the threshold used in AMN"
(``zhaozhengChen/LPCAM#5``), i.e. the split is made on AMN's CAM. The author published no AMN
code, so this is our reading, not a verified reproduction.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from lpcam_plugin.core.formats import write_irn_cam
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

from lpcam_plugin.adapters import _resnet_hosts as hosts
from lpcam_plugin.adapters import irn

MAKE_AMN_CAM_MODULE = "step.make_amn_cam"
ROUTES = ("a", "b")
HEAD_REDUCTIONS = ("sum", "center")


def aspp_selection_weight(classifier: nn.Module, mode: str = "sum") -> Tuple[torch.Tensor, torch.Tensor]:
    """Reduce AMN's ``classifier = Sequential(Dropout, _ASPP(c0..c3))`` to a ``(20, D)`` weight.

    For a spatially constant feature ``f`` away from the border, each 3x3 dilated branch is the
    linear map ``(kernel summed over taps) . f + bias`` and the branches are summed, so
    ``mode="sum"`` gives ``W = sum_b sum_taps W_b`` and ``b = sum_b b_b``; ``mode="center"``
    keeps the centre taps (what the head computes where the dilated taps fall outside the map).
    Row 0 (background) is dropped: returns ``(W (20, D), b (20,))``.
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
    if weight.shape[0] != hosts.NUM_CLASSES + 1:
        raise ValueError(f"expected an AMN head of {hosts.NUM_CLASSES + 1} channels (bg + classes), "
                         f"got {weight.shape[0]}")
    return weight[1:], bias[1:]


def selection_weight(model: nn.Module, mode: str = "sum") -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    weight, bias = aspp_selection_weight(model.classifier, mode)
    return weight, bias, f"classifier ASPP branches, taps reduced by {mode}, summed, row 0 dropped"


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low, high = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    return (x - low) / (high - low + 1e-5)


def host_cams(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
              name: str, args: argparse.Namespace) -> torch.Tensor:
    """AMN's ``make_amn_cam`` high-res CAM of one image, foreground channels only: ``(K, H, W)``.

    ``CAM.forward(x, y)`` per scale resized straight to (H, W), averaged, softmax over the 21
    channels, channels ``[0] + keys + 1`` kept, min-max normalised where the stage-1
    ``ir_label`` PNG is not 0 (raw softmax elsewhere); channel 0 is then dropped. Dropout is off
    here (see ``prepare_model``), unlike in AMN's own step.
    """
    png = Path(args.ir_label_out_dir) / f"{name}.png"
    if not png.exists():
        raise FileNotFoundError(f"{png}: AMN's CAM needs the stage-1 ir_label PNGs (run cam_to_ir_label first)")
    device = stacks[0].device
    y = label[None].expand(2, hosts.NUM_CLASSES).to(device=device, dtype=torch.float32)
    logits = torch.stack([hosts.resize(model(x, y).float(), size) for x in stacks]).mean(0)
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


def _extra_fit_key(args: argparse.Namespace, opts: hosts.LPCAMOptions) -> Dict[str, Any]:
    return {"ir_label_dir": str(Path(args.ir_label_out_dir).resolve())}


def spec(head_reduction: str = "sum") -> hosts.HostSpec:
    """The route-"b" host description (AMN network, weights, output folder and file format)."""
    if head_reduction not in HEAD_REDUCTIONS:
        raise ValueError(f"lpcam_head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}")
    return hosts.HostSpec(name="amn", network_arg="amn_network", weights_arg="amn_weights_name",
                          out_dir_arg="amn_cam_out_dir",
                          selection_weight=functools.partial(selection_weight, mode=head_reduction),
                          host_cams=host_cams, write=write, high_res_direct=True, bank_arg="lpcam_amn_bank",
                          extra_fit_key=_extra_fit_key, methods=("lpcam",),
                          methods_note="AMN's own CAM (route b) has a dropout + ASPP head and an IRN-label-"
                                       "conditioned network, not the GAP-linear head ReCAM fine-tunes, and F-CAM's "
                                       "step decodes the stage-1 read-outs; run ReCAM or F-CAM on AMN's stage 1 "
                                       "(route 'a', IRN's CAM network) instead")


def _spec_from_args(args: argparse.Namespace) -> hosts.HostSpec:
    return spec(getattr(args, "lpcam_head_reduction", None) or "sum")


def add_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse.ArgumentParser:
    """Add the ``--lpcam_*`` options of both routes to AMN's parser."""
    group = hosts.add_lpcam_arguments(parser, preset=preset)
    group.add_argument("--lpcam_amn_bank", default=None,
                       help="route b bank file (default: next to the AMN weights, *.lpcam_bank.npz)")
    group.add_argument("--lpcam_head_reduction", default="sum", choices=HEAD_REDUCTIONS,
                       help="route b: reduce the 3x3 ASPP kernels to a (20, D) weight by summing the "
                            "taps or keeping the centre tap (default: %(default)s)")
    return parser


def _check_route(route: str) -> str:
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES} ('a': stage-1 CAM, 'b': AMN's CAM), got {route!r}")
    return route


def run(args: argparse.Namespace, route: str = "b", method: Optional[str] = None) -> int:
    """In-process drop-in: route "a" for ``step.make_cam.run(args)``, route "b" for
    ``step.make_amn_cam.run(args)``. ``method`` (default ``args.lpcam_method``, else LPCAM): any of
    ``lpcam``, ``cam``, ``recam``, ``recam+lpcam``, ``fcam`` on route "a"; ``lpcam`` on route "b". Returns
    the number of files written."""
    if _check_route(route) == "a":
        return irn.run(args, method)
    return hosts.run_in_process(_spec_from_args(args), args, method)


def _work(process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Replacement for ``step.make_amn_cam._work(process_id, model, dataset, args)`` (route "b")."""
    hosts.work(_spec_from_args(args), process_id, model, dataset, args)


def patch(route: str = "b") -> None:
    """Make AMN's unchanged CAM step write LPCAM (idempotent; call once per route you want).

    Route "a" replaces ``step.make_cam._work`` (as :func:`lpcam_plugin.adapters.irn.patch`);
    route "b" replaces ``step.make_amn_cam._work`` by :func:`_work`. Module-level functions
    survive the steps' ``torch.multiprocessing.spawn``.

    Raises:
        RuntimeError: no CUDA device is visible: AMN's steps would spawn zero workers (one per
            GPU) and silently write nothing; call :func:`run` with the route instead.
    """
    if _check_route(route) == "a":
        irn.patch()
    else:
        hosts.require_spawn_devices(MAKE_AMN_CAM_MODULE, 'lpcam_plugin.adapters.amn.run(args, route="b")')
        hosts.patch_attribute(MAKE_AMN_CAM_MODULE, "_work", _work)


def unpatch(route: str = "b") -> None:
    """Restore AMN's own worker of ``route``."""
    if _check_route(route) == "a":
        irn.unpatch()
    else:
        hosts.unpatch_attribute(MAKE_AMN_CAM_MODULE, "_work")


__all__ = ["ROUTES", "add_arguments", "aspp_selection_weight", "host_cams", "patch", "run", "spec", "unpatch",
           "write"]
