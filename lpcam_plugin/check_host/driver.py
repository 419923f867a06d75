"""The driver subprocess of ``lpcam check-host``: environment probe, then the host family's route.

``python -m lpcam_plugin.check_host --driver CONFIG.json`` runs :func:`run_driver` in the host's
interpreter, with the fork first on ``sys.path`` and the work folder as working directory. The
checklist items go, one JSON line each, to the config's ``results`` file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict

from lpcam_plugin.check_host.checklist import Recorder, StepFailed
from lpcam_plugin.check_host.coco_driver import drive_amn_coco14, drive_irn_coco
from lpcam_plugin.check_host.edam_driver import drive_edam
from lpcam_plugin.check_host.environment import check_environment
from lpcam_plugin.check_host.mctformer_driver import drive_mctformer
from lpcam_plugin.check_host.resnet_driver import drive_resnet

#: The driver of each host: ``(recorder, host, route, config)`` (``dataset`` coco: IRN's COCO pipeline of the
#: LPCAM / ReCAM reference, AMN's coco14 branch).
DRIVERS: Dict[str, Callable[[Recorder, str, str, Dict[str, Any]], None]] = {
    "irn": lambda rec, host, route, config: (drive_irn_coco(rec, config) if config.get("dataset") == "coco"
                                             else drive_resnet(rec, host, route, config)),
    "amn": lambda rec, host, route, config: (drive_amn_coco14(rec, route, config) if config.get("dataset") == "coco"
                                             else drive_resnet(rec, host, route, config)),
    "edam": lambda rec, host, route, config: drive_edam(rec, route, config),
    "mctformer": lambda rec, host, route, config: drive_mctformer(rec, route, config),
}


def run_driver(config_path: Path) -> int:
    """Subprocess entry: environment checks and the host's route; items go to ``config['results']``.

    Returns 1 when a step failed, else 0.
    """
    config = json.loads(config_path.read_text())
    fork = Path(config["fork"])
    rec = Recorder(Path(config["results"]), fork)
    host, route = config["host"], config["route"]
    logging.basicConfig(level=logging.WARNING)
    check_environment(rec, host, fork, route, config.get("dataset", "voc"))
    try:
        DRIVERS[host](rec, host, route, config)
    except StepFailed as failed:
        rec.add("steps", "remaining steps", "skip", f"not run: they need '{failed}'")
    return 1 if rec.failed else 0


__all__ = ["DRIVERS", "run_driver"]
