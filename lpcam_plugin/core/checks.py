"""Input validation shared by the stage functions: clear errors that name the problem."""
from __future__ import annotations

from typing import Sequence

import torch


def check_tensor(value: object, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating-point tensor; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_ndim(value: torch.Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``value`` has ``ndim`` dimensions (``layout`` describes them)."""
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(value.shape)}")


def float32_features(value: object, name: str = "features") -> torch.Tensor:
    """A floating ``(B, D, h, w)`` tensor, as float32."""
    tensor = check_tensor(value, name)
    check_ndim(tensor, name, 4, "(B, D, h, w)")
    return tensor.float()


def check_matrix(value: object, name: str) -> torch.Tensor:
    """A floating ``(N, D)`` tensor."""
    tensor = check_tensor(value, name)
    check_ndim(tensor, name, 2, "(N, D)")
    return tensor


_FINITE_CHUNK = 1 << 22


def check_finite(value: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``value`` holds NaN or Inf (checked in chunks: no full-size temporary)."""
    flat = value.reshape(-1)
    for start in range(0, flat.numel(), _FINITE_CHUNK):
        if not bool(torch.isfinite(flat[start:start + _FINITE_CHUNK]).all()):
            bad = sum(int((~torch.isfinite(flat[i:i + _FINITE_CHUNK])).sum())
                      for i in range(start, flat.numel(), _FINITE_CHUNK))
            raise ValueError(f"{name} contains {bad} NaN/Inf value(s)")


def check_feature_dim(features_dim: int, weight_dim: int, what: str = "weight") -> None:
    """Raise ``ValueError`` when the feature dimension D of features and ``what`` disagree."""
    if features_dim != weight_dim:
        raise ValueError(f"feature dimension mismatch: features have D={features_dim} but the {what} has D={weight_dim}")


def check_classes(classes: Sequence[int], num_classes: int) -> list:
    """Return ``classes`` as a list of ints in ``[0, num_classes)``; raise ``ValueError`` otherwise."""
    out = [int(c) for c in classes]
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class index(es) {bad} out of range for {num_classes} classes")
    return out
