"""The documentation's Python examples run, and its links point somewhere.

Every fenced ``python`` block of ``README.md`` and ``docs/**/*.md`` is executed: the blocks of one
file in order, in one namespace (a page's later blocks may use what its earlier blocks defined),
in a temporary working directory. A block that cannot run here (a host checkout, a GPU, several
processes) carries an HTML comment on the line before its opening fence::

    <!-- no-test: needs an IRN checkout -->

and is not run (the reason says why). The blocks of the host pages in :data:`HOST_PAGES` run
inside a copy of the stand-in host (``tests/hosts``, which needs what the real host code needs)
with a tiny synthetic VOC set (``VOC`` names it), random weights and a prototype bank under the
file names the page uses, on CPU; :data:`SHRINK` makes what they train tiny (the page keeps the
real sizes). ``MIN_RUNNABLE`` guards against an extractor that
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


# --------------------------------------------------------------------------- host pages on the stand-ins

HOSTS = ROOT / "tests" / "hosts"
#: Host page -> the stand-in host its blocks run in.
HOST_PAGES = {ROOT / "docs" / "hosts" / "edam.md": "edam", ROOT / "docs" / "hosts" / "mctformer.md": "mctformer"}
#: Top-level module names of each stand-in (dropped from ``sys.modules`` before and after a page).
HOST_MODULES = {"edam": ("network", "voc12", "tool", "infer_cls", "eval"),
                "mctformer": ("models", "datasets", "engine", "evaluation", "psa", "main")}
#: Sizes the host pages' training calls are shrunk to here: ``(text on the page, text run)``.
SHRINK = (("crop_size=448", "crop_size=32, epochs=1, decoder_channels=(8, 4)"), ("batch_size=8", "batch_size=4"))


def _full_bank(feature_dim: int):
    """A bank with prototypes for all 20 classes (random directions; a fork's forward_cam needs every class)."""
    import torch

    from lpcam_plugin import PrototypeBank

    gen = torch.Generator().manual_seed(0)
    return PrototypeBank({c: torch.randn(2, feature_dim, generator=gen) for c in range(20)},
                         {c: torch.randn(1, feature_dim, generator=gen) for c in range(20)},
                         num_classes=20, feature_dim=feature_dim)


def _host_checkout(host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make ``tmp_path`` a checkout of the stand-in ``host`` with data, weights and a bank; the page's globals."""
    import shutil

    import torch

    from lpcam_plugin.check_host import write_dataset

    shutil.copytree(HOSTS / f"{host}_host", tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    root, _ = write_dataset(tmp_path, host, num_images=4, num_fit=2, image_size=32)
    monkeypatch.syspath_prepend(str(HOSTS / "pydensecrf_standin"))  # sys.path is restored after the test
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    if host == "edam":
        import network.resnet38_EDAM_cls

        model = network.resnet38_EDAM_cls.Net()
        torch.save(model.state_dict(), "EDAM_final.pth")
        _full_bank(model.mask_layer.weight.shape[1]).save("lpcam_edam.npz")
    else:
        import models

        model = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20)
        torch.save({"model": model.state_dict()}, "MCTformerV2.pth")
        _full_bank(model.head.weight.shape[1]).save("lpcam_mct.npz")
    return {"VOC": str(root)}


def _drop_host_modules(host: str, tmp_path: Path) -> None:
    import sys

    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(str(tmp_path)) or name.split(".")[0] in HOST_MODULES[host]:
            del sys.modules[name]


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
    host = HOST_PAGES.get(path)
    if host is not None:
        _drop_host_modules(host, tmp_path)
        namespace.update(_host_checkout(host, tmp_path, monkeypatch))
    try:
        _run_blocks(path, namespace)
    finally:
        if host is not None:
            _drop_host_modules(host, tmp_path)


def _run_blocks(path: Path, namespace: dict) -> None:
    shrink = path in HOST_PAGES
    for block in ALL_BLOCKS[path]:
        if block.skip_reason is not None:
            continue
        code = block.code
        if shrink:
            for page_text, run_text in SHRINK:
                code = code.replace(page_text, run_text)
        started = time.perf_counter()
        try:
            exec(compile(code, block.where, "exec"), namespace)  # noqa: S102 - the docs' own examples
        except Exception as error:
            pytest.fail(f"the example at {block.where} failed: {type(error).__name__}: {error}")
        seconds = time.perf_counter() - started
        assert seconds < MAX_SECONDS_PER_BLOCK, f"the example at {block.where} took {seconds:.1f} s"


def test_host_pages_run_every_block():
    """The EDAM and MCTformer pages' blocks run on the stand-ins: none may be skipped."""
    skipped = [block.where for path in HOST_PAGES for block in ALL_BLOCKS[path] if block.skip_reason is not None]
    assert skipped == []
    assert all(ALL_BLOCKS[path] for path in HOST_PAGES)


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
