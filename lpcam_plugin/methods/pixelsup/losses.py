"""The pieces of pixel-level self-supervision (Yoon et al., Eq. 1-8), each a pure function.

Conventions: C foreground classes; region-mask channel 0 is the background, channel ``k + 1``
foreground class ``k``; multi-scale maps are stacked ``(S, B, C, h, w)`` at the scale-1.0
feature-map size ``(h, w)``. Every loss is a mean over images (and over pixels where the paper
sums them), so a batch split over ranks averages back to the whole batch's loss.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from lpcam_plugin.core.maps import max_normalize

#: Guards the L2 and cosine normalisations against zero vectors.
NORM_EPS = 1e-12


def raw_cams(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``relu(W f)`` per pixel (the head as a 1x1 convolution, no bias), graph kept.

    Args:
        features: ``(B, D, h, w)``.
        weight: ``(C, D)``.

    Returns:
        ``(B, C, h, w)``.
    """
    return torch.relu(torch.einsum("cd,bdhw->bchw", weight.to(features.dtype), features))


def resize_normalize(cams: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h', w')`` maps to ``size`` then each map over its max + 1e-5."""
    if tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    return max_normalize(cams)


def fuse_scales(cams: torch.Tensor) -> torch.Tensor:
    """The msinf-CAM: the sum over scales of ``(S, B, C, h, w)`` maps, max-normalised: ``(B, C, h, w)``."""
    return max_normalize(cams.sum(dim=0))


def region_labels(cams: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 1-2 as one index map: ``k + 1`` where present class k wins the argmax over the
    image's present classes and ``cams[k] > threshold``, else 0 (background).

    Args:
        cams: ``(B, C, h, w)`` max-normalised maps (G's msinf-CAMs).
        labels: ``(B, C)`` multi-hot; ``> 0`` is present.
        threshold: in [0, 1).

    Returns:
        ``(B, h, w)`` int64 in ``[0, C]``.
    """
    present = (labels > 0)[:, :, None, None]
    scores = cams.masked_fill(~present, float("-inf"))
    best, index = scores.max(dim=1)
    return torch.where(best > threshold, index + 1, torch.zeros_like(index))


