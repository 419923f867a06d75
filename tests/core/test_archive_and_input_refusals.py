"""Issue 9, package internals: a result is right or the user is told, never silently wrong.

The archive format (checksums, crafted files with bounded memory, clear one-line errors), class
lists, thresholds, misleading weight errors, config types and FeatureHook after removal.
"""
from __future__ import annotations

import json
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from torch import nn

from lpcam_plugin import LPCAM, FeatureHook, LPCAMConfig, PrototypeBank, cam_map, lpcam_map
from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core.archive import read_archive, write_archive
from lpcam_plugin.methods.lpcam.selection import select_prototypes
from lpcam_plugin.methods.lpcam.split import split_local_features, split_masks

C, D = 4, 6


def _bank(seed: int = 0) -> PrototypeBank:
    g = torch.Generator().manual_seed(seed)
    return PrototypeBank({c: torch.randn(2, D, generator=g) for c in range(C)},
                         {c: torch.randn(1, D, generator=g) for c in range(C)}, config=LPCAMConfig(),
                         class_names=[f"c{c}" for c in range(C)], metadata={"seed": seed})


def _members(path: Path) -> Dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rezip(path: Path, members: Dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_header(shape: Tuple[int, ...], descr: str = "<f4") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _raw_zip(path: Path, members: List[Tuple[str, bytes, int, int, int]]) -> None:
    """A zip written by hand: ``(name, raw data, method, crc, uncompressed size)`` per member."""
    body, central = b"", b""
    for name, raw, method, crc, size in members:
        encoded = name.encode()
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21, crc, len(raw),
                               size, len(encoded), 0, 0, 0, 0, 0, len(body)) + encoded
        body += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21, crc, len(raw), size,
                            len(encoded), 0) + encoded + raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(body + central + end)


def _stored(name: str, data: bytes) -> Tuple[str, bytes, int, int, int]:
    return name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)


def _bank_headers(path: Path) -> List[Tuple[str, bytes, int, int, int]]:
    """The new header of a saved bank plus an old-format ``header.npy``, so both readers get to the arrays."""
    new_header = _members(path)["__header__.npy"]
    old = {"format": "lpcam_plugin.PrototypeBank", "format_version": 1, "num_classes": 1, "feature_dim": 4}
    old_header = _npy_bytes(np.frombuffer(json.dumps(old).encode(), np.uint8))
    return [_stored("__header__.npy", new_header), _stored("header.npy", old_header)]


def _assert_rejected_cheaply(path: Path, match: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            PrototypeBank.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB while rejecting a crafted file"


# --------------------------------------------------------------------------- archive


def test_archive_round_trip_keeps_dtypes_shapes_and_header(tmp_path: Path) -> None:
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "empty": np.zeros((0, 4)), "scalar": np.array(True),
              "fortran": np.asfortranarray(np.arange(6.0).reshape(3, 2)), "ints": np.arange(5, dtype=np.int16)}
    write_archive(tmp_path / "a.npz", "test.Format", 3, {"k": [1, "x"], "nested": {"a": None}}, arrays)
    header, loaded = read_archive(tmp_path / "a.npz", "test.Format", 3)
    assert header == {"k": [1, "x"], "nested": {"a": None}}
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:  # npz-style: numpy reads it without pickle
        assert set(data.files) == set(arrays) | {"__header__"}


