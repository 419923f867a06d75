"""The parent side of ``lpcam check-host``: write the host data, start the driver, collect the checklist."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from lpcam_plugin.check_host.checklist import Item, read_items
from lpcam_plugin.check_host.coco_data import write_coco14_dataset, write_coco_dataset, write_mctformer_coco_dataset
from lpcam_plugin.check_host.fixes import known_fix
from lpcam_plugin.check_host.host_data import NUM_FIT, label_key, write_dataset
from lpcam_plugin.check_host.routes import DEFAULT_FCAM_SOURCE, DEFAULT_METHOD, resolve

#: The module the driver subprocess runs (``python -m ... --driver CONFIG``).
DRIVER_MODULE = "lpcam_plugin.check_host"


def package_root() -> Path:
    """The folder holding the ``lpcam_plugin`` package, put on the host interpreter's ``PYTHONPATH``
    (``--python`` may name an environment where the plug-in is not installed)."""
    return Path(__file__).resolve().parents[2]


def host_pythonpath(fork: Path, caller: str = "") -> str:
    """The driver's ``PYTHONPATH``: the fork, this package, then the caller's own entries (kept, so
    that an environment prepared with ``PYTHONPATH`` is the one checked)."""
    entries = [str(fork), str(package_root())] + [entry for entry in caller.split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys(entries))


def check_host(host: str, fork: Path, *, route: Optional[str] = None, python: Optional[str] = None,
               workdir: Optional[Path] = None, timeout: float = 1800.0, method: str = DEFAULT_METHOD,
               fcam_source: str = DEFAULT_FCAM_SOURCE, train_cam: str = "random",
               dataset: str = "voc") -> Tuple[List[Item], int]:
    """Run the check; return the checklist items and the exit code (0: the plug-in works there).

    ``method``: what the IRN / AMN stage-1 step writes (``--lpcam_method``: ``lpcam``, ``cam``,
    ``recam`` — one epoch of the ReCAM step on the tiny set —, ``recam+lpcam`` or ``fcam`` — one
    epoch of the F-CAM decoder over ``fcam_source``'s maps, then its full-resolution maps); the other
    hosts and AMN's route "b" write LPCAM only (:func:`lpcam_plugin.check_host.routes.resolve`).
    ``train_cam``: the stage-1 weights are random (``"random"``) or trained on the tiny set by the
    RCM+MAM ``train_cam`` adapter (``"pss"``). ``dataset``: ``"coco"`` writes a tiny COCO in the layout
    of the IRN-based COCO pipeline (IRN) or of AMN's ``coco14`` branch (AMN)
    (:mod:`lpcam_plugin.check_host.coco_data`) and runs their steps.

    Raises:
        ValueError: the host, route or read-out options do not fit together.
        FileNotFoundError: ``fork`` is not a folder.
        subprocess.TimeoutExpired: the driver ran longer than ``timeout`` seconds.
    """
    options = resolve(host, route, method, fcam_source, train_cam, dataset)
    fork = Path(fork).resolve()
    if not fork.is_dir():
        raise FileNotFoundError(f"{fork}: no such fork folder")
    with contextlib.ExitStack() as stack:
        if workdir is not None:
            work = workdir
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lpcam_check_")))
        work.mkdir(parents=True, exist_ok=True)
        config = {"host": host, "route": options.route, "method": options.method, "fcam_source": options.fcam_source,
                  "train_cam": options.train_cam, "fork": str(fork), "dataset": options.dataset,
                  "results": str(work / "results.jsonl")}
        if options.dataset == "coco" and host == "amn":
            root, ids, coco_labels = write_coco14_dataset(work)
            config.update(coco14_root=str(root), ids=ids, labels=coco_labels)
        elif options.dataset == "coco":
            writer = write_mctformer_coco_dataset if host == "mctformer" else write_coco_dataset
            root, ids, coco_labels = writer(work)
            config.update(mscoco_root=str(root), ids=ids, labels=coco_labels)
        else:
            root, ids = write_dataset(work, host)
            labels = np.load(work / "voc12" / "cls_labels.npy", allow_pickle=True).item()
            config.update(voc12_root=str(root), ids=ids, num_fit=NUM_FIT,
                          labels={n: labels[label_key(host, n)].tolist() for n in ids})
        (work / "check_config.json").write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": host_pythonpath(fork, os.environ.get("PYTHONPATH", "")),
               "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        proc = subprocess.run([python or sys.executable, "-m", DRIVER_MODULE, "--driver",
                               str(work / "check_config.json")], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        items = read_items(work / "results.jsonl")
        if proc.returncode not in (0, 1) or not items:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            items.append(Item("steps", "driver", "fail", f"exit code {proc.returncode}: {tail[0][:400]}",
                              known_fix(tail[0])))
    code = 1 if any(item.status == "fail" for item in items) else 0
    return items, code


__all__ = ["DRIVER_MODULE", "check_host", "host_pythonpath", "package_root"]
