"""Exact cross-process merge of bottom-k feature pools, and per-class prototype fitting on their owners.

Class ``c`` is *owned* by group rank ``c % world_size``. For each pool (class, foreground or
context) the ranks all-gather their kept keys (``cap`` float64 at most per rank), so every rank
computes the same global bottom-``cap`` selection; because each rank's keys are sorted, its share
of that selection is a prefix of its sorted rows. Only those rows travel, point to point, to the
owner, which therefore receives at most ``cap`` rows per pool: the merged pool is exactly the
pool one process would have collected from all images (:mod:`lpcam_plugin.methods.lpcam.pools`).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.distributed.env import Comm, all_gather_ints, all_gather_rows
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.lpcam.pools import FeaturePool

logger = logging.getLogger(__name__)

_KINDS = ("fg", "ctx")


def owned_classes(num_classes: int, comm: Comm) -> List[int]:
    """Classes whose K-means runs on this rank: ``c % world_size == rank``."""
    return [c for c in range(num_classes) if c % comm.world_size == comm.rank]


def _pools_of(estimator: LPCAM, kind: str) -> Dict[int, FeaturePool]:
    return estimator.foreground_pools_ if kind == "fg" else estimator.context_pools_


def _agree(estimator: LPCAM, comm: Comm) -> Optional[int]:
    """Check that all ranks use the same C and pool_cap; return their common D (None if nothing was collected)."""
    facts = all_gather_ints(comm, [estimator.num_classes, estimator.config.pool_cap, estimator.feature_dim_ or -1])
    for index, name in ((0, "num_classes"), (1, "pool_cap")):
        values = sorted({f[index] for f in facts})
        if len(values) > 1:
            raise ValueError(f"ranks use different {name} values: {values}")
    dims = sorted({f[2] for f in facts} - {-1})
    if len(dims) > 1:
        raise ValueError(f"ranks collected features of different dimensions D: {dims}")
    return dims[0] if dims else None


def merge_pools_across_ranks(estimator: LPCAM, comm: Comm) -> Dict[str, Dict[int, int]]:
    """Collective: move every pool to its owner as the exact bottom-``cap`` of all ranks' pools.

    Afterwards ``estimator.foreground_pools_`` / ``context_pools_`` hold, on each rank, the
    merged pools of the classes it owns and nothing else (spilled files of dropped pools are
    deleted). Every rank must call this with estimators of the same ``num_classes`` and config.

    Returns:
        ``{"fg": {c: merged size}, "ctx": {...}}`` for every class that has a pool on any rank
        (the same on all ranks).
    """
    dim = _agree(estimator, comm)
    sizes: Dict[str, Dict[int, int]] = {"fg": {}, "ctx": {}}
    if dim is None:
        return sizes
    estimator.feature_dim_ = dim
    cap = estimator.config.pool_cap
    num_classes = estimator.num_classes
    # (present, count_seen) of every pool on every rank, in one collective.
    table = []
    for kind in _KINDS:
        pools = _pools_of(estimator, kind)
        for c in range(num_classes):
            pool = pools.get(c)
            table += [0, 0] if pool is None else [1, pool.count_seen]
    gathered = [torch.tensor(t).view(len(_KINDS), num_classes, 2) for t in all_gather_ints(comm, table)]
    for k, kind in enumerate(_KINDS):
        pools = _pools_of(estimator, kind)
        for c in range(num_classes):
            present = [bool(g[k, c, 0]) for g in gathered]
            if not any(present):
                continue
            seen = sum(int(g[k, c, 1]) for g in gathered)
            merged, size = _merge_one(estimator, comm, pools.get(c), c, kind, dim, cap)
            old = pools.pop(c, None)
            if merged is not None:
                merged.count_seen = seen
                pools[c] = merged
            _drop_spill(old)
            sizes[kind][c] = size
    return sizes


def _merge_one(estimator: LPCAM, comm: Comm, pool: Optional[FeaturePool], c: int, kind: str,
               dim: int, cap: int) -> Tuple[Optional[FeaturePool], int]:
    """Merge one pool onto its owner.

    Returns ``(merged pool, merged size)`` on the owner and ``(None, merged size)`` elsewhere.
    """
    keys = pool.sorted_keys() if pool is not None else torch.empty(0, dtype=torch.float64)
    all_keys = all_gather_rows(comm, keys, pad_value=float("inf"))
    flat = torch.cat(all_keys)
    origin = torch.cat([torch.full((k.shape[0],), r, dtype=torch.int64) for r, k in enumerate(all_keys)])
    chosen = torch.argsort(flat, stable=True)[:cap]
    shares = torch.bincount(origin[chosen], minlength=comm.world_size).tolist()
    owner = c % comm.world_size
    mine = shares[comm.rank]
    if comm.rank != owner:
        if mine:
            assert pool is not None
            dist.send(pool.sorted_rows()[:mine].contiguous(), dst=comm.global_rank(owner), group=comm.group)
        return None, sum(shares)
    dtype = _storage_dtype(estimator)
    parts_rows, parts_keys, requests = [], [], []
    for r, share in enumerate(shares):
        if not share:
            continue
        if r == comm.rank:
            assert pool is not None
            rows = pool.sorted_rows()[:share]
        else:
            rows = torch.empty(share, dim, dtype=dtype)
            requests.append(dist.irecv(rows, src=comm.global_rank(r), group=comm.group))
        parts_rows.append(rows)
        parts_keys.append(all_keys[r][:share])
    for request in requests:
        request.wait()
    merged = FeaturePool(dim, cap, dtype=estimator.config.storage_dtype,
                         spill_path=estimator.pool_spill_path(f"merged_{kind}", c))
    if parts_rows:
        merged.add(torch.cat(parts_rows), torch.cat(parts_keys))
    return merged, sum(shares)


def _storage_dtype(estimator: LPCAM) -> torch.dtype:
    return torch.float16 if estimator.config.storage_dtype == "float16" else torch.float32


def _drop_spill(pool: Optional[FeaturePool]) -> None:
    """Delete the memory-mapped file of a pool that was replaced or handed to its owner."""
    if pool is not None and pool.spill_path is not None:
        path = pool.spill_path
        del pool
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def fit_owned_and_share(estimator: LPCAM, comm: Comm, weight: torch.Tensor, bias: Optional[torch.Tensor],
                        *, progress: Optional[bool] = None
                        ) -> Tuple[Dict[int, torch.Tensor], Dict[int, torch.Tensor]]:
    """K-means + selection for the owned classes, then all-gather every class's prototypes.

    Returns ``({c: P_c (P, D)}, {c: Q_c (Q, D)})`` for all C classes, identical on every rank.
    """
    num_classes = estimator.num_classes
    dim = int(weight.shape[1])
    counts = [0] * (2 * num_classes)
    rows: List[torch.Tensor] = []
    owned = owned_classes(num_classes, comm)
    for c in progress_bar(owned, progress=progress, desc=f"LPCAM prototypes (rank {comm.rank})",
                          position=comm.rank if comm.active else None):
        class_p, context_q = estimator.fit_class_prototypes(c, weight, bias)
        class_p = class_p.detach().float().cpu().reshape(-1, dim)
        context_q = context_q.detach().float().cpu().reshape(-1, dim)
        counts[2 * c], counts[2 * c + 1] = class_p.shape[0], context_q.shape[0]
        rows += [class_p, context_q]
    local = torch.cat(rows) if rows else torch.zeros(0, dim)
    all_rows = all_gather_rows(comm, local)
    all_counts = all_gather_ints(comm, counts)
    prototypes: Dict[int, torch.Tensor] = {}
    context: Dict[int, torch.Tensor] = {}
    for r in range(comm.world_size):
        offset = 0
        for c in range(r, num_classes, comm.world_size):
            n_p, n_q = all_counts[r][2 * c], all_counts[r][2 * c + 1]
            prototypes[c] = all_rows[r][offset:offset + n_p].clone()
            context[c] = all_rows[r][offset + n_p:offset + n_p + n_q].clone()
            offset += n_p + n_q
    return prototypes, context


def build_bank(estimator: LPCAM, comm: Comm, weight: torch.Tensor, bias: Optional[torch.Tensor],
               *, metadata: Optional[Dict[str, Any]] = None, progress: Optional[bool] = None) -> PrototypeBank:
    """Collective: merge pools, fit each class once on its owner, and set the same bank on every rank.

    The bank's metadata (image count, merged pool sizes) equals what a single process would record.
    Without several processes this is ``estimator.fit_prototypes``.
    """
    if not comm.active:
        estimator.fit_prototypes(weight, bias, metadata=metadata)
        assert estimator.bank_ is not None
        return estimator.bank_
    n_images = sum(n[0] for n in all_gather_ints(comm, [estimator.n_images_seen_]))
    sizes = merge_pools_across_ranks(estimator, comm)
    weight = estimator.check_weight(weight)
    prototypes, context = fit_owned_and_share(estimator, comm, weight, bias, progress=progress)
    estimator.n_images_seen_ = n_images
    info = {"n_images": n_images, "foreground_pool_sizes": dict(sorted(sizes["fg"].items())),
            "context_pool_sizes": dict(sorted(sizes["ctx"].items()))}
    estimator.set_bank(prototypes, context, weight, metadata={**info, **(metadata or {})})
    assert estimator.bank_ is not None
    return estimator.bank_
