"""Scale-out *fit*: sharded feature collection and the exact pool merge onto each class's owner rank.

Call :func:`fit_distributed` (or :func:`fit_prototypes_distributed` after your own ``partial_fit``
loop) from a script that has initialised a process group, or run ``torchrun --nproc_per_node N
-m lpcam_plugin fit ...``; without a process group everything runs in one process. Rank r collects
images ``r, r + N, r + 2N, ...`` into its own bounded pools; pools are merged exactly onto their
owner rank (class ``c`` on rank ``c % N``; see :mod:`lpcam_plugin.distributed.pools`), K-means runs
once per class on its owner, the prototypes are all-gathered so every rank holds the same bank,
and rank 0 saves it. Because sampling keys are a function of (seed, image id, class, position),
N ranks draw exactly the samples one rank draws.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.distributed.data import FeatureFn, collate_items, stack_by_size
from lpcam_plugin.distributed.env import make_comm
from lpcam_plugin.distributed.pools import build_bank
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM

logger = logging.getLogger(__name__)


def shard_indices(n: int, rank: int, world_size: int) -> List[int]:
    """Indices ``rank, rank + world_size, ...`` below ``n``: disjoint over ranks, covering ``range(n)``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(range(rank, n, world_size))


def collect_features(
    estimator: LPCAM,
    feature_fn: FeatureFn,
    dataset: "torch.utils.data.Dataset",
    *,
    weight: Optional[torch.Tensor] = None,
    indices: Optional[Sequence[int]] = None,
    batch_size: int = 1,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: Optional[bool] = None,
    position: Optional[int] = None,
) -> LPCAM:
    """Stream ``dataset[indices]`` through ``feature_fn`` into ``estimator.partial_fit`` (one process).

    Args:
        estimator: the :class:`LPCAM` whose pools grow.
        feature_fn: ``images (B, 3, H, W) -> features (B, D, h, w)`` (e.g. a model + FeatureHook).
        dataset: items ``(id, image (3, H, W), labels (C,))``; ids seed the sampling keys.
        weight: ``(C, D)`` classifier weight for the single-scale baseline CAM.
        indices: the items to use (default: all).
        batch_size: images per DataLoader batch; images of different sizes are run separately.
        num_workers: DataLoader workers.
        device: where ``feature_fn`` runs (default: CPU).
    """
    device = torch.device(device or "cpu")
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate_items)
    weight_dev = None if weight is None else weight.to(device)
    for items in progress_bar(loader, progress=progress, desc="LPCAM features", total=len(loader), position=position):
        for ids, images, labels in stack_by_size(items):
            features = feature_fn(images.to(device))
            estimator.partial_fit(features, labels, weight=weight_dev, ids=ids)
    return estimator


def fit_prototypes_distributed(
    estimator: LPCAM,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    group: Optional[Any] = None,
    metadata: Optional[Dict[str, Any]] = None,
    progress: Optional[bool] = None,
) -> PrototypeBank:
    """Collective ``fit_prototypes``: call it on every rank after each rank's ``partial_fit`` loop.

    Pools are merged exactly onto the owner of each class (``c % world_size``), K-means runs
    once per class, and every rank gets the same :class:`PrototypeBank` (also set as
    ``estimator.bank_``). Afterwards each rank's estimator keeps only the merged pools of the
    classes it owns. Without a process group this is ``estimator.fit_prototypes``.
    """
    comm = make_comm(group)
    return build_bank(estimator, comm, weight, bias, metadata=metadata, progress=progress)


def fit_distributed(
    estimator: LPCAM,
    feature_fn: FeatureFn,
    dataset: "torch.utils.data.Dataset",
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    group: Optional[Any] = None,
    bank_path: Optional[PathLike] = None,
    batch_size: int = 1,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    metadata: Optional[Dict[str, Any]] = None,
    progress: Optional[bool] = None,
) -> PrototypeBank:
    """Fit LPCAM prototypes on ``dataset`` with every rank of ``group`` (collective).

    Rank r collects the items ``r, r + N, ...`` (:func:`collect_features`), then
    :func:`fit_prototypes_distributed` merges and fits. Rank 0 saves the bank to ``bank_path``
    (atomically); every rank returns the same bank once the file exists.

    Args:
        estimator: a fresh :class:`LPCAM` with the same config on every rank.
        feature_fn: ``images (B, 3, H, W) -> features (B, D, h, w)``.
        dataset: items ``(id, image (3, H, W), labels (C,))``, the same list on every rank.
        weight, bias: ``(C, D)`` classifier weight and optional ``(C,)`` bias.
        group: process group (default: the world, or a single process when uninitialised).
        bank_path: where rank 0 writes the bank.
        batch_size, num_workers, device: see :func:`collect_features`.
        metadata: extra JSON facts stored in the bank.
    """
    comm = make_comm(group)
    indices = shard_indices(len(dataset), comm.rank, comm.world_size)
    logger.info("rank %d/%d: collecting %d of %d images", comm.rank, comm.world_size, len(indices), len(dataset))
    collect_features(estimator, feature_fn, dataset, weight=weight, indices=indices, batch_size=batch_size,
                     num_workers=num_workers, device=device, progress=progress,
                     position=comm.rank if comm.active else None)
    bank = build_bank(estimator, comm, weight.detach().cpu(), None if bias is None else bias.detach().cpu(),
                      metadata=metadata, progress=progress)
    if bank_path is not None and comm.is_main:
        bank.save(bank_path)
        logger.info("saved prototype bank to %s", bank_path)
    comm.barrier()
    return bank


__all__ = ["collect_features", "fit_distributed", "fit_prototypes_distributed", "shard_indices"]
