"""A pickle-free, checksummed, atomically written single-file archive of named arrays.

The file is a zip (``.npz``-style: ``np.load`` reads it) of uncompressed ``.npy`` members: one
``<name>.npy`` per array, plus ``__header__.npy``, a ``uint8`` array holding UTF-8 JSON::

    {"format": format_name, "format_version": version, "header": {...}, "sha256": "..."}

The sha256 covers the format name, the version, the user header and every array (name, dtype,
shape and bytes), so any edit after writing is detected. Reading never unpickles and checks
every member's size against its ``.npy`` header before reading its data: members are stored
uncompressed, so a member can be no larger than the file, and a crafted file cannot make the
reader allocate more than the file's size (plus the header) however large the shape it declares.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import IO, Any, Dict, Mapping, Tuple

import numpy as np

from lpcam_plugin.core.io import PathLike, atomic_write

#: Name of the member holding the JSON header (as a ``uint8`` ``.npy`` array).
HEADER_MEMBER = "__header__.npy"
#: Largest JSON header accepted when reading, in bytes.
MAX_HEADER_BYTES = 64 << 20
#: dtype kinds an archive may hold: bool, signed/unsigned int, float, complex.
_ARRAY_KINDS = "biufc"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def write_archive(path: PathLike, format_name: str, version: int, header: Mapping[str, Any],
                  arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``header`` to ``path`` atomically.

    Args:
        path: destination file (conventionally ``.npz``); replaced in one step.
        format_name: what the file is, e.g. ``"lpcam_plugin.PrototypeBank"``.
        version: the format version (an int >= 1), checked by :func:`read_archive`.
        header: JSON-serialisable facts (no NaN/Inf).
        arrays: ``{name: ndarray}`` of bool/int/float/complex arrays of any shape; names are
            non-empty, contain no ``/`` and are not ``"__header__"``.

    Raises ``TypeError`` for a header that is not JSON-serialisable or a non-numeric array and
    ``ValueError`` for a bad name or version; ``path`` is then left untouched.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"archive version must be an int >= 1, got {version!r}")
    checked = {name: _checked_array(name, value) for name, value in arrays.items()}
    try:
        # as it will read back (int dict keys become strings, tuples lists), so the checksum matches
        header = json.loads(_canonical_json(dict(header)))
    except (TypeError, ValueError) as error:
        raise TypeError(f"the {format_name} header must be JSON-serialisable (no NaN/Inf): {error}") from error
    outer = {"format": format_name, "format_version": version, "header": header,
             "sha256": _checksum(format_name, version, header, checked)}
    encoded = np.frombuffer(json.dumps(outer, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in [(HEADER_MEMBER[:-4], encoded), *sorted(checked.items())]:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, array, allow_pickle=False)


def read_archive(path: PathLike, format_name: str, max_version: int) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read an archive written by :func:`write_archive`; return ``(header, arrays)``.

    Args:
        path: the file.
        format_name: the format expected; another format is refused.
        max_version: the newest format version the caller understands; newer files are refused.

    Returns:
        The user header (a dict) and ``{name: ndarray}`` (writable, native to the file's dtypes).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: one line naming ``path`` and the problem: not an archive (e.g. a ``.npy``
            file, a directory), another format, a newer version, a truncated or corrupt file,
            an implausible member size, or a checksum mismatch (modified after writing).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a {format_name} file")
    file_size = path.stat().st_size
    with open(path, "rb") as raw:
        if raw.read(4) != _ZIP_MAGIC:
            raise ValueError(f"{path}: {_describe(path)}, not a {format_name} archive")
        try:
            with zipfile.ZipFile(raw) as archive:
                members = _members(archive, path, format_name, file_size)
                outer = _read_header(archive, members.pop(HEADER_MEMBER), path, format_name)
                _check_format(outer, path, format_name, max_version)
                arrays = {name[:-4]: _read_member(archive, info, path, format_name) for name, info in members.items()}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
            raise ValueError(f"{path}: truncated or corrupt {format_name} archive ({error})") from error
    header = outer.get("header")
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the {format_name} header is not a JSON object")
    if _checksum(format_name, outer["format_version"], header, arrays) != outer.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the {format_name} archive was modified after it was written")
    return header, arrays


def _checked_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(name, str) or not name or "/" in name or name == HEADER_MEMBER[:-4]:
        raise ValueError(f"bad archive array name {name!r} (non-empty, no '/', not {HEADER_MEMBER[:-4]!r})")
    if not isinstance(value, np.ndarray):
        raise TypeError(f"archive array {name!r} must be a numpy.ndarray, got {type(value).__name__}")
    if value.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"archive array {name!r} has dtype {value.dtype}; only bool/int/float/complex are stored")
    return _c_order(value)


def _c_order(array: np.ndarray) -> np.ndarray:
    """``array`` in C order (copied only when it is not; 0-d arrays stay 0-d)."""
    return array if array.flags.c_contiguous else array.copy(order="C")


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _checksum(format_name: str, version: Any, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of the format, version, header and every array's name, dtype, shape and bytes."""
    digest = hashlib.sha256(_canonical_json([format_name, version, dict(header)]))
    for name in sorted(arrays):
        array = _c_order(arrays[name])
        digest.update(f"|{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _describe(path: Path) -> str:
    """What a file that is not a zip archive looks like, for the error message."""
    with open(path, "rb") as handle:
        start = handle.read(8)
    if not start:
        return "is an empty file"
    if start.startswith(_NPY_MAGIC):
        return "is a single .npy array file"
    if start.startswith(b"PK"):
        return "is a damaged zip/.npz file"
    return "is not a zip/.npz archive (truncated, corrupt or another kind of file)"


def _members(archive: zipfile.ZipFile, path: Path, format_name: str, file_size: int) -> Dict[str, zipfile.ZipInfo]:
    """The archive's members by name, after checks that need no decompression."""
    members: Dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in members:
            raise ValueError(f"{path}: member {info.filename!r} appears twice; not a {format_name} archive")
        if not info.filename.endswith(".npy") or "/" in info.filename:
            raise ValueError(f"{path}: unexpected member {info.filename!r}; not a {format_name} archive")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: member {info.filename!r} is compressed; {format_name} archives store members "
                             "uncompressed (refusing to decompress)")
        if info.file_size > file_size:
            raise ValueError(f"{path}: member {info.filename!r} claims {info.file_size} bytes in a file of "
                             f"{file_size} bytes; truncated or crafted")
        members[info.filename] = info
    if HEADER_MEMBER not in members:
        raise ValueError(f"{path}: a zip/.npz archive without a {format_name} header (written by another tool or "
                         "an older lpcam_plugin; write it again with this version)")
    return members


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, format_name: str) -> Dict[str, Any]:
    if info.file_size > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: {format_name} header of {info.file_size} bytes exceeds {MAX_HEADER_BYTES}")
    encoded = _read_member(archive, info, path, format_name)
    if encoded.dtype != np.uint8 or encoded.ndim != 1:
        raise ValueError(f"{path}: the {format_name} header must be a 1-D uint8 array, got {encoded.dtype} "
                         f"{encoded.shape}")
    try:
        outer = json.loads(encoded.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: the {format_name} header is not valid JSON ({error})") from error
    if not isinstance(outer, dict):
        raise ValueError(f"{path}: the {format_name} header is not a JSON object")
    return outer


def _check_format(outer: Mapping[str, Any], path: Path, format_name: str, max_version: int) -> None:
    if outer.get("format") != format_name:
        raise ValueError(f"{path}: a {outer.get('format')!r} archive, not a {format_name} archive")
    version = outer.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: {format_name} archive has an invalid format_version {version!r}")
    if version > max_version:
        raise ValueError(f"{path}: {format_name} format version {version} is newer than this lpcam_plugin reads "
                         f"(<= {max_version}); upgrade lpcam_plugin")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, format_name: str) -> np.ndarray:
    """One ``.npy`` member; its declared shape must account for exactly its stored size."""
    with archive.open(info) as handle:
        dtype, shape, fortran, offset = _npy_header(handle, info, path)
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"{path}: member {info.filename!r} has dtype {dtype}; {format_name} archives hold "
                             "no objects (never unpickled)")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise ValueError(f"{path}: member {info.filename!r} declares shape {shape} {dtype} ({nbytes} bytes) "
                             f"but stores {info.file_size - offset} bytes; truncated or crafted")
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        filled = 0
        while filled < nbytes:
            count = handle.readinto(view[filled:])
            if not count:
                raise ValueError(f"{path}: member {info.filename!r} is truncated")
            filled += count
        if handle.read(1):  # also makes zipfile verify the member's CRC-32
            raise ValueError(f"{path}: member {info.filename!r} is longer than its header says")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _npy_header(handle: IO[bytes], info: zipfile.ZipInfo, path: Path) -> Tuple[np.dtype, Tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data offset)`` of a ``.npy`` stream."""
    try:
        major, _ = np.lib.format.read_magic(handle)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {major}")
    except ValueError as error:
        raise ValueError(f"{path}: member {info.filename!r} is not a valid .npy array ({error})") from error
    return np.dtype(dtype), tuple(int(n) for n in shape), bool(fortran), int(handle.tell())


__all__ = ["HEADER_MEMBER", "read_archive", "write_archive"]
