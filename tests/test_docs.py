"""The documentation's Python examples run, and its links point somewhere.

Every fenced ``python`` block of ``README.md`` and ``docs/**/*.md`` is executed: the blocks of one
file in order, in one namespace (a page's later blocks may use what its earlier blocks defined),
in a temporary working directory. A block that cannot run here (a host checkout, a GPU, several
processes) carries an HTML comment on the line before its opening fence::

    <!-- no-test: needs an IRN checkout -->

and is not run (the reason says why). ``MIN_RUNNABLE`` guards against an extractor that
silently finds nothing. ``mkdocs build --strict`` (run by ``.ci/run``) checks the links between
doc pages; the README is not part of the site, so its relative links are checked here.
"""
from __future__ import annotations

import os
import random
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))

#: Fewer runnable blocks than this means the extractor (or the docs) lost examples.
MIN_RUNNABLE = 14
#: A block that takes longer than this on the 2-core CI machine is too big for the docs.
MAX_SECONDS_PER_BLOCK = 60.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_NO_TEST = re.compile(r"^\s*<!--\s*no-test:\s*(?P<reason>.+?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> List[Block]:
    """Top-level fenced blocks whose info string is ``python`` (blocks nested in a longer fence,
    e.g. a Markdown example inside four backticks, are not code of the page)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match["fence"], match["info"].strip()
        start = i
        body: List[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"].strip():
                break
            body.append(lines[i])
            i += 1
        i += 1  # past the closing fence (or the end of the file)
        if info.split()[:1] != ["python"]:
            continue
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _NO_TEST.match(previous)
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", marker["reason"] if marker else None))
    return blocks


ALL_BLOCKS: Dict[Path, List[Block]] = {path: extract_blocks(path) for path in DOC_FILES}
FILES_WITH_CODE = [path for path, blocks in ALL_BLOCKS.items() if blocks]
#: Pages with at least one block that runs here (the others' blocks all carry a ``no-test`` reason).
FILES_WITH_RUNNABLE_CODE = [path for path, blocks in ALL_BLOCKS.items() if any(b.skip_reason is None for b in blocks)]


def test_extractor_finds_the_examples():
    runnable = [b for blocks in ALL_BLOCKS.values() for b in blocks if b.skip_reason is None]
    assert len(runnable) >= MIN_RUNNABLE, [b.where for b in runnable]
    assert (ROOT / "README.md") in FILES_WITH_CODE


def test_no_test_markers_precede_python_blocks():
    """A ``no-test`` marker must sit right before a python block (else it silently marks nothing)."""
    stray = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        in_fence: Optional[str] = None
        for number, line in enumerate(lines):
            fence = _FENCE.match(line)
            if fence:
                mark = fence["fence"]
                if in_fence is None:
                    in_fence = mark
                elif mark[0] == in_fence[0] and len(mark) >= len(in_fence) and not fence["info"].strip():
                    in_fence = None
                continue
            if in_fence is None and _NO_TEST.match(line):
                following = next((candidate for candidate in lines[number + 1:] if candidate.strip()), "")
                nxt = _FENCE.match(following)
                if not (nxt and nxt["info"].strip().split()[:1] == ["python"]):
                    stray.append(f"{path.relative_to(ROOT)}:{number + 1}")
    assert stray == []


@pytest.mark.parametrize("path", FILES_WITH_RUNNABLE_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for block in ALL_BLOCKS[path]:
        if block.skip_reason is not None:
            continue
        started = time.perf_counter()
        try:
            exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - the docs' own examples
        except Exception as error:
            pytest.fail(f"the example at {block.where} failed: {type(error).__name__}: {error}")
        seconds = time.perf_counter() - started
        assert seconds < MAX_SECONDS_PER_BLOCK, f"the example at {block.where} took {seconds:.1f} s"


# --------------------------------------------------------------------------- README links

_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")


def _slug(text: str) -> str:
    """The anchor Python-Markdown's ``toc`` extension (MkDocs, GitHub alike here) gives a heading."""
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set:
    anchors, in_fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            heading = _HEADING.match(line)
            if heading:
                anchors.add(_slug(heading["text"]))
    return anchors


def test_readme_links_resolve():
    readme = ROOT / "README.md"
    text = re.sub(r"```.*?```", "", readme.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for match in _LINK.finditer(text):
        target = match["target"]
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        path = (readme.parent / file_part).resolve() if file_part else readme
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(target)
    assert broken == []


def test_examples_keep_only_patches_and_scripts():
    """Host instructions live on the docs' host pages; ``examples/`` holds what they apply."""
    leftovers = [str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.md")]
    assert leftovers == []
    assert os.path.isfile(ROOT / "docs" / "hosts" / "irn.md")
