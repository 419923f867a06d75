"""F-CAM for the hosts that write ``{class: (H, W)}`` dicts (EDAM, MCTformer): training batches,
sources and the dict writer shared by ``edam_fcam`` and ``mctformer_fcam``.

- :class:`ViewCrops`: decoder-training batches from the host's multi-scale dataset items: the
  first view (scale 1, unflipped) of each image, randomly cropped (zero-padded when smaller,
  i.e. the mean colour after normalisation) and flipped, seeded per ``(seed, epoch, index)``;
  under ``torch.distributed`` each rank takes its share of every batch.
- :func:`fcam_source`: the source maps F-CAM decodes, from the host features: a fitted
  :class:`~lpcam_plugin.PrototypeBank` (LPCAM), ``"cam"`` with a ``(20, D)`` weight, or a callable.
- :func:`write_dicts`: per image, the decoder on the scale-1 view and its flip (flip flipped
  back, averaged: :func:`~lpcam_plugin.adapters._fcam_step.fcam_maps`), normalised per class
  the host's way, saved as ``<out_dir>/<name>.npy`` = ``{c: float32 (H, W)}`` (present classes).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lpcam_plugin.core.formats import write_class_dict
from lpcam_plugin.adapters._edam_mct_shared import all_class_maps, as_image_batch, present_classes
from lpcam_plugin.adapters._fcam_step import fcam_maps
from lpcam_plugin.adapters._resnet_hosts import linear_source
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.fcam.estimator import FCAM

logger = logging.getLogger(__name__)

NUM_CLASSES = 20
#: ``item -> (views, label, name or None)`` of one host dataset item.
ItemReader = Callable[[Any], Tuple[Sequence[Any], Any, Optional[str]]]
Source = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    """Shuffled batches ``(images (B, 3, crop, crop), labels (B, 20))`` of the first views of ``dataset``.

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
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + index)
                images.append(_crop_and_flip(as_image_batch(views[0], torch.device("cpu"))[0], self.crop_size,
                                             generator))
                labels.append(torch.as_tensor(np.asarray(label), dtype=torch.float32).reshape(NUM_CLASSES))
            yield torch.stack(images), torch.stack(labels)


def fcam_source(source: Union[str, Any, Source], weight: Optional[torch.Tensor] = None) -> Source:
    """The maps F-CAM decodes, ``(features (B, D, h, w), labels (B, 20)) -> (B, 20, h, w)`` in [0, 1].

    Args:
        source: a fitted :class:`~lpcam_plugin.PrototypeBank` (LPCAM of every class, ReLU'd,
            divided by its max + 1e-5; classes without prototypes give 0), ``"cam"`` (the CAM of
            ``weight``), or a callable with that signature (used as is).
        weight: ``(20, D)`` for ``"cam"``.
    """
    if isinstance(source, str):
        if source != "cam":
            raise ValueError(f"source must be 'cam', a PrototypeBank or a callable, got {source!r}")
        if weight is None:
            raise ValueError("source 'cam' needs the (20, D) weight")
        return linear_source(weight)
    if callable(source):
        return source
    if not hasattr(source, "has_prototypes"):
        raise TypeError(f"source must be 'cam', a PrototypeBank or a callable, got {type(source).__name__}")
    bank = source

    def lpcam(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        maps = max_normalize(all_class_maps(features, bank, NUM_CLASSES).clamp(min=0))
        return maps * (labels > 0).to(maps)[:, :, None, None]
    return lpcam


def dict_maps(fcam: FCAM, encoder: nn.Module, views: Sequence[Any], classes: List[int],
              normalize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``(K, H, W)`` F-CAM of one image: decoder on ``views[0]`` and its flip ``views[1]``, averaged, normalised."""
    device = next(encoder.parameters()).device
    stack = torch.cat([as_image_batch(views[0], device), as_image_batch(views[1], device)])
    with torch.no_grad():
        return normalize(fcam_maps(fcam, encoder, stack, classes)).cpu()


def write_dicts(fcam: FCAM, encoder: nn.Module, dataset: Iterable[Any], read_item: ItemReader, out_dir: PathLike,
                normalize: Callable[[torch.Tensor], torch.Tensor], *, names: Optional[Sequence[str]] = None,
                progress: Optional[bool] = None, desc: str = "F-CAM") -> int:
    """Write ``<out_dir>/<name>.npy`` = ``{c: float32 (H, W)}`` for the present classes of every item.

    ``names``: ids in dataset order when the items carry none (MCTformer). Returns the number written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, item in enumerate(progress_bar(dataset, progress=progress, desc=desc)):
        views, label, name = read_item(item)
        if name is None:
            if names is None:
                raise ValueError("the dataset items carry no image id: pass names= (the list's ids, in order)")
            name = str(names[index])
        classes = list(present_classes(label, NUM_CLASSES))
        if not classes:
            logger.warning("%s: no positive class in the label; nothing written", name)
            continue
        maps = dict_maps(fcam, encoder, views, classes, normalize).numpy()
        write_class_dict(out / f"{name}.npy", {c: maps[i] for i, c in enumerate(classes)})
        written += 1
    return written


__all__ = ["ViewCrops", "dict_maps", "fcam_source", "write_dicts"]
