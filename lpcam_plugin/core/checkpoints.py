"""Training checkpoints that resume a stopped run: atomic, plain tensors and JSON-able values
only (read with ``torch.load(weights_only=True)``), refused when written by other settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from lpcam_plugin.core.fingerprints import differing_keys
from lpcam_plugin.core.io import PathLike, atomic_write


def save_training_state(path: PathLike, format_name: str, fingerprint: Mapping[str, Any], **state: Any) -> None:
    """Atomically write ``state`` (state dicts, ints, lists...) with its format and ``fingerprint``."""
    with atomic_write(path) as tmp:
        torch.save({"format": format_name, "fingerprint": dict(fingerprint), **state}, tmp)


def load_training_state(path: PathLike, format_name: str, method: str,
                        fingerprint: Mapping[str, Any]) -> Dict[str, Any]:
    """Read a checkpoint of :func:`save_training_state`; one-line ``ValueError`` when it is not
    readable, not ``format_name``, or was written by a ``method`` run with other settings."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with objects, not a torch file
        raise ValueError(f"{path}: not a readable {method} training checkpoint ({type(exc).__name__}: {exc}); "
                         "delete it to start over") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != format_name:
        raise ValueError(f"{path}: not a {method} training checkpoint (format {found!r})")
    diff = differing_keys(state["fingerprint"], fingerprint)
    if diff:
        raise ValueError(f"{path} was written by a {method} run with a different {', '.join(diff)}; "
                         "delete it or pass another checkpoint path")
    return state
