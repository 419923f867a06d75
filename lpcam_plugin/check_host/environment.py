"""Probe of the host's interpreter: package versions and the known host/environment incompatibilities.

Runs in the driver (the host's interpreter, ``--python``) before any step; each finding is a
checklist item of the ``environment`` section, with its fix from
:mod:`lpcam_plugin.check_host.fixes`. The incompatibilities are described in
``docs/design/hosts.md``.
"""
from __future__ import annotations

import importlib
import inspect
import io
import platform
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.fixes import known_fix

#: Optional packages probed: (module imported, name shown).
PROBED_PACKAGES: Tuple[Tuple[str, str], ...] = (
    ("PIL", "pillow"), ("timm", "timm"), ("torchvision", "torchvision"), ("pydensecrf.densecrf", "pydensecrf"),
    ("chainercv", "chainercv"), ("pyarrow", "pyarrow"), ("imageio", "imageio"), ("pandas", "pandas"),
)


def route_imports(host: str, route: str) -> Tuple[str, ...]:
    """The optional packages (names of :data:`PROBED_PACKAGES`) the host code that ``route`` runs imports.

    EDAM's ``loop`` route runs ``network``, ``voc12.data`` (pyarrow) and ``eval.py`` (pandas);
    its ``infer_cls`` route adds ``infer_cls.py`` (torchvision, imageio). MCTformer's ``models.py``
    imports timm and ``datasets.py`` torchvision; ``evaluation.py`` imports pandas.
    """
    if host == "edam":
        return ("pyarrow", "pandas") + (("torchvision", "imageio") if route == "infer_cls" else ())
    if host == "mctformer":
        return ("timm", "torchvision", "pandas")
    return ()


def module_version(module: str) -> Tuple[Optional[str], str]:
    """``(version or None, error text)`` of importing ``module``."""
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # broken builds raise more than ImportError
        return None, f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return str(getattr(imported, "__version__", "installed")), ""


def fork_line(fork: Path, relative: str, pattern: str) -> str:
    """``relative:line: text`` of the first line of the fork file matching ``pattern`` ("" if none)."""
    path = fork / relative
    if not path.is_file():
        return ""
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if re.search(pattern, line):
            return f"{relative}:{number}: {line.strip()}"
    return ""


def major_minor(version: str) -> Tuple[int, int]:
    """``(major, minor)`` of a version string (``(0, 0)`` if it has no number)."""
    parts = re.findall(r"\d+", version)
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) if parts else (0, 0)


def _missing(version: str) -> bool:
    return version.startswith("missing")


def check_environment(rec: Recorder, host: str, fork: Path, route: str = "", dataset: str = "voc") -> None:
    """Record the versions and the known host/environment incompatibilities (``docs/design/hosts.md``).

    A package is required (``fail`` when missing) only where the host code ``route`` runs imports
    it (:func:`route_imports`); otherwise a missing one is reported as ``info``. ``dataset`` "coco":
    the IRN COCO pipeline's own checks instead of VOC's id lists.
    """
    import torch

    env = "environment"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module, label in PROBED_PACKAGES:
        version, error = module_version(module)
        versions[label] = version if version is not None else f"missing ({error})"
    rec.add(env, "versions", "info", ", ".join(f"{k} {v}" for k, v in versions.items()))
    cuda = torch.cuda.device_count()
    rec.add(env, "CUDA devices", "info", str(cuda))
    if host in ("irn", "amn"):
        _check_resnet_host(rec, fork, versions, cuda, dataset)
    if host in ("edam", "mctformer"):
        _check_dict_host(rec, host, fork, versions, route_imports(host, route))
    if host == "edam" and fork_line(fork, "voc12/data.py", r"^import pyarrow") and _missing(versions["pyarrow"]):
        rec.add(env, "pyarrow", "fail", "voc12/data.py imports it", known_fix("No module named 'pyarrow'"))
    if host == "mctformer":
        if _missing(versions["timm"]):
            rec.add(env, "timm", "fail", f"models.py imports timm (pinned 0.4.12): {versions['timm']}",
                    known_fix(versions["timm"]) or known_fix("No module named 'timm'"))
        elif major_minor(versions["timm"]) >= (1, 0):
            rec.add(env, "timm 1.x", "warn", "timm.create_model passes pretrained_cfg to the entry point",
                    known_fix("unexpected keyword argument 'pretrained_cfg'") + "; " + known_fix("drop_block_rate"))
        if cuda == 0:
            rec.add(env, "CUDA", "info", "main.py needs --device cpu here")
    if major_minor(np.__version__) >= (2, 0):
        rec.add(env, "numpy 2", "info", known_fix("No module named 'numpy._core'"))


def _coco_split_rejected() -> bool:
    """Whether torchvision's ``CocoDetection.__getitem__`` rejects the numpy ints of IRN's ``split_dataset``."""
    try:
        from torchvision.datasets import CocoDetection
    except Exception:  # noqa: BLE001 - no usable torchvision: its own check reports it
        return False
    return "must be of type integer" in inspect.getsource(CocoDetection.__getitem__)


