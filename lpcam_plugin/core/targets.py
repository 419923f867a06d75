"""What a read-out was asked to produce: maps for multi-hot labels, or for listed classes."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from lpcam_plugin.core.checks import check_classes


def resolve_targets(labels_or_classes: object, num_classes: int, batch: int
                    ) -> Tuple[List[int], Optional[torch.Tensor]]:
    """Read a read-out's ``labels_or_classes`` argument.

    Args:
        labels_or_classes: ``(B, C)`` multi-hot labels (a 2-d tensor), or a sequence of class
            indices.
        num_classes: C.
        batch: B, the number of feature maps.

    Returns:
        ``(classes, mask)``: with labels, ``classes = range(C)`` and ``mask`` the ``(B, C)`` bool
        presence; with indices, the checked indices and ``mask = None``.
    """
    if isinstance(labels_or_classes, torch.Tensor) and labels_or_classes.dim() == 2:
        if tuple(labels_or_classes.shape) != (batch, num_classes):
            raise ValueError(f"labels must have shape (B, C) = ({batch}, {num_classes}), "
                             f"got {tuple(labels_or_classes.shape)}")
        return list(range(num_classes)), labels_or_classes.detach() > 0
    return check_classes(labels_or_classes, num_classes), None
