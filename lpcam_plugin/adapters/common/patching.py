"""Replacing a host module's attribute by ours (the IRN-family steps' ``_work`` and ``run``), undoably.

The original is kept on the module as ``_lpcam_original_<attribute>``; patching twice is a no-op.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)


def patch_attribute(module_name: str, attribute: str, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """Replace ``module.attribute`` by ``replacement`` (idempotent); return the original.

    The original is kept on the module as ``_lpcam_original_<attribute>`` for :func:`unpatch_attribute`.
    """
    module = importlib.import_module(module_name)
    current = getattr(module, attribute)
    if current is replacement:
        return getattr(module, f"_lpcam_original_{attribute}")
    setattr(module, f"_lpcam_original_{attribute}", current)
    setattr(module, attribute, replacement)
    logger.info("%s.%s is replaced by %s.%s", module_name, attribute, replacement.__module__,
                replacement.__qualname__)
    return current


def unpatch_attribute(module_name: str, attribute: str) -> None:
    """Undo :func:`patch_attribute` (no-op when not patched)."""
    module = importlib.import_module(module_name)
    original = getattr(module, f"_lpcam_original_{attribute}", None)
    if original is not None:
        setattr(module, attribute, original)
        delattr(module, f"_lpcam_original_{attribute}")


__all__ = ["patch_attribute", "unpatch_attribute"]
