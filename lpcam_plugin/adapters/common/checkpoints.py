"""The hosts' own network checkpoint format: ``torch.save(model.state_dict())`` with CPU tensors,
which the hosts' CAM steps (and this package's adapters) load strictly."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import nn

from lpcam_plugin.core.io import atomic_write


def cpu_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module.state_dict()`` with every tensor detached and on CPU."""
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def save_state_dict(path: Path, model: nn.Module) -> None:
    """Write ``model``'s state dict in the host's checkpoint format, atomically."""
    with atomic_write(path) as tmp:
        torch.save(cpu_state(model), tmp)


__all__ = ["cpu_state", "save_state_dict"]
