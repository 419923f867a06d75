"""F-CAM for MCTformer-V2 (``xulianuwa/MCTformer`` at ``9606597``; docs/design/fcam-spec.md): a
decoder trained on the frozen ViT, written as ``--cam-npy-dir`` dicts ``{c: float32 (H, W)}`` in
[0, 1] that ``evaluation.py`` and ``psa/`` read unchanged.

A ViT gives tokens, F-CAM needs 4-D maps: :class:`MCTformerBackbone` wraps the host model and
runs its own, unchanged ``forward_features``; small :class:`TokenFold` submodules fold token
sequences onto the patch grid ``(H // p, W // p)`` (dropping the C class tokens):

- ``features``: the patch tokens ``forward_features`` returns (after the last block, no final
  norm) = the input of ``model.head``, ``(B, 384, H/16, W/16)`` (docs/design/hosts.md §5.2/§5.5);
- ``tokens<i>``: the output tokens of block ``i`` (default blocks ``depth//4, depth//2,
  3*depth//4``: 3, 6, 9 for DeiT-S), captured by forward hooks on ``model.blocks[i]`` while
  the wrapper runs; all at stride 16, so with the image they form the decoder's skips.

Source maps: LPCAM of a fitted bank (``mctformer.fit``), ``"cam"`` = the CAM of ``head``
reduced to (C, D) (``mctformer.selection_weight``, no bias), or any callable. Maps: the
decoder on the scale-1 view and its flip (``views[0]``, ``views[1]`` of ``VOC12DatasetMS``),
averaged, each class min-max normalised (the engine's rule, 1e-8). Items carry no id: pass
``names`` (the ids of ``train_aug_id.txt``, in order), as the engine names files by position.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from lpcam_plugin.adapters.common.crop_batches import ViewCrops
from lpcam_plugin.adapters.common.fcam import fcam_source, write_dicts
from lpcam_plugin.adapters.common.items import unbatch
from lpcam_plugin.adapters.mctformer.host import num_classes, preset_of, selection_weight
from lpcam_plugin.core.hooks import TokensToMap
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.readouts import BatchMaps

FEATURE_LAYER = "features"


class TokenFold(nn.Module):
    """``(B, P + N, D)`` tokens -> ``(B, D, h, w)`` on the grid the owning backbone sets per forward."""

    def __init__(self, num_prefix_tokens: int) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.grid: Optional[Tuple[int, int]] = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, P + N, D) -> (B, D, h, w)`` on :attr:`grid`, the ``P`` prefix tokens dropped."""
        return TokensToMap(self.num_prefix_tokens, self.grid)(tokens)


class _FoldOutput:
    """Forward hook of a block ``(x, attn)``: calls the fold module on ``x`` (so F-CAM's hook on it fires)."""

    def __init__(self, fold: TokenFold) -> None:
        self.fold = fold

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.fold((output[0] if isinstance(output, (tuple, list)) else output).float())


