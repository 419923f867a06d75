"""Input validation shared by the stage functions: clear errors that name the problem."""
from __future__ import annotations

import numbers
from collections import Counter
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
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


def check_images(value: object, name: str = "images") -> torch.Tensor:
    """A floating ``(B, 3, H, W)`` image batch; one-line ``TypeError`` / ``ValueError`` otherwise."""
    images = check_tensor(value, name)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    return images


def check_multi_hot(value: object, batch_size: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Image labels of a batch: exactly ``(B, C)`` (nothing broadcast), finite, every value 0 or 1;
    returned as float32. One-line ``TypeError`` / ``ValueError`` naming the shape or the values."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != (batch_size, num_classes):
        raise ValueError(f"{name} must have shape (B, C) = ({batch_size}, {num_classes}), got {tuple(value.shape)}")
    labels = value.float()
    check_finite(labels, name)
    odd = labels[(labels != 0) & (labels != 1)]
    if odd.numel():
        raise ValueError(f"{name} must be multi-hot image labels (0 or 1), got values "
                         f"{_short(sorted(set(odd.unique().tolist())))}")
    return labels


def check_training_batch(batch: Any, num_classes: int, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images (B, 3, H, W), labels (B, C) float32)`` of one ``(images, labels, ...)`` batch of a
    training loader (further items are ignored); errors name ``where`` (e.g. ``"batch 3 of epoch 1"``)."""
    if isinstance(batch, Mapping):
        raise TypeError(f"{where}: the loader must yield (images, labels, ...) sequences, got a dict with keys "
                        f"{_short(sorted(map(str, batch)))}")
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{where}: the loader must yield (images, labels, ...) sequences, got {type(batch).__name__}")
    try:
        images = check_images(batch[0])
        check_finite(images, "images")
        return images, check_multi_hot(batch[1], images.shape[0], num_classes)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None


def check_feature_dim(features_dim: int, weight_dim: int, what: str = "weight") -> None:
    """Raise ``ValueError`` when the feature dimension D of features and ``what`` disagree."""
    if features_dim != weight_dim:
        raise ValueError(f"feature dimension mismatch: features have D={features_dim} "
                         f"but the {what} has D={weight_dim}")


def check_threshold(value: object, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` if NaN or outside [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r} ({type(value).__name__})")
    if not 0.0 <= float(value) <= 1.0:  # also catches NaN
        raise ValueError(f"{name} must be in [0, 1] (maps are max-normalised), got {value}")
    return float(value)


def check_positive_int(value: object, name: str) -> int:
    """``value`` as a positive int (a bool or a float is refused); ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_num_classes(value: object) -> int:
    """``value`` as the number of classes C: a positive int (a bool is refused); one-line error otherwise."""
    return check_positive_int(value, "num_classes")


def check_classes(classes: Sequence[int], num_classes: int) -> List[int]:
    """Return ``classes`` (a 1-D sequence, tensor or array of distinct class indices) as a list of ints.

    Raises ``ValueError`` for indices outside ``[0, num_classes)``, repeated indices (each class
    gets one channel), and float or bool values: a float or bool vector such as ``[1., 0., 0., 1.]``
    is a multi-hot label vector, not a list of indices.
    """
    if isinstance(classes, (torch.Tensor, np.ndarray)):
        is_tensor = isinstance(classes, torch.Tensor)
        indices = (not (classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool)
                   if is_tensor else classes.dtype.kind in "iu")
        values = (classes.detach().cpu() if is_tensor else classes).reshape(-1).tolist()
        shape = tuple(classes.shape)
    else:
        values = list(classes)
        indices = not any(isinstance(c, (bool, float, np.bool_, np.floating)) for c in values)
        shape = (len(values),)
    if not indices:
        raise ValueError(f"classes {_short(values)} looks like a multi-hot label vector; pass labels (B, C) or "
                         "class indices")
    if len(shape) != 1:
        raise ValueError(f"class indices must be a 1-D sequence, got shape {shape}")
    out = [int(c) for c in values]
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class index(es) {bad} out of range for {num_classes} classes")
    repeated = sorted(c for c, n in Counter(out).items() if n > 1)
    if repeated:
        raise ValueError(f"class index(es) {repeated} listed more than once; each class gets one map")
    return out


def _short(values: Sequence[Any]) -> str:
    """``values`` for an error message, cut after 8 entries."""
    items = list(values)
    return str(items) if len(items) <= 8 else f"[{', '.join(map(str, items[:8]))}, ...] ({len(items)} values)"
