"""Stage 2: K-means invariants, determinism, guards and the optional backends."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lpcam_plugin import kmeans


def cosine(x, centres):
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cn = centres / centres.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return xn @ cn.T


def blobs(seed, n=300, d=8, k=4):
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(k, d, generator=g)
    which = torch.randint(0, k, (n,), generator=g)
    scale = torch.rand(n, 1, generator=g) * 3 + 0.5
    return (directions[which] + 0.3 * torch.randn(n, d, generator=g)) * scale


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), n=st.integers(6, 200), d=st.integers(2, 10))
def test_converged_assignment_and_raw_mean_centres(seed, k, n, d):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) + 0.5
    result = kmeans(x, k, seed=seed, max_iter=500, tol=0.0)
    assert result.converged
    assert result.centers.shape == (k, d) and result.labels.shape == (n,)
    assert torch.isfinite(result.centers).all()
    for j in range(k):
        members = x[result.labels == j]
        assert len(members) > 0, "no cluster may stay empty"
        torch.testing.assert_close(result.centers[j], members.mean(0), atol=1e-5, rtol=1e-5)
    sims = cosine(x, result.centers)
    own = sims[torch.arange(n), result.labels]
    assert bool((own >= sims.max(dim=1).values - 1e-5).all()), "a point is not with its most similar centre"
    torch.testing.assert_close(torch.tensor(result.objective), own.mean(), atol=1e-5, rtol=1e-5)


def test_same_seed_same_result_bit_for_bit():
    x = blobs(1, n=2000, d=32, k=6)
    a = kmeans(x, 6, seed=3)
    b = kmeans(x, 6, seed=3)
    assert torch.equal(a.centers, b.centers) and torch.equal(a.labels, b.labels)


def test_restarts_keep_the_best_objective():
    x = blobs(2, n=600, d=16, k=5)
    single = [kmeans(x, 5, seed=s).objective for s in range(4)]
    assert kmeans(x, 5, seed=0, n_init=4).objective == pytest.approx(max(single))


def test_iteration_cap_is_respected():
    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))
    result = kmeans(x, 12, max_iter=2, tol=0.0)
    assert result.n_iter == 2 and not result.converged


def test_duplicate_points_do_not_produce_nan_or_empty_clusters():
    x = torch.cat([torch.ones(10, 4), -torch.ones(10, 4), torch.tensor([[1.0, 0, 0, 0]])])
    result = kmeans(x, 3, seed=0)
    assert torch.isfinite(result.centers).all()
    assert torch.bincount(result.labels, minlength=3).min() >= 1


def test_zero_rows_do_not_produce_nan():
    x = torch.cat([torch.zeros(5, 4), torch.randn(20, 4, generator=torch.Generator().manual_seed(0))])
    result = kmeans(x, 3)
    assert torch.isfinite(result.centers).all() and torch.isfinite(torch.tensor(result.objective))


@pytest.mark.parametrize("x, k, message", [
    (torch.ones(3, 4), 4, r"N < K"),
    (torch.ones(3, 4), 0, "positive int"),
    (torch.ones(3), 1, r"\(N, D\)"),
    (torch.tensor([[1.0, float("nan")]] * 3), 2, "NaN"),
    (torch.ones(3, 4, dtype=torch.int32), 2, "floating-point"),
])
def test_bad_input(x, k, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kmeans(x, k)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        kmeans(torch.randn(10, 3), 2, backend="nope")


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_optional_backends_give_raw_mean_centres_and_similar_objective(backend):
    if backend == "faiss":
        try:
            import faiss  # noqa: F401
        except Exception:
            pytest.skip("faiss extra not installed")
    x = blobs(4, n=1500, d=16, k=4)
    ours = kmeans(x, 4, seed=0)
    other = kmeans(x, 4, seed=0, backend=backend, n_init=5)  # faiss seeds randomly, not k-means++
    for j in range(4):
        torch.testing.assert_close(other.centers[j], x[other.labels == j].mean(0), atol=1e-5, rtol=1e-5)
    assert abs(other.objective - ours.objective) < 0.01
