"""Scale-out *infer*: one LPCAM map file per image, sharded over ranks, resumable.

:func:`infer_distributed` (``lpcam infer``): rank 0 checks that the folder's ``manifest.json``
names the same producer (bank, scales, flip, fallback, package version; else it refuses unless
``overwrite``), records it, lists the images without a valid map and broadcasts the list;
pending image ``j`` goes to rank ``j % N``; each map is written atomically as ``<out>/<id>.npz``,
so a killed run leaves only complete files (and stray hidden ``.tmp`` files, removed by the
next run) and a rerun recomputes only missing or corrupt maps. Without a process group
everything runs in one process.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lpcam_plugin.core.formats import check_unique, read_map, write_map
from lpcam_plugin.core.io import PathLike, atomic_write
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.version import __version__
from lpcam_plugin.distributed.data import FeatureFn, collate_items
from lpcam_plugin.distributed.env import Comm, make_comm
from lpcam_plugin.methods.lpcam.estimator import LPCAM

logger = logging.getLogger(__name__)

#: Suffix of the per-image map files written by :func:`infer_distributed`.
MAP_SUFFIX = ".npz"
#: ``format`` field of the ``manifest.json`` written next to the maps.
MAPS_FORMAT = "lpcam_plugin.maps/1"
#: The file, next to the maps, that records their producer (:func:`map_producer`).
MANIFEST_NAME = "manifest.json"


@dataclass
class InferResult:
    """What :func:`infer_distributed` did.

    Attributes:
        written: ids whose maps this rank wrote.
        skipped: ids of the list whose valid map of the same producer was kept (all ranks).
        total: ids in the list.
        missing: ids without a map after the run (checked on rank 0 only; empty elsewhere).
    """

    written: List[str] = field(default_factory=list)
    skipped: int = 0
    total: int = 0
    missing: List[str] = field(default_factory=list)


def map_path(out_dir: PathLike, image_id: str) -> Path:
    """Where the map of ``image_id`` is written: ``<out_dir>/<id>.npz``."""
    return Path(out_dir) / f"{image_id}{MAP_SUFFIX}"


def image_maps(
    model: LPCAM,
    feature_fn: FeatureFn,
    image: torch.Tensor,
    classes: Sequence[int],
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fallback: str = "error",
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """LPCAM maps ``(K, H, W)`` of one image ``(3, H, W)`` for ``classes``, in [0, 1].

    Per scale the image is resized (bilinear), its features (plus those of its horizontal flip,
    flipped back, when ``flip``) give relu'd maps that are resized to ``(H, W)``; the scales are
    summed and each class map divided by its max + 1e-5 (the IRN convention; adapters
    reproduce each host's exact geometry).
    """
    height, width = image.shape[-2:]
    total = torch.zeros(len(classes), height, width, device=image.device)
    if not classes:
        return total
    with torch.inference_mode():
        for scale in scales:
            total += _scale_maps(model, feature_fn, image, classes, scale, flip, fallback, weight)
    return max_normalize(total)


def _scale_maps(model: LPCAM, feature_fn: FeatureFn, image: torch.Tensor, classes: Sequence[int], scale: float,
                flip: bool, fallback: str, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Relu'd maps ``(K, H, W)`` of one scale, resized back to the image size."""
    height, width = image.shape[-2:]
    x = image[None]
    if scale != 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    features = feature_fn(x)
    if flip:
        features = features + feature_fn(x.flip(-1)).flip(-1)
    maps = model(features, list(classes), normalize=False, fallback=fallback, weight=weight)
    return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)[0]


def _remove_stale_temps(out_dir: Path, names: set) -> int:
    """Delete ``.<name>.<random>.tmp`` files that :func:`~lpcam_plugin.core.io.atomic_write` left for ``names``."""
    removed = 0
    for entry in os.scandir(out_dir):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            target = entry.name[1:-4].rsplit(".", 1)[0]
            if target in names:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                removed += 1
    return removed


