"""The ``lpcam`` command line: a thin dispatcher over subcommands defined next to the code they run.

Each subcommand module exposes ``register_cli(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code) as a default.
"""
from __future__ import annotations

import argparse
import importlib
import logging
from typing import Optional, Sequence

from lpcam_plugin import __version__

#: Modules that contribute subcommands, in the order they appear in ``lpcam --help``.
SUBCOMMAND_MODULES = (
    "lpcam_plugin.benchmark.demo",
    "lpcam_plugin.core.evaluate",
    "lpcam_plugin.distributed.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``lpcam`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="lpcam", description="LPCAM: local-prototype class activation maps.")
    parser.add_argument("--version", action="version", version=f"lpcam_plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``lpcam`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    level = logging.WARNING - 10 * min(int(args.verbose) + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)
