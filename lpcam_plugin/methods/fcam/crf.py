"""The CRF loss of F-CAM in pure PyTorch (CPU and CUDA): a truncated dense-CRF (Potts) energy.

Tang et al. (ECCV 2018) relax the dense CRF's Potts energy to ``sum_k S_k^T W (1 - S_k)`` for
soft segmentations ``S`` (channels summing to 1) and a Gaussian bilateral kernel

    W_pq = exp(-|p - q|^2 / (2 sigma_xy^2) - |I_p - I_q|^2 / (2 sigma_rgb^2)),   p != q.

F-CAM's authors evaluate it with a permutohedral-lattice filter in a compiled extension whose
backward hard-codes CUDA. Here ``W`` is **truncated to a local window**: ``W_pq = 0`` unless
``|dy| <= radius`` and ``|dx| <= radius``. The filter ``W S`` is then an exact sum over the
window's offsets, using each symmetric pair once; memory is O(pixels x channels) (the filtered
maps and the kernel's row sums are what backward keeps) and time O(pixels x channels x window).

How this differs from the authors' dense version:
- pixels farther apart than the window do not interact: with sigma_xy = 100 the dense kernel
  ties same-coloured pixels across the whole image, the truncated one only nearby ones (the
  maps are also resized by ``scale`` first, so the window covers ``radius / scale`` pixels);
- the sum over the window is exact (the permutohedral lattice approximates the Gaussian);
- self-pairs ``p = q`` are left out (a Potts energy is over pairs of distinct pixels);
- :func:`crf_loss` averages the energy over the pairs it visits instead of summing it, so its
  weight does not depend on the image size (2e-9 * 224^4 ~ 5 reproduces the paper's weight at
  224 x 224, see :class:`~lpcam_plugin.methods.fcam.config.FCAMConfig`);
- the authors' code computes ``-sum_k S_k^T W S_k`` only; the difference,
  ``sum_p S(p) . (W 1)(p)``, adds the same value to every channel's gradient at a pixel, which
  the softmax cancels: both train the decoder alike.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn.functional as F


def bilateral_filter(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float,
                     radius: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``W S`` and ``W 1`` for the window-truncated bilateral kernel ``W`` (no self-pairs).

    Args:
        probs: ``(B, K, h, w)`` soft segmentations ``S``.
        rgb: ``(B, 3, h, w)`` colours (0-255 scale for the paper's ``sigma_rgb``).
        sigma_rgb: colour bandwidth.
        sigma_xy: spatial bandwidth, in pixels of this grid.
        radius: the window is ``(2 radius + 1)^2`` offsets.

    Returns:
        ``(filtered (B, K, h, w), degree (B, 1, h, w))``: ``filtered[:, k, p] = sum_q W_pq S_k(q)``
        and ``degree[:, 0, p] = sum_q W_pq``.
    """
    b, k, h, w = probs.shape
    filtered = torch.zeros_like(probs)
    degree = probs.new_zeros(b, 1, h, w)
    inv_rgb, inv_xy = 1.0 / (2.0 * sigma_rgb ** 2), 1.0 / (2.0 * sigma_xy ** 2)
    for dy in range(0, min(radius, h - 1) + 1):
        for dx in range(-min(radius, w - 1), min(radius, w - 1) + 1):
            if dy == 0 and dx <= 0:  # one offset of each symmetric pair (o, -o); never (0, 0)
                continue
            # pixels p and their partners q = p + (dy, dx), both inside the image
            p_rows, q_rows = slice(0, h - dy), slice(dy, h)
            p_cols, q_cols = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
            diff = rgb[:, :, p_rows, p_cols] - rgb[:, :, q_rows, q_cols]
            weight = torch.exp(-diff.square().sum(dim=1, keepdim=True) * inv_rgb - (dy * dy + dx * dx) * inv_xy)
            filtered[:, :, p_rows, p_cols].addcmul_(weight, probs[:, :, q_rows, q_cols])
            filtered[:, :, q_rows, q_cols].addcmul_(weight, probs[:, :, p_rows, p_cols])
            degree[:, :, p_rows, p_cols] += weight
            degree[:, :, q_rows, q_cols] += weight
    return filtered, degree


class _PottsEnergy(torch.autograd.Function):
    """Per-image ``E_b = sum_k S_k^T W (1 - S_k)``; backward ``dE/dS = W 1 - 2 W S`` (W symmetric)."""

    @staticmethod
    def forward(ctx: Any, probs: torch.Tensor, rgb: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                radius: int) -> torch.Tensor:
        filtered, degree = bilateral_filter(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, radius=radius)
        ctx.save_for_backward(filtered, degree)
        return (probs * (degree - filtered)).sum(dim=(1, 2, 3))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        filtered, degree = ctx.saved_tensors
        return grad[:, None, None, None] * (degree - 2.0 * filtered), None, None, None, None


def potts_energy(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float,
                 radius: int) -> torch.Tensor:
    """``(B,)`` relaxed Potts energies ``sum_k S_k^T W (1 - S_k)`` of the truncated kernel, differentiable in ``probs``.

    Args:
        probs: ``(B, K, h, w)``; rgb ``(B, 3, h, w)`` (no gradient flows to it). See
            :func:`bilateral_filter` for the rest.
    """
    return _PottsEnergy.apply(probs.float(), rgb.detach().float(), float(sigma_rgb), float(sigma_xy), int(radius))


def pair_count(height: int, width: int, radius: int) -> int:
    """Ordered pairs ``(p, q)``, ``p != q``, both in an ``height x width`` grid and within the window."""
    total = 0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                total += max(height - abs(dy), 0) * max(width - abs(dx), 0)
    return total


def crf_loss(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float, scale: float,
             radius: int) -> torch.Tensor:
    """The CRF term: the mean over images of the Potts energy per visited pair, on a resized grid.

    ``probs`` is resized bilinearly and ``rgb`` by nearest neighbour (as the authors' code does)
    by ``scale``; ``sigma_xy`` is given in full-resolution pixels and scaled with them.

    Args:
        probs: ``(B, K, H, W)`` softmax maps (channels of absent classes may be left out: they
            are 0 and add nothing).
        rgb: ``(B, 3, H, W)`` colours on the 0-255 scale.

    Returns:
        a scalar tensor in [0, 1] (every term ``W_pq S_k(p) (1 - S_k(q))`` summed over k is <= 1).
    """
    if scale != 1.0:
        size = (max(1, round(probs.shape[2] * scale)), max(1, round(probs.shape[3] * scale)))
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        rgb = F.interpolate(rgb, size=size, mode="nearest")
    energy = potts_energy(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy * scale, radius=radius)
    pairs = max(pair_count(probs.shape[2], probs.shape[3], radius), 1)
    return energy.mean() / pairs
