"""The MCTformer patch route: ``model.head`` returns LPCAM instead of PatchCAM logits, so the
unchanged ``engine.generate_attention_maps_ms`` (run under ``torch.cuda.amp.autocast()``) does the
attention fusion, patch-affinity refinement, resizing, target masking, min-max normalisation,
``--cam-npy-dir`` dicts and ``--out-crf`` ``_1``/``_12`` CRF dicts."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from lpcam_plugin.adapters.common.class_maps import all_class_maps
from lpcam_plugin.adapters.mctformer.host import HEAD_LAYER, HOOK_MARK, num_classes
from lpcam_plugin.methods.lpcam.bank import PrototypeBank


class LPCAMHeadHook:
    """Forward hook for ``model.head``: returns LPCAM ``(B, C, h, w)`` float32 in place of its output.

    The maps are computed by :func:`lpcam_plugin.methods.lpcam.maps.lpcam_map` from the head's
    input ``(B, D, h, w)`` cast to float32 with autocast disabled, for all C classes (the hook
    does not know the labels; the engine zeroes absent classes). Classes without prototypes give
    zero maps. ``normalize=False`` (default) returns the raw ``relu`` similarity, as PatchCAM is
    raw; the engine min-max normalises the sum.
    """

    def __init__(self, bank: PrototypeBank, *, normalize: bool = False) -> None:
        self.bank = bank
        self.normalize = normalize

    def __call__(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        features = inputs[0]
        if features.dim() != 4:
            raise ValueError(f"head input must be (B, D, h, w), got {tuple(features.shape)}")
        maps = all_class_maps(features, self.bank, self.bank.num_classes, normalize=self.normalize)
        if maps.shape != output.shape:
            raise RuntimeError(f"LPCAM maps {tuple(maps.shape)} do not match the head output {tuple(output.shape)}")
        return maps


class HeadPatch:
    """Handle of :func:`patch`; :meth:`remove` (idempotent) unregisters the hook."""

    def __init__(self, head: nn.Module, handle: torch.utils.hooks.RemovableHandle, hook: LPCAMHeadHook) -> None:
        self.head = head
        self.hook = hook
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = handle

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def remove(self) -> None:
        """Unregister the hook and forget it on the head."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()
            if getattr(self.head, HOOK_MARK, None) is self:
                delattr(self.head, HOOK_MARK)

    def __enter__(self) -> "HeadPatch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def patch(model: nn.Module, bank: PrototypeBank, *, normalize: bool = False) -> HeadPatch:
    """Make ``model.head`` return LPCAM instead of PatchCAM logits, for the unchanged engine.

    Use it around ``engine.generate_attention_maps_ms``::

        with mctformer.patch(model, bank):
            generate_attention_maps_ms(data_loader, model, device, args)

    With ``--attention-type fused`` the host writes ``mtatt * LPCAM`` (the LPCAM author's
    MCTformer-V2 setting, ``zhaozhengChen/LPCAM#1``); ``patchcam`` writes pure LPCAM. The head's
    training logits are replaced too, so do not train with the patch on.

    Args:
        model: MCTformer-V2 model (``head`` = ``Conv2d(D, C, 3, padding=1)``, C = 20 or 80).
        bank: fitted C-class :class:`~lpcam_plugin.methods.lpcam.bank.PrototypeBank` with ``feature_dim == D``.
        normalize: divide each view's map by its max (default: raw, like PatchCAM).

    Returns:
        a :class:`HeadPatch` (context manager) whose ``remove()`` takes the hook off.
    """
    head = getattr(model, HEAD_LAYER, None)
    if not isinstance(head, nn.Conv2d):
        raise TypeError(f"model.head must be the V2 Conv2d head, got {type(head).__name__} "
                        "(MCTformer-V1 is not supported)")
    if bank.num_classes != num_classes(head):
        raise ValueError(f"MCTformer's head has {head.out_channels} classes, the bank has {bank.num_classes}")
    if head.in_channels != bank.feature_dim:
        raise ValueError(f"the bank has feature_dim={bank.feature_dim}, model.head expects {head.in_channels}")
    if getattr(head, HOOK_MARK, None) is not None:
        raise RuntimeError("model.head already carries an LPCAM hook")
    hook = LPCAMHeadHook(bank, normalize=normalize)
    result = HeadPatch(head, head.register_forward_hook(hook), hook)
    setattr(head, HOOK_MARK, result)
    return result


__all__ = ["HeadPatch", "LPCAMHeadHook", "patch"]
