"""F-CAM for EDAM (``allenwu97/EDAM``; docs/design/fcam-spec.md): a decoder trained on EDAM's
frozen WideResNet-38, written as EDAM ``--out_cam`` dicts ``{c: float32 (H, W)}`` that ``eval.py``
and the saliency fusion read unchanged.

Encoder (:class:`EDAMBackbone`): the host ``Net`` run through ``forward_as_dict`` (the backbone
only, no ``mask_layer``); features = ``bn7`` ("conv6", 4096-d, stride 8, no ReLU;
docs/design/hosts.md §4.5), skips = the outputs of the last block of each stride, ``b2_2``
(stride 2), ``b3_2`` (4), ``b4_5`` (8), then the image. EDAM's ``ResBlock`` / ``ResBlock_bot``
override ``__call__`` to call ``forward`` directly, so forward hooks on them never fire (found on
the real code at ``de0af41``); the blocks are therefore tapped by swapping in a pass-through
module for the duration of the forward, whose output the skip modules ``stride2/4/8`` re-emit.
Source maps: LPCAM of a fitted bank (``edam.fit``), or ``"cam"``, the CAM of ``mask_layer``
reduced to (20, D) (``edam.selection_weight``), or any callable. Maps: the decoder on the
scale-1 view and its flip (``views[0]``, ``views[1]`` of ``VOC12ClsDatasetMSF``), averaged, each
class divided by its max (EDAM's ``infer_cls`` rule; all-zero stays zero).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from lpcam_plugin.adapters.common.crop_batches import ViewCrops
from lpcam_plugin.adapters.common.fcam import fcam_source, write_dicts
from lpcam_plugin.adapters.common.items import unbatch
from lpcam_plugin.adapters.edam.host import NUM_CLASSES, divide_by_max, selection_weight
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.readouts import BatchMaps

FEATURE_LAYER = "host.bn7"
SKIP_LAYERS = ("stride2", "stride4", "stride8")
#: The block whose output each skip re-emits: the first of these names the host has (upstream's
#: last block of the stride; a smaller PSA-style net may have only the first block).
SKIP_BLOCKS = {"stride2": ("b2_2", "b2"), "stride4": ("b3_2", "b3"), "stride8": ("b4_5", "b4")}


class _Emit(nn.Module):
    """Identity; called on a tapped block's output so that a forward hook on it (F-CAM's) sees it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Tap(nn.Module):
    """Stands in for a host block during one forward: runs the block, then ``emit`` on its output."""

    def __init__(self, block: nn.Module, emit: _Emit) -> None:
        super().__init__()
        self.block, self.emit = block, emit

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.block(*args, **kwargs)
        self.emit(out[0] if isinstance(out, tuple) else out)
        return out


class EDAMBackbone(nn.Module):
    """EDAM's backbone as an F-CAM encoder: ``forward(x)`` = ``host.forward_as_dict(x)["conv6"]`` ``(B, D, H/8, W/8)``.

    The host network is the child ``host`` (``host.bn7`` names its features); the skips
    ``stride2``, ``stride4``, ``stride8`` re-emit the outputs of the blocks of
    :data:`SKIP_BLOCKS`, tapped during the forward (the blocks are put back afterwards).
    Nothing is copied; ``mask_layer`` and the per-class transformers are not run.
    """

    def __init__(self, host: nn.Module) -> None:
        super().__init__()
        if not hasattr(host, "forward_as_dict"):
            raise TypeError(f"{type(host).__name__} has no forward_as_dict; expected an EDAM/PSA resnet38d Net")
        self.host = host
        self.blocks: Dict[str, str] = {}
        for skip, candidates in SKIP_BLOCKS.items():
            found = [name for name in candidates if isinstance(getattr(host, name, None), nn.Module)]
            if not found:
                raise TypeError(f"{type(host).__name__} has none of the blocks {candidates} for the skip {skip}")
            self.blocks[skip] = found[0]
            self.add_module(skip, _Emit())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> bn7 features (B, D, H/8, W/8)``, the skips re-emitted on the way."""
        originals = {name: getattr(self.host, name) for name in self.blocks.values()}
        try:
            for skip, name in self.blocks.items():
                setattr(self.host, name, _Tap(originals[name], getattr(self, skip)))
            return self.host.forward_as_dict(x)["conv6"]
        finally:
            for name, block in originals.items():
                setattr(self.host, name, block)


def read_item(item: Any) -> Tuple[Sequence[Any], Any, Optional[str]]:
    """EDAM's ``VOC12ClsDatasetMSF`` item ``(name, views, label)`` (also batched by a DataLoader of batch 1)."""
    return item[1], unbatch(item[2]), str(unbatch(item[0]))


def fit(model: nn.Module, dataset: Any, *, source: Union[str, PrototypeBank, BatchMaps] = "cam",
        weight_mode: str = "sum", batch_size: int = 8, crop_size: int = 448, preset: str = "voc",
        checkpoint: Optional[PathLike] = None, restart: bool = False, progress: Optional[bool] = None,
        **overrides: Any) -> FCAM:
    """Train an F-CAM decoder on EDAM's frozen network.

    Args:
        model: EDAM ``Net`` with its trained weights, in eval mode on its device.
        dataset: ``VOC12ClsDatasetMSF`` over the training list (``scales=(1.0,)`` suffices); the
            first view of each item is randomly cropped and flipped
            (:class:`~lpcam_plugin.adapters.common.crop_batches.ViewCrops`).
        source: a fitted ``PrototypeBank`` (LPCAM), ``"cam"`` (``mask_layer`` reduced by
            ``weight_mode``, rows 0..19) or a callable ``(features, labels) -> maps`` in [0, 1].
        batch_size: images per step over all processes (DDP: give each rank the same dataset).
        crop_size: side of the training crops (EDAM trains on 448 crops).
        preset, overrides: :class:`~lpcam_plugin.methods.fcam.config.FCAMConfig` preset and fields.
        checkpoint: training-state file (resume from it when it exists and was written from the
            same weights, data, source and settings; else a one-line error naming what differs).
        restart: start over even when ``checkpoint`` exists.
        progress: progress bars.
    """
    fcam = FCAM(NUM_CLASSES, preset, progress=progress, **overrides)
    maps = fcam_source(source, selection_weight(model, mode=weight_mode) if source == "cam" else None)
    loader = ViewCrops(dataset, read_item, batch_size=batch_size, crop_size=crop_size, seed=fcam.config.seed)
    fcam.fit(EDAMBackbone(model), loader, source=maps, feature_layer=FEATURE_LAYER, skip_layers=list(SKIP_LAYERS),
             checkpoint=checkpoint, restart=restart)
    fcam.metadata.update({"host": "EDAM", "source": source if isinstance(source, str) else type(source).__name__})
    return fcam


def run(model: nn.Module, fcam: FCAM, dataset: Iterable[Any], *, out_cam: PathLike,
        progress: Optional[bool] = None) -> int:
    """Write ``<out_cam>/<name>.npy`` = ``{c: float32 (H, W)}`` F-CAM dicts (EDAM's ``--out_cam``).

    ``dataset``: ``VOC12ClsDatasetMSF`` items (any scales; the scale-1 view and its flip are used).
    Returns the number of files written.
    """
    return write_dicts(fcam, EDAMBackbone(model), dataset, read_item, out_cam, divide_by_max, progress=progress,
                       desc="EDAM F-CAM")


__all__ = ["EDAMBackbone", "FEATURE_LAYER", "SKIP_BLOCKS", "SKIP_LAYERS", "fit", "read_item", "run"]
