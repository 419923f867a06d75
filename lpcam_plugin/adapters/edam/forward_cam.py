"""The EDAM patch route: ``Net.forward_cam`` replaced by LPCAM, so the unchanged ``infer_cls.py``
writes LPCAM with all its own outputs (:func:`patch`, :func:`run_infer_cls`)."""
from __future__ import annotations

import argparse
import importlib
import runpy
import sys
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from lpcam_plugin.adapters.common.class_maps import all_class_maps
from lpcam_plugin.adapters.edam.host import DEFAULT_NETWORK, NUM_CLASSES, PATCH_MARK
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.methods.lpcam.bank import PrototypeBank


class ForwardCamPatch:
    """Handle of :func:`patch`: restores the original ``Net.forward_cam`` on :meth:`remove` (idempotent)."""

    def __init__(self, net_class: type, original: Optional[Callable[..., torch.Tensor]]) -> None:
        self.net_class = net_class
        self.original = original

    @property
    def active(self) -> bool:
        """Whether ``forward_cam`` is still replaced by this patch."""
        current = self.net_class.__dict__.get("forward_cam")
        return getattr(current, PATCH_MARK, None) is self

    def remove(self) -> None:
        """Put the original ``forward_cam`` back."""
        if self.active:
            if self.original is None:
                delattr(self.net_class, "forward_cam")
            else:
                self.net_class.forward_cam = self.original

    def __enter__(self) -> "ForwardCamPatch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def patch(bank: PrototypeBank, *, network: Union[str, type] = DEFAULT_NETWORK) -> ForwardCamPatch:
    """Replace ``Net.forward_cam`` of ``network`` by LPCAM, for the unchanged ``infer_cls.py``.

    The replacement returns a non-negative ``(B, 21, h, w)`` float32 map: channel ``c`` = raw
    (``relu``, not normalised) LPCAM of class ``c`` from ``bn7`` (= ``forward_as_dict(x)["conv6"]``),
    channel 20 = 0. ``infer_cls.py`` then upsamples each view, flips back, sums, divides by the max
    and keeps channels 0..19: the same maps as :func:`lpcam_plugin.adapters.edam.run`. It is
    thread-safe (no hooks), as ``infer_cls`` calls it from a thread pool.

    Args:
        bank: fitted 20-class :class:`~lpcam_plugin.methods.lpcam.bank.PrototypeBank`.
        network: the module name ``infer_cls`` receives as ``--network`` (imported here, so the host
            must be importable) or the ``Net`` class itself.

    Returns:
        a handle (also a context manager) whose ``remove()`` restores the original method.
    """
    net_class = importlib.import_module(network).Net if isinstance(network, str) else network
    if not isinstance(net_class, type) or not issubclass(net_class, nn.Module):
        raise TypeError(f"network must name a module with an nn.Module class Net, got {net_class!r}")
    if bank.num_classes != NUM_CLASSES:
        raise ValueError(f"EDAM has {NUM_CLASSES} classes, the bank has {bank.num_classes}")
    current = net_class.__dict__.get("forward_cam")
    if hasattr(getattr(net_class, "forward_cam", None), PATCH_MARK):
        raise RuntimeError(f"{net_class.__qualname__}.forward_cam is already patched")

    def forward_cam(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_as_dict(x)["conv6"]
        maps = all_class_maps(features, bank, NUM_CLASSES)
        spare = maps.new_zeros(maps.shape[0], 1, *maps.shape[2:])
        return torch.cat([maps, spare], dim=1)

    handle = ForwardCamPatch(net_class, current)
    setattr(forward_cam, PATCH_MARK, handle)
    net_class.forward_cam = forward_cam
    return handle


def run_infer_cls(bank: PrototypeBank, argv: Sequence[str], *, script: PathLike = "infer_cls.py") -> None:
    """Run EDAM's unchanged ``infer_cls.py`` (through ``runpy``) with ``forward_cam`` patched to LPCAM.

    ``argv`` are the script's arguments (``--weights ... --out_cam ...``); the ``--network`` given
    there (default ``network.resnet38_EDAM_cls``) is the module patched. Run it from the EDAM
    checkout (the script reads ``voc12/cls_labels.npy`` relative to the working directory) with
    the checkout on ``sys.path``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--network", default=DEFAULT_NETWORK)
    known, _ = parser.parse_known_args(list(argv))
    saved_argv = sys.argv
    with patch(bank, network=known.network):
        sys.argv = [str(script)] + list(argv)
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = saved_argv


__all__ = ["ForwardCamPatch", "patch", "run_infer_cls"]
