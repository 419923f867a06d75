"""The checklist of ``lpcam check-host``: its items, how the driver records steps, how it is printed.

The driver (in the host's interpreter) appends each :class:`Item` as one JSON line to a results
file through a :class:`Recorder`; the parent reads them back and prints them with
:func:`format_checklist`.
"""
from __future__ import annotations

import contextlib
import json
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from lpcam_plugin.check_host.fixes import known_fix

#: How each status is shown in the printed checklist.
STATUS_MARK = {"ok": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip", "info": "info"}


@dataclass
class Item:
    """One checklist line."""

    section: str
    name: str
    status: str
    detail: str = ""
    fix: str = ""


class StepFailed(Exception):
    """A step failed (already recorded); the steps that depend on it are skipped."""


class Recorder:
    """Collects checklist items in the driver and appends each as a JSON line to ``path``."""

    def __init__(self, path: Path, fork: Path) -> None:
        self.path = path
        self.fork = fork.resolve()
        self.failed = False

    def add(self, section: str, name: str, status: str, detail: str = "", fix: str = "") -> None:
        """Record one item; a ``"fail"`` status marks the whole check as failed."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps(asdict(Item(section, name, status, detail, fix))) + "\n")
        self.failed |= status == "fail"

    def where(self, error: BaseException) -> str:
        """``file:line: code`` of the deepest traceback frame inside the fork ("" if none)."""
        location = ""
        for frame in traceback.extract_tb(error.__traceback__):
            try:
                Path(frame.filename).resolve().relative_to(self.fork)
            except ValueError:
                continue
            location = f"{Path(frame.filename).resolve().relative_to(self.fork)}:{frame.lineno}: {frame.line}"
        return location

    @contextlib.contextmanager
    def step(self, name: str, section: str = "steps",
             fixes: Sequence[Tuple[str, str]] = ()) -> Iterator[Dict[str, str]]:
        """Run a block as one step: ``ok`` with the ``detail`` it sets, or ``fail`` with the error
        (then :class:`StepFailed` is raised so that the steps depending on it are skipped).

        ``fixes``: this step's own ``(regex, fix)`` pairs, tried before the known fixes of
        :mod:`lpcam_plugin.check_host.fixes` (a failure may need a fix that only this step knows)."""
        info = {"detail": ""}
        try:
            yield info
        except BaseException as error:  # a host may also raise SystemExit
            lines = [line for line in f"{type(error).__name__}: {error}".splitlines() if line.strip()]
            # a spawned worker's failure (torch's ProcessRaisedException) carries its traceback: its last line
            message = (lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1].strip()}")[:400]
            location = self.where(error)
            detail = message + (f"  [at {location}]" if location else "")
            text = message + " " + location
            fix = next((fix for pattern, fix in fixes if re.search(pattern, text)), "") or known_fix(text)
            self.add(section, name, "fail", detail, fix)
            raise StepFailed(name) from error
        else:
            self.add(section, name, "ok", info["detail"])


def read_items(path: Path) -> List[Item]:
    """The items a driver appended to ``path`` (none if it wrote nothing)."""
    if not path.exists():
        return []
    return [Item(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def format_checklist(host: str, fork: Path, route: str, items: Sequence[Item], code: int) -> str:
    """The checklist as printed by ``lpcam check-host``."""
    lines = [f"lpcam check-host {host} {fork} (route {route})"]
    section = None
    for item in items:
        if item.section != section:
            section = item.section
            lines.append(f"{section}:")
        mark = STATUS_MARK.get(item.status, item.status)
        lines.append(f"  [{mark}] {item.name}" + (f": {item.detail}" if item.detail else ""))
        if item.fix:
            lines.append(f"         fix: {item.fix}")
    lines.append("result: the plug-in works in this fork and environment" if code == 0 else
                 "result: FAILED (fix the lines marked FAIL and run check-host again)")
    return "\n".join(lines)


__all__ = ["Item", "Recorder", "STATUS_MARK", "StepFailed", "format_checklist", "read_items"]
