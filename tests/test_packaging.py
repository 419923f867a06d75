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


#: Which rooms each room may import (the package's layering; docs/design/architecture.md). The
#: command line and check-host sit on top and may import any room.
ALLOWED_IMPORTS = {
    "core": {"core"},
    "methods": {"core", "methods"},
    "distributed": {"core", "methods", "distributed"},
    "benchmark": {"core", "methods", "benchmark"},
    "adapters": {"core", "methods", "adapters"},
}
#: A module longer than this states why in its docstring (a sentence naming "450 lines").
MAX_MODULE_LINES = 450


def _imported_modules(path: Path) -> set:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _imported_rooms(path: Path) -> set:
    return {n.split(".")[1] for n in _imported_modules(path) if n.startswith("lpcam_plugin.") and len(n.split(".")) > 1}


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


def test_scale_out_does_not_import_the_benchmark():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "lpcam_plugin" / "distributed").rglob("*.py")
                 if "benchmark" in _imported_rooms(p)]
    assert offenders == []


def test_nothing_inside_the_package_imports_the_package_face():
    """Adapters, methods, plumbing, benchmark and scale-out import the module that defines a name,
    never ``lpcam_plugin`` itself (whose ``__init__`` imports them: a cycle in waiting)."""
    package = ROOT / "lpcam_plugin"
    offenders = [str(p.relative_to(ROOT)) for p in package.rglob("*.py")
                 if p.parent != package and "lpcam_plugin" in _imported_modules(p)]
    assert offenders == []


def test_long_modules_say_why():
    import ast

    offenders = []
    for path in (ROOT / "lpcam_plugin").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES and "450 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            offenders.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert offenders == []
