"""LPCAM for AMN (``gaviotas/AMN``, branch ``voc12``; branch ``coco14`` for MS COCO), at either of its two
CAM steps.

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
  (C, D) by :func:`aspp_selection_weight`; baseline for the split: AMN's own CAM computed the
  ``make_amn_cam`` way (needs the stage-1 ``ir_label`` PNGs) or read from its files.

Route "b" is the one that reproduces the paper's AMN+LPCAM setting: the paper reports AMN's seed
(the ``eval_amn_cam`` score of AMN's CAM), which only route "b" replaces, and the LPCAM author
ties ``select_thres`` (our ``split_threshold``) to "the threshold used in AMN"
(``zhaozhengChen/LPCAM#5``), i.e. the split is made on AMN's CAM. The author published no AMN
code, so this is our reading, not a verified reproduction.

On the ``coco14`` branch (``run_sample_coco.py``: ``args.coco14_root``) the same calls replace
``step.make_cam_coco.run(args)`` (route "a": ``CAM(coco=True)``, 80 classes) and
``step.make_amn_cam_coco.run(args)`` (route "b"), reading ``coco14/train14.txt`` and
``coco14/cls_labels_coco.npy`` through the branch's ``coco14.dataloader``; the files keep the
formats above, named by the 12-digit ids.

AMN's host facts are :mod:`lpcam_plugin.adapters.resnet.amn_host`; the machinery shared with IRN
is :mod:`lpcam_plugin.adapters.resnet`.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from torch import nn

from lpcam_plugin.adapters import irn
from lpcam_plugin.adapters.common.patching import patch_attribute, unpatch_attribute
from lpcam_plugin.adapters.resnet.amn_host import (
    HEAD_REDUCTIONS,
    ROUTE_B_METHODS,
    aspp_selection_weight,
    host_cams,
    selection_weight,
    spec,
    write,
)
from lpcam_plugin.adapters.resnet.datasets import host_dataset
from lpcam_plugin.adapters.resnet.host import HostSpec
from lpcam_plugin.adapters.resnet.options import add_lpcam_arguments
from lpcam_plugin.adapters.resnet.runner import require_spawn_devices, run_in_process, threshold_in_process, work

MAKE_AMN_CAM_MODULE = "step.make_amn_cam"
ROUTES = ("a", "b")


def _spec_from_args(args: argparse.Namespace) -> HostSpec:
    """The route-"b" spec with the head reduction of ``args.lpcam_head_reduction`` (default ``sum``), on
    the dataset ``args`` point at (``coco14_root``: the ``coco14`` branch)."""
    return spec(getattr(args, "lpcam_head_reduction", None) or "sum", host_dataset(args))


def add_arguments(parser: argparse.ArgumentParser, *, preset: Optional[str] = None) -> argparse.ArgumentParser:
    """Add the ``--lpcam_*`` options of both routes to AMN's parser."""
    group = add_lpcam_arguments(parser, preset=preset)
    group.add_argument("--lpcam_amn_bank", default=None,
                       help="route b bank file (default: next to the AMN weights, *.lpcam_bank.npz)")
    group.add_argument("--lpcam_head_reduction", default="sum", choices=HEAD_REDUCTIONS,
                       help="route b: reduce the 3x3 ASPP kernels to a (C, D) weight by summing the "
                            "taps or keeping the centre tap (default: %(default)s)")
    return parser


def _check_route(route: str) -> str:
    """``route`` when it is one of :data:`ROUTES`, else a ``ValueError`` saying what each means."""
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
    return run_in_process(_spec_from_args(args), args, method)


def write_threshold(args: argparse.Namespace, route: str = "b", method: Optional[str] = None) -> float:
    """The background threshold of the maps ``route`` wrote, chosen without masks (``lpcam_threshold.json``
    beside them, ``args.cam_eval_thres``; see :func:`lpcam_plugin.adapters.irn.write_threshold`)."""
    if _check_route(route) == "a":
        return irn.write_threshold(args, method)
    return threshold_in_process(_spec_from_args(args), args, method)


def _work(process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Replacement for ``step.make_amn_cam._work(process_id, model, dataset, args)`` (route "b")."""
    work(_spec_from_args(args), process_id, model, dataset, args)


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
        require_spawn_devices(MAKE_AMN_CAM_MODULE, 'lpcam_plugin.adapters.amn.run(args, route="b")')
        patch_attribute(MAKE_AMN_CAM_MODULE, "_work", _work)


def unpatch(route: str = "b") -> None:
    """Restore AMN's own worker of ``route``."""
    if _check_route(route) == "a":
        irn.unpatch()
    else:
        unpatch_attribute(MAKE_AMN_CAM_MODULE, "_work")


__all__ = ["HEAD_REDUCTIONS", "MAKE_AMN_CAM_MODULE", "ROUTES", "ROUTE_B_METHODS", "add_arguments",
           "aspp_selection_weight", "host_cams", "patch", "run", "selection_weight", "spec", "unpatch", "write",
           "write_threshold"]
