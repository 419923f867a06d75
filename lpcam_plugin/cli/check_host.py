"""``lpcam check-host``: run the adapter's route in a host fork on tiny synthetic data and print a checklist.

The check itself is :func:`lpcam_plugin.check_host.check_host`; the ``--method`` and
``--fcam-source`` choices come from :mod:`lpcam_plugin.check_host.routes` (the read-out
registry :mod:`lpcam_plugin.methods.readouts` and what the adapters declare).
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from lpcam_plugin.check_host import check_host, format_checklist
from lpcam_plugin.check_host.routes import (
    DATASETS,
    DEFAULT_FCAM_SOURCE,
    DEFAULT_METHOD,
    ROUTES,
    TRAIN_CAM,
    fcam_sources,
    methods,
)

logger = logging.getLogger(__name__)


def _run_check_host(args: argparse.Namespace) -> int:
    route = args.route or ROUTES[args.host][0]
    try:
        items, code = check_host(args.host, args.fork, route=route, python=args.python, workdir=args.keep,
                                 timeout=args.timeout, method=args.method, fcam_source=args.fcam_source,
                                 train_cam=args.train_cam, dataset=args.dataset)
    except (ValueError, FileNotFoundError, subprocess.TimeoutExpired) as error:
        logger.error("check-host: %s", error)
        return 2
    what = f"{route}, method {args.method}" + (f", {args.dataset}" if args.dataset != DATASETS[0] else "")
    sys.stdout.write(format_checklist(args.host, args.fork, what, items, code) + "\n")
    return code


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam check-host`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "check-host", help="check that the plug-in works in a host fork (tiny synthetic data, CPU, offline)",
        description="Run the adapter's documented route end to end in a host fork on a tiny synthetic VOC set "
                    "(random weights, CPU, nothing downloaded), then the host's own next step on the files; "
                    "print a checklist and exit 1 if the plug-in does not work there.")
    parser.add_argument("host", choices=sorted(ROUTES))
    parser.add_argument("fork", type=Path, help="the host checkout (its root, where run_sample.py / main.py is)")
    parser.add_argument("--route", default=None,
                        help="; ".join(f"{h}: {', '.join(r)} (default {r[0]})" for h, r in ROUTES.items()))
    parser.add_argument("--python", default=None, help="interpreter of the host's environment (default: this one)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the check is stopped")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=methods(),
                        help="what the CAM step writes: irn / amn --route a any read-out; edam --route loop and "
                             "mctformer lpcam or fcam (default: %(default)s)")
    parser.add_argument("--fcam-source", dest="fcam_source", default=DEFAULT_FCAM_SOURCE, choices=fcam_sources(),
                        help="--method fcam: the read-out whose maps train the F-CAM decoder (edam, mctformer: cam "
                             "or lpcam) (default: %(default)s)")
    parser.add_argument("--train-cam", dest="train_cam", default="random", choices=TRAIN_CAM,
                        help="irn / amn stage 1: random weights, or train them with the RCM+MAM train_cam "
                             "adapter (pixelsup_train.patch() + the unchanged step); edam: train the classifier one "
                             "step with edam_pixelsup_train first (default: %(default)s)")
    parser.add_argument("--dataset", default=DATASETS[0], choices=DATASETS,
                        help="the tiny set and the host pipeline checked: voc, or coco (irn: the LPCAM / ReCAM "
                             "reference's IRN COCO pipeline, run_sample_coco.py) (default: %(default)s)")
    parser.set_defaults(func=_run_check_host)
