"""Argument types shared by the ``lpcam`` commands: a bad value is a one-line usage error (exit 2)
before any work starts."""
from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def output_folder(text: str) -> Path:
    """argparse type: a folder to write into; an empty path (which would mean the current folder) or
    an existing file is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path would write into the current folder; name a folder")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


__all__ = ["output_folder", "positive_int"]
