"""The LPCAM estimator: bounded collection, determinism, order independence, guards, maps."""
import random
import warnings

import pytest
import torch

from lpcam_plugin import LPCAM, LPCAMConfig, PrototypeBank, cam_map, lpcam_map

C, D = 4, 16


def synthetic_batches(seed, images=24, batch=4, size=6):
    """Features with a class-specific direction inside a random box, and multi-hot labels."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(C, D, generator=g).abs()
    out = []
    for start in range(0, images, batch):
        feats = torch.rand(batch, D, size, size, generator=g) * 0.2
        labels = torch.zeros(batch, C)
        for b in range(batch):
            for c in torch.randperm(C, generator=g)[:2].tolist():
                labels[b, c] = 1
                y, x = torch.randint(0, size - 2, (2,), generator=g).tolist()
                feats[b, :, y:y + 3, x:x + 3] += directions[c][:, None, None]
        ids = [f"img_{i:04d}" for i in range(start, start + batch)]
        out.append((feats, labels, ids))
    return out, directions


def fitted(data_seed=0, order=None, **overrides):
    batches, directions = synthetic_batches(data_seed)
    weight = directions * 2
    model = LPCAM(C, num_clusters=3, pool_cap=60, **overrides)
    items = [(f[i], y[i], n[i]) for f, y, n in batches for i in range(len(n))]
    if order is not None:
        random.Random(order).shuffle(items)
    for start in range(0, len(items), 5):
        chunk = items[start:start + 5]
        model.partial_fit(torch.stack([c[0] for c in chunk]), torch.stack([c[1] for c in chunk]), weight=weight,
                          ids=[c[2] for c in chunk])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit_prototypes(weight)
    return model, batches, weight


def bank_equal(a: PrototypeBank, b: PrototypeBank):
    return all(torch.equal(a.class_prototypes[c], b.class_prototypes[c])
               and torch.equal(a.context_prototypes[c], b.context_prototypes[c]) for c in range(a.num_classes))


def test_same_seed_same_bank_and_maps_bit_for_bit():
    a, batches, _ = fitted()
    b, _, _ = fitted()
    assert bank_equal(a.bank_, b.bank_)
    feats, labels, _ = batches[0]
    assert torch.equal(a(feats, labels), b(feats, labels))


def test_image_order_does_not_change_the_bank_when_ids_are_given():
    a, _, _ = fitted(order=None)
    b, _, _ = fitted(order=7)
    assert bank_equal(a.bank_, b.bank_)


def test_different_seed_changes_sampling():
    a, _, _ = fitted(seed=0)
    b, _, _ = fitted(seed=5)
    assert not bank_equal(a.bank_, b.bank_)


def test_pools_are_bounded_and_uniform_over_images():
    model, _, _ = fitted()
    for pools in (model.foreground_pools_, model.context_pools_):
        for pool in pools.values():
            assert len(pool) <= 60
    assert any(pool.count_seen > 60 for pool in model.context_pools_.values())
    assert model.n_images_seen_ == 24


def test_merge_of_split_collections_equals_one_collection():
    batches, directions = synthetic_batches(1)
    weight = directions * 2
    whole = LPCAM(C, num_clusters=3, pool_cap=50)
    halves = [LPCAM(C, num_clusters=3, pool_cap=50), LPCAM(C, num_clusters=3, pool_cap=50)]
    for i, (feats, labels, ids) in enumerate(batches):
        whole.partial_fit(feats, labels, weight=weight, ids=ids)
        halves[i % 2].partial_fit(feats, labels, weight=weight, ids=ids)
    merged = halves[0].merge_pools(halves[1])
    for c in range(C):
        assert torch.equal(whole.foreground_pools_[c].sorted_rows(), merged.foreground_pools_[c].sorted_rows())
        assert torch.equal(whole.context_pools_[c].sorted_rows(), merged.context_pools_[c].sorted_rows())
        assert whole.context_pools_[c].count_seen == merged.context_pools_[c].count_seen


def test_float16_storage_and_spill_to_disk(tmp_path):
    base, _, _ = fitted()
    half, _, _ = fitted(storage_dtype="float16")
    spilled, _, _ = fitted(spill_dir=str(tmp_path))
    assert half.foreground_pools_[0].sorted_rows().dtype == torch.float16
    (folder,) = tmp_path.iterdir()  # one private folder per estimator: processes may share spill_dir
    assert sorted(p.name for p in folder.iterdir())[:2] == ["pool_ctx_0.npy", "pool_ctx_1.npy"]
    assert bank_equal(base.bank_, spilled.bank_)
    for c in range(C):
        assert half.bank_.has_prototypes(c)


def test_host_cams_drive_the_split():
    batches, directions = synthetic_batches(2, images=8)
    feats, labels, ids = batches[0]
    cams = torch.zeros(len(ids), C, 12, 12)
    cams[:, :, :6, :6] = 1.0  # top-left quadrant only, at twice the feature resolution
    model = LPCAM(C, pool_cap=1000).partial_fit(feats, labels, cams=cams, ids=ids)
    positives = int(labels.sum())
    assert sum(p.count_seen for p in model.foreground_pools_.values()) == positives * 9
    assert sum(p.count_seen for p in model.context_pools_.values()) == positives * 27


def test_maps_match_core_function_and_zero_for_absent_classes():
    model, batches, _ = fitted()
    feats, labels, _ = batches[1]
    maps = model(feats, labels)
    assert maps.shape == (feats.shape[0], C, feats.shape[2], feats.shape[3])
    absent = labels == 0
    assert float(maps[absent].abs().sum()) == 0.0
    expected = lpcam_map(feats, model.bank_, list(range(C)))
    present = labels > 0
    torch.testing.assert_close(maps[present], expected[present])
    torch.testing.assert_close(model(feats, [2, 0]), expected[:, [2, 0]])
    reloaded = LPCAM.from_bank(model.bank_)
    assert torch.equal(reloaded(feats, labels), maps)


def test_class_without_features_warns_and_raises_or_falls_back():
    batches, directions = synthetic_batches(3, images=8)
    weight = directions * 2
    model = LPCAM(C, num_clusters=2, pool_cap=100)
    for feats, labels, ids in batches:
        labels = labels.clone()
        labels[:, 3] = 0
        model.partial_fit(feats, labels, weight=weight, ids=ids)
    with pytest.warns(RuntimeWarning, match=r"class\(es\) \[3\] have no prototypes"):
        model.fit_prototypes(weight)
    assert model.bank_.classes_without_prototypes == [3]
    feats = batches[0][0]
    with pytest.raises(ValueError, match="have no class prototypes"):
        model(feats, [3])
    labels = torch.zeros(feats.shape[0], C)
    labels[:, 3] = 1
    with pytest.raises(ValueError, match="3"):
        model(feats, labels)
    fallback = model(feats, labels, fallback="cam")
    torch.testing.assert_close(fallback[:, 3], cam_map(feats, weight, [3])[:, 0])
    assert torch.isfinite(fallback).all()


def test_small_pool_reduces_k_with_a_warning():
    feats = torch.rand(1, D, 2, 2) + 0.1
    labels = torch.tensor([[1.0, 0, 0, 0]])
    cams = torch.zeros(1, C, 2, 2)
    cams[0, 0, 0, 0] = 1.0
    model = LPCAM(C, num_clusters=3).partial_fit(feats, labels, cams=cams)
    weight = torch.eye(C, D)
    with pytest.warns(RuntimeWarning, match="K=1"):
        model.fit_prototypes(weight)
    assert model.bank_.class_prototypes[0].shape[0] == 1


@pytest.mark.parametrize("call, message", [
    (lambda m, f, y, w: m.partial_fit(f, y[:, :3], weight=w), r"labels must have shape \(B, C\)"),
    (lambda m, f, y, w: m.partial_fit(f, y[:1], weight=w), r"labels must have shape"),
    (lambda m, f, y, w: m.partial_fit(f, y), "cams or the classifier weight"),
    (lambda m, f, y, w: m.partial_fit(f, y, weight=w[:, :5]), "feature dimension mismatch"),
    (lambda m, f, y, w: m.partial_fit(f[0], y, weight=w), r"\(B, D, h, w\)"),
    (lambda m, f, y, w: m.partial_fit(f, y, cams=torch.ones(f.shape[0], C + 1, 3, 3)), "channels"),
    (lambda m, f, y, w: m.partial_fit(f, y, weight=w, ids=["a"]), "ids"),
    (lambda m, f, y, w: m.fit_prototypes(w[:2]), r"expected C=4"),
    (lambda m, f, y, w: m(f, y), "not fitted"),
])
def test_bad_input_errors(call, message):
    batches, directions = synthetic_batches(4, images=4)
    feats, labels, _ = batches[0]
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
        call(LPCAM(C), feats, labels, directions)


def test_nan_features_rejected_and_nothing_collected():
    feats = torch.rand(2, D, 4, 4)
    feats[1, 0, 0, 0] = float("nan")
    model = LPCAM(C)
    with pytest.raises(ValueError, match="NaN"):
        model.partial_fit(feats, torch.ones(2, C), cams=torch.rand(2, C, 4, 4))


def test_dimension_change_between_batches_rejected():
    model = LPCAM(C).partial_fit(torch.rand(1, D, 3, 3), torch.ones(1, C), cams=torch.rand(1, C, 3, 3))
    with pytest.raises(ValueError, match="feature dimension mismatch"):
        model.partial_fit(torch.rand(1, D + 1, 3, 3), torch.ones(1, C), cams=torch.rand(1, C, 3, 3))


def test_variable_sized_images_and_presets():
    model = LPCAM(C, preset="coco")
    assert model.config == LPCAMConfig.preset("coco")
    assert model.config.num_clusters == 20 and model.config.context_window == (0.0, 0.5)
    feats = [torch.rand(D, 3, 5), torch.rand(D, 4, 4)]
    model.partial_fit(feats, torch.ones(2, C), cams=[torch.rand(C, 12, 20), torch.rand(C, 16, 16)])
    assert model.n_images_seen_ == 2
    with pytest.raises(TypeError, match="unknown LPCAM option"):
        LPCAM(C, clusters=3)
    with pytest.raises(ValueError, match="unknown preset"):
        LPCAMConfig.preset("cityscapes")
    with pytest.raises(ValueError, match="context_window"):
        LPCAMConfig(context_window=(0.9, 0.1))


def test_best_centre_fallbacks_reported_once_and_recorded():
    batches, directions = synthetic_batches(5, images=8)
    weight = torch.zeros(C, D)  # uniform softmax: p = 1/C < class_threshold for every centre
    model = LPCAM(C, num_clusters=2, pool_cap=100)
    for feats, labels, ids in batches:
        model.partial_fit(feats, labels, weight=directions, ids=ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit_prototypes(weight)
    messages = [str(w.message) for w in caught if "kept the best centre" in str(w.message)]
    assert len(messages) == 1 and "0 (p=0.250)" in messages[0]
    assert sorted(model.best_centre_fallbacks_) == [c for c in range(C) if model.bank_.has_prototypes(c)]
    assert all(model.bank_.class_prototypes[c].shape[0] == 1 for c in model.best_centre_fallbacks_)
