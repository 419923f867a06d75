"""Random-crop batches of the IRN-family hosts' classification dataset, for the steps that train
something on a host network (the ReCAM step, the F-CAM decoder step, RCM+MAM ``train_cam``).

The host's classification dataset with ``resize_long=(320, 640)``, horizontal flips and random
crops (:meth:`~lpcam_plugin.adapters.resnet.datasets.HostDataset.crops`: the ReCAM reference's
and IRN ``train_cam``'s geometry), batched as ``(images (B, 3, crop, crop), labels (B, C))``.
Under ``torch.distributed`` each rank reads its ``DistributedSampler`` share of every
batch (``batch_size // world`` images).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from lpcam_plugin.adapters.common.crop_batches import SeededItems


class PackBatches:
    """The host's DataLoader of ``{"name", "img", "label"}`` dicts as ``(images, labels)`` batches.

    :meth:`set_epoch` (called by the estimators' ``fit`` before each epoch) reseeds the shuffle
    with ``seed + epoch`` (or sets the ``DistributedSampler``'s epoch) and sets the epoch of a
    :class:`~lpcam_plugin.adapters.common.crop_batches.SeededItems` dataset, so a resumed run sees
    the same order as an uninterrupted one.
    """

    def __init__(self, loader: DataLoader, seed: int, generator: Optional[torch.Generator] = None) -> None:
        self.loader = loader
        self.seed = seed
        self.generator = generator

    def set_epoch(self, epoch: int) -> None:
        """Seed the order (and a ``SeededItems`` dataset's crops) of ``epoch``."""
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


def crop_loader(dataset: Any, batch_size: int, workers: int, seed: int, *, seeded_items: bool = False) -> PackBatches:
    """Shuffled batches of the host's random-crop ``dataset`` (``HostDataset.crops``; ``batch_size``
    over all ranks).

    ``seeded_items``: crops drawn per ``(seed, epoch, index)`` (``SeededItems``) and the order
    drawn by a ``DistributedSampler`` also in a single process (one replica), so that one
    process and any number of DDP ranks (or a resumed run) see the same images in the same
    batches; otherwise the order is a seeded shuffle and the crops come from the global state.
    """
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


__all__ = ["PackBatches", "crop_loader"]
