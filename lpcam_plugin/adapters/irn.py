"""LPCAM for IRN (``jiwoon-ahn/irn``): write LPCAM where IRN's ``make_cam`` step writes CAMs.

Two ways to use it in an IRN fork (run from the fork's root, as IRN expects):

- In ``run_sample.py``, add the options with ``add_arguments(parser)`` and call ``run(args)``
  where the fork calls ``step.make_cam.run(args)``: one process, on ``--lpcam_device`` (CUDA
  when available, else CPU).
- Or call ``patch()`` once before ``step.make_cam.run(args)``: the unchanged step then spawns
  its workers (one per GPU), and each runs :func:`_work` of this module instead of IRN's.
  Needs CUDA: without a visible GPU the step spawns no worker, so ``patch()`` raises.
  Replacing the module-level ``_work`` survives ``torch.multiprocessing.spawn`` because the
  children unpickle the function by module and name (hosts.md §1.2).

Both write ``args.cam_out_dir/<id>.npy`` for every id of ``args.train_list``, in IRN's format:
``{"keys": torch int64 (K,) 0-based present classes, "cam": torch float32 CPU (K, (H-1)//4+1,
(W-1)//4+1), "high_res": numpy float32 (K, H, W)}``, each map divided by its max + 1e-5, so
IRN's unchanged ``eval_cam``, ``cam_to_ir_label`` and ``make_sem_seg_labels`` read them.
Prototypes are fitted on ``--lpcam_fit_list`` (default ``voc12/train.txt``) with ``stage4``
features and ``classifier.weight`` (20, 2048), and saved as a bank reused on later runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.formats import write_irn_cam
from lpcam_plugin.core.maps import max_normalize

from lpcam_plugin.adapters import _resnet_hosts as hosts

MAKE_CAM_MODULE = "step.make_cam"


def selection_weight(model: nn.Module) -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """IRN's classifier: ``classifier.weight`` (20, D, 1, 1) as (20, D); no bias."""
    weight = model.classifier.weight.detach()
    return weight.reshape(weight.shape[0], weight.shape[1]).float(), None, "classifier.weight[:, :, 0, 0]"


def host_cams(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
              name: str, args: argparse.Namespace) -> torch.Tensor:
    """IRN's ``make_cam`` high-res CAM of one image: ``(K, H, W)`` for its present classes.

    ``CAM.forward`` per scale (ReLU'd, image + flip summed), each resized to the 16-padded size,
    summed over scales, cropped to (H, W), divided by its max + 1e-5.
    """
    up = hosts.strided_up_size(size)
    total = sum(F.interpolate(model(x)[:, None], up, mode="bilinear", align_corners=False) for x in stacks)
    high = total[:, 0, :size[0], :size[1]][torch.nonzero(label)[:, 0]]
    return max_normalize(high.float())


def write(path: Path, keys: torch.Tensor, strided: torch.Tensor, high_res: torch.Tensor) -> None:
    """Save IRN's dict: ``keys`` torch int64, ``cam`` torch float32 (K, h4, w4), ``high_res`` numpy (K, H, W)."""
    write_irn_cam(path, keys, strided, high_res)


SPEC = hosts.HostSpec(name="irn", network_arg="cam_network", weights_arg="cam_weights_name",
                      out_dir_arg="cam_out_dir", selection_weight=selection_weight, host_cams=host_cams,
                      write=write, high_res_direct=False)


def add_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse.ArgumentParser:
    """Add the ``--lpcam_*`` options (defaults: the ``--lpcam_preset`` values) to IRN's parser."""
    hosts.add_lpcam_arguments(parser, preset=preset)
    return parser


def run(args: argparse.Namespace, method: Optional[str] = None) -> int:
    """Drop-in for ``step.make_cam.run(args)``: write the maps of ``method`` (``"lpcam"``,
    ``"cam"``, ``"recam"``, ``"recam+lpcam"`` or ``"fcam"``; default ``args.lpcam_method``, else
    LPCAM) for ``args.train_list`` into ``args.cam_out_dir``, after fitting or training what the
    method needs (LPCAM bank, ReCAM step, F-CAM decoder over ``--lpcam_fcam_source``). Returns the number of files written (files already written
    by the same producer are skipped)."""
    return hosts.run_in_process(SPEC, args, method)


def _work(process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Replacement for ``step.make_cam._work(process_id, model, dataset, args)`` (see :func:`patch`)."""
    hosts.work(SPEC, process_id, model, dataset, args)


def patch() -> None:
    """Make the unchanged ``step.make_cam.run(args)`` write LPCAM (idempotent).

    Replaces ``step.make_cam._work`` by :func:`_work`; call it in the parent process before the
    step runs. Options missing from ``args`` take their defaults (see :func:`add_arguments`).

    Raises:
        RuntimeError: no CUDA device is visible: IRN's step would spawn zero workers (one per
            GPU) and silently write nothing; call :func:`run` instead.
    """
    hosts.require_spawn_devices(MAKE_CAM_MODULE, "lpcam_plugin.adapters.irn.run(args)")
    hosts.patch_attribute(MAKE_CAM_MODULE, "_work", _work)


def unpatch() -> None:
    """Restore IRN's own ``step.make_cam._work``."""
    hosts.unpatch_attribute(MAKE_CAM_MODULE, "_work")


__all__ = ["SPEC", "add_arguments", "host_cams", "patch", "run", "selection_weight", "unpatch", "write"]
