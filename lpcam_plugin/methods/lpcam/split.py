"""Stage 1: split an image's local features into a class's foreground and context pools (Eq. 2)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from lpcam_plugin.core.checks import check_ndim, check_tensor, check_threshold


def split_masks(cam: torch.Tensor, size: Tuple[int, int], threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Foreground and context masks ``(h, w)`` of one class's baseline CAM on the feature grid.

    ``cam`` ``(h, w)`` or ``(H, W)`` is resized to ``size`` with **nearest** interpolation;
    foreground is ``cam > threshold`` and context ``cam < threshold`` (both strict, so
    positions equal to the threshold go to neither pool). ``threshold`` must be in [0, 1]: the
    CAM is max-normalised, so any other value would put every position in one pool.
    """
    check_threshold(threshold, "threshold")
    check_tensor(cam, "cam")
    check_ndim(cam, "cam", 2, "(h, w) or (H, W)")
    if tuple(cam.shape) != tuple(size):
        cam = F.interpolate(cam[None, None].float(), size=tuple(size), mode="nearest")[0, 0]
    if bool(torch.isnan(cam).any()):
        raise ValueError("cam contains NaN values")
    return cam > threshold, cam < threshold


def split_local_features(features: torch.Tensor, cam: torch.Tensor,
                         threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split ``features`` ``(D, h, w)`` by ``cam`` into foreground ``(n1, D)`` and context ``(n2, D)``.

    Rows are in row-major position order. See :func:`split_masks` for the rule.
    """
    check_tensor(features, "features")
    check_ndim(features, "features", 3, "(D, h, w)")
    fg_mask, bg_mask = split_masks(cam, features.shape[1:], threshold)
    flat = features.flatten(1).T
    return flat[fg_mask.flatten()], flat[bg_mask.flatten()]
