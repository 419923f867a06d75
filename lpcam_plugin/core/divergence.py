"""Divergence caught at the step it happens, for the methods that train (ReCAM, F-CAM, RCM + MAM).

A training step whose loss, or what it updated, is NaN or infinite stops the run with
:class:`TrainingDiverged`: a one-line message that names the method, the step (epoch and batch)
and the likely causes. The callers raise it before anything non-finite is written (checkpoints,
prototype memories, EMA copies) and put the user's model back as it was before ``fit``.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Union

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
    """``"loss total = nan (cls = nan, ...)"`` when any loss is NaN or infinite, else None."""
    values: Dict[str, float] = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                                for name, value in losses.items()}
    if all(math.isfinite(value) for value in values.values()):
        return None
    return "the losses are " + ", ".join(f"{name} = {value:.4g}" for name, value in values.items())


def non_finite_parameters(named: Iterable[tuple]) -> Optional[str]:
    """``"parameter stage4.0.weight holds NaN/Inf"`` for the first non-finite tensor of ``named``
    (``(name, tensor)`` pairs, e.g. ``module.named_parameters()``), else None."""
    for name, tensor in named:
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
            return f"parameter {name} holds NaN/Inf after the update"
    return None


def snapshot(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A copy of ``module``'s state (parameters and buffers), to put back with :func:`restore`."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def restore(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Put ``state`` (from :func:`snapshot`) back into ``module``, in place."""
    with torch.no_grad():
        for name, value in module.state_dict().items():
            value.copy_(state[name])


__all__ = ["LIKELY_CAUSES", "TrainingDiverged", "diverged", "non_finite_losses", "non_finite_parameters",
           "restore", "snapshot"]
