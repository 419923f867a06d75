"""Which read-outs of the registry (:mod:`lpcam_plugin.methods.readouts`) a host family writes.

Each family declares its names with :func:`supported`, checked against the registry when the
adapter is imported, and refuses the others with :func:`require`.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

from lpcam_plugin.methods import readouts


def supported(names: Iterable[str]) -> Tuple[str, ...]:
    """``names`` as canonical registry names, in the registry's order; ``ValueError`` for an unknown one."""
    wanted = {readouts.get(name).name for name in names}
    return tuple(name for name in readouts.names() if name in wanted)


def require(host: str, method: str, methods: Sequence[str], reason: str) -> None:
    """Refuse ``method`` unless it is one of ``methods`` (the host's :func:`supported` names);
    ``reason`` says why the others cannot run there."""
    if method not in methods:
        allowed = ", ".join(repr(name) for name in methods)
        verb = "is" if len(methods) == 1 else "are"
        raise ValueError(f"{host}: method {method!r} is not available ({reason}); only {allowed} {verb}")


__all__ = ["require", "supported"]
