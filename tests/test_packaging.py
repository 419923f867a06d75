"""Packaging rules: adapters only as lpcam_plugin.adapters, optional dependencies stay optional."""
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import lpcam_plugin

ROOT = Path(__file__).resolve().parents[1]


def test_no_bare_adapters_import_anywhere():
    pattern = re.compile(r"^\s*(import adapters\b|from adapters\b)", re.M)
    offenders = [str(p) for folder in ("lpcam_plugin", "adapters", "tests", "examples", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_every_module_imports_without_optional_dependencies():
    modules = sorted(m.name for m in pkgutil.walk_packages(lpcam_plugin.__path__, "lpcam_plugin."))
    assert "lpcam_plugin.adapters.irn" in modules and "lpcam_plugin.methods.lpcam.estimator" in modules
    code = ("import sys\n"
            "for name in ('torchvision', 'timm', 'matplotlib', 'faiss', 'pydensecrf', 'cv2'):\n"
            "    sys.modules[name] = None\n"
            f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT / "tests"))
    assert result.returncode == 0, result.stderr


def test_version_has_one_source():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "version = attr: lpcam_plugin.core.version.__version__" in cfg
    assert re.fullmatch(r"\d+\.\d+\.\d+", lpcam_plugin.__version__)
    assert "torchvision" not in cfg


def test_public_api_is_exported():
    for name in lpcam_plugin.__all__:
        assert hasattr(lpcam_plugin, name), name


#: Which rooms each room may import (the package's layering; README "How the package is organised").
ALLOWED_IMPORTS = {
    "core": {"core"},
    "methods": {"core", "methods"},
    "distributed": {"core", "methods", "distributed", "benchmark"},
    "benchmark": {"core", "methods", "benchmark"},
    "adapters": {"core", "methods", "adapters"},
}


def _imported_rooms(path: Path) -> set:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("lpcam_plugin.") and len(n.split(".")) > 1}


def test_imports_point_down_the_layers_and_nothing_is_relative():
    package = ROOT / "lpcam_plugin"
    violations = []
    for room, allowed in ALLOWED_IMPORTS.items():
        for path in (package / room).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if re.search(r"^\s*from \.", text, re.M):
                violations.append(f"{path.relative_to(ROOT)}: relative import")
            bad = _imported_rooms(path) - allowed
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []
