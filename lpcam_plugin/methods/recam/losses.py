"""The pieces of the ReCAM training loss (docs/design/recam-spec.md, Training), each a pure function.

``L = multilabel_soft_margin(GAP(f) W_bce^T, y) + lambda * L_sce`` where ``L_sce`` is the softmax
cross-entropy of the class-specific pooled features ``x_bk = mean_p cam_bk(p) f_b(p)`` of every
positive (image b, class k), classified by ``W_sce``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

#: Added to each map's spatial max before dividing (as the reference does).
MAX_EPS = 1e-5


def normalized_cams(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``relu(W f)`` divided by each map's spatial max + 1e-5, graph kept (not detached).

    Args:
        features: ``(B, D, h, w)``.
        weight: ``(C, D)``.

    Returns:
        ``(B, C, h, w)``.
    """
    b, d, h, w = features.shape
    cams = torch.relu(torch.matmul(weight, features.reshape(b, d, h * w)))
    cams = cams / (cams.amax(dim=2, keepdim=True) + MAX_EPS)
    return cams.reshape(b, weight.shape[0], h, w)


def class_features(features: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """Class-specific pooled features ``x_bc = mean_p cams_bc(p) f_b(p)`` by one batched matmul.

    The reference builds a ``(B, C, D, h*w)`` broadcast (2.7 GB for VOC batches); this is
    ``bmm((B, C, hw), (B, hw, D)) / hw`` and never materialises it.

    Args:
        features: ``(B, D, h, w)``.
        cams: ``(B, C, h, w)``.

    Returns:
        ``(B, C, D)``.
    """
    b, d, h, w = features.shape
    flat_cams = cams.reshape(b, cams.shape[1], h * w)
    return torch.bmm(flat_cams, features.reshape(b, d, h * w).transpose(1, 2)) / (h * w)


def softmax_ce_loss(class_feats: torch.Tensor, labels: torch.Tensor, sce_weight: torch.Tensor) -> torch.Tensor:
    """``L_sce``: for every image, the mean over its positive classes k of ``CE(x_bk W_sce^T, k)``,
    summed over images and divided by the batch size B (images without a positive add 0).

    This is the reference's ``Class_Predictor``: one ``F.cross_entropy`` (mean) per image over
    that image's positives, summed, divided by B. Negative classes never enter the loss.

    Args:
        class_feats: ``(B, C, D)`` from :func:`class_features`.
        labels: ``(B, C)`` multi-hot.
        sce_weight: ``(C, D)``.

    Returns:
        a scalar tensor.
    """
    positive = labels > 0
    image_index, class_index = torch.nonzero(positive, as_tuple=True)
    batch = class_feats.shape[0]
    if image_index.numel() == 0:
        return class_feats.sum() * 0.0
    logits = class_feats[image_index, class_index] @ sce_weight.t()
    per_pair = F.cross_entropy(logits, class_index, reduction="none")
    per_image_count = positive.sum(dim=1).to(per_pair.dtype)
    return (per_pair / per_image_count[image_index]).sum() / batch


def recam_losses(features: torch.Tensor, labels: torch.Tensor, bce_weight: torch.Tensor,
                 sce_weight: torch.Tensor, loss_weight: float, bce_bias: Optional[torch.Tensor] = None
                 ) -> Dict[str, torch.Tensor]:
    """The full ReCAM loss of one batch.

    Args:
        features: ``(B, D, h, w)`` unpooled backbone features (with their graph).
        labels: ``(B, C)`` multi-hot.
        bce_weight: ``(C, D)`` the classifier (``W_bce``); ``bce_bias`` its optional ``(C,)`` bias,
            used in the classification logits only.
        sce_weight: ``(C, D)`` the softmax head (``W_sce``).
        loss_weight: lambda.

    Returns:
        ``{"total", "cls", "sce"}`` scalar tensors; ``total = cls + lambda * sce``.
    """
    pooled = features.mean(dim=(2, 3))
    logits = pooled @ bce_weight.t()
    if bce_bias is not None:
        logits = logits + bce_bias
    cls = F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))
    feats = class_features(features, normalized_cams(features, bce_weight))
    sce = softmax_ce_loss(feats, labels, sce_weight)
    return {"total": cls + loss_weight * sce, "cls": cls, "sce": sce}
