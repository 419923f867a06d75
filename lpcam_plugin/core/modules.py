"""Reaching into a user's network by dotted names: a layer's output with its graph, a linear head.

Training-time methods (ReCAM) need the unpooled features of a layer *with* their autograd graph
and the classifier weight as a live parameter, for any network whose head is global average
pooling followed by a linear map (an ``nn.Linear``, a 1x1 ``nn.Conv2d`` or a ``(C, D)``
parameter). :class:`LinearHead` and :func:`forward_until` give exactly that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the top-level children."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise ValueError(f"the model has no submodule {name!r} (top-level children: {children})") from None


class _StopForward(Exception):
    """Raised by the capture hook once the wanted layer has run: the rest of the forward is skipped."""


def forward_until(model: nn.Module, layer: nn.Module, *args: Any) -> torch.Tensor:
    """Run ``model(*args)`` up to ``layer`` and return that layer's output, graph attached.

    The forward stops right after ``layer`` (nothing after it is computed), so the model's own
    output format does not matter (IRN's ``CAM.forward`` returns maps, ``Net.forward`` logits).

    Returns:
        the layer's output, e.g. ``(B, D, h, w)``; its first tensor when it returns a tuple.

    Raises:
        RuntimeError: ``layer`` was not called by ``model``'s forward.
    """
    captured = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(*args)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(layer).__name__} was not called during the forward pass of {type(model).__name__}")
    return captured[0]


@dataclass
class LinearHead:
    """A GAP-linear classifier head read from a model by dotted name, as live parameters.

    Attributes:
        name: the dotted name it was resolved from.
        parameter: the weight parameter (``(C, D)``, ``(C, D)`` of a Linear or ``(C, D, 1, 1)``).
        bias: the bias parameter ``(C,)`` or None.
    """

    name: str
    parameter: nn.Parameter
    bias: Optional[nn.Parameter]

    @classmethod
    def resolve(cls, model: nn.Module, name: str) -> "LinearHead":
        """Find ``name`` in ``model``: an ``nn.Linear``, a 1x1 ``nn.Conv2d`` or a 2-d parameter.

        Raises:
            ValueError: nothing of that name, or a head that is not GAP-linear (e.g. a 3x3 conv).
        """
        try:
            target: Any = model.get_submodule(name)
        except AttributeError:
            try:
                target = model.get_parameter(name)
            except AttributeError:
                raise ValueError(f"the model has no module or parameter {name!r}") from None
        if isinstance(target, nn.Linear):
            return cls(name, target.weight, target.bias)
        if isinstance(target, nn.Conv2d):
            if target.kernel_size != (1, 1) or target.groups != 1:
                raise ValueError(f"head {name!r} is a {target.kernel_size[0]}x{target.kernel_size[1]} convolution; "
                                 "this method needs a GAP-linear head (nn.Linear, 1x1 conv or a (C, D) parameter)")
            return cls(name, target.weight, target.bias)
        if isinstance(target, nn.Parameter) and target.dim() == 2:
            return cls(name, target, None)
        raise ValueError(f"head {name!r} is a {type(target).__name__} of shape "
                         f"{tuple(getattr(target, 'shape', ()))}; "
                         "expected nn.Linear, a 1x1 nn.Conv2d or a (C, D) parameter")

    @property
    def weight(self) -> torch.Tensor:
        """The weight as ``(C, D)`` (a view: gradients reach the parameter)."""
        return self.parameter.reshape(self.parameter.shape[0], self.parameter.shape[1])

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.parameter.shape[0])

    @property
    def feature_dim(self) -> int:
        """D."""
        return int(self.parameter.shape[1])
