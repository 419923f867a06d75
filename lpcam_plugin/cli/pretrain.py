"""``lpcam pretrain``: pretrain the benchmark's backbones on the part-library corpus
(:func:`lpcam_plugin.benchmark.pretraining.run_pretraining`) and compare them with the shipped ones."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

from lpcam_plugin.benchmark.config import NETWORK_PRESETS
from lpcam_plugin.benchmark.pretraining import WEIGHTS_DIR, manifest, run_pretraining
from lpcam_plugin.cli.arguments import output_folder

logger = logging.getLogger(__name__)

#: The networks that have a backbone to pretrain (a +pss network shares its plain one's).
BACKBONES = {name: network for name, network in NETWORK_PRESETS.items() if not network.pixelsup}


def pretrain_backbones(names: Sequence[str], out: Path, progress: bool) -> Dict[str, Dict[str, Any]]:
    """Pretrain the named networks' backbones into ``out``; log, per network, whether the file is the
    shipped one byte for byte. Returns the written manifest."""
    networks = [(BACKBONES[name].kind, dict(BACKBONES[name].options)) for name in names]
    entries = run_pretraining(networks, out, progress=None if progress else False)
    shipped = manifest()
    for kind, _ in networks:
        entry, reference = entries[kind], shipped.get(kind)
        if out.resolve() == WEIGHTS_DIR.resolve():
            verdict = "written as the shipped file"
        elif reference is None:
            verdict = "no shipped file to compare with"
        elif reference["sha256"] == entry["sha256"]:
            verdict = "the shipped file, byte for byte"
        else:
            verdict = f"differs from the shipped file (shipped: held-out accuracy {reference['held_out_accuracy']:.3f})"
        logger.warning("%s: held-out accuracy %.3f, sample %.3f; %s", kind, entry["held_out_accuracy"],
                       entry["sample_accuracy"], verdict)
    return entries


def _run_cli(args: argparse.Namespace) -> int:
    entries = pretrain_backbones(args.networks, args.out, not args.no_progress)
    sys.stdout.write("".join(f"{kind}: {entry['file']} sha256 {entry['sha256']} held-out accuracy "
                             f"{entry['held_out_accuracy']:.3f}\n" for kind, entry in entries.items()))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam pretrain`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the benchmark's backbones on the part-library corpus (about 20 min on 2 cores)",
        description="Generate the 64-class pretraining corpus (seed 1234), pretrain each network's backbone on it and "
        "write <kind>.npz and manifest.json to --out; `--out lpcam_plugin/benchmark/weights` rewrites the shipped "
        "ones.")
    parser.add_argument("--out", type=output_folder, default=Path("lpcam-pretrained"),
                        help="folder for the backbones (default: lpcam-pretrained)")
    parser.add_argument("--networks", nargs="+", choices=list(BACKBONES), default=list(BACKBONES),
                        help="backbones to pretrain (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_cli)
