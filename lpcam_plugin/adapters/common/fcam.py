"""F-CAM at inference, shared by the host families.

- :func:`fcam_maps`: the decoder's maps of one image from its image + flip stack, the flip's
  maps flipped back and averaged (every host: the IRN family renders them in its geometry);
- for the hosts that write ``{class: (H, W)}`` dicts (EDAM, MCTformer): :func:`fcam_source`, the
  source maps the decoder is trained on, and :func:`write_dicts`, per image the decoder on the
  scale-1 view and its flip, normalised per class the host's way, saved as
  ``<out_dir>/<name>.npy`` = ``{c: float32 (H, W)}`` for the present classes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from lpcam_plugin.adapters.common.class_maps import all_class_maps
from lpcam_plugin.adapters.common.crop_batches import ItemReader
from lpcam_plugin.adapters.common.items import as_image_batch, present_classes
from lpcam_plugin.core.formats import write_class_dict
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.readouts import BatchMaps, linear_batch_maps

logger = logging.getLogger(__name__)

#: The read-out a ``{class: map}`` host's F-CAM may name by string (the others are passed as a
#: fitted bank or a callable).
DICT_SOURCES = ("cam",)


def fcam_maps(fcam: FCAM, encoder: nn.Module, stack: torch.Tensor, classes: List[int]) -> torch.Tensor:
    """F-CAM maps of one image from its ``(2, 3, H, W)`` image + flip stack: ``(K, H, W)``,
    the flip's maps flipped back and averaged with the image's (not normalised)."""
    labels = torch.zeros(2, fcam.num_classes, device=stack.device)
    labels[:, classes] = 1.0
    maps = fcam.predict(encoder, stack, labels)[:, classes].float()
    return (maps[0] + maps[1].flip(-1)) / 2


def fcam_source(source: Union[str, PrototypeBank, BatchMaps], weight: Optional[torch.Tensor] = None) -> BatchMaps:
    """The maps F-CAM decodes, ``(features (B, D, h, w), labels (B, C)) -> (B, C, h, w)`` in [0, 1].

    Args:
        source: a fitted :class:`~lpcam_plugin.methods.lpcam.bank.PrototypeBank` (LPCAM of every
            class, ReLU'd, divided by its max + 1e-5; classes without prototypes give 0), ``"cam"``
            (the CAM of ``weight``, :func:`lpcam_plugin.methods.readouts.linear_batch_maps`), or a
            callable with that signature (used as is).
        weight: ``(C, D)`` for ``"cam"``.
    """
    if isinstance(source, str):
        if source not in DICT_SOURCES:
            raise ValueError(f"source must be 'cam', a PrototypeBank or a callable, got {source!r}")
        if weight is None:
            raise ValueError("source 'cam' needs the (C, D) weight")
        return linear_batch_maps(weight)
    if callable(source):
        return source
    if not hasattr(source, "has_prototypes"):
        raise TypeError(f"source must be 'cam', a PrototypeBank or a callable, got {type(source).__name__}")
    bank = source

    def lpcam(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        maps = max_normalize(all_class_maps(features, bank, bank.num_classes).clamp(min=0))
        return maps * (labels > 0).to(maps)[:, :, None, None]
    return lpcam


def dict_maps(fcam: FCAM, encoder: nn.Module, views: Sequence[Any], classes: List[int],
              normalize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``(K, H, W)`` F-CAM of one image on CPU: decoder on ``views[0]`` and its flip ``views[1]``
    (each ``(3, H, W)``), averaged, then ``normalize`` (the host's per-class rule)."""
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
        classes = list(present_classes(label, fcam.num_classes))
        if not classes:
            logger.warning("%s: no positive class in the label; nothing written", name)
            continue
        maps = dict_maps(fcam, encoder, views, classes, normalize).numpy()
        write_class_dict(out / f"{name}.npy", {c: maps[i] for i, c in enumerate(classes)})
        written += 1
    return written


__all__ = ["DICT_SOURCES", "dict_maps", "fcam_maps", "fcam_source", "write_dicts"]
