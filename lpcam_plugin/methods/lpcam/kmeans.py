"""Spherical K-means with raw-mean centres (docs/design/lpcam-spec.md, Stage 2).

Points are assigned to the centre of highest **cosine** similarity; each centre is the
**arithmetic mean of its members' raw features** (not re-normalised), because the raw centre
is what the classifier scores when prototypes are selected. Unlike the reference code this
implementation is seeded (k-means++ on the cosine distance), capped (``max_iter``), has a
tolerance, optional restarts, never builds an ``(N, K, D)`` temporary, re-seeds empty clusters
and runs on the device of its input.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from lpcam_plugin.core.checks import check_finite, check_matrix

logger = logging.getLogger(__name__)

_EPS = 1e-12
_CHUNK_ROWS = 65_536


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes:
        centers: ``(K, D)`` float32, the raw mean of each cluster's members.
        labels: ``(N,)`` int64, the cluster of each point.
        n_iter: assignment steps run (of the best restart).
        objective: mean cosine similarity of the points to their centre (higher is better).
        converged: whether the assignments stopped changing (or the centres moved by at most
            ``tol``) within ``max_iter`` steps.
    """

    centers: torch.Tensor
    labels: torch.Tensor
    n_iter: int
    objective: float
    converged: bool


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    n_init: int = 1,
    backend: str = "torch",
) -> KMeansResult:
    """Cluster the rows of ``x`` ``(N, D)`` into ``k`` groups by cosine similarity.

    Args:
        x: ``(N, D)`` floating-point features (float16 is computed in float32).
        k: number of clusters, ``1 <= k <= N``.
        seed: seed of the k-means++ initialisation (restart ``r`` uses ``seed + r``).
        max_iter: most assignment steps per restart.
        tol: stop when the centres move by at most this, relative to their size
            (``|C_t - C_{t-1}|^2 / |C_{t-1}|^2``); 0 waits for the assignments to stop changing.
        n_init: restarts; the one with the highest objective is returned.
        backend: ``"torch"`` (built in, runs on ``x.device``), ``"sklearn"`` (Euclidean
            K-means on the L2-normalised rows) or ``"faiss"`` (spherical ``faiss.Kmeans``;
            ``pip install lpcam_plugin[faiss]``). The other backends only choose the
            assignment; centres are always the raw member means.

    Returns:
        A :class:`KMeansResult`; the same inputs and seed give the same result bit for bit on CPU.
    """
    check_matrix(x, "x")
    check_finite(x, "x")
    n = x.shape[0]
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if n < k:
        raise ValueError(f"cannot form k={k} clusters from N={n} points (N < K)")
    if max_iter < 1 or n_init < 1 or tol < 0:
        raise ValueError(f"need max_iter >= 1, n_init >= 1, tol >= 0; got {max_iter}, {n_init}, {tol}")
    x = x.float() if x.dtype != torch.float64 else x
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(_EPS)
    if backend == "torch":
        runs = [_torch_kmeans(x, norms, k, seed + r, max_iter, tol) for r in range(n_init)]
    elif backend == "sklearn":
        runs = [_sklearn_kmeans(x, norms, k, seed + r, max_iter, tol) for r in range(n_init)]
    elif backend == "faiss":
        runs = [_faiss_kmeans(x, norms, k, seed + r, max_iter) for r in range(n_init)]
    else:
        raise ValueError(f"unknown K-means backend {backend!r}; choose 'torch', 'sklearn' or 'faiss'")
    return max(runs, key=lambda run: run.objective)


def _unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ``(K, D)`` scaled to unit L2 norm (zero rows stay zero)."""
    return rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(_EPS)


def _assign(x: torch.Tensor, norms: torch.Tensor, centers: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best cosine similarity ``(N,)`` and its centre index ``(N,)``, computed in row chunks."""
    unit = _unit_rows(centers)
    best = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        sims = (x[start:stop] @ unit.T) / norms[start:stop, None]
        best[start:stop], labels[start:stop] = sims.max(dim=1)
    return best, labels


def _member_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw member means ``(K, D)`` and member counts ``(K,)`` (one one-hot matmul, deterministic)."""
    one_hot = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    one_hot[torch.arange(x.shape[0], device=x.device), labels] = 1.0
    sums = one_hot.T @ x
    counts = one_hot.sum(dim=0)
    return sums / counts.clamp_min(1.0)[:, None], counts


def _reseed_empty(x: torch.Tensor, best: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                  centers: torch.Tensor) -> int:
    """Give each empty cluster the worst-fitting point that is not a singleton; return how many."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return 0
    order = torch.argsort(best, stable=True).tolist()
    taken = 0
    for index in order:
        if taken == len(empty):
            break
        owner = int(labels[index])
        if counts[owner] <= 1:
            continue
        cluster = empty[taken]
        counts[owner] -= 1
        counts[cluster] = 1
        labels[index] = cluster
        best[index] = 1.0
        centers[cluster] = x[index]
        taken += 1
    return taken