def test_archive_checksum_covers_the_header(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    _bank().save(path)
    members = _members(path)
    outer = json.loads(np.load(path)["__header__"].tobytes())
    outer["header"]["num_classes"] = 3  # drop a class: arrays untouched, header edited
    members["__header__.npy"] = _npy_bytes(np.frombuffer(json.dumps(outer).encode(), np.uint8))
    _rezip(path, members)
    with pytest.raises(ValueError, match="checksum mismatch"):
        PrototypeBank.load(path)


def test_archive_checksum_covers_array_dtype(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    write_archive(path, "t", 1, {}, {"x": np.arange(4, dtype=np.int32)})
    members = _members(path)
    members["x.npy"] = _npy_bytes(np.arange(4, dtype=np.int32).view(np.float32))  # same bytes, other dtype
    _rezip(path, members)
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_archive(path, "t", 1)


def test_compressed_bomb_member_is_refused_without_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    _bank().save(path)
    shape = (1 << 15, 1 << 13)  # 1 GiB of float32
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(_npy_header(shape)) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = compressor.compress(bytes(1 << 24)) + compressor.flush(zlib.Z_FULL_FLUSH)
    raw = head + zeros * 64 + compressor.flush(zlib.Z_FINISH)
    size = len(_npy_header(shape)) + (1 << 30)
    _raw_zip(path, _bank_headers(path) + [("class_0.npy", raw, zipfile.ZIP_DEFLATED, 0, size)])
    assert path.stat().st_size < 4 << 20
    _assert_rejected_cheaply(path, "compressed")


def test_huge_declared_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "shape.npz"
    _bank().save(path)
    member = _npy_header((1 << 16, 1 << 14)) + bytes(1 << 20)  # declares 4 GiB, stores 1 MiB
    _raw_zip(path, _bank_headers(path) + [_stored("class_0.npy", member)])
    _assert_rejected_cheaply(path, r"declares shape \(65536, 16384\)")


def test_member_larger_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    _bank().save(path)
    data = _npy_header((4,)) + bytes(16)
    _raw_zip(path, _bank_headers(path) + [("class_0.npy", data, zipfile.ZIP_STORED, zlib.crc32(data), 0xFFFF0000)])
    _assert_rejected_cheaply(path, "claims")


def test_pickled_member_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    write_archive(path, "t", 1, {}, {"x": np.zeros(2)})
    members = _members(path)
    members["evil.npy"] = _npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _rezip(path, members)
    with pytest.raises(ValueError, match="hold no objects"):
        read_archive(path, "t", 1)


def test_non_archive_paths_give_one_line_errors_that_name_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "weights.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello")
    cases = {"weights.npy": "is a single .npy array file", "empty.npz": "is an empty file",
             "text.npz": "is not a zip/.npz archive", ".": "is a directory"}
    for name, what in cases.items():
        with pytest.raises(ValueError) as info:
            PrototypeBank.load(tmp_path / name)
        message = str(info.value)
        assert what in message and str(tmp_path / name) in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        PrototypeBank.load(tmp_path / "missing.npz")


def test_truncated_wrong_format_newer_version_and_old_banks(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    write_archive(path, "fmt.A", 2, {}, {"x": np.arange(10.0)})
    with pytest.raises(ValueError, match="a 'fmt.A' archive, not a fmt.B archive"):
        read_archive(path, "fmt.B", 2)
    with pytest.raises(ValueError, match="format version 2 is newer .*<= 1"):
        read_archive(path, "fmt.A", 1)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupt"):
            read_archive(path, "fmt.A", 2)
    old = tmp_path / "old_bank.npz"  # format version 1 of PrototypeBank: a plain npz with a "header" array
    np.savez(old, header=np.frombuffer(b'{"format": "lpcam_plugin.PrototypeBank"}', np.uint8), class_0=np.ones((1, 2)))
    with pytest.raises(ValueError, match="older lpcam_plugin"):
        PrototypeBank.load(old)


def test_write_archive_rejects_what_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        write_archive(tmp_path / "a.npz", "t", 1, {"x": object()}, {})
    with pytest.raises(TypeError, match="dtype object"):
        write_archive(tmp_path / "a.npz", "t", 1, {}, {"x": np.array([None])})
    with pytest.raises(ValueError, match="name"):
        write_archive(tmp_path / "a.npz", "t", 1, {}, {"__header__": np.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def test_bank_checksum_survives_a_round_trip(tmp_path: Path) -> None:
    bank = _bank(3)
    bank.save(tmp_path / "b.npz")
    assert PrototypeBank.load(tmp_path / "b.npz").checksum() == bank.checksum() != _bank(4).checksum()


# --------------------------------------------------------------------------- class lists


def _features() -> torch.Tensor:
    return torch.rand(2, D, 3, 3, generator=torch.Generator().manual_seed(0))


def test_duplicate_classes_are_rejected() -> None:
    weight = torch.randn(C, D)
    with pytest.raises(ValueError, match=r"\[1\] listed more than once"):
        cam_map(_features(), weight, [1, 2, 1])
    with pytest.raises(ValueError, match="listed more than once"):
        lpcam_map(_features(), _bank(), [0, 0])
    with pytest.raises(ValueError, match="listed more than once"):
        LPCAM.from_bank(_bank())(_features(), [3, 3])


def test_multi_hot_vectors_are_not_read_as_class_indices() -> None:
    model = LPCAM.from_bank(_bank())
    message = "looks like a multi-hot label vector; pass labels \\(B, C\\) or class indices"
    for vector in (torch.tensor([1.0, 0.0, 0.0, 1.0]), [1.0, 0.0, 0.0, 1.0], np.array([0.0, 1.0, 0.0, 0.0]),
                   torch.tensor([True, False, False, True])):
        with pytest.raises(ValueError, match=message):
            model(_features(), vector)
    with pytest.raises(ValueError, match=message):
        cam_map(_features(), torch.randn(C, D), [0.0, 1.0])
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    assert model(_features(), labels).shape == (2, C, 3, 3)  # (B, C) labels are still labels
    assert model(_features(), torch.tensor([3, 0])).shape == (2, 2, 3, 3)
    assert model(_features(), np.array([2], dtype=np.int64)).shape == (2, 1, 3, 3)


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_split_rejects_thresholds_outside_the_unit_interval(threshold: float) -> None:
    cam = torch.rand(3, 3)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        split_masks(cam, (3, 3), threshold)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        split_local_features(torch.rand(D, 3, 3), cam, threshold)


@pytest.mark.parametrize("thresholds", [[0.5, 1.2], [-0.5], [0.1, float("nan")]])
def test_sweep_rejects_thresholds_outside_the_unit_interval(thresholds: List[float]) -> None:
    maps = [(np.array([0]), np.random.default_rng(0).random((1, 4, 4)))]
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        ev.sweep(iter(maps), iter([np.zeros((4, 4), np.int64)]), thresholds, num_classes=2)


def test_evaluate_folder_rejects_an_id_listed_twice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image id 'b' is listed 2 times"):
        ev.evaluate_folder(tmp_path, tmp_path, ["a", "b", "c", "b"])


# --------------------------------------------------------------------------- misleading errors


def test_nan_in_the_weight_is_reported_as_the_weight() -> None:
    weight = torch.randn(C, D)
    weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="weight contains 1 NaN"):
        cam_map(_features(), weight)
    with pytest.raises(ValueError, match="weight contains 1 NaN"):
        LPCAM(C).partial_fit(_features(), torch.ones(2, C), weight=weight)
    with pytest.raises(ValueError, match="weight contains 1 NaN"):
        select_prototypes(torch.randn(3, D), torch.randn(3, D), weight, 0)
    features = _features()
    features[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="features contain"):
        cam_map(features, torch.randn(C, D))


def test_a_weight_with_the_wrong_number_of_rows_says_so() -> None:
    with pytest.raises(ValueError, match=f"weight has {C + 1} rows, expected C={C}"):
        LPCAM(C).partial_fit(_features(), torch.ones(2, C), weight=torch.randn(C + 1, D))
    bank = PrototypeBank({0: torch.randn(1, D)}, num_classes=C)
    with pytest.raises(ValueError, match=f"weight has {C - 1} rows, expected C={C}"):
        LPCAM.from_bank(bank)(_features(), [0, 3], fallback="cam", weight=torch.randn(C - 1, D))


@pytest.mark.parametrize("field, value", [("num_clusters", 2.5), ("pool_cap", "100"), ("seed", True),
                                          ("split_threshold", "0.1"), ("kmeans_tol", None), ("use_bias", 1),
                                          ("context_window", 0.5), ("storage_dtype", 16)])
def test_config_fields_are_type_checked_at_construction(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        LPCAMConfig(**{field: value})


def test_config_accepts_numpy_scalars_and_normalises_types() -> None:
    config = LPCAMConfig(num_clusters=np.int64(3), split_threshold=1, context_window=[0, 0.5], use_bias=np.bool_(True),
                         spill_dir=Path("/tmp/x"))
    assert type(config.num_clusters) is int and type(config.split_threshold) is float
    assert config.context_window == (0.0, 0.5) and config.use_bias is True and config.spill_dir == "/tmp/x"
    json.dumps(config.to_dict())
    with pytest.raises(ValueError, match="NaN"):
        LPCAMConfig(class_threshold=float("nan"))


# --------------------------------------------------------------------------- FeatureHook


def test_features_after_the_hook_is_removed_raise() -> None:
    conv = nn.Conv2d(3, 4, 1)
    with FeatureHook(conv, keep_all=True) as hook:
        conv(torch.randn(1, 3, 2, 2))
        assert hook.features.shape == (1, 4, 2, 2) and len(hook.history) == 1
    for name in ("features", "history"):
        with pytest.raises(RuntimeError, match=f"was removed.*read hook.{name} inside the with block"):
            getattr(hook, name)
    other = FeatureHook(conv)
    other.remove()
    with pytest.raises(RuntimeError, match="removed"):
        _ = other.features


def test_in_place_ops_after_the_hooked_module_do_not_change_the_capture() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 5, 5)
    with torch.inference_mode():
        expected = net[0](x)
    with FeatureHook(net[0]) as hook, torch.inference_mode():
        net(x)
        captured = hook.features
    assert bool((captured < 0).any())  # the ReLU(inplace=True) after the conv did not reach it
    torch.testing.assert_close(captured, expected)
    block = nn.Identity()  # a view-returning transform is copied too
    with FeatureHook(block, reshape_transform=lambda t: t.view(1, -1)) as hook:
        source = torch.zeros(2, 2)
        block(source)
        source += 1
        assert torch.equal(hook.features, torch.zeros(1, 4))
