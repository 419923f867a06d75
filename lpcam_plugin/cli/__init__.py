"""The ``lpcam`` command line: a thin dispatcher over subcommands defined next to the code they run.

Each subcommand module exposes ``register_cli(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code) as a default.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn, Optional, Sequence

from lpcam_plugin.core.version import __version__

#: Modules that contribute subcommands, in the order they appear in ``lpcam --help``.
SUBCOMMAND_MODULES = (
    "lpcam_plugin.cli.demo",
    "lpcam_plugin.cli.pretrain",
    "lpcam_plugin.cli.evaluate",
    "lpcam_plugin.cli.scaleout",
    "lpcam_plugin.cli.check_host",
)


#: Exceptions reported as a one-line error instead of a traceback (a command that cannot do what it was asked).
USER_ERRORS = (ValueError, OSError, RuntimeError, TypeError)
#: Exit status of a command that failed with one of :data:`USER_ERRORS` (argparse uses 2 for usage errors too).
ERROR_EXIT = 2
#: Environment variable that, set to anything but ``0``, shows the traceback of such failures.
DEBUG_ENV = "LPCAM_DEBUG"


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, ``lpcam <command>: error: <message>``, like
    the commands' own failures (exit status 2); ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(ERROR_EXIT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``lpcam`` parser with every subcommand registered (subparsers share its class)."""
    parser = OneLineErrorParser(prog="lpcam", description="LPCAM: local-prototype class activation maps.")
    parser.add_argument("--version", action="version", version=f"lpcam_plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    for subparser in {id(p): p for p in subparsers.choices.values()}.values():
        # also after the subcommand (``lpcam eval ... -v``); SUPPRESS keeps a count given before it
        subparser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                               help="more log output (-vv for debug and tracebacks)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``lpcam`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    A command that fails with one of :data:`USER_ERRORS` prints ``lpcam <command>: error:
    <message>`` on one line to stderr and returns :data:`ERROR_EXIT`; with ``-vv`` or the
    environment variable ``LPCAM_DEBUG=1`` the exception propagates with its traceback.
    A usage error (an unknown option, a value its type refuses) returns argparse's exit status 2
    after argparse's one-line message; ``--help`` and ``--version`` return 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as stop:  # a usage error (argparse printed it on one line), --help or --version
        return stop.code if isinstance(stop.code, int) else ERROR_EXIT
    level = logging.WARNING - 10 * min(int(args.verbose) + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        if args.verbose >= 2 or os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"lpcam {args.command}: error: {message}\n")
        return ERROR_EXIT