def _cosine_distance(x: torch.Tensor, norms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every row of ``x`` ``(N, D)`` and each of ``points`` ``(m, D)``: ``(N, m)``."""
    point_norms = torch.linalg.vector_norm(points, dim=1).clamp_min(_EPS)
    return 1.0 - (x @ points.T) / (norms[:, None] * point_norms[None, :])


def _kmeans_pp(x: torch.Tensor, norms: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding on the cosine distance ``1 - cos``; returns ``(K, D)`` initial centres.

    As scikit-learn's: each step samples ``2 + ln K`` candidates with probability proportional
    to their distance to the nearest chosen centre and keeps the one that lowers the total
    distance most.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    closest = _cosine_distance(x, norms, x[first:first + 1])[:, 0].clamp_min_(0.0)
    for _ in range(1, k):
        weights = closest.double().cpu()
        weights[chosen] = 0.0
        if float(weights.sum()) <= 0.0:
            weights = torch.ones(n, dtype=torch.float64)
            weights[chosen] = 0.0
        candidates = torch.multinomial(weights, min(trials, int((weights > 0).sum())), generator=generator)
        distances = torch.minimum(closest[:, None],
                                  _cosine_distance(x, norms, x[candidates.to(x.device)]).clamp_min_(0.0))
        best = int(torch.argmin(distances.sum(dim=0)))
        chosen.append(int(candidates[best]))
        closest = distances[:, best].contiguous()
    return x[chosen].clone()


def _torch_kmeans(x: torch.Tensor, norms: torch.Tensor, k: int, seed: int, max_iter: int, tol: float) -> KMeansResult:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    centers = _kmeans_pp(x, norms, k, generator)
    labels: Optional[torch.Tensor] = None
    converged = False
    n_iter = 0
    for iteration in range(1, max_iter + 1):
        n_iter = iteration
        best, new_labels = _assign(x, norms, centers)
        stable = labels is not None and torch.equal(new_labels, labels)
        labels = new_labels
        previous = centers
        centers, counts = _member_means(x, labels, k)
        if _reseed_empty(x, best, labels, counts, centers):
            centers, counts = _member_means(x, labels, k)
            continue
        shift = float(((centers - previous) ** 2).sum() / (previous ** 2).sum().clamp_min(_EPS))
        if stable or shift <= tol:
            converged = True
            break
    assert labels is not None
    if not converged:
        logger.debug("K-means (k=%d, N=%d) stopped at max_iter=%d without converging", k, x.shape[0], max_iter)
    return _result(x, norms, labels, centers, n_iter, converged)


def _means_without_empty(x: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Raw member means ``(K, D)`` of ``labels`` (updated in place when a cluster is empty)."""
    centers, counts = _member_means(x, labels, k)
    if bool((counts == 0).any()):
        best, _ = _assign(x, norms, centers)
        _reseed_empty(x, best, labels, counts, centers)
        centers, _ = _member_means(x, labels, k)
    return centers


def _result(x: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, n_iter: int,
            converged: bool) -> KMeansResult:
    """Package ``centers`` and ``labels`` with the mean cosine of each point to its own centre."""
    unit = _unit_rows(centers)
    total = 0.0
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        sims = (x[start:stop] @ unit.T).gather(1, labels[start:stop, None])[:, 0] / norms[start:stop]
        total += float(sims.double().sum())
    return KMeansResult(centers.float(), labels, n_iter, total / x.shape[0], converged)


def _unit_numpy(x: torch.Tensor, norms: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((x / norms[:, None]).detach().cpu().numpy().astype(np.float32))


def _sklearn_kmeans(x: torch.Tensor, norms: torch.Tensor, k: int, seed: int, max_iter: int, tol: float) -> KMeansResult:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, tol=tol, random_state=seed)
    labels = model.fit_predict(_unit_numpy(x, norms))
    labels_t = torch.as_tensor(labels, dtype=torch.int64, device=x.device)
    centers = _means_without_empty(x, norms, labels_t, k)
    return _result(x, norms, labels_t, centers, int(model.n_iter_), int(model.n_iter_) < max_iter)


def _faiss_kmeans(x: torch.Tensor, norms: torch.Tensor, k: int, seed: int, max_iter: int) -> KMeansResult:
    try:
        import faiss
    except Exception as error:  # a broken wheel raises more than ImportError
        raise ImportError("the faiss K-means backend needs faiss: pip install lpcam_plugin[faiss]") from error
    unit = _unit_numpy(x, norms)
    model = faiss.Kmeans(unit.shape[1], k, niter=max_iter, seed=seed, spherical=True,
                         verbose=False, min_points_per_centroid=1, max_points_per_centroid=unit.shape[0])
    model.train(unit)
    _, labels = model.index.search(unit, 1)
    labels_t = torch.as_tensor(labels[:, 0].astype(np.int64), device=x.device)
    centers = _means_without_empty(x, norms, labels_t, k)
    return _result(x, norms, labels_t, centers, max_iter, False)
