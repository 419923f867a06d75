"""The CRF loss of F-CAM in pure PyTorch (CPU and CUDA): the dense-CRF (Potts) energy, truncated to a
window or dense on a bounded grid.

Tang et al. (ECCV 2018) relax the dense CRF's Potts energy to ``sum_k S_k^T W (1 - S_k)`` for
soft segmentations ``S`` (channels summing to 1) and a Gaussian bilateral kernel

    W_pq = exp(-|p - q|^2 / (2 sigma_xy^2) - |I_p - I_q|^2 / (2 sigma_rgb^2)),   p != q.

F-CAM's authors evaluate it with a permutohedral-lattice filter in a compiled extension whose
backward hard-codes CUDA. Here ``W`` is **truncated to a local window**: ``W_pq = 0`` unless
``|dy| <= radius`` and ``|dx| <= radius``. The filter ``W S`` is then an exact sum over the
window's offsets, using each symmetric pair once; memory is O(pixels x channels) (the filtered
maps and the kernel's row sums are what backward keeps) and time O(pixels x channels x window).

The **dense** kernel (``kernel="dense"`` of :func:`crf_loss`) keeps every pair: the maps and the
image are resized to the largest grid of at most ``dense_pixels`` pixels (aspect kept), where
``W`` is an ``(N, N)`` matrix per image (memory O(N x dense_pixels), bounded whatever the image
size) and ``W S`` one batched matrix product. It is exact on that grid, and its mean over the
``N (N - 1)`` pairs is the paper's sum at the paper's weight (2e-9 x 224^4 ~ 5).

How the window differs from the authors' dense version:
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

import math
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

#: The kernels of :func:`crf_loss`: truncated to a window, or dense on a bounded grid.
CRF_KERNELS = ("window", "dense")


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


def dense_bilateral_filter(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``W S`` and ``W 1`` for the full bilateral kernel ``W`` over every pair of distinct pixels.

    Args:
        probs: ``(B, K, h, w)`` soft segmentations ``S``.
        rgb: ``(B, 3, h, w)`` colours (0-255 scale).
        sigma_rgb, sigma_xy: as :func:`bilateral_filter` (``sigma_xy`` in pixels of this grid).

    Returns:
        ``(filtered (B, K, h, w), degree (B, 1, h, w))``; memory ``B x (h w)^2`` for ``W``.
    """
    b, k, h, w = probs.shape
    rows, cols = torch.meshgrid(torch.arange(h, device=probs.device, dtype=probs.dtype),
                                torch.arange(w, device=probs.device, dtype=probs.dtype), indexing="ij")
    position = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)  # (N, 2)
    colour = rgb.reshape(b, 3, h * w).transpose(1, 2)  # (B, N, 3)
    spatial = torch.cdist(position, position).square() / (2.0 * sigma_xy ** 2)
    weight = torch.exp(-torch.cdist(colour, colour).square() / (2.0 * sigma_rgb ** 2) - spatial)
    weight.diagonal(dim1=1, dim2=2).zero_()  # no self-pairs
    filtered = torch.bmm(weight, probs.reshape(b, k, h * w).transpose(1, 2)).transpose(1, 2).reshape(b, k, h, w)
    return filtered, weight.sum(dim=2).reshape(b, 1, h, w)


class _PottsEnergy(torch.autograd.Function):
    """Per-image ``E_b = sum_k S_k^T W (1 - S_k)``; backward ``dE/dS = W 1 - 2 W S`` (W symmetric).
    ``radius`` None: the dense kernel."""

    @staticmethod
    def forward(ctx: Any, probs: torch.Tensor, rgb: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                radius: Optional[int]) -> torch.Tensor:
        if radius is None:
            filtered, degree = dense_bilateral_filter(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy)
        else:
            filtered, degree = bilateral_filter(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, radius=radius)
        ctx.save_for_backward(filtered, degree)
        return (probs * (degree - filtered)).sum(dim=(1, 2, 3))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        filtered, degree = ctx.saved_tensors
        return grad[:, None, None, None] * (degree - 2.0 * filtered), None, None, None, None


def potts_energy(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float,
                 radius: Optional[int]) -> torch.Tensor:
    """``(B,)`` relaxed Potts energies ``sum_k S_k^T W (1 - S_k)``, differentiable in ``probs``.

    Args:
        probs: ``(B, K, h, w)``; rgb ``(B, 3, h, w)`` (no gradient flows to it).
        radius: the window of :func:`bilateral_filter`, or None for the dense kernel
            (:func:`dense_bilateral_filter`).
    """
    return _PottsEnergy.apply(probs.float(), rgb.detach().float(), float(sigma_rgb), float(sigma_xy),
                              None if radius is None else int(radius))


def pair_count(height: int, width: int, radius: int) -> int:
    """Ordered pairs ``(p, q)``, ``p != q``, both in an ``height x width`` grid and within the window."""
    total = 0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                total += max(height - abs(dy), 0) * max(width - abs(dx), 0)
    return total


def dense_grid(height: int, width: int, dense_pixels: int) -> Tuple[int, int]:
    """The largest ``(h, w)`` with ``h w <= dense_pixels`` and the aspect of ``height x width`` (never larger)."""
    factor = min(1.0, math.sqrt(dense_pixels / float(height * width)))
    h, w = max(1, int(height * factor)), max(1, int(width * factor))
    while h * w > dense_pixels:  # int() rounding can overshoot by a row or a column
        h, w = (h - 1, w) if h >= w else (h, w - 1)
    return h, w


def crf_loss(probs: torch.Tensor, rgb: torch.Tensor, *, sigma_rgb: float, sigma_xy: float, scale: float,
             radius: int, kernel: str = "window", dense_pixels: int = 1024) -> torch.Tensor:
    """The CRF term: the mean over images of the Potts energy per visited pair, on a resized grid.

    ``probs`` is resized bilinearly and ``rgb`` by nearest neighbour (as the authors' code does)
    by ``scale`` (``kernel="window"``, pairs within ``radius``) or to :func:`dense_grid`
    (``kernel="dense"``, every pair; ``scale`` and ``radius`` unused); ``sigma_xy`` is given in
    full-resolution pixels and scaled with them.

    Args:
        probs: ``(B, K, H, W)`` softmax maps (channels of absent classes may be left out: they
            are 0 and add nothing).
        rgb: ``(B, 3, H, W)`` colours on the 0-255 scale.

    Returns:
        a scalar tensor in [0, 1] (every term ``W_pq S_k(p) (1 - S_k(q))`` summed over k is <= 1).
    """
    if kernel not in CRF_KERNELS:
        raise ValueError(f"kernel must be one of {CRF_KERNELS}, got {kernel!r}")
    height = probs.shape[2]
    if kernel == "dense":
        size = dense_grid(probs.shape[2], probs.shape[3], dense_pixels)
    else:
        size = (max(1, round(probs.shape[2] * scale)), max(1, round(probs.shape[3] * scale)))
    if size != tuple(probs.shape[2:]):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        rgb = F.interpolate(rgb, size=size, mode="nearest")
    if kernel == "dense":
        energy = potts_energy(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy * size[0] / height, radius=None)
        pixels = size[0] * size[1]
        return energy.mean() / max(pixels * (pixels - 1), 1)
    energy = potts_energy(probs, rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy * scale, radius=radius)
    pairs = max(pair_count(probs.shape[2], probs.shape[3], radius), 1)
    return energy.mean() / pairs
