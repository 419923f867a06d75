"""Seeded random-crop training batches shared by the host families.

- :class:`SeededItems`: any host dataset whose random augmentation (drawn from Python's
  ``random`` / ``numpy.random``) is reseeded per ``(seed, epoch, index)`` (the IRN-family crop
  loader, EDAM's RCM+MAM training);
- :class:`ViewCrops`: F-CAM decoder batches ``(images (B, 3, crop, crop), labels (B, C))`` from
  the first view of the ``{class: map}`` hosts' multi-scale items (EDAM, MCTformer).

Either way any process, loader worker, DDP rank or resumed run sees the same crops for the same
epoch, so a single process and a DDP run of the same batches, or an interrupted and an
uninterrupted run, train alike.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from lpcam_plugin.adapters.common.items import as_image_batch

#: ``item -> (views, label, name or None)`` of one host dataset item.
ItemReader = Callable[[Any], Tuple[Sequence[Any], Any, Optional[str]]]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of item ``index`` in ``epoch`` of a run seeded ``seed``."""
    return (int(seed) * 1_000_003 + int(epoch)) * 1_000_033 + int(index)


class SeededItems(Dataset):
    """A dataset whose random augmentation depends only on ``(seed, epoch, index)``.

    The host draws its random resize, flip and crop from Python's ``random`` (and may use
    ``numpy.random``); each item is read with both seeded from ``(seed, epoch, index)`` and the
    global states restored afterwards.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items' augmentation (or order and crops) for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed = item_seed(self.seed, self.epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        try:
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _crop_and_flip(image: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """``(3, h, w)`` -> ``(3, crop, crop)``: a random window (zero padding where the image is smaller), then a
    random horizontal flip."""
    _, h, w = image.shape
    out = image.new_zeros(3, crop, crop)
    top = int(torch.randint(0, max(h - crop, 0) + 1, (1,), generator=generator))
    left = int(torch.randint(0, max(w - crop, 0) + 1, (1,), generator=generator))
    window = image[:, top:top + crop, left:left + crop]
    dy = int(torch.randint(0, crop - window.shape[1] + 1, (1,), generator=generator))
    dx = int(torch.randint(0, crop - window.shape[2] + 1, (1,), generator=generator))
    out[:, dy:dy + window.shape[1], dx:dx + window.shape[2]] = window
    if bool(torch.rand((), generator=generator) < 0.5):
        out = out.flip(-1)
    return out


class ViewCrops:
    """Shuffled batches ``(images (B, 3, crop, crop), labels (B, C))`` of the first views of ``dataset``.

    Each first view (scale 1, unflipped) is randomly cropped (zero-padded when smaller, i.e. the
    mean colour after normalisation) and flipped; under ``torch.distributed`` each rank takes its
    share of every batch.

    Args:
        dataset: the host's multi-scale dataset (``len`` and indexing), e.g. EDAM's
            ``VOC12ClsDatasetMSF`` or MCTformer's ``VOC12DatasetMS`` (scales ``(1.0,)`` is enough).
        read_item: ``item -> (views, label, name)``; ``views[0]`` is the unscaled, unflipped view.
        batch_size: images per step over all processes (each rank gets ``batch_size // world``).
        crop_size: side of the square crops.
        seed: order ``randperm(seed + epoch)``; crops and flips seeded per ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Any, read_item: ItemReader, *, batch_size: int, crop_size: int, seed: int = 0) -> None:
        if batch_size < 1 or crop_size < 1:
            raise ValueError(f"batch_size and crop_size must be >= 1, got {batch_size} and {crop_size}")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not a multiple of the {world} processes")
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}")
        self.dataset, self.read_item = dataset, read_item
        self.batch_size, self.crop_size, self.seed = batch_size, crop_size, seed
        self.world = world
        self.rank = dist.get_rank() if world > 1 else 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items' augmentation (or order and crops) for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for step in range(len(self)):
            batch = order[step * self.batch_size:(step + 1) * self.batch_size][self.rank::self.world]
            images, labels = [], []
            for index in batch.tolist():
                views, label, _ = self.read_item(self.dataset[index])
                generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                images.append(_crop_and_flip(as_image_batch(views[0], torch.device("cpu"))[0], self.crop_size,
                                             generator))
                labels.append(torch.as_tensor(np.asarray(label), dtype=torch.float32).reshape(-1))
            yield torch.stack(images), torch.stack(labels)


__all__ = ["ItemReader", "SeededItems", "ViewCrops", "item_seed"]
