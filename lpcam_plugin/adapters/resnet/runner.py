"""Entry points of the IRN-family CAM step: in one process (``run``), as a patched spawned worker
(``work``), and the guard of ``patch()`` against a step that would spawn no worker.

The host's ``args`` are resolved here, once, into :class:`~.options.LPCAMOptions`; everything
below takes that object.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset

from lpcam_plugin.adapters.common.workers import configure_worker_logging, distributed, resolve_device
from lpcam_plugin.adapters.resnet.files import write_shard
from lpcam_plugin.adapters.resnet.host import HostSpec
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.adapters.resnet.prepare import prepare_readout
from lpcam_plugin.adapters.resnet.threshold import write_threshold
from lpcam_plugin.core.torchrun import init_from_env


def run_in_process(spec: HostSpec, args: argparse.Namespace, method: Optional[str] = None) -> int:
    """Write the maps of ``method`` (default ``args.lpcam_method``, else LPCAM) for every image of
    ``args.train_list`` in this process (fitting or training what the method needs first).

    Under ``torchrun`` (an initialised process group) rank r writes images r, r + world, ...
    after the shared preparation (the ReCAM step and the F-CAM decoder train in DDP). With
    ``--lpcam_auto_threshold`` the threshold of the written maps is then chosen without masks
    (:func:`~lpcam_plugin.adapters.resnet.threshold.write_threshold`, which sets ``args.cam_eval_thres``)."""
    opts = LPCAMOptions.from_args(args, spec.dataset.preset)
    if method is not None:
        opts = dataclasses.replace(opts, method=method)
    # under torchrun each rank takes its own GPU (LOCAL_RANK); a single process takes the first
    device = resolve_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))
    init_from_env(device=device, min_world_size=2)
    model, readout = prepare_readout(spec, None, opts, device)
    dataset = spec.dataset.msf(opts, opts.scales())
    if distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
        written = write_shard(spec, model, readout, Subset(dataset, list(range(rank, len(dataset), world))), opts,
                              device, process_id=rank, n_procs=world)
        dist.barrier()
    else:
        written = write_shard(spec, model, readout, dataset, opts, device)
    if opts.auto_threshold:
        write_threshold(spec, opts, device, args, dataset)
    return written


def threshold_in_process(spec: HostSpec, args: argparse.Namespace, method: Optional[str] = None) -> float:
    """Choose the background threshold of maps the step has already written (``run`` or the patched step),
    write ``lpcam_threshold.json`` beside them and set ``args.cam_eval_thres``; returns the threshold."""
    opts = LPCAMOptions.from_args(args, spec.dataset.preset)
    if method is not None:
        opts = dataclasses.replace(opts, method=method)
    device = resolve_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))
    return write_threshold(spec, opts, device, args).threshold


def work(spec: HostSpec, process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Body of the patched host ``_work(process_id, model, dataset, args)`` (``dataset``: the
    host's list of per-worker Subsets)."""
    configure_worker_logging()
    opts = LPCAMOptions.from_args(args, spec.dataset.preset)
    device = resolve_device(opts.device, process_id)
    n_procs = len(dataset)
    model, readout = prepare_readout(spec, model, opts, device, process_id=process_id, n_procs=n_procs)
    write_shard(spec, model, readout, dataset[process_id], opts, device, process_id=process_id, n_procs=n_procs)


def require_spawn_devices(step_module: str, alternative: str) -> None:
    """Raise when the unchanged host step would spawn no worker on this machine.

    IRN's ``make_cam.run`` and AMN's ``make_amn_cam.run`` start ``torch.cuda.device_count()``
    workers: without a visible CUDA device that is 0, so a patched step writes nothing and
    raises nothing (docs/design/hosts.md section 9). ``patch()`` calls this so the failure shows
    when it is made.
    """
    if torch.cuda.device_count() == 0:
        raise RuntimeError(f"patch(): no CUDA device is visible, so {step_module}.run(args) would spawn zero "
                           f"workers and write nothing; call {alternative} instead of {step_module}.run(args)")


__all__ = ["require_spawn_devices", "run_in_process", "threshold_in_process", "work"]
