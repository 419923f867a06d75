"""torch.distributed plumbing for :mod:`lpcam_plugin.distributed`.

Everything here degrades to a single process when no process group is initialised: rank 0 of
a world of 1, collectives are identities. Pools and prototypes live on the CPU, so every
collective runs on a CPU-capable group: the caller's group when its backend can move CPU
tensors (``gloo``, or ``"cpu:gloo,cuda:nccl"``), otherwise a ``gloo`` group over the same ranks.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Comm:
    """The process group used for CPU collectives, with this process's place in it.

    Attributes:
        group: a CPU-capable process group, or None when running in a single process.
        rank: this process's rank in ``group`` (0 in a single process).
        world_size: number of processes in ``group`` (1 in a single process).
    """

    group: Optional[Any]
    rank: int
    world_size: int

    @property
    def active(self) -> bool:
        """True when there are several processes to talk to."""
        return self.group is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, which writes the shared files."""
        return self.rank == 0

    def global_rank(self, group_rank: int) -> int:
        """The global rank of ``group_rank`` (what ``gather``/``broadcast`` take as ``dst``/``src``)."""
        if not self.active:
            return group_rank
        return dist.get_global_rank(self.group, group_rank)

    def barrier(self) -> None:
        """Wait for every process of the group."""
        if self.active:
            dist.barrier(group=self.group)


def make_comm(group: Optional[Any] = None) -> Comm:
    """The :class:`Comm` for ``group`` (default: the world), or a single-process one.

    If ``group``'s backend cannot carry CPU tensors (pure ``nccl``), a ``gloo`` group over the
    same ranks is created; this is a collective call, so every rank must make it.
    """
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise ValueError("a process group was passed but torch.distributed is not initialised")
        return Comm(None, 0, 1)
    group = dist.group.WORLD if group is None else group
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return Comm(group, 0, 1)
    backend = str(dist.get_backend(group)).lower()
    if "gloo" not in backend:
        ranks = [dist.get_global_rank(group, r) for r in range(world_size)]
        logger.info("backend %r cannot move CPU tensors; creating a gloo group over ranks %s", backend, ranks)
        group = dist.new_group(ranks=ranks, backend="gloo")
    return Comm(group, dist.get_rank(group), world_size)


def local_device(device: Optional[str] = None) -> torch.device:
    """The device this rank computes on: ``device`` if given, else ``cuda:LOCAL_RANK`` or CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def all_gather_rows(comm: Comm, tensor: torch.Tensor, pad_value: float = 0.0) -> List[torch.Tensor]:
    """Gather a CPU tensor whose first dimension differs between ranks; one tensor per rank.

    ``tensor`` is ``(n_r, ...)`` on rank r; the trailing shape and dtype must agree. Rows are
    padded to the largest ``n_r`` for the transfer and cut back afterwards.
    """
    if not comm.active:
        return [tensor]
    tensor = tensor.contiguous()
    counts = all_gather_ints(comm, [tensor.shape[0]])
    sizes = [int(c[0]) for c in counts]
    padded = _pad_rows(tensor, max(sizes), pad_value)
    out = [torch.empty_like(padded) for _ in range(comm.world_size)]
    dist.all_gather(out, padded, group=comm.group)
    return [t[:n] for t, n in zip(out, sizes)]


def all_gather_ints(comm: Comm, values: Sequence[int]) -> List[List[int]]:
    """Every rank's list of ints (all lists have the same length); ``[values]`` in one process."""
    local = torch.tensor(list(values), dtype=torch.int64)
    if not comm.active:
        return [local.tolist()]
    out = [torch.empty_like(local) for _ in range(comm.world_size)]
    dist.all_gather(out, local, group=comm.group)
    return [t.tolist() for t in out]


def _pad_rows(tensor: torch.Tensor, rows: int, value: float) -> torch.Tensor:
    """``tensor`` ``(n, ...)`` padded with ``value`` to ``(rows, ...)``."""
    missing = rows - tensor.shape[0]
    if missing <= 0:
        return tensor
    pad = torch.full((missing,) + tuple(tensor.shape[1:]), value, dtype=tensor.dtype)
    return torch.cat([tensor, pad], dim=0)