def map_producer(model: LPCAM, *, scales: Sequence[float] = (1.0,), flip: bool = False, fallback: str = "error",
                 weight: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """What the maps of :func:`infer_distributed` depend on, as recorded in ``manifest.json``.

    The bank's :meth:`~lpcam_plugin.methods.lpcam.bank.PrototypeBank.checksum` (prototypes and config), the scales,
    the flip, the fallback (with a sha256 of the ``(C, D)`` fallback weight when ``fallback="cam"``) and
    the package version. A rerun resumes only into a folder whose maps have the same producer.
    """
    if model.bank_ is None:
        raise ValueError("the model is not fitted; load a bank with LPCAM.from_bank(PrototypeBank.load(path))")
    fallback_weight = (weight if weight is not None else model.weight_) if fallback == "cam" else None
    weight_sha256 = None
    if fallback_weight is not None:
        array = np.ascontiguousarray(fallback_weight.detach().float().cpu().numpy())
        weight_sha256 = hashlib.sha256(f"{array.shape}|".encode() + array.tobytes()).hexdigest()
    producer = {"method": "LPCAM", "bank_sha256": model.bank_.checksum(), "config": model.bank_.config,
                "scales": [float(s) for s in scales], "flip": bool(flip), "fallback": fallback,
                "fallback_weight_sha256": weight_sha256, "lpcam_plugin": __version__}
    return json.loads(json.dumps(producer))


def _read_manifest(out_dir: Path) -> Optional[Dict[str, Any]]:
    """The folder's ``manifest.json`` (None when there is none); ``ValueError`` when it is unreadable."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}); pass overwrite=True (--overwrite) to rewrite the maps") \
            from error
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object; pass overwrite=True (--overwrite) to rewrite the maps")
    return manifest


def _refusal(out_dir: Path, ids: Sequence[str], producer: Dict[str, Any]) -> Optional[str]:
    """Why maps of ``producer`` must not be added to ``out_dir`` without overwriting, or None."""
    hint = "pass overwrite=True (--overwrite) to rewrite them, or write to another folder"
    try:
        manifest = _read_manifest(out_dir)
    except ValueError as error:
        return str(error)
    if manifest is None:
        existing = sum(map_path(out_dir, i).is_file() for i in ids)
        if existing:
            return (f"{out_dir} holds {existing} map file(s) but no {MANIFEST_NAME}, so what made them is unknown; "
                    f"{hint}")
        return None
    previous = manifest.get("producer")
    previous = previous if isinstance(previous, dict) else {}
    changed = [key for key in producer if previous.get(key) != producer[key]]
    if changed:
        return f"{out_dir} holds maps made with a different {', '.join(changed)} (see its {MANIFEST_NAME}); {hint}"
    return None


def _map_is_valid(path: Path, expected_keys: Optional[np.ndarray]) -> bool:
    """Whether ``path`` is a complete map file: readable, ``(K, H, W)`` float32 in [0, 1], keys as expected."""
    try:
        keys, maps = read_map(path)
    except ValueError:
        return False
    if maps.dtype != np.float32 or (maps.size and not (np.isfinite(maps).all() and 0 <= maps.min()
                                                       and maps.max() <= 1)):
        return False
    return expected_keys is None or np.array_equal(keys, expected_keys)


def _plan(ids: Sequence[str], out_dir: Path, producer: Dict[str, Any], overwrite: bool,
          labels: Optional[np.ndarray]) -> Tuple[torch.Tensor, str]:
    """Rank 0: ``(pending (N,) uint8, refusal message or "")``; writes ``manifest.json`` unless refused."""
    mask = torch.ones(len(ids), dtype=torch.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = _remove_stale_temps(out_dir, {map_path(out_dir, i).name for i in ids})
    if removed:
        logger.warning("removed %d unfinished temporary file(s) left by an interrupted run in %s", removed, out_dir)
    if not overwrite:
        refusal = _refusal(out_dir, ids, producer)
        if refusal:
            return mask, refusal
        invalid = 0
        for j, image_id in enumerate(ids):
            path = map_path(out_dir, image_id)
            if path.is_file():
                expected = None if labels is None else np.flatnonzero(labels[j] > 0)
                valid = _map_is_valid(path, expected)
                mask[j] = 0 if valid else 1
                invalid += not valid
        if invalid:
            logger.warning("%d existing map file(s) in %s are corrupt or do not match the labels; recomputing them",
                           invalid, out_dir)
    return mask, ""


def _broadcast_plan(comm: Comm, mask: torch.Tensor, refusal: str) -> Tuple[torch.Tensor, str]:
    """Send rank 0's pending mask and refusal message to every rank (so all shard the same list, or all stop)."""
    if not comm.active:
        return mask, refusal
    src = comm.global_rank(0)
    encoded = torch.tensor(list(refusal.encode("utf-8")), dtype=torch.uint8)
    length = torch.tensor([encoded.numel()], dtype=torch.int64)
    dist.broadcast(length, src=src, group=comm.group)
    if not comm.is_main:
        encoded = torch.zeros(int(length), dtype=torch.uint8)
    if int(length):
        dist.broadcast(encoded, src=src, group=comm.group)
    dist.broadcast(mask, src=src, group=comm.group)
    return mask, bytes(encoded.tolist()).decode("utf-8")


def _dataset_labels(dataset: Any, count: int) -> Optional[np.ndarray]:
    """The dataset's ``(N, C)`` ``labels`` attribute when it has one aligned with its ids, else None."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return labels if labels.ndim == 2 and labels.shape[0] == count else None


def infer_distributed(
    model: LPCAM,
    feature_fn: FeatureFn,
    dataset: "torch.utils.data.Dataset",
    out_dir: PathLike,
    *,
    group: Optional[Any] = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fallback: str = "error",
    weight: Optional[torch.Tensor] = None,
    device: Union[str, torch.device, None] = None,
    num_workers: int = 0,
    overwrite: bool = False,
    manifest: Optional[Dict[str, Any]] = None,
    progress: Optional[bool] = None,
) -> InferResult:
    """Write the LPCAM maps of every image of ``dataset`` to ``out_dir``, sharded over ranks (collective).

    Each image's present classes (its labels) get a map; the file ``<out_dir>/<id>.npz`` holds
    ``keys`` (K,) int64 ascending 0-based classes and ``high_res`` (K, H, W) float32 in [0, 1]
    at the input image size (read with :func:`~lpcam_plugin.core.formats.read_map`). Before any map is written, rank 0
    writes ``manifest.json`` recording the producer (:func:`map_producer`).

    A rerun with the same producer resumes: valid existing files are kept, corrupt ones (unreadable,
    wrong keys for the image's labels, values outside [0, 1]) are recomputed. Into a folder
    whose maps come from another producer (another bank, scales, flip, fallback or package
    version), or that holds maps but no manifest, it writes nothing and raises ``ValueError``
    unless ``overwrite``, which rewrites every map.

    Args:
        model: a fitted :class:`LPCAM` (e.g. ``LPCAM.from_bank(PrototypeBank.load(path))``).
        feature_fn: ``images (B, 3, H, W) -> features (B, D, h, w)``.
        dataset: items ``(id, image (3, H, W), labels (C,))`` with an ``ids`` attribute listing
            every id (the same on every rank, no duplicates); an ``(N, C)`` ``labels``
            attribute, when present, is used to check the keys of existing files.
        out_dir: output folder (shared by all ranks).
        scales, flip, fallback, weight: see :func:`image_maps`.
        device: where ``feature_fn`` and the maps run (default: CPU).
        overwrite: rewrite every map, whatever the folder holds.
        manifest: extra JSON facts for ``manifest.json``.

    Returns:
        :class:`InferResult`. Raises ``RuntimeError`` on rank 0 if any id has no file at the end.
    """
    ids = getattr(dataset, "ids", None)
    if ids is None:
        raise TypeError("dataset must have an `ids` attribute listing every image id")
    ids = [str(i) for i in ids]
    check_unique(ids)
    producer = map_producer(model, scales=scales, flip=flip, fallback=fallback, weight=weight)
    comm = make_comm(group)
    out_dir = Path(out_dir)
    device = torch.device(device or "cpu")
    weight_dev = None if weight is None else weight.to(device)
    mask, refusal = torch.zeros(len(ids), dtype=torch.uint8), ""
    if comm.is_main:
        mask, refusal = _plan(ids, out_dir, producer, overwrite, _dataset_labels(dataset, len(ids)))
        if not refusal:
            _write_manifest(out_dir, producer, len(ids), comm.world_size, manifest)
    mask, refusal = _broadcast_plan(comm, mask, refusal)
    if refusal:
        raise ValueError(refusal)
    todo = torch.nonzero(mask).flatten().tolist()
    mine = todo[comm.rank::comm.world_size]
    result = InferResult(skipped=len(ids) - len(todo), total=len(ids))
    logger.info("rank %d/%d: %d of %d images to write (%d already done)",
                comm.rank, comm.world_size, len(mine), len(ids), result.skipped)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, mine), batch_size=1, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_items)
    for items in progress_bar(loader, progress=progress, desc="LPCAM maps", total=len(loader),
                              position=comm.rank if comm.active else None):
        for image_id, image, labels in items:
            classes = torch.nonzero(labels > 0).flatten().tolist()
            maps = image_maps(model, feature_fn, image.to(device), classes, scales=scales, flip=flip,
                              fallback=fallback, weight=weight_dev)
            write_map(map_path(out_dir, image_id), classes, maps)
            result.written.append(image_id)
    comm.barrier()
    if comm.is_main:
        result.missing = [i for i in ids if not map_path(out_dir, i).is_file()]
        if result.missing:
            raise RuntimeError(f"{len(result.missing)} image(s) have no map in {out_dir}, e.g. {result.missing[:5]}")
    return result


def _write_manifest(out_dir: Path, producer: Dict[str, Any], count: int, world_size: int,
                    extra: Optional[Dict[str, Any]]) -> None:
    manifest = {
        **(extra or {}),
        "format": MAPS_FORMAT,
        "files": f"<id>{MAP_SUFFIX}",
        "arrays": {"keys": "(K,) int64, 0-based classes present in the image, ascending",
                   "high_res": "(K, H, W) float32 in [0, 1] at the input image size"},
        "num_images": count,
        "world_size": world_size,
        "torch": torch.__version__,
        "producer": producer,
    }
    with atomic_write(out_dir / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))


__all__ = ["InferResult", "MANIFEST_NAME", "MAPS_FORMAT", "MAP_SUFFIX", "image_maps", "infer_distributed", "map_path",
           "map_producer", "read_map"]
