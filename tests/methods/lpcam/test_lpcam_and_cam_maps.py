"""Stage 4: the collapsed LPCAM map against a per-prototype reference loop, and its guards."""
import pytest
import torch
import torch.nn.functional as F

from lpcam_plugin import PrototypeBank, cam_map, lpcam_map


def reference_lpcam(features, prototypes, classes):
    """The reference: one cosine map per prototype, averaged, minus the context mean, relu, max-normalised."""
    out = []
    for c in classes:
        class_protos, context_protos = prototypes[c]
        sims = torch.stack([F.cosine_similarity(features, p[None, :, None, None], dim=1) for p in class_protos]).mean(0)
        if len(context_protos):
            sims = sims - torch.stack([F.cosine_similarity(features, q[None, :, None, None], dim=1)
                                       for q in context_protos]).mean(0)
        sims = torch.relu(sims)
        out.append(sims / (sims.amax(dim=(-2, -1), keepdim=True) + 1e-5))
    return torch.stack(out, dim=1)


def make_prototypes(generator, classes=4, dim=16, with_context=True):
    protos = {}
    for c in range(classes):
        p = torch.randn(int(torch.randint(1, 5, (1,), generator=generator)), dim, generator=generator)
        q_count = int(torch.randint(0, 4, (1,), generator=generator)) if with_context else 0
        q = torch.randn(q_count, dim, generator=generator)
        protos[c] = (p, q)
    return protos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collapsed_map_matches_per_prototype_loop(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 16, 7, 9, generator=g)
    prototypes = make_prototypes(g)
    classes = [0, 2, 3, 1]
    expected = reference_lpcam(features, prototypes, classes)
    got = lpcam_map(features, prototypes, classes)
    assert got.shape == (3, 4, 7, 9)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    bank = PrototypeBank({c: pq[0] for c, pq in prototypes.items()}, {c: pq[1] for c, pq in prototypes.items()})
    torch.testing.assert_close(lpcam_map(features, bank, classes), expected, atol=1e-5, rtol=1e-5)


def test_relu_applied_without_context_and_raw_maps_available():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 8, 5, 5, generator=g)  # signed, transformer-like features
    prototypes = {0: (torch.randn(2, 8, generator=g), torch.zeros(0, 8))}
    raw = lpcam_map(features, prototypes, [0], normalize=False)
    assert float(raw.min()) >= 0.0
    cos = torch.stack([F.cosine_similarity(features, p[None, :, None, None], dim=1) for p in prototypes[0][0]]).mean(0)
    assert bool((cos < 0).any())
    torch.testing.assert_close(raw[:, 0], torch.relu(cos), atol=1e-6, rtol=1e-5)


def test_zero_features_give_zero_not_nan():
    features = torch.zeros(1, 8, 4, 4)
    features[0, :, 0, 0] = 1.0
    prototypes = {0: (torch.ones(1, 8), torch.zeros(0, 8))}
    maps = lpcam_map(features, prototypes, [0])
    assert torch.isfinite(maps).all()
    assert float(maps[0, 0, 1, 1]) == 0.0 and float(maps[0, 0, 0, 0]) > 0.99


def test_all_zero_map_is_zero_not_nan():
    maps = lpcam_map(torch.zeros(1, 8, 3, 3), {0: (torch.ones(1, 8), torch.zeros(0, 8))}, [0])
    assert torch.equal(maps, torch.zeros_like(maps))


def test_half_precision_input_and_autocast_compute_in_float32():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 16, 6, 6, generator=g)
    prototypes = make_prototypes(g, classes=2)
    expected = lpcam_map(features, prototypes, [0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lpcam_map(features.bfloat16(), prototypes, [0, 1])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "NaN/Inf"),
    (float("inf"), "NaN/Inf"),
])
def test_non_finite_features_raise(bad, message):
    features = torch.ones(1, 4, 3, 3)
    features[0, 1, 2, 2] = bad
    with pytest.raises(ValueError, match=message):
        lpcam_map(features, {0: (torch.ones(1, 4), torch.zeros(0, 4))}, [0])
    with pytest.raises(ValueError, match=message):
        cam_map(features, torch.ones(1, 4))


def test_shape_dtype_and_dimension_errors():
    prototypes = {0: (torch.ones(1, 4), torch.zeros(0, 4))}
    with pytest.raises(ValueError, match=r"\(B, D, h, w\)"):
        lpcam_map(torch.ones(4, 3, 3), prototypes, [0])
    with pytest.raises(TypeError, match="floating-point"):
        lpcam_map(torch.ones(1, 4, 3, 3, dtype=torch.int64), prototypes, [0])
    with pytest.raises(ValueError, match="feature dimension mismatch"):
        lpcam_map(torch.ones(1, 5, 3, 3), prototypes, [0])
    with pytest.raises(ValueError, match="out of range"):
        lpcam_map(torch.ones(1, 4, 3, 3), prototypes, [3])
    with pytest.raises(ValueError, match="feature dimension mismatch"):
        cam_map(torch.ones(1, 5, 3, 3), torch.ones(2, 4))


def test_cam_map_is_relu_of_one_by_one_conv():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 6, 4, 5, generator=g)
    weight = torch.randn(3, 6, generator=g)
    expected = torch.relu(F.conv2d(features, weight[:, :, None, None]))
    torch.testing.assert_close(cam_map(features, weight, normalize=False), expected, atol=1e-5, rtol=1e-5)
    normalised = cam_map(features, weight, [2, 0])
    torch.testing.assert_close(normalised[:, 0],
                               expected[:, 2] / (expected[:, 2].amax(dim=(-2, -1), keepdim=True) + 1e-5))
