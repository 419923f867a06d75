"""Shared test helpers."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Iterator

import pytest


def standin_host(monkeypatch: pytest.MonkeyPatch, host_dir: Path, top_level: Iterable[str]) -> Iterator[Path]:
    """Put a stand-in host checkout first on ``sys.path`` for one test (a fixture body: ``yield from``).

    Before and after the test, every module loaded from ``host_dir`` or named by ``top_level``
    (and its submodules) leaves ``sys.modules``, so stand-ins with common module names
    (``models``, ``network``, ``voc12``...) never see each other.
    """
    names = set(top_level)

    def drop() -> None:
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(str(host_dir)) or name.split(".")[0] in names:
                del sys.modules[name]

    drop()
    monkeypatch.syspath_prepend(str(host_dir))
    yield host_dir
    drop()
