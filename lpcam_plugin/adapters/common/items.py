"""Items of the ``{class: map}`` hosts' multi-scale datasets (EDAM ``VOC12ClsDatasetMSF``,
MCTformer ``VOC12DatasetMS``), also as a ``DataLoader(batch_size=1)`` yields them: unbatching,
one view as an image batch, the present classes of a multi-hot label."""
from __future__ import annotations

from typing import Any, List

import numpy as np
import torch


def unbatch(value: Any) -> Any:
    """Drop the batch dimension a ``DataLoader(batch_size=1)`` adds to names, labels ``(1, C)`` and
    images ``(1, 3, h, w)``; anything else is returned as is."""
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1 and value.shape[0] == 1
            and value.ndim in (2, 4)):
        return value[0]
    return value


def as_image_batch(view: Any, device: torch.device) -> torch.Tensor:
    """One view ``(3, h, w)`` or ``(1, 3, h, w)`` (tensor or array) as a float ``(1, 3, h, w)`` tensor."""
    tensor = torch.as_tensor(np.ascontiguousarray(view) if isinstance(view, np.ndarray) else view)
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        raise ValueError(f"each view must be (3, h, w) or (1, 3, h, w), got {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def present_classes(label: Any, num_classes: int) -> List[int]:
    """Indices ``c`` with ``label[c] > 1e-5`` of a ``(C,)`` or ``(1, C)`` multi-hot label (the hosts' rule)."""
    values = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).reshape(-1)
    if values.numel() != num_classes:
        raise ValueError(f"label must have {num_classes} entries, got {values.numel()}")
    return [int(c) for c in torch.nonzero(values.float() > 1e-5).reshape(-1)]


__all__ = ["as_image_batch", "present_classes", "unbatch"]
