"""Training checkpoints that resume a stopped run: atomic, plain tensors and JSON-able values
only (read with ``torch.load(weights_only=True)``), refused when written from other inputs.

A checkpoint records a fingerprint of what the run started from (settings, and where the caller
gives them the digests of :mod:`lpcam_plugin.core.identity`: the model's weights, the data, a
source); :func:`resume_state` compares it before anything is written into the caller's model.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from lpcam_plugin.core.fingerprints import differing_keys
from lpcam_plugin.core.io import PathLike, atomic_write

logger = logging.getLogger(__name__)

#: How to start over from a real checkpoint of the method, when the caller does not say.
DELETE_HINT = "delete it to start over, or pass another checkpoint path"
#: The same for the estimators' ``fit(..., restart=True)``.
RESTART_HINT = "pass restart=True to start over (the file is then overwritten), or another checkpoint path"


def save_training_state(path: PathLike, format_name: str, fingerprint: Mapping[str, Any], **state: Any) -> None:
    """Atomically write ``state`` (state dicts, ints, lists...) with its format and ``fingerprint``."""
    with atomic_write(path) as tmp:
        torch.save({"format": format_name, "fingerprint": dict(fingerprint), **state}, tmp)


def check_checkpoint_path(path: PathLike, method: str) -> Path:
    """``path`` as a ``Path``; one-line ``ValueError`` when it is a directory (refused before training)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a {method} training checkpoint; give a file path "
                         "(it is written after every epoch)")
    return path


def load_training_state(path: PathLike, format_name: str, method: str, fingerprint: Mapping[str, Any], *,
                        hint: str = DELETE_HINT) -> Dict[str, Any]:
    """Read a checkpoint of :func:`save_training_state`; one-line ``ValueError`` when it is a
    directory, not readable, not ``format_name``, or was written by a ``method`` run from other
    inputs (then ``hint`` says how to start over: only a real checkpoint of ``method`` gets it)."""
    path = check_checkpoint_path(path, method)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with objects, not a torch file
        raise ValueError(f"{path}: not a {method} training checkpoint, it cannot be read as one "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "pass the path of a checkpoint or of a file to create") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != format_name:
        kind = f"format {found!r}" if found is not None else f"a {type(state).__name__} without a format"
        raise ValueError(f"{path}: not a {method} training checkpoint ({kind}); pass the path of a checkpoint "
                         "or of a file to create")
    diff = differing_keys(state["fingerprint"], fingerprint)
    if diff:
        raise ValueError(f"{path} was written by {method} with a different {', '.join(diff)}; {hint}")
    return state


def resume_state(path: Optional[PathLike], format_name: str, method: str, fingerprint: Mapping[str, Any], *,
                 restart: bool = False, hint: str = DELETE_HINT) -> Optional[Dict[str, Any]]:
    """The state to resume from: None without a ``path``, without a file there, or with ``restart``
    (the file is then overwritten by the first save); else :func:`load_training_state`'s state."""
    if path is None:
        return None
    path = check_checkpoint_path(path, method)
    if not path.exists():
        return None
    if restart:
        logger.warning("%s: starting over; %s will be overwritten after the first epoch", method, path)
        return None
    return load_training_state(path, format_name, method, fingerprint, hint=hint)
