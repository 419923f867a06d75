"""Atomic file writing: a reader never sees a half-written file, an error never leaves one behind."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    The temporary file lives in the destination directory (same file system, so
    ``os.replace`` is atomic) and starts with ``.`` and ends in ``.tmp`` so that globbing
    for outputs never picks it up. On an exception it is removed and ``path`` is untouched.
    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666 & ~umask``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npy_atomic(path: PathLike, obj: Any, *, allow_pickle: bool = False) -> None:
    """``np.save(path, obj)`` through :func:`atomic_write`; ``path`` is used exactly as given.

    ``allow_pickle=True`` is only for host formats that are pickled dicts (IRN, AMN, EDAM,
    MCTformer ``.npy`` files); our own arrays are saved without pickle.
    """
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, obj, allow_pickle=allow_pickle)


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
