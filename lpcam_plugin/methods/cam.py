"""CAM (Zhou et al., 2016), the baseline read-out of the family: ``relu(W_c . F(x))``."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from lpcam_plugin.core.checks import check_classes, check_feature_dim, check_finite, check_matrix, float32_features
from lpcam_plugin.core.maps import max_normalize


def cam_map(
    features: torch.Tensor,
    weight: torch.Tensor,
    classes: Optional[Sequence[int]] = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Plain CAM ``relu(W_c . F(x))`` (a 1x1 convolution) for ``classes`` (default: all).

    Args:
        features: ``(B, D, h, w)``.
        weight: ``(C, D)`` classifier weight.
        classes: distinct class indices; default ``range(C)``.
        normalize: divide each map by its spatial max plus 1e-5.

    Returns:
        ``(B, len(classes), h, w)`` float32. Raises ``ValueError`` naming the weight or the
        features when either holds NaN/Inf.
    """
    device_type = features.device.type if isinstance(features, torch.Tensor) else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        feats = float32_features(features)
        weight = check_matrix(weight, "weight").float().to(feats.device)
        check_feature_dim(feats.shape[1], weight.shape[1])
        check_finite(weight, "weight")
        if classes is not None:
            weight = weight[check_classes(classes, weight.shape[0])]
        b, d, h, w = feats.shape
        scores = torch.matmul(weight, feats.reshape(b, d, h * w))
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("features contain NaN/Inf values")
        maps = torch.relu(scores).reshape(b, weight.shape[0], h, w)
    return max_normalize(maps) if normalize else maps
