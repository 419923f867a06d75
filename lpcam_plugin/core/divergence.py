"""Divergence caught at the step it happens, for the methods that train (ReCAM, F-CAM, RCM + MAM).

A training step whose loss, or what it updated, is NaN or infinite stops the run with
:class:`TrainingDiverged`: a one-line message that names the method, the step (epoch and batch)
and the likely causes. The callers raise it before anything non-finite is written (checkpoints,
prototype memories, EMA copies) and put the user's model back as it was before ``fit``.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

#: What usually makes a step diverge; the message lists them.
LIKELY_CAUSES = ("a learning rate too high for this data", "a NaN or infinite image in the batch",
                 "an input normalisation that blows values up")


class TrainingDiverged(RuntimeError):
    """A training step produced a non-finite loss or parameter; nothing non-finite was kept."""


def diverged(method: str, where: str, what: str, kept: str) -> TrainingDiverged:
    """The error for ``method`` at ``where`` (``"epoch 2, batch 7 (step 19)"``), saying ``what`` was
    non-finite and what was ``kept`` of the user's state."""
    return TrainingDiverged(f"{method} diverged at {where}: {what}. Likely causes: {'; '.join(LIKELY_CAUSES)}. "
                            f"{kept}")


def non_finite_losses(losses: Mapping[str, Union[float, torch.Tensor]]) -> Optional[str]:
    """``"the losses are total = nan, cls = nan, ..."`` when any loss is NaN or infinite, else None.

    Losses may be floats or scalar tensors (of one device); the tensors are checked with one
    device synchronisation, and read one by one only to word the message.
    """
    tensors = [value.detach().float().reshape(()) for value in losses.values() if isinstance(value, torch.Tensor)]
    finite = all(math.isfinite(float(value)) for value in losses.values() if not isinstance(value, torch.Tensor))
    if finite and tensors:
        finite = bool(torch.isfinite(torch.stack(tensors)).all())
    if finite:
        return None
    values = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
              for name, value in losses.items()}
    return "the losses are " + ", ".join(f"{name} = {value:.4g}" for name, value in values.items())


def non_finite_parameters(named: Iterable[Tuple[str, Optional[torch.Tensor]]]) -> Optional[str]:
    """``"parameter stage4.0.weight holds NaN/Inf after the update"`` for the first non-finite floating
    tensor of ``named`` (``(name, tensor)`` pairs, e.g. ``module.named_parameters()``), else None.

    One device synchronisation per device the tensors live on; the tensors are read one by one only
    to name the first bad one.
    """
    tensors = [(name, tensor.detach()) for name, tensor in named
               if tensor is not None and tensor.is_floating_point()]
    by_device: Dict[torch.device, List[torch.Tensor]] = {}
    for _, tensor in tensors:
        by_device.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return None
    name = next(name for name, tensor in tensors if not bool(torch.isfinite(tensor).all()))
    return f"parameter {name} holds NaN/Inf after the update"


def snapshot_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A copy of ``module``'s state (parameters and buffers), to put back with :func:`restore_state`."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def restore_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Put ``state`` (from :func:`snapshot_state`) back into ``module``, in place."""
    with torch.no_grad():
        for name, value in module.state_dict().items():
            value.copy_(state[name])


__all__ = ["LIKELY_CAUSES", "TrainingDiverged", "diverged", "non_finite_losses", "non_finite_parameters",
           "restore_state", "snapshot_state"]
