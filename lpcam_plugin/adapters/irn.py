"""LPCAM for IRN (``jiwoon-ahn/irn``): write LPCAM where IRN's ``make_cam`` step writes CAMs.

Two ways to use it in an IRN fork (run from the fork's root, as IRN expects):

- In ``run_sample.py``, add the options with ``add_arguments(parser)`` and call ``run(args)``
  where the fork calls ``step.make_cam.run(args)``: one process, on ``--lpcam_device`` (CUDA
  when available, else CPU).
- Or call ``patch()`` once before ``step.make_cam.run(args)``: the unchanged step then spawns
  its workers (one per GPU), and each runs :func:`_work` of this module instead of IRN's.
  Needs CUDA: without a visible GPU the step spawns no worker, so ``patch()`` raises.
  Replacing the module-level ``_work`` survives ``torch.multiprocessing.spawn`` because the
  children unpickle the function by module and name (docs/design/hosts.md §1.2).

On MS COCO (the IRN-based COCO pipeline of the LPCAM / ReCAM reference repositories,
``run_sample_coco.py``, whose ``args`` carry ``mscoco_root``), call ``run(args)`` where the fork
calls ``step_coco.make_lpcam.run(args)``: it writes ``args.lpcam_out_dir/COCO_train2014_<id>.npy``
for every image of the annotation file, where ``step_coco.eval_cam`` and ``cam_to_ir_label`` read,
with the COCO preset (K = 20, the reference's ``split_100`` fit sample; :mod:`.resnet.datasets`).

On VOC both write ``args.cam_out_dir/<id>.npy`` for every id of ``args.train_list``, in IRN's format:
``{"keys": torch int64 (K,) 0-based present classes, "cam": torch float32 CPU (K, (H-1)//4+1,
(W-1)//4+1), "high_res": numpy float32 (K, H, W)}``, each map divided by its max + 1e-5, so
IRN's unchanged ``eval_cam``, ``cam_to_ir_label`` and ``make_sem_seg_labels`` read them.
Prototypes are fitted on ``--lpcam_fit_list`` (default ``voc12/train.txt``) with ``stage4``
features and ``classifier.weight`` (20, 2048), and saved as a bank reused on later runs. IRN's
host facts are :mod:`lpcam_plugin.adapters.resnet.irn_host`; the machinery shared with AMN is
:mod:`lpcam_plugin.adapters.resnet`.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from torch import nn

from lpcam_plugin.adapters.common.patching import patch_attribute, unpatch_attribute
from lpcam_plugin.adapters.resnet.irn_host import COCO_SPEC, SPEC, host_cams, selection_weight, spec_for, write
from lpcam_plugin.adapters.resnet.options import add_lpcam_arguments
from lpcam_plugin.adapters.resnet.runner import require_spawn_devices, run_in_process, threshold_in_process, work

MAKE_CAM_MODULE = "step.make_cam"


def add_arguments(parser: argparse.ArgumentParser, *, preset: Optional[str] = None) -> argparse.ArgumentParser:
    """Add the ``--lpcam_*`` options (defaults: the ``--lpcam_preset`` values; the preset defaults to
    the dataset the host reads, COCO for ``run_sample_coco.py``) to IRN's parser."""
    add_lpcam_arguments(parser, preset=preset)
    return parser


def run(args: argparse.Namespace, method: Optional[str] = None) -> int:
    """Drop-in for ``step.make_cam.run(args)``: write the maps of ``method`` (``"lpcam"``,
    ``"cam"``, ``"recam"``, ``"recam+lpcam"`` or ``"fcam"``; default ``args.lpcam_method``, else
    LPCAM) for ``args.train_list`` into ``args.cam_out_dir``, after fitting or training what the
    method needs (LPCAM bank, ReCAM step, F-CAM decoder over ``--lpcam_fcam_source``). Returns the
    number of files written (files already written by the same producer are skipped).

    With ``run_sample_coco.py``'s ``args`` (``mscoco_root``) it is the COCO pipeline's step
    (:data:`COCO_SPEC`): every training image, into ``args.lpcam_out_dir``."""
    return run_in_process(spec_for(args), args, method)


def write_threshold(args: argparse.Namespace, method: Optional[str] = None) -> float:
    """The background threshold of the maps in ``args.cam_out_dir``, chosen without masks: written to
    ``lpcam_threshold.json`` there and set as ``args.cam_eval_thres`` (``run`` does this itself with
    ``--lpcam_auto_threshold true``; call it after the patched ``step.make_cam.run(args)``)."""
    return threshold_in_process(spec_for(args), args, method)


def _work(process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Replacement for ``step.make_cam._work(process_id, model, dataset, args)`` (see :func:`patch`)."""
    work(SPEC, process_id, model, dataset, args)


def patch() -> None:
    """Make the unchanged ``step.make_cam.run(args)`` write LPCAM (idempotent).

    Replaces ``step.make_cam._work`` by :func:`_work`; call it in the parent process before the
    step runs. Options missing from ``args`` take their defaults (see :func:`add_arguments`).

    Raises:
        RuntimeError: no CUDA device is visible: IRN's step would spawn zero workers (one per
            GPU) and silently write nothing; call :func:`run` instead.
    """
    require_spawn_devices(MAKE_CAM_MODULE, "lpcam_plugin.adapters.irn.run(args)")
    patch_attribute(MAKE_CAM_MODULE, "_work", _work)


def unpatch() -> None:
    """Restore IRN's own ``step.make_cam._work``."""
    unpatch_attribute(MAKE_CAM_MODULE, "_work")


__all__ = ["COCO_SPEC", "MAKE_CAM_MODULE", "SPEC", "add_arguments", "host_cams", "patch", "run", "selection_weight",
           "unpatch", "write", "write_threshold"]
