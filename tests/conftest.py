"""Shared test helpers."""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import re
import socket
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pytest

#: The stand-in host checkouts (``tests/hosts``), whatever folder a test file sits in.
HOSTS = Path(__file__).resolve().parent / "hosts"


def standin_host(monkeypatch: pytest.MonkeyPatch, host_dir: Path, top_level: Iterable[str]) -> Iterator[Path]:
    """Put a stand-in host checkout first on ``sys.path`` for one test (a fixture body: ``yield from``).

    Before and after the test, every module loaded from ``host_dir`` or named by ``top_level``
    (and its submodules) leaves ``sys.modules``, so stand-ins with common module names
    (``models``, ``network``, ``voc12``...) never see each other.
    """
    names = set(top_level)

    def drop() -> None:
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(str(host_dir)) or name.split(".")[0] in names:
                del sys.modules[name]

    drop()
    monkeypatch.syspath_prepend(str(host_dir))
    yield host_dir
    drop()


class Interrupt(Exception):
    """Raised by :class:`StopsInEpoch`: a training run that dies part-way."""


class StopsInEpoch:
    """A loader over ``data`` (a list of batches) that raises :class:`Interrupt` at the second batch
    of epoch ``stop_epoch`` (1-based) the first time through: a run killed mid-epoch."""

    def __init__(self, data: list, stop_epoch: int) -> None:
        self.data, self.stop_epoch, self.epoch = data, stop_epoch, 0

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator:
        self.epoch += 1
        for i, batch in enumerate(self.data):
            if self.epoch == self.stop_epoch and i == 1:
                raise Interrupt
            yield batch


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """A gloo process group on the loopback for one spawned test worker, one thread, destroyed after.

    On a clean exit the ranks meet at a barrier and drop their DistributedDataParallel wrappers
    (``gc.collect()``: a wrapper's reducer sits in a reference cycle) before the group goes: a rank
    that tore its group down while its peer was still talking, or with a reducer still alive,
    aborted in gloo's C++ teardown (``terminate called without an active exception``, SIGABRT) on
    CI's loaded 2-core machine.
    """
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        yield
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def spawn_gloo(worker: Callable[..., None], *args: object, nprocs: int = 2) -> None:
    """Run ``worker(rank, nprocs, port, *args)`` in ``nprocs`` spawned processes (a free loopback port)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(nprocs, port, *args), nprocs=nprocs, join=True)


def _load_voc_standin():
    """``tests/hosts/voc_standin.py`` (the synthetic VOC set and the IRN-family fork builders) as a module."""
    spec = importlib.util.spec_from_file_location("voc_standin", HOSTS / "voc_standin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


voc_standin = _load_voc_standin()
#: The mIoU in the printout of IRN's / AMN's eval steps (``{'iou': ..., 'miou': ...}``).
MIOU = re.compile(r"'miou': (?:np\.float64\()?([-+0-9.eE]+|nan)")


def corrupted_copy(path: Path, dest: Path) -> Path:
    """``dest``: a copy of ``path`` with the middle byte flipped (a checksummed file must refuse it)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest
