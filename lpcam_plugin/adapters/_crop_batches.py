"""Random-crop batches of the IRN-family hosts' classification dataset, for the steps that train
something on a host network (the ReCAM step, the F-CAM decoder step).

The host's ``voc12.dataloader.VOC12ClassificationDataset(args.train_list, ...)`` with
``resize_long=(320, 640)``, horizontal flips and random ``crop_size`` crops (the ReCAM
reference's and IRN ``train_cam``'s geometry), batched as ``(images (B, 3, crop, crop), labels
(B, 20))``. Under ``torch.distributed`` each rank reads its ``DistributedSampler`` share of every
batch (``batch_size // world`` images).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import random
import time
from typing import Any, Callable, Iterator, Optional, Tuple, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)

#: The reference's training-image geometry (ReCAM ``train_recam.py``, IRN ``train_cam.py``).
RESIZE_LONG = (320, 640)
WAIT_POLL_S = 0.5

T = TypeVar("T")


class SeededItems(Dataset):
    """A dataset whose random augmentation depends only on ``(seed, epoch, index)``.

    The host draws its random resize, flip and crop from Python's ``random`` (and may use
    ``numpy.random``); each item is read with both seeded from ``(seed, epoch, index)`` and the
    global states restored afterwards. So any process, loader worker or resumed run sees the
    same crops for the same epoch: one process and a DDP run of the same batches, or an
    interrupted and an uninterrupted run, train alike.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item_seed = (self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(index)
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(item_seed)
        np.random.seed(item_seed % 2 ** 32)
        try:
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class PackBatches:
    """The host's DataLoader of ``{"name", "img", "label"}`` dicts as ``(images, labels)`` batches.

    :meth:`set_epoch` (called by the estimators' ``fit`` before each epoch) reseeds the shuffle
    with ``seed + epoch`` (or sets the ``DistributedSampler``'s epoch) and sets the epoch of a
    :class:`SeededItems` dataset, so a resumed run sees the same order as an uninterrupted one.
    """

    def __init__(self, loader: DataLoader, seed: int, generator: Optional[torch.Generator] = None) -> None:
        self.loader = loader
        self.seed = seed
        self.generator = generator

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        elif self.generator is not None:
            self.generator.manual_seed(self.seed + epoch)
        if isinstance(self.loader.dataset, SeededItems):
            self.loader.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for pack in self.loader:
            yield pack["img"], pack["label"]


def crop_dataset(args: argparse.Namespace, crop_size: int) -> Any:
    """The host's ``VOC12ClassificationDataset`` over ``args.train_list`` with random crops."""
    dataloader = importlib.import_module("voc12.dataloader")
    return dataloader.VOC12ClassificationDataset(args.train_list, voc12_root=args.voc12_root,
                                                 resize_long=RESIZE_LONG, hor_flip=True, crop_size=crop_size,
                                                 crop_method="random")


def crop_loader(args: argparse.Namespace, batch_size: int, crop_size: int, workers: int, seed: int, *,
                seeded_items: bool = False) -> PackBatches:
    """Shuffled, random-crop batches of ``args.train_list`` (``batch_size`` over all ranks).

    ``seeded_items``: crops drawn per ``(seed, epoch, index)`` (:class:`SeededItems`) and the
    order drawn by a ``DistributedSampler`` also in a single process (one replica), so that one
    process and any number of DDP ranks (or a resumed run) see the same images in the same
    batches; otherwise the order is a seeded shuffle and the crops come from the global state.
    """
    dataset = crop_dataset(args, crop_size)
    if seeded_items:
        dataset = SeededItems(dataset, seed)
    distributed = dist.is_available() and dist.is_initialized()
    if distributed or seeded_items:
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        if batch_size % world and seeded_items:
            raise ValueError(f"batch size {batch_size} is not a multiple of the {world} processes")
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        per_rank = max(batch_size // world, 1)
        return PackBatches(DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers,
                                      drop_last=True), seed)
    generator = torch.Generator().manual_seed(seed)
    return PackBatches(DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                  generator=generator), seed, generator)


def list_sha256(path: str) -> str:
    """sha256 of an image-list file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def wait_until(attempt: Callable[[], Tuple[Optional[T], str]], what: str) -> T:
    """Poll ``attempt() -> (value or None, reason)`` until it gives a value (another worker is
    producing ``what``); logs the first reason once."""
    value, reason = attempt()
    if value is None:
        logger.info("waiting for worker 0 to produce %s (%s)", what, reason)
    while value is None:
        time.sleep(WAIT_POLL_S)
        value, reason = attempt()
    return value
