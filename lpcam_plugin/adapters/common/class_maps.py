"""LPCAM of every class at once, for the hosts whose CAM step does not know the labels (EDAM's
``forward_cam``, MCTformer's ``head``) and for their F-CAM sources."""
from __future__ import annotations

import torch

from lpcam_plugin.methods.lpcam import maps as lpcam_maps
from lpcam_plugin.methods.lpcam.bank import PrototypeBank


def all_class_maps(features: torch.Tensor, bank: PrototypeBank, num_classes: int, *,
                   normalize: bool = False) -> torch.Tensor:
    """LPCAM of every class ``0..num_classes-1``: ``features (B, D, h, w) -> (B, C, h, w)`` float32.

    Computed by :func:`lpcam_plugin.methods.lpcam.maps.lpcam_map` (float32, outside autocast).
    Classes without class prototypes in ``bank`` get all-zero maps (no NaN).
    """
    if bank.num_classes != num_classes:
        raise ValueError(f"the bank has {bank.num_classes} classes, the host has {num_classes}")
    with_protos = [c for c in range(num_classes) if bank.has_prototypes(c)]
    if not with_protos:
        raise ValueError("the prototype bank has no class prototypes at all")
    b, _, h, w = features.shape
    out = torch.zeros(b, num_classes, h, w, dtype=torch.float32, device=features.device)
    out[:, with_protos] = lpcam_maps.lpcam_map(features.float(), bank, with_protos, normalize=normalize)
    return out


__all__ = ["all_class_maps"]
