"""Fingerprints: the JSON facts a saved artefact (bank, fine-tuned network, maps) was made from,
compared before the artefact is reused."""
from __future__ import annotations

from typing import Any, List, Mapping


def differing_keys(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """The keys, sorted, whose values differ between ``stored`` and ``expected`` (missing counts as None)."""
    return sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
