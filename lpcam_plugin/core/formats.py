"""Host and package file formats: one module that every writer and reader shares.

=====================  ==========================================================  ====================
format                 content                                                     written by
=====================  ==========================================================  ====================
IRN / AMN CAM          pickled ``np.save`` of ``{"keys", "cam", "high_res"}``      IRN, AMN, our IRN/AMN adapters
class dict             pickled ``np.save`` of ``{class (0-based): (H, W) map}``    EDAM, MCTformer, our adapters
CRF dict               pickled ``{0: background, c + 1: map}`` (PSA's reader)       EDAM, MCTformer ``--out-crf``
map ``.npz``           ``keys (K,)`` int64 + ``high_res (K, H, W)`` float32,       ``lpcam infer``
                       no pickle
label PNG              palette or grey-scale ``(H, W)`` class indices              VOC, ``lpcam demo``
id list                one image per line, the id or a PSA/EDAM path line          the hosts' ``*.txt``
=====================  ==========================================================  ====================

Pickled host formats are read only with ``allow_pickle=True`` (reading a pickle can run code);
everything is written atomically (:func:`lpcam_plugin.core.io.atomic_write`).
"""
from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from lpcam_plugin.core.io import PathLike, atomic_write, save_npy_atomic

#: Suffixes that mark an id-list field as an image path (EDAM / PSA lines) rather than a bare id.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def check_keyed_maps(keys: Any, maps: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``keys`` as ``(K,)`` int64 0-based class ids and ``maps`` as a ``(K, H, W)`` array;
    ``ValueError`` / ``TypeError`` otherwise."""
    keys_arr = np.asarray(keys).reshape(-1)
    if keys_arr.size and not np.issubdtype(keys_arr.dtype, np.integer):
        raise TypeError(f"keys must be integer class ids, got dtype {keys_arr.dtype}")
    keys_arr = keys_arr.astype(np.int64)
    maps_arr = np.asarray(maps)
    if maps_arr.ndim != 3:
        raise ValueError(f"maps must have shape (K, H, W), got {maps_arr.shape}")
    if maps_arr.shape[0] != keys_arr.size:
        raise ValueError(f"{maps_arr.shape[0]} maps but {keys_arr.size} keys")
    if keys_arr.size and keys_arr.min() < 0:
        raise ValueError(f"keys must be 0-based foreground class ids (no background), got {keys_arr.tolist()}")
    return keys_arr, maps_arr


def _load_pickled(path: PathLike, allow_pickle: bool, what: str) -> Any:
    if not allow_pickle:
        raise ValueError(
            f"{path}: {what} files are pickled dicts; reading them can run arbitrary code, so pass "
            "allow_pickle=True (CLI: --allow-pickle) only for files you trust"
        )
    data = np.load(path, allow_pickle=True)
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        return data.item()
    return data


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors (IRN stores keys and cam as torch tensors)
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_irn_cam(path: PathLike, *, allow_pickle: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read an IRN / AMN CAM file (``np.save`` of ``{"keys", "cam", "high_res"}``).

    Returns ``(keys (K,) int64, high_res (K, H, W) float32)``. AMN files carry a background
    placeholder as channel 0 (``high_res`` has ``K + 1`` channels); it is dropped, as AMN's own
    consumers do. AMN's ``coco14`` steps write ``{"keys": empty}`` alone for an image without
    labels: that reads as no keys and ``(0, 0, 0)`` maps (all background at any size).
    """
    data = _load_pickled(path, allow_pickle, "IRN/AMN CAM")
    if isinstance(data, dict) and "high_res" not in data and "keys" in data and not len(data["keys"]):
        return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32)
    if not isinstance(data, dict) or "keys" not in data or "high_res" not in data:
        raise ValueError(f"{path}: not an IRN/AMN CAM file (expected a dict with 'keys' and 'high_res')")
    keys = _as_numpy(data["keys"]).astype(np.int64).reshape(-1)
    high_res = _as_numpy(data["high_res"]).astype(np.float32, copy=False)
    if high_res.ndim != 3:
        raise ValueError(f"{path}: high_res must be (K, H, W), got {high_res.shape}")
    if high_res.shape[0] == keys.size + 1:
        high_res = high_res[1:]
    elif high_res.shape[0] != keys.size:
        raise ValueError(f"{path}: high_res has {high_res.shape[0]} channels for {keys.size} keys")
    return keys, high_res


