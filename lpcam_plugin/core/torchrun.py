"""Joining a ``torchrun`` launch: the one process-group initialiser that scale-out and the adapters share."""
from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: torchrun / SLURM launch variables read by :func:`init_from_env`.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the launch variables of torchrun (or an equivalent SLURM wrapper) are set."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(backend: Optional[str] = None, *, device: Optional[torch.device] = None,
                  timeout_s: Optional[float] = None, min_world_size: int = 1) -> bool:
    """Initialise the default process group from the torchrun environment (``env://``).

    Args:
        backend: ``"gloo"``, ``"nccl"`` or a device map such as ``"cpu:gloo,cuda:nccl"``; default:
            ``"nccl"`` for a CUDA ``device``, ``"gloo"`` for another ``device``, and without a
            device ``"cpu:gloo,cuda:nccl"`` when CUDA is available, else ``"gloo"``.
        device: the device this process computes on (chooses the default backend).
        timeout_s: collective timeout in seconds (torch's default when None).
        min_world_size: do nothing for launches of fewer processes (the adapters pass 2: one
            process needs no group).

    Returns:
        True if this call initialised the group (the caller should destroy it), False when it
        was already initialised, the process was not launched by torchrun, or the launch is
        smaller than ``min_world_size``.
    """
    if not dist.is_available() or dist.is_initialized() or not launched_by_torchrun():
        return False
    if int(os.environ["WORLD_SIZE"]) < min_world_size:
        return False
    if backend is None:
        if device is not None:
            backend = "nccl" if device.type == "cuda" else "gloo"
        else:
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    kwargs: Dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = timedelta(seconds=float(timeout_s))
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    logger.info("initialised process group: backend=%s rank=%d world_size=%d",
                backend, dist.get_rank(), dist.get_world_size())
    return True


__all__ = ["ENV_VARS", "init_from_env", "launched_by_torchrun"]