class MCTformerBackbone(nn.Module):
    """MCTformer-V2 as an F-CAM encoder: ``forward(x)`` -> ``features (B, D, H/p, W/p)``, block tokens folded.

    Args:
        host: the MCTformer-V2 model (child ``host``; its ``forward_features`` runs unchanged).
        skip_blocks: indices of the blocks whose output tokens are skips (``tokens<i>``);
            default ``depth//4, depth//2, 3*depth//4`` without the last block.
    """

    def __init__(self, host: nn.Module, skip_blocks: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if not (hasattr(host, "forward_features") and hasattr(host, "blocks") and hasattr(host, "patch_embed")):
            raise TypeError(f"{type(host).__name__} is not an MCTformer-V2 model "
                            "(forward_features, blocks, patch_embed)")
        depth = len(host.blocks)
        if skip_blocks is None:
            skip_blocks = sorted({depth // 4, depth // 2, 3 * depth // 4} - {depth - 1})
        bad = [i for i in skip_blocks if not 0 <= int(i) < depth - 1]
        if bad or not skip_blocks:
            raise ValueError(f"skip_blocks must be distinct block indices in [0, {depth - 2}], got {list(skip_blocks)}")
        self.host = host
        self.skip_blocks = [int(i) for i in skip_blocks]
        self.features = TokenFold(0)
        for i in self.skip_blocks:
            self.add_module(f"tokens{i}", TokenFold(num_classes(host)))

    @property
    def skip_layers(self) -> List[str]:
        """The skip module names ``tokens<i>``, in block order."""
        return [f"tokens{i}" for i in self.skip_blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> features (B, D, H/p, W/p)``; the skip blocks' tokens are folded on the way."""
        patch = self.host.patch_embed.patch_size
        p = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        folds = [self.features] + [getattr(self, name) for name in self.skip_layers]
        for fold in folds:
            fold.grid = grid
        handles = [self.host.blocks[i].register_forward_hook(_FoldOutput(getattr(self, f"tokens{i}")))
                   for i in self.skip_blocks]
        try:
            patches = self.host.forward_features(x)[1]
        finally:
            for handle in handles:
                handle.remove()
        return self.features(patches.float())


def read_item(item: Any) -> Tuple[Sequence[Any], Any, Optional[str]]:
    """MCTformer's ``VOC12DatasetMS`` / ``COCOClsDatasetMS`` item ``(views, label)`` (no id)."""
    return item[0], unbatch(item[1]), None


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """The engine's per-class min-max normalisation of ``(K, H, W)`` maps (1e-8)."""
    low, high = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low + 1e-8)


def fit(model: nn.Module, dataset: Any, *, source: Union[str, PrototypeBank, BatchMaps] = "cam",
        weight_mode: str = "sum", skip_blocks: Optional[Sequence[int]] = None, batch_size: int = 8,
        crop_size: int = 448, preset: Optional[str] = None, checkpoint: Optional[PathLike] = None,
        restart: bool = False, progress: Optional[bool] = None, **overrides: Any) -> FCAM:
    """Train an F-CAM decoder on MCTformer-V2's frozen ViT.

    Args:
        model: MCTformer-V2 with its trained weights (``checkpoint['model']``), eval mode, on its device.
        dataset: ``VOC12DatasetMS`` over the training ids (``scales=(1.0,)`` suffices); the first
            view of each item is randomly cropped and flipped
            (:class:`~lpcam_plugin.adapters.common.crop_batches.ViewCrops`).
        source: a fitted ``PrototypeBank``, ``"cam"`` (``head`` reduced by ``weight_mode``) or a callable.
        skip_blocks: see :class:`MCTformerBackbone`.
        batch_size, crop_size: images per step over all processes; crop side (a multiple of 16 wastes nothing).
        preset, overrides: FCAMConfig preset (default: the model's class count, 20 ``voc``, 80 ``coco``)
            and fields.
        checkpoint, restart: training-state file (resumed when it was written from the same weights,
            data, source and settings); ``restart`` starts over even when it exists.
    """
    fcam = FCAM(num_classes(model), preset_of(model, preset), progress=progress, **overrides)
    maps = fcam_source(source, selection_weight(model, mode=weight_mode)[0] if source == "cam" else None)
    encoder = MCTformerBackbone(model, skip_blocks)
    loader = ViewCrops(dataset, read_item, batch_size=batch_size, crop_size=crop_size, seed=fcam.config.seed)
    fcam.fit(encoder, loader, source=maps, feature_layer=FEATURE_LAYER, skip_layers=encoder.skip_layers,
             checkpoint=checkpoint, restart=restart)
    fcam.metadata.update({"host": "MCTformer-V2", "skip_blocks": encoder.skip_blocks,
                          "source": source if isinstance(source, str) else type(source).__name__})
    return fcam


def run(model: nn.Module, fcam: FCAM, dataset: Iterable[Any], *, names: Sequence[str], cam_npy_dir: PathLike,
        progress: Optional[bool] = None) -> int:
    """Write ``<cam_npy_dir>/<name>.npy`` = ``{c: float32 (H, W)}`` in [0, 1] (the engine's ``--cam-npy-dir``).

    ``names``: the ids of the dataset items in order (``train_aug_id.txt``). The decoder's skip
    blocks are read from ``fcam.skip_layers_``. Returns the number of files written.
    """
    blocks = [int(name[len("tokens"):]) for name in fcam.skip_layers_ if name.startswith("tokens")]
    return write_dicts(fcam, MCTformerBackbone(model, blocks), dataset, read_item, cam_npy_dir, _minmax, names=names,
                       progress=progress, desc="MCTformer F-CAM")


__all__ = ["FEATURE_LAYER", "MCTformerBackbone", "TokenFold", "fit", "read_item", "run"]
