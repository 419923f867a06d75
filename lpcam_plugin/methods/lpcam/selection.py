"""Stage 3: pick class and context prototypes with the classifier (Eq. 3, 4), and reduce conv heads."""
from __future__ import annotations

import logging
import warnings
from typing import Optional, Tuple

import torch

from lpcam_plugin.core.checks import check_feature_dim, check_finite, check_matrix, check_tensor

logger = logging.getLogger(__name__)


def class_probabilities(centres: torch.Tensor, weight: torch.Tensor, class_index: int,
                        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``p(z) = softmax_j(z . W_j (+ b_j))[c]`` for each centre ``z`` of ``centres`` ``(K, D)``; returns ``(K,)``."""
    logits = centres.float() @ weight.float().T
    if bias is not None:
        logits = logits + bias.float()
    return torch.softmax(logits, dim=1)[:, class_index]


def select_prototypes(
    fg_centres: torch.Tensor,
    bg_centres: torch.Tensor,
    weight: torch.Tensor,
    class_index: int,
    *,
    class_threshold: float = 0.9,
    context_window: Tuple[float, float] = (0.05, 0.9),
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Select the class prototypes ``(P, D)`` and context prototypes ``(Q, D)`` of one class.

    Args:
        fg_centres: ``(K1, D)`` K-means centres of the class's foreground pool (may be empty).
        bg_centres: ``(K2, D)`` centres of its context pool (may be empty).
        weight: ``(C, D)`` classifier weight, no background row.
        class_index: c, the class in ``[0, C)``.
        class_threshold: keep foreground centres with ``p > class_threshold``. If none passes,
            the best-scoring centre is kept and a warning is issued.
        context_window: keep context centres with ``low < p < high``.
        bias: optional ``(C,)`` bias added to the logits.

    Returns:
        ``(class_prototypes, context_prototypes)``; the first is empty only when
        ``fg_centres`` is empty, the second may be empty.
    """
    prototypes, context, fallback_p = select_with_fallback_info(
        fg_centres, bg_centres, weight, class_index, class_threshold=class_threshold,
        context_window=context_window, bias=bias)
    if fallback_p is not None:
        warnings.warn(f"class {class_index}: no foreground centre has p > {class_threshold} "
                      f"(best p = {fallback_p:.3f}); keeping the best one", RuntimeWarning, stacklevel=2)
    return prototypes, context


def select_with_fallback_info(
    fg_centres: torch.Tensor,
    bg_centres: torch.Tensor,
    weight: torch.Tensor,
    class_index: int,
    *,
    class_threshold: float = 0.9,
    context_window: Tuple[float, float] = (0.05, 0.9),
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[float]]:
    """:func:`select_prototypes` without the warning: also returns the best centre's ``p`` when
    the best-centre fallback was used (None otherwise), so callers can report all classes at once."""
    weight = check_matrix(weight, "weight")
    check_finite(weight, "weight")
    num_classes = weight.shape[0]
    if not 0 <= int(class_index) < num_classes:
        raise ValueError(f"class_index {class_index} out of range for a weight of {num_classes} classes")
    for name, centres in (("fg_centres", fg_centres), ("bg_centres", bg_centres)):
        check_matrix(centres, name)
        if centres.shape[0]:
            check_feature_dim(centres.shape[1], weight.shape[1])
    if bias is not None:
        check_tensor(bias, "bias")
        if tuple(bias.shape) != (num_classes,):
            raise ValueError(f"bias must have shape ({num_classes},), got {tuple(bias.shape)}")
        check_finite(bias, "bias")
    low, high = context_window
    fallback_p: Optional[float] = None
    prototypes = fg_centres[:0]
    if fg_centres.shape[0]:
        p_fg = class_probabilities(fg_centres, weight, class_index, bias)
        keep = p_fg > class_threshold
        if not bool(keep.any()):
            best = int(torch.argmax(p_fg))
            fallback_p = float(p_fg[best])
            keep = torch.zeros_like(keep)
            keep[best] = True
        prototypes = fg_centres[keep]
    context = bg_centres[:0]
    if bg_centres.shape[0]:
        p_bg = class_probabilities(bg_centres, weight, class_index, bias)
        context = bg_centres[(p_bg > low) & (p_bg < high)]
    logger.debug("class %d: %d class prototypes, %d context prototypes", class_index, prototypes.shape[0],
                 context.shape[0])
    return prototypes, context, fallback_p


def reduce_conv_head(weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                     mode: str = "sum") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Reduce a conv classifier weight ``(C, D, kh, kw)`` to a linear ``(C, D)`` selection weight.

    ``mode="sum"`` sums the kernel over its taps: for a spatially constant feature map (what a
    prototype is) a ``kh x kw`` convolution with zero padding away from the border equals this
    linear map. ``mode="center"`` keeps only the centre tap. ``(C, D)`` and ``(C, D, 1, 1)``
    weights pass through. The bias, if any, is returned unchanged as ``(C,)``.
    """
    check_tensor(weight, "weight")
    if weight.dim() == 2:
        return weight, bias
    if weight.dim() != 4:
        raise ValueError(f"conv head weight must have shape (C, D, kh, kw) or (C, D), got {tuple(weight.shape)}")
    if mode == "sum":
        reduced = weight.sum(dim=(2, 3))
    elif mode == "center":
        reduced = weight[:, :, weight.shape[2] // 2, weight.shape[3] // 2]
    else:
        raise ValueError(f"mode must be 'sum' or 'center', got {mode!r}")
    return reduced, bias
