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
    import lpcam_plugin.adapters as adapters_pkg

    modules = sorted({f"lpcam_plugin.{m.name}" for m in pkgutil.iter_modules(lpcam_plugin.__path__)}
                     | {f"lpcam_plugin.adapters.{m.name}" for m in pkgutil.iter_modules(adapters_pkg.__path__)})
    code = ("import sys\n"
            "for name in ('torchvision', 'timm', 'matplotlib', 'faiss', 'pydensecrf', 'cv2'):\n"
            "    sys.modules[name] = None\n"
            f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT / "tests"))
    assert result.returncode == 0, result.stderr


def test_version_has_one_source():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "version = attr: lpcam_plugin.__version__" in cfg
    assert re.fullmatch(r"\d+\.\d+\.\d+", lpcam_plugin.__version__)
    assert "torchvision" not in cfg


def test_public_api_is_exported():
    for name in lpcam_plugin.__all__:
        assert hasattr(lpcam_plugin, name), name
