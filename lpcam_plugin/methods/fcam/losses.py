"""The F-CAM training loss (paper Eq. 3 without the frozen classifier's term), each piece a pure function.

``L = seg_weight * pCE(seeds) + crf_weight * CRF(S, image) + size_weight * size(S)`` where ``S``
is the decoder's softmax over the background and the image's present classes. Every term is
the mean over the batch's images of a per-image value, so equal-sized DistributedDataParallel
shards reproduce the single-process gradient.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

from lpcam_plugin.methods.fcam.crf import crf_loss
from lpcam_plugin.methods.fcam.seeds import IGNORE_INDEX


def partial_cross_entropy(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the seeded pixels only: per image the mean over its seeds, then the mean over images.

    Args:
        logits: ``(B, K, H, W)``, absent channels at ``-inf``.
        seeds: ``(B, H, W)`` long, :data:`~lpcam_plugin.methods.fcam.seeds.IGNORE_INDEX` where unseeded.

    Returns:
        a scalar; an image without seeds adds 0 (and still counts in B).
    """
    per_pixel = F.cross_entropy(logits, seeds, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (seeds != IGNORE_INDEX).sum(dim=(1, 2)).clamp_min(1).to(per_pixel.dtype)
    return (per_pixel.sum(dim=(1, 2)) / counts).mean()


def extended_log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """The extended log-barrier of the constraint ``z <= 0`` (Kervadec et al., 2019), elementwise.

    ``-log(-z) / t`` for ``z <= -1 / t^2``, else ``t z - log(1 / t^2) / t + 1 / t`` (a linear
    continuation, so it is defined, and penalised, for violated constraints too).
    """
    edge = -1.0 / t ** 2
    barrier = -torch.log(-z.clamp(max=edge)) / t
    linear = t * z - math.log(1.0 / t ** 2) / t + 1.0 / t
    return torch.where(z <= edge, barrier, linear)


def size_loss(probs: torch.Tensor, present: torch.Tensor, t: float) -> torch.Tensor:
    """The absolute-size constraint: every present region's area (in pixels) pushed to be large.

    ``elb(-sum_p S_k(p), t)`` per present channel k (background included), the mean over an
    image's present channels, then over images (paper: "both regions to be large"; the
    authors' code averages the two channels of its single-label head the same way).

    Args:
        probs: ``(B, K, H, W)`` softmax maps.
        present: ``(B, K)`` bool, channel 0 (background) always True.
    """
    barrier = extended_log_barrier(-probs.sum(dim=(2, 3)), t)
    weights = present.to(barrier.dtype)
    return ((barrier * weights).sum(dim=1) / weights.sum(dim=1)).mean()


def present_only(probs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Each image's present channels, packed first and zero-padded to the batch's largest count.

    Absent channels are 0 and add nothing to the CRF energy; packing them out makes its cost
    grow with the number of classes per image, not with C.

    Args:
        probs: ``(B, K, H, W)``; present: ``(B, K)`` bool.

    Returns:
        ``(B, K', H, W)``, ``K' = max_b |present_b|``; padding channels are 0.
    """
    counts = present.sum(dim=1)
    width = int(counts.max())
    # present channels first (stable: in channel order), then the others
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=present.device)[None, :] < counts[:, None]
    b, _, h, w = probs.shape
    packed = probs.gather(1, order[:, :, None, None].expand(b, width, h, w))
    return packed * valid[:, :, None, None].to(probs.dtype)


def fcam_losses(logits: torch.Tensor, present: torch.Tensor, seeds: torch.Tensor, rgb: torch.Tensor, *,
                seg_weight: float, crf_weight: float, size_weight: float, sigma_rgb: float, sigma_xy: float,
                crf_scale: float, crf_radius: int, elb_t: float, crf_kernel: str = "window",
                crf_dense_pixels: int = 1024) -> Dict[str, torch.Tensor]:
    """The full F-CAM loss of one batch.

    Args:
        logits: ``(B, C + 1, H, W)`` decoder output with absent channels at ``-inf``
            (:func:`~lpcam_plugin.methods.fcam.decoder.mask_absent`).
        present: ``(B, C + 1)`` bool, background first.
        seeds: ``(B, H, W)`` from :func:`~lpcam_plugin.methods.fcam.seeds.make_seeds`.
        rgb: ``(B, 3, H, W)`` the images' colours on the 0-255 scale.
        elb_t: the log-barrier's current ``t``; see :class:`FCAMConfig` for the rest.

    Returns:
        ``{"total", "seg", "crf", "size"}`` scalar tensors (a term whose weight is 0 is not
        computed and reads 0).
    """
    zero = logits.new_zeros(())
    seg = partial_cross_entropy(logits, seeds)
    probs = torch.softmax(logits, dim=1)
    crf, size = zero, zero
    if crf_weight > 0:
        crf = crf_loss(present_only(probs, present), rgb, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, scale=crf_scale,
                       radius=crf_radius, kernel=crf_kernel, dense_pixels=crf_dense_pixels)
    if size_weight > 0:
        size = size_loss(probs, present, elb_t)
    total = seg_weight * seg + crf_weight * crf + size_weight * size
    return {"total": total, "seg": seg, "crf": crf, "size": size}