def region_masks(cams: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 1-2 as masks ``M``: ``(B, C + 1, h, w)`` float one-hot, channel 0 the background.

    Absent classes have empty masks; every pixel is in exactly one mask.
    """
    return masks_from_labels(region_labels(cams, labels, threshold), cams.shape[1], cams.dtype)


def masks_from_labels(index: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, h, w)`` region indices from :func:`region_labels` as ``(B, C + 1, h, w)`` one-hot masks."""
    return F.one_hot(index, num_classes + 1).permute(0, 3, 1, 2).to(dtype)


def prototype_sums(features: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 summed over the mini-batch: ``sum_b sum_p M_k(p) X(p)`` and the mask sizes.

    Args:
        features: ``(B, E, h, w)`` G's embeddings X^G.
        masks: ``(B, K, h, w)`` from :func:`region_masks` (K = C + 1).

    Returns:
        ``(sums (K, E), counts (K,))``: counts is the number of mask pixels (0 = class empty).
    """
    sums = torch.einsum("bkhw,behw->ke", masks.to(features.dtype), features)
    return sums, masks.sum(dim=(0, 2, 3)).to(features.dtype)


def update_prototypes(memory: torch.Tensor, seen: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The prototype memory after a batch: each non-empty class's L2-normalised sum replaces its
    entry; empty classes keep their latest non-empty prototype.

    Args:
        memory: ``(K, E)`` L2-normalised prototypes (rows never filled are zero).
        seen: ``(K,)`` bool, whether each row was ever filled.
        sums, counts: from :func:`prototype_sums` (after any all-reduce over ranks).

    Returns:
        new ``(memory, seen)`` tensors; the inputs are not modified.
    """
    filled = counts > 0
    fresh = F.normalize(sums.to(memory.dtype), dim=1, eps=NORM_EPS)
    return torch.where(filled[:, None], fresh, memory), seen | filled


def rcm_loss(features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, seen: torch.Tensor,
             temperature: float, form: str, reduction: str = "mean") -> torch.Tensor:
    """Eq. 4-5: each pixel of F's embedding against the prototypes, pulled toward its region's.

    Per pixel p with region index ``t(p)``, ``q(p) = softmax_w(x_p . pt_w / T)[t(p)]`` over the
    prototypes that were ever filled, with ``x_p`` and ``pt_w`` L2-normalised. The loss is the
    mean over pixels and images of ``-q`` (``form="paper"``, Eq. 5 as printed) or ``-log q``
    (``"infonce"``). The paper sums over pixels (``reduction="sum"``: the sum over each image's
    pixels, averaged over images); the mean keeps lambda_2 = 1 on the scale of L_cls at any resolution.

    Args:
        features: ``(B, E, h, w)`` F's embedding X^F (graph kept).
        targets: ``(B, h, w)`` int64 from :func:`region_labels`.
        prototypes: ``(K, E)`` the memory (already updated with this batch).
        seen: ``(K,)`` bool.
        temperature: T > 0.
        form: ``"paper"`` or ``"infonce"``.

    Returns:
        a scalar tensor.
    """
    if form not in ("paper", "infonce"):
        raise ValueError(f"rcm form must be 'paper' or 'infonce', got {form!r}")
    if not bool(seen[targets].all()):
        raise ValueError("a region's class has no prototype yet; update the memory with this batch first")
    x = F.normalize(features, dim=1, eps=NORM_EPS)
    protos = F.normalize(prototypes.to(x.dtype), dim=1, eps=NORM_EPS)
    logits = torch.einsum("behw,ke->bkhw", x, protos) / temperature
    logits = logits.masked_fill(~seen[None, :, None, None], float("-inf"))
    log_q = torch.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    per_pixel = -log_q.exp() if form == "paper" else -log_q
    return per_pixel.mean() * pixel_factor(per_pixel.shape[-2:], reduction)


def pixel_factor(size: Sequence[int], reduction: str) -> int:
    """What turns a mean over the pixels of an ``(h, w)`` map into the loss's ``reduction``: 1 or h x w."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return int(size[0]) * int(size[1]) if reduction == "sum" else 1


def mam_loss(cams_f: torch.Tensor, cams_g: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
             ) -> torch.Tensor:
    """Eq. 6-8: F's multi-scale CAMs toward cosine-distance-weighted sums of G's.

    For image b, present class k and scales i, j: ``xi_ij = 2 - cos(A_i^F, A_j^G)`` (maps as
    vectors); target ``T_i = (1/S) sum_j xi_ij A_j^G`` (a constant: no gradient); loss
    ``sum_k sum_i mean_p |T_i - A_i^F|``, averaged over images. The paper's L1 sums over pixels
    (``reduction="sum"``); the mean keeps lambda_3 = 1 on the scale of L_cls at any resolution.

    Args:
        cams_f: ``(S, B, C, h, w)`` F's max-normalised CAMs (graph kept).
        cams_g: ``(S, B, C, h, w)`` G's.
        labels: ``(B, C)`` multi-hot; absent classes add nothing.

    Returns:
        a scalar tensor.
    """
    s, b, c = cams_f.shape[:3]
    f = cams_f.reshape(s, b, c, -1)
    g = cams_g.reshape(s, b, c, -1).to(f.dtype)
    with torch.no_grad():
        cos = torch.einsum("ibcp,jbcp->bcij", F.normalize(f, dim=-1, eps=NORM_EPS),
                           F.normalize(g, dim=-1, eps=NORM_EPS))
        target = torch.einsum("bcij,jbcp->ibcp", 2.0 - cos, g) / s
    per_map = (target - f).abs().mean(dim=-1)                       # (S, B, C)
    present = (labels > 0).to(per_map.dtype)
    return (per_map * present[None]).sum(dim=(0, 2)).mean() * pixel_factor(cams_f.shape[-2:], reduction)


def scaled_images(images: torch.Tensor, scales: Sequence[float]) -> Tuple[torch.Tensor, ...]:
    """``images`` ``(B, 3, H, W)`` bilinearly resized to ``round(H s) x round(W s)`` per scale (1.0: itself)."""
    height, width = images.shape[-2:]
    out = []
    for scale in scales:
        if scale == 1.0:
            out.append(images)
        else:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            out.append(F.interpolate(images, size=size, mode="bilinear", align_corners=False))
    return tuple(out)
