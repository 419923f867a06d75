"""Stage 4: LPCAM maps (Eq. 5, 6) in their collapsed one-matmul form."""
from __future__ import annotations

from typing import Mapping, Sequence, Tuple, Union

import torch

from lpcam_plugin.core.checks import check_classes, check_feature_dim, float32_features
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.methods.lpcam.bank import PrototypeBank

PrototypeSource = Union[PrototypeBank, Mapping[int, Tuple[torch.Tensor, torch.Tensor]]]

_NORM_EPS = 1e-12
#: Feature elements per chunk of the batch (bounds the temporary of the norm computation, 256 MB).
_CHUNK_ELEMENTS = 1 << 26


def _as_bank(prototypes: PrototypeSource) -> PrototypeBank:
    if isinstance(prototypes, PrototypeBank):
        return prototypes
    if not isinstance(prototypes, Mapping) or not prototypes:
        raise TypeError("prototypes must be a PrototypeBank or a non-empty mapping "
                        "{class: (class_prototypes, context_prototypes)}")
    return PrototypeBank({c: pq[0] for c, pq in prototypes.items()}, {c: pq[1] for c, pq in prototypes.items()})


def _cosine_scores(directions: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``(K, D) @ (b, D, n)`` divided by the feature norms ``(b, 1, n)``: ``(b, K, n)``.

    The squared norm is an elementwise product summed over D: on CPU this is several times
    faster than ``torch.linalg.vector_norm`` over a non-last dimension.
    """
    norms = (flat * flat).sum(dim=1, keepdim=True).sqrt_()
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("features contain NaN/Inf values")
    return torch.matmul(directions, flat) / norms.clamp_min_(_NORM_EPS)


def lpcam_map(
    features: torch.Tensor,
    prototypes: PrototypeSource,
    classes: Sequence[int],
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """LPCAM maps of ``classes`` for a batch of feature maps.

    ``A_c(x) = mean_p cos(F(x), p) - mean_q cos(F(x), q)`` equals one dot product of
    ``F(x)/|F(x)|`` with ``u_c`` (:meth:`PrototypeBank.directions`), so every class of the
    batch comes out of one matmul. The result is ``relu``'d (always, also without context
    prototypes) and, with ``normalize``, divided by its spatial max plus 1e-5. Zero feature
    vectors give 0, never NaN. Computed in float32, also inside ``autocast``.

    Args:
        features: ``(B, D, h, w)`` feature maps.
        prototypes: a :class:`PrototypeBank` or ``{class: (class_prototypes (P, D), context_prototypes (Q, D))}``.
        classes: class indices to compute.

    Returns:
        ``(B, len(classes), h, w)`` float32 on ``features.device``.
    """
    bank = _as_bank(prototypes)
    classes = check_classes(classes, bank.num_classes)
    device_type = features.device.type if isinstance(features, torch.Tensor) else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        feats = float32_features(features)
        check_feature_dim(feats.shape[1], bank.feature_dim, "prototype bank")
        directions = bank.directions(classes).to(feats.device)
        b, d, h, w = feats.shape
        flat = feats.reshape(b, d, h * w)
        per_chunk = max(1, _CHUNK_ELEMENTS // max(1, d * h * w))
        scores = torch.cat([_cosine_scores(directions, flat[start:start + per_chunk])
                            for start in range(0, b, per_chunk)]) if b else flat.new_zeros(0, len(classes), h * w)
        maps = torch.relu(scores).reshape(b, len(classes), h, w)
    return max_normalize(maps) if normalize else maps
