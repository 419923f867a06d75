"""What the IRN-family CAM step writes for a read-out, in the host's geometry.

A :class:`HostReadout` is one read-out of the registry (:mod:`lpcam_plugin.methods.readouts`)
made concrete for this host: its per-image maps of one scale's image + flip features, its
batch maps (what F-CAM decodes) and, for F-CAM, its own full-image rendering.
:func:`host_maps` renders the per-image maps over all scales the way the host's CAM step does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from lpcam_plugin.adapters.common.fcam import fcam_maps
from lpcam_plugin.adapters.resnet.host import resize, stage4_features, strided_size, strided_up_size
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.readouts import BatchMaps

#: ``(features (2, D, h, w) image + flip, classes (K,)) -> (K, h, w)`` unnormalised maps of the image.
ImageMaps = Callable[[torch.Tensor, List[int]], torch.Tensor]
#: ``(stacks, classes, (H, W)) -> (strided (K, h4, w4), high_res (K, H, W))`` a whole image's maps.
Render = Callable[[Sequence[torch.Tensor], List[int], Tuple[int, int]], Tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class HostReadout:
    """A registry read-out as the CAM step runs it: one scale's image + flip features -> maps.

    Attributes:
        method: the registry name (``--lpcam_method``) the maps are of.
        maps: ``(features (2, D, h, w), classes) -> (K, h, w)`` unnormalised maps of the image,
            its flip folded in the way the method's reference does.
        key: what produced the maps (method, checkpoint, bank or ReCAM file hashes); files are
            skipped on resume only when written with the same key.
        source: the same read-out as batch maps of single images
            (:data:`lpcam_plugin.methods.readouts.BatchMaps`), what F-CAM decodes (None where the
            read-out has no batch form).
        render: the whole image's maps when they are not :func:`host_maps` of ``maps`` (F-CAM).
    """

    method: str
    maps: ImageMaps
    key: Dict[str, Any]
    source: Optional[BatchMaps] = None
    render: Optional[Render] = None


def linear_readout(weight: torch.Tensor) -> ImageMaps:
    """CAM / ReCAM: ``relu(W_c . f)`` of the image and of its flip (flipped back), summed, as
    IRN's ``CAM.forward`` and ReCAM's ``forward2`` do. ``weight``: ``(20, D)``."""
    def maps(features: torch.Tensor, classes: List[int]) -> torch.Tensor:
        both = cam_map(features, weight.to(features.device), classes, normalize=False)
        return both[0] + both[1].flip(-1)
    return maps


def lpcam_readout(estimator: LPCAM, fallback_weight: torch.Tensor) -> ImageMaps:
    """LPCAM: the image's and its flip's features summed before the similarity (as the LPCAM
    reference does); classes without prototypes fall back to the CAM of ``fallback_weight`` ``(20, D)``."""
    def maps(features: torch.Tensor, classes: List[int]) -> torch.Tensor:
        fused = features[0:1] + features[1:2].flip(-1)
        return estimator(fused, classes, normalize=False, fallback="cam",
                         weight=fallback_weight.to(features.device))[0]
    return maps


def fcam_render(fcam: FCAM, encoder: nn.Module) -> Render:
    """F-CAM in the host's geometry: ``(stacks, classes, (H, W)) -> (strided (K, h4, w4), high_res (K, H, W))``.

    The decoder runs on the scale-1.0 image + flip stack (the one of size (H, W)); the two maps
    are averaged (flip flipped back) and divided by their max + 1e-5 -> ``high_res``; the strided
    map is ``high_res`` resized bilinearly to ``((H-1)//4+1, (W-1)//4+1)``. float32 on CPU.
    """
    def render(stacks: Sequence[torch.Tensor], classes: List[int],
               size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        h4, w4 = strided_size(size)
        if not classes:
            return torch.zeros(0, h4, w4), torch.zeros(0, *size)
        full = [s for s in stacks if tuple(s.shape[-2:]) == tuple(size)]
        if not full:
            raise ValueError(f"F-CAM decodes the scale-1.0 image, but no image + flip stack has the image size "
                             f"{tuple(size)}: put 1.0 in cam_scales")
        high = max_normalize(fcam_maps(fcam, encoder, full[0], classes)).cpu()
        return resize(high, (h4, w4)), high
    return render


def host_maps(model: nn.Module, readout: HostReadout, stacks: Sequence[torch.Tensor], classes: List[int],
              size: Tuple[int, int], *, high_res_direct: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale + flip maps of one image in the host's geometry.

    Per scale the ``stage4`` features of the image + flip stack ``(2, 3, h_s, w_s)`` go through
    ``readout.maps``; each scale's ``(K, h_s', w_s')`` map is resized to the strided size
    ``((H-1)//4+1, (W-1)//4+1)`` and to (H, W) (IRN: via the 16-padded size and a crop; AMN:
    directly), summed over scales and divided by its max + 1e-5.

    Returns:
        ``(strided (K, h4, w4), high_res (K, H, W))`` float32 on CPU.
    """
    h4, w4 = strided_size(size)
    strided = torch.zeros(len(classes), h4, w4)
    high = torch.zeros(len(classes), *size)
    if not classes:
        return strided, high
    up = strided_up_size(size)
    for x in stacks:
        maps = readout.maps(stage4_features(model, x), classes).float().cpu()
        strided += resize(maps, (h4, w4))
        high += resize(maps, size) if high_res_direct else resize(maps, up)[:, :size[0], :size[1]]
    return max_normalize(strided), max_normalize(high)


__all__ = ["HostReadout", "ImageMaps", "Render", "fcam_render", "host_maps", "linear_readout", "lpcam_readout"]