def _check_id_lists(rec: Recorder, fork: Path) -> None:
    """VOC: IRN's ``np.loadtxt`` of ids like ``2007_000032``."""
    line = fork_line(fork, "voc12/dataloader.py", r"=\s*np\.loadtxt\(.*int32")
    try:
        np.loadtxt(io.StringIO("2007_000032\n"), dtype=np.int32)
        parses = True
    except ValueError:
        parses = False
    if line and not parses:
        rec.add("environment", "id lists (np.loadtxt)", "fail",
                f"numpy {np.__version__} cannot parse '2007_000032' [{line}]", known_fix("could not convert string"))
    else:
        rec.add("environment", "id lists (np.loadtxt)", "ok",
                "the fork parses the ids" if not line else "numpy parses them")


def _check_resnet_host(rec: Recorder, fork: Path, versions: Dict[str, str], cuda: int, dataset: str) -> None:
    """IRN / AMN: ``np.loadtxt`` id lists (VOC) or ``split_dataset``'s indices (COCO), ``np.bool``,
    pydensecrf, chainercv, CUDA workers."""
    env = "environment"
    if dataset == "coco" and fork_line(fork, "mscoco/dataloader.py", r"CocoDetection"):
        line = fork_line(fork, "misc/torchutils.py", r"Subset\(dataset, np\.arange\((?!.*tolist\(\))")
        if line and _coco_split_rejected():
            rec.add(env, "split_dataset indices", "fail", f"torchvision {versions['torchvision']}: CocoDetection "
                    f"rejects numpy ints [{line}]", known_fix("Index must be of type integer"))
        else:
            rec.add(env, "split_dataset indices", "ok", "the split's indices reach CocoDetection as it takes them")
    elif dataset != "coco":
        _check_id_lists(rec, fork)
    line = fork_line(fork, "misc/pyutils.py", r"np\.bool\b")
    if line and major_minor(np.__version__) >= (1, 24):
        rec.add(env, "misc/pyutils.py np.bool", "fail",
                f"numpy {np.__version__}: run_sample.py fails at start-up [{line}]",
                known_fix("module 'numpy' has no attribute 'bool'"))
    if _missing(versions["pydensecrf"]) and fork_line(fork, "misc/imutils.py", r"^(import|from) pydensecrf"):
        rec.add(env, "pydensecrf", "fail", "misc/imutils.py imports it at the top (make_cam needs it)",
                known_fix("No module named 'pydensecrf'"))
    if _missing(versions["chainercv"]):
        rec.add(env, "chainercv", "warn", "the host's eval_cam / eval_amn_cam cannot run",
                known_fix("No module named 'chainercv'"))
    if cuda == 0:
        rec.add(env, "CUDA", "info", "make_cam / make_amn_cam spawn one worker per GPU: here zero, so patch() "
                                     "refuses; the run(args) route works on CPU")


#: Who imports each optional package the EDAM / MCTformer routes need.
IMPORTED_BY = {
    ("edam", "torchvision"): "infer_cls.py imports it", ("edam", "imageio"): "infer_cls.py imports it",
    ("edam", "pandas"): "eval.py imports it", ("mctformer", "torchvision"): "datasets.py and timm import it",
    ("mctformer", "pandas"): "evaluation.py imports it",
}


def _check_dict_host(rec: Recorder, host: str, fork: Path, versions: Dict[str, str], needed: Tuple[str, ...]) -> None:
    """EDAM / MCTformer: ``Image.CUBIC`` on Pillow 10, the packages the route imports, pydensecrf."""
    env = "environment"
    pillow = major_minor(versions["pillow"]) if not _missing(versions["pillow"]) else (0, 0)
    line = fork_line(fork, "voc12/data.py" if host == "edam" else "datasets.py", r"Image\.CUBIC")
    if line and pillow >= (10, 0):
        rec.add(env, "Image.CUBIC", "fail", f"pillow {versions['pillow']} [{line}]",
                known_fix("has no attribute 'CUBIC'"))
    for package in ("torchvision", "imageio", "pandas"):
        by = IMPORTED_BY.get((host, package))
        if by is None or not _missing(versions[package]):
            continue
        if package in needed:
            rec.add(env, package, "fail", f"{by}: {versions[package]}", known_fix(versions[package])
                    or known_fix(f"No module named '{package}'") or f"pip install {package}")
        else:
            rec.add(env, package, "info", f"not needed by this route ({by}): {versions[package]}")
    if _missing(versions["pydensecrf"]):
        rec.add(env, "pydensecrf", "warn", "CRF outputs (--out_crf / --out-crf) need it",
                known_fix("No module named 'pydensecrf'"))


__all__ = ["IMPORTED_BY", "PROBED_PACKAGES", "check_environment", "fork_line", "major_minor", "module_version",
           "route_imports"]
