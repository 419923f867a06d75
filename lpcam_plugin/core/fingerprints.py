"""Fingerprints: the JSON facts a saved artefact (bank, fine-tuned network, maps) was made from,
compared before the artefact is reused."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple, TypeVar

T = TypeVar("T")


def differing_keys(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """The keys, sorted, whose values differ between ``stored`` and ``expected`` (missing counts as None)."""
    return sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))


def load_matching(path: Path, load: Callable[[Path], T], key: Mapping[str, Any], *, made: str = "trained",
                  missing: str = "not trained yet", unreadable: str = "unreadable") -> Tuple[Optional[T], str]:
    """The artefact ``load(path)`` when its ``metadata["fit_key"]`` equals ``key``; else ``(None, reason)``.

    The reason is ``missing`` (no file), ``"<unreadable> (<error>)"`` (``load`` raised ``ValueError``)
    or ``"<made> with a different <keys>"``; reusable artefacts come back with ``""``.
    """
    if not Path(path).exists():
        return None, missing
    try:
        artefact = load(path)
    except ValueError as error:
        return None, f"{unreadable} ({error})"
    diff = differing_keys(artefact.metadata.get("fit_key", {}), key)
    if diff:
        return None, f"{made} with a different " + ", ".join(diff)
    return artefact, ""