def read_class_dict(path: PathLike, *, allow_pickle: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read an EDAM / MCTformer CAM file (``np.save`` of ``{class (0-based int): (H, W) map}``).

    Returns ``(keys (K,) int64 ascending, maps (K, H, W) float32)``. CRF dicts (``{0: bg, c+1: ...}``)
    are a different format and are not accepted.
    """
    data = _load_pickled(path, allow_pickle, "class-dict CAM")
    if not isinstance(data, dict) or not all(isinstance(k, (int, np.integer)) for k in data):
        raise ValueError(f"{path}: not a class-dict CAM file (expected a dict {{int class: (H, W) map}})")
    keys = np.array(sorted(int(k) for k in data), dtype=np.int64)
    if keys.size == 0:
        raise ValueError(f"{path}: empty class dict; the map size is unknown")
    maps = np.stack([_as_numpy(data[int(k)]).astype(np.float32, copy=False) for k in keys])
    if maps.ndim != 3:
        raise ValueError(f"{path}: class maps must be (H, W), got {maps.shape[1:]}")
    return keys, maps


def read_map(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a native map file written by ``lpcam infer``: ``(keys (K,) int64, high_res (K, H, W) float32)``.

    The ``.npz`` holds plain arrays and is read without pickle.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, maps = data["keys"], data["high_res"]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not an LPCAM map file (.npz with 'keys' and 'high_res'): {error}") from error
    return check_keyed_maps(keys, maps)


def read_cam_file(path: PathLike, fmt: str = "auto", *, allow_pickle: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read one CAM file in format ``"irn"`` (IRN/AMN), ``"dict"`` (EDAM/MCTformer), ``"npz"``
    (``lpcam infer``) or ``"auto"`` (one of the two host ``.npy`` formats)."""
    if fmt == "irn":
        return read_irn_cam(path, allow_pickle=allow_pickle)
    if fmt == "dict":
        return read_class_dict(path, allow_pickle=allow_pickle)
    if fmt == "npz":
        return read_map(path)
    if fmt != "auto":
        raise ValueError(f"unknown CAM format {fmt!r}; expected 'irn', 'dict', 'npz' or 'auto'")
    data = _load_pickled(path, allow_pickle, "host CAM")
    if isinstance(data, dict) and "keys" in data:
        return read_irn_cam(path, allow_pickle=allow_pickle)
    return read_class_dict(path, allow_pickle=allow_pickle)


def read_cam_folder(folder: PathLike, ids: Sequence[str], fmt: str = "auto", *, allow_pickle: bool = False
                    ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The ``(keys, maps)`` of ``folder/<id>.npy`` (``<id>.npz`` for ``fmt="npz"``) for each id, in order,
    read lazily by :func:`read_cam_file`; ``FileNotFoundError`` naming a missing file before any is read."""
    folder = Path(folder)
    suffix = ".npz" if fmt == "npz" else ".npy"
    missing = [i for i in ids if not (folder / f"{i}{suffix}").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} CAM file(s) missing in {folder}, e.g. {missing[0]}{suffix}")
    return (read_cam_file(folder / f"{image_id}{suffix}", fmt, allow_pickle=allow_pickle) for image_id in ids)


def read_label_png(path: PathLike) -> np.ndarray:
    """Read a VOC-style label PNG (palette or grey-scale) as ``(H, W)`` int64 class indices."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path}: label PNGs must be palette or grey-scale, got mode {image.mode}")
        return np.asarray(image).astype(np.int64)


def read_id_list(path: PathLike) -> List[str]:
    """Image ids of a list file, one per non-blank line.

    Accepts plain id lists (IRN, MCTformer, ``lpcam infer``: ``2007_000032``) and EDAM/PSA lines
    (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/...``): the first field is the id, or the
    file stem when it is an image path. Raises ``ValueError`` on an empty list and on a repeated id
    (it would be written or scored twice).
    """
    ids = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        first = fields[0]
        ids.append(Path(first).stem if "/" in first or first.lower().endswith(IMAGE_SUFFIXES) else first)
    if not ids:
        raise ValueError(f"{path}: the list holds no image ids")
    check_unique(ids)
    return ids


def check_unique(ids: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first repeated id of an image list (it would be written or scored twice)."""
    counts = Counter(ids)
    repeated = [image_id for image_id, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"image id {repeated[0]!r} is listed {counts[repeated[0]]} times: the image list has "
                         f"duplicated ids, e.g. {repeated[:5]}; each image must appear once")


def write_irn_cam(path: PathLike, keys: torch.Tensor, cam: torch.Tensor, high_res: torch.Tensor) -> None:
    """Atomically ``np.save`` the IRN / AMN dict: ``keys`` torch int64 ``(K,)``, ``cam`` torch float32
    ``(K, h4, w4)`` (CPU), ``high_res`` numpy float32 ``(K, H, W)``, as the hosts' ``make_cam`` writes them."""
    save_npy_atomic(path, {"keys": keys.detach().cpu().to(torch.int64),
                           "cam": cam.detach().cpu().to(torch.float32).contiguous(),
                           "high_res": high_res.detach().cpu().to(torch.float32).numpy()},
                    allow_pickle=True)


def write_keys_only(path: PathLike) -> None:
    """Atomically ``np.save`` ``{"keys": empty torch int64}``: what AMN's ``coco14`` steps write for an
    image without labels (their consumers test ``'high_res' in``)."""
    save_npy_atomic(path, {"keys": torch.zeros(0, dtype=torch.int64)}, allow_pickle=True)


def write_class_dict(path: PathLike, data: Mapping[int, Any]) -> None:
    """Atomically ``np.save`` an EDAM / MCTformer dict ``{class: (H, W) float32}`` (pickled, as the hosts)."""
    save_npy_atomic(path, {int(k): np.asarray(v, dtype=np.float32) for k, v in data.items()}, allow_pickle=True)


def load_class_dict(path: PathLike, *, allow_pickle: bool = False) -> Dict[int, np.ndarray]:
    """Read a host dict (CAM or CRF) written with ``np.save`` as ``{int: (H, W) array}``; needs
    ``allow_pickle=True``. Unlike :func:`read_class_dict` it keeps CRF dicts' background key."""
    if not allow_pickle:
        raise ValueError(f"{path}: host CAM/CRF dicts are pickled; pass allow_pickle=True (CLI: --allow-pickle) "
                         "only for files you trust")
    data = np.load(path, allow_pickle=True)
    if not (isinstance(data, np.ndarray) and data.dtype == object and data.shape == ()):
        raise ValueError(f"{path}: not a pickled dict")
    data = data.item()
    if not isinstance(data, dict) or not data or not all(isinstance(k, (int, np.integer)) for k in data):
        raise ValueError(f"{path}: expected a non-empty dict {{int: (H, W) map}}")
    return {int(k): np.asarray(v) for k, v in data.items()}


def write_map(path: PathLike, classes: Sequence[int], maps: torch.Tensor) -> None:
    """Atomically write a map ``.npz`` (``lpcam infer``): ``keys (K,)`` int64 and ``high_res (K, H, W)`` float32."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, keys=np.asarray(classes, dtype=np.int64),
                     high_res=maps.detach().float().cpu().numpy())


def write_label_png(path: PathLike, mask: np.ndarray) -> None:
    """Atomically write an ``(H, W)`` uint8 label map as a grey-scale PNG (VOC's indices, 255 = ignore)."""
    from PIL import Image

    with atomic_write(path) as tmp:
        Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(tmp, format="PNG")


__all__ = [
    "check_keyed_maps",
    "check_unique",
    "load_class_dict",
    "read_cam_file",
    "read_cam_folder",
    "read_class_dict",
    "read_id_list",
    "read_irn_cam",
    "read_label_png",
    "read_map",
    "write_class_dict",
    "write_irn_cam",
    "write_label_png",
    "write_map",
]
