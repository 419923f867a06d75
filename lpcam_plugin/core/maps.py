"""Map helpers that every read-out of the family shares."""
from __future__ import annotations

import torch


def max_normalize(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each map ``(..., h, w)`` by its spatial max plus ``eps`` (the IRN convention)."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)
