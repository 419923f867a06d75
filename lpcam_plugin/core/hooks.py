"""Passive feature capture: a forward hook that records what a module emits or receives.

The user runs their own forward pass; nothing here calls the model, changes its mode or needs
gradients (works under ``torch.inference_mode()``). Hooks are removed on ``remove()`` (idempotent),
on leaving the ``with`` block (also when it raises) and when the object is garbage collected.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]
Selector = Callable[[Any], torch.Tensor]


class TokensToMap:
    """Picklable transform of ViT token sequences ``(B, P + N, D)`` to maps ``(B, D, h, w)``.

    Drops the ``num_prefix_tokens`` leading tokens (CLS, distillation, register tokens; 20
    class tokens in MCTformer-V2) and folds the ``N = h * w`` patch tokens row-major onto
    ``grid`` ``(h, w)``, or onto a square grid when ``grid`` is None.
    """

    def __init__(self, num_prefix_tokens: int, grid: Optional[Tuple[int, int]] = None) -> None:
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3:
            raise ValueError(f"token transform expects (B, P + N, D) tokens, got {tuple(tokens.shape)}")
        patches = tokens[:, self.num_prefix_tokens:, :]
        n = patches.shape[1]
        if self.grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} patch tokens do not form a square grid; pass grid=(h, w)")
            h, w = side, side
        else:
            h, w = self.grid
            if h * w != n:
                raise ValueError(f"grid {self.grid} holds {h * w} patches but {n} patch tokens arrived "
                                 f"(after dropping {self.num_prefix_tokens} prefix tokens)")
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)

    def __repr__(self) -> str:
        return f"TokensToMap(num_prefix_tokens={self.num_prefix_tokens}, grid={self.grid})"


def tokens_to_map(num_prefix_tokens: int, grid: Optional[Tuple[int, int]] = None) -> TokensToMap:
    """A ready ``reshape_transform`` for ViT/DeiT tokens; see :class:`TokensToMap`."""
    return TokensToMap(num_prefix_tokens, grid)


class _Recorder:
    """The callable registered on the module: stores captures; holds no reference to its FeatureHook.

    Keeping the recorder separate lets a dropped :class:`FeatureHook` be garbage collected (and
    its ``__del__`` remove the hook), and keeps the module picklable for spawned workers as long
    as the transform and selector are picklable.
    """

    def __init__(self, reshape_transform: Optional[Transform], feature_selector: Optional[Selector],
                 keep_all: bool) -> None:
        self.reshape_transform = reshape_transform
        self.feature_selector = feature_selector
        self.keep_all = keep_all
        self.features: Optional[torch.Tensor] = None
        self.history: List[torch.Tensor] = []

    def record(self, value: Any) -> None:
        """Store the selected tensor, detached, transformed, and copied once unless the transform already copied.

        The copy keeps the capture intact when the model modifies the tensor in place later in
        the forward pass (e.g. ``nn.ReLU(inplace=True)`` after the hooked layer).
        """
        source = self.feature_selector(value) if self.feature_selector is not None else _first_tensor(value)
        tensor = source.detach()
        if self.reshape_transform is not None:
            tensor = self.reshape_transform(tensor)
        if tensor.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            tensor = tensor.clone()
        self.features = tensor
        if self.keep_all:
            self.history.append(tensor)

    def on_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.record(output)

    def on_input(self, module: nn.Module, inputs: Tuple[Any, ...]) -> None:
        self.record(inputs[0] if self.feature_selector is None else inputs)


class FeatureHook:
    """Record the features a module emits (``capture="output"``) or receives (``"input"``).

    Example::

        with FeatureHook(model.stage4) as hook, torch.inference_mode():
            model(images)
            features = hook.features          # (B, D, h, w)

    Args:
        module: the module to watch.
        capture: ``"output"`` (forward hook) or ``"input"`` (forward pre-hook; first
            positional input, or the whole input tuple when a ``feature_selector`` is given).
        reshape_transform: applied to the captured tensor, e.g. :func:`tokens_to_map`.
        feature_selector: picks the tensor out of a tuple/dict output (e.g. ``lambda o: o[0]``
            for a ViT block returning ``(x, attn)``); default: the value itself, or the first
            element of a tuple/list. Use a top-level function to keep the hook picklable.
        keep_all: also append every capture to :attr:`history` (several views per image).

    Attributes:
        features: the last captured tensor, detached and copied (later in-place ops of the model
            do not change it), or None before the first forward.
        history: every capture since the last :meth:`clear` when ``keep_all``.

    Both raise ``RuntimeError`` once the hook is removed (after the ``with`` block or
    :meth:`remove`): read them inside the block, or keep the tensor in a variable there.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        capture: str = "output",
        reshape_transform: Optional[Transform] = None,
        feature_selector: Optional[Selector] = None,
        keep_all: bool = False,
    ) -> None:
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        self.module = module
        self.capture = capture
        self._recorder = _Recorder(reshape_transform, feature_selector, keep_all)
        if capture == "output":
            self._handle = module.register_forward_hook(self._recorder.on_output)
        else:
            self._handle = module.register_forward_pre_hook(self._recorder.on_input)

    @property
    def features(self) -> Optional[torch.Tensor]:
        """The last captured tensor (after ``reshape_transform``), or None; ``RuntimeError`` once removed."""
        self._check_active("features")
        return self._recorder.features

    @property
    def history(self) -> List[torch.Tensor]:
        """Every capture since the last :meth:`clear` (only with ``keep_all``); ``RuntimeError`` once removed."""
        self._check_active("history")
        return self._recorder.history

    def _check_active(self, what: str) -> None:
        if self._handle is None:
            raise RuntimeError(f"FeatureHook on {type(self.module).__name__} was removed (its with block exited or "
                               f"remove() was called); read hook.{what} inside the with block")

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def clear(self) -> None:
        """Forget captured features (keeps the hook registered)."""
        self._recorder.features = None
        self._recorder.history = []

    def remove(self) -> None:
        """Unregister the hook; calling it again does nothing."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            handle.remove()

    def __enter__(self) -> "FeatureHook":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()


def _first_tensor(value: Any) -> torch.Tensor:
    """``value`` itself if it is a tensor, else the first element of a tuple/list."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"the hooked module produced {type(value).__name__}; pass feature_selector= to pick the tensor")
