"""PrototypeBank: pickle-free round trips, atomic writes, and clear errors for bad files."""
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpcam_plugin import LPCAMConfig, PrototypeBank


def random_bank(seed, classes=3, dim=6):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (classes, 2), generator=g).tolist()
    return PrototypeBank({c: torch.randn(p, dim, generator=g) for c, (p, _) in enumerate(counts)},
                         {c: torch.randn(q, dim, generator=g) for c, (_, q) in enumerate(counts)},
                         num_classes=classes, feature_dim=dim, config=LPCAMConfig.preset("coco"),
                         class_names=[f"class{c}" for c in range(classes)], metadata={"checkpoint": "abc", "n": seed})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), classes=st.integers(1, 5), dim=st.integers(1, 9))
def test_round_trip(tmp_path, seed, classes, dim):
    bank = random_bank(seed, classes, dim)
    path = tmp_path / f"bank_{seed}_{classes}_{dim}.npz"
    bank.save(path)
    loaded = PrototypeBank.load(path, expected_feature_dim=dim, expected_config=LPCAMConfig.preset("coco"))
    assert loaded.num_classes == classes and loaded.feature_dim == dim
    for c in range(classes):
        assert torch.equal(loaded.class_prototypes[c], bank.class_prototypes[c])
        assert torch.equal(loaded.context_prototypes[c], bank.context_prototypes[c])
    assert loaded.config == bank.config and loaded.class_names == bank.class_names
    assert loaded.metadata == bank.metadata and loaded.version == bank.version
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_file_holds_no_pickles(tmp_path):
    random_bank(0).save(tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_truncated_file(tmp_path):
    path = tmp_path / "b.npz"
    random_bank(1).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        PrototypeBank.load(path)


def test_tampered_file(tmp_path):
    path = tmp_path / "b.npz"
    bank = random_bank(2)
    bank.save(path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["class_0"] = arrays["class_0"] + 1.0 if arrays["class_0"].size else np.ones((1, 6), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="checksum mismatch"):
        PrototypeBank.load(path)


def test_wrong_file_and_mismatches(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, header=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ValueError, match="without a lpcam_plugin.PrototypeBank header"):
        PrototypeBank.load(other)
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a zip/.npz archive"):
        PrototypeBank.load(tmp_path / "junk.npz")
    path = tmp_path / "b.npz"
    random_bank(3).save(path)
    with pytest.raises(ValueError, match="feature_dim=6, expected 7"):
        PrototypeBank.load(path, expected_feature_dim=7)
    with pytest.raises(ValueError, match="different config"):
        PrototypeBank.load(path, expected_config=LPCAMConfig.preset("voc"))
    with pytest.raises(FileNotFoundError):
        PrototypeBank.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(path)


def test_failed_save_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "b.npz"
    random_bank(4).save(path)
    before = path.read_bytes()
    bad = random_bank(5)
    bad.metadata["not_json"] = object()
    with pytest.raises(TypeError, match="JSON"):
        bad.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]


def test_directions_and_missing_classes():
    bank = PrototypeBank({0: torch.tensor([[3.0, 0.0], [0.0, 2.0]]), 1: torch.zeros(0, 2)},
                         {0: torch.tensor([[0.0, -5.0]])}, class_names=["cat", "dog"])
    torch.testing.assert_close(bank.directions([0]), torch.tensor([[0.5, 1.5]]))
    assert bank.classes_without_prototypes == [1]
    with pytest.raises(ValueError, match=r"1 \(dog\) have no class prototypes"):
        bank.directions([0, 1])
    assert bank.without_context().context_prototypes[0].shape == (0, 2)


def test_invalid_construction():
    with pytest.raises(ValueError, match="NaN"):
        PrototypeBank({0: torch.tensor([[float("nan"), 1.0]])})
    with pytest.raises(ValueError, match="feature_dim"):
        PrototypeBank({0: torch.ones(1, 2)}, {0: torch.ones(1, 3)}, feature_dim=2)
    with pytest.raises(ValueError, match="out of range"):
        PrototypeBank({5: torch.ones(1, 2)}, num_classes=3)


def test_written_files_get_default_permissions(tmp_path):
    import os

    path = tmp_path / "b.npz"
    random_bank(6).save(path)
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
