"""Multi-process fitting and map writing on torch.distributed (gloo on CPU, 2 ranks).

The 2-rank runs use ``torch.multiprocessing.spawn`` with a ``file://`` store in ``tmp_path``
(Python API) and ``torchrun --standalone`` (command line). Both are compared with a single
process on the same data and seed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

import lpcam_plugin as lp
from lpcam_plugin.core.formats import read_id_list
from lpcam_plugin.distributed.api import (
    collect_features,
    fit_distributed,
    infer_distributed,
    map_path,
    read_map,
    shard_indices,
)
from lpcam_plugin.distributed.data import ArrayImageDataset, HookedFeatures, build_model, classifier_weight, read_labels

NUM_CLASSES = 4
NUM_IMAGES = 24


class TinyNet(nn.Module):
    """A host-like classifier for the command-line tests: ``stages`` features, 1x1-conv ``classifier``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stages = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Conv2d(16, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(x).mean(dim=(2, 3), keepdim=True)).flatten(1)


def _setup() -> Tuple[nn.Module, torch.Tensor, ArrayImageDataset]:
    """A seeded tiny conv net (features = output of module "3", (B, 12, 8, 8)), a weight and images."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
    weight = torch.randn(NUM_CLASSES, 12)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = (rng.random((NUM_IMAGES, NUM_CLASSES)) < 0.4).astype(np.float32)
    labels[np.arange(NUM_IMAGES), np.arange(NUM_IMAGES) % NUM_CLASSES] = 1.0
    return net, weight, ArrayImageDataset([f"im{i:03d}" for i in range(NUM_IMAGES)], images, labels)


def _estimator(spill_dir: str) -> lp.LPCAM:
    # pool_cap below the features of most classes, so the bottom-k really discards features
    return lp.LPCAM(NUM_CLASSES, num_clusters=3, pool_cap=60, spill_dir=spill_dir, progress=False)


def _reference(spill_dir: str) -> lp.LPCAM:
    """The single-process fit on the whole list (one thread, like each spawned rank, for bitwise equality)."""
    net, weight, dataset = _setup()
    estimator = _estimator(spill_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        collect_features(estimator, HookedFeatures(net, "3"), dataset, weight=weight)
        with pytest.warns(RuntimeWarning):  # random weights: no centre passes tau_class, the best is kept
            estimator.fit_prototypes(weight)
    finally:
        torch.set_num_threads(threads)
    return estimator


def _api_worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        net, weight, dataset = _setup()
        features = HookedFeatures(net, "3")
        estimator = _estimator(os.path.join(tmp, "spill"))
        fit_distributed(estimator, features, dataset, weight, bank_path=os.path.join(tmp, "bank.npz"))
        pools = {kind: {c: (p.sorted_keys().tolist(), p.sorted_rows().tolist(), p.count_seen)
                        for c, p in pools.items()}
                 for kind, pools in (("fg", estimator.foreground_pools_), ("ctx", estimator.context_pools_))}
        first = infer_distributed(estimator, features, dataset, os.path.join(tmp, "maps"))
        # a rank "killed" mid-run: its last files are missing, and one file got truncated on disk;
        # the rerun writes exactly those
        if rank == 0:
            for image_id in ("im003", "im010", "im017"):
                map_path(os.path.join(tmp, "maps"), image_id).unlink()
            damaged = map_path(os.path.join(tmp, "maps"), "im001")
            damaged.write_bytes(damaged.read_bytes()[:100])
        dist.barrier()
        second = infer_distributed(estimator, features, dataset, os.path.join(tmp, "maps"))
        report = {"pools": pools, "first": first.written, "second": second.written,
                  "skipped": [first.skipped, second.skipped]}
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, List[Dict]]:
    """One 2-process gloo run of fit + infer + resumed infer, prepared with stale state in the output folder."""
    tmp = tmp_path_factory.mktemp("dist")
    maps = tmp / "maps"
    maps.mkdir()
    (maps / ".im002.npz.k3j9x1.tmp").write_bytes(b"half written")    # left by a killed rank
    (maps / ".notours.npz.aaaa.tmp").write_bytes(b"someone else's")  # not an id of the list
    mp.spawn(_api_worker, args=(2, str(tmp)), nprocs=2, join=True)
    return tmp, [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def test_shard_indices_partition() -> None:
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            shards = [shard_indices(n, r, world) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(n))
    with pytest.raises(ValueError, match="rank 2"):
        shard_indices(5, 2, 2)


def test_two_ranks_draw_the_same_pools_as_one(two_rank_run, tmp_path: Path) -> None:
    tmp, reports = two_rank_run
    ref = _reference(str(tmp_path / "spill"))
    for kind, pools in (("fg", ref.foreground_pools_), ("ctx", ref.context_pools_)):
        assert pools, "the reference collected nothing"
        for c, pool in pools.items():
            owner = reports[c % 2]["pools"][kind]
            other = reports[1 - c % 2]["pools"][kind]
            keys, rows, seen = owner[str(c)]
            assert str(c) not in other                     # the non-owner dropped its share
            assert keys == pool.sorted_keys().tolist()     # same samples drawn
            assert torch.equal(torch.tensor(rows), pool.sorted_rows())
            assert seen == pool.count_seen
    assert any(p.count_seen > p.cap for p in ref.context_pools_.values())  # the cap was exercised
    spilled = sorted(p.name for p in (tmp / "spill").rglob("*.npy"))
    assert spilled and all(name.startswith("pool_merged_") for name in spilled)  # collection pools deleted at the merge


def test_two_rank_bank_equals_one_rank_bank(two_rank_run, tmp_path: Path) -> None:
    tmp, _ = two_rank_run
    ref = _reference(str(tmp / "spill")).bank_
    bank = lp.PrototypeBank.load(tmp / "bank.npz")
    assert bank.config == ref.config and bank.num_classes == ref.num_classes
    for c in range(NUM_CLASSES):
        assert torch.equal(bank.class_prototypes[c], ref.class_prototypes[c])
        assert torch.equal(bank.context_prototypes[c], ref.context_prototypes[c])
    assert json.loads(json.dumps(ref.metadata)) == bank.metadata


def test_two_rank_infer_writes_each_image_once_and_resumes(two_rank_run) -> None:
    tmp, reports = two_rank_run
    maps = tmp / "maps"
    ids = [f"im{i:03d}" for i in range(NUM_IMAGES)]
    first = [set(r["first"]) for r in reports]
    assert not first[0] & first[1]
    assert first[0] | first[1] == set(ids)
    assert abs(len(first[0]) - len(first[1])) <= 1
    assert [r["skipped"] for r in reports] == [[0, 20]] * 2
    second = [set(r["second"]) for r in reports]
    assert not second[0] & second[1] and second[0] | second[1] == {"im001", "im003", "im010", "im017"}
    assert read_map(maps / "im001.npz")[1].shape[1:] == (32, 32)
    assert sorted(p.name for p in maps.glob("*.npz")) == sorted(f"{i}.npz" for i in ids)
    assert not (maps / ".im002.npz.k3j9x1.tmp").exists()
    assert (maps / ".notours.npz.aaaa.tmp").exists()
    assert json.loads((maps / "manifest.json").read_text())["world_size"] == 2


def test_two_rank_maps_equal_single_process_maps(two_rank_run, tmp_path: Path) -> None:
    tmp, _ = two_rank_run
    net, weight, dataset = _setup()
    model = lp.LPCAM.from_bank(lp.PrototypeBank.load(tmp / "bank.npz"))
    result = infer_distributed(model, HookedFeatures(net, "3"), dataset, tmp_path / "single")
    assert sorted(result.written) == sorted(dataset.ids) and result.skipped == 0 and not result.missing
    for i in range(2, NUM_IMAGES):
        image_id = dataset.ids[i]
        keys, high_res = read_map(map_path(tmp / "maps", image_id))
        single_keys, single = read_map(map_path(tmp_path / "single", image_id))
        np.testing.assert_array_equal(keys, np.flatnonzero(dataset.labels[i]))
        np.testing.assert_array_equal(keys, single_keys)
        assert high_res.shape == (len(keys), 32, 32) and high_res.dtype == np.float32
        assert high_res.min() >= 0 and high_res.max() <= 1 and high_res.max() > 0.99
        np.testing.assert_allclose(high_res, single, atol=1e-6)


def test_single_process_fit_without_group_matches_fit_prototypes(tmp_path: Path) -> None:
    net, weight, dataset = _setup()
    estimator = _estimator(None)
    with pytest.warns(RuntimeWarning):
        bank = fit_distributed(estimator, HookedFeatures(net, "3"), dataset, weight, bank_path=tmp_path / "b.npz")
    ref = _reference(None).bank_
    for c in range(NUM_CLASSES):
        assert torch.equal(bank.class_prototypes[c], ref.class_prototypes[c])
    assert lp.PrototypeBank.load(tmp_path / "b.npz").metadata["n_images"] == NUM_IMAGES


def test_multi_scale_flip_maps_and_rerun_skips(tmp_path: Path) -> None:
    net, weight, dataset = _setup()
    model = _reference(None)
    features = HookedFeatures(net, "3")
    out = tmp_path / "ms"
    first = infer_distributed(model, features, dataset, out, scales=(1.0, 0.5, 1.5), flip=True)
    again = infer_distributed(model, features, dataset, out, scales=(1.0, 0.5, 1.5), flip=True)
    assert len(first.written) == NUM_IMAGES and again.written == [] and again.skipped == NUM_IMAGES
    keys, maps = read_map(map_path(out, "im005"))
    assert maps.shape == (len(keys), 32, 32) and np.isclose(maps.max(axis=(1, 2)), 1, atol=1e-4).all()
    with pytest.raises(ValueError, match="different scales, flip"):
        infer_distributed(model, features, dataset, out)
    forced = infer_distributed(model, features, dataset, out, overwrite=True)
    assert len(forced.written) == NUM_IMAGES
    assert not np.allclose(read_map(map_path(out, "im005"))[1], maps)  # single-scale maps replaced them


def test_infer_rejects_bad_datasets(tmp_path: Path) -> None:
    net, weight, dataset = _setup()
    model = _reference(None)
    dataset.ids[1] = dataset.ids[0]
    with pytest.raises(ValueError, match="duplicated ids"):
        infer_distributed(model, HookedFeatures(net, "3"), dataset, tmp_path)
    with pytest.raises(TypeError, match="ids"):
        infer_distributed(model, HookedFeatures(net, "3"), list(dataset), tmp_path)
    with pytest.raises(ValueError, match="not fitted"):
        infer_distributed(lp.LPCAM(NUM_CLASSES), HookedFeatures(net, "3"), _setup()[2], tmp_path)


def test_label_files(tmp_path: Path) -> None:
    ids = ["2007_000032", "2007_000039"]
    (tmp_path / "l.json").write_text(json.dumps({"2007_000032": [0, 2], "2007_000039": [1]}))
    expected = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.json", ids, 3), expected)
    np.save(tmp_path / "l.npy", expected)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.npy", ids, 3), expected)
    np.save(tmp_path / "irn.npy", {2007000032: expected[0], 2007000039: expected[1]}, allow_pickle=True)
    with pytest.raises(ValueError, match="--allow-pickle"):
        read_labels(tmp_path / "irn.npy", ids, 3)
    np.testing.assert_array_equal(read_labels(tmp_path / "irn.npy", ids, 3, allow_pickle=True), expected)
    with pytest.raises(ValueError, match="no entry for id"):
        read_labels(tmp_path / "l.json", ids + ["x"], 3)
    (tmp_path / "ids.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="duplicated ids"):
        read_id_list(tmp_path / "ids.txt")


def _write_image_folder(root: Path, n: int, num_classes: int) -> None:
    rng = np.random.default_rng(1)
    (root / "img").mkdir()
    ids = [f"2008_{i:06d}" for i in range(n)]
    for image_id in ids:
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / "img" / f"{image_id}.png")
    (root / "list.txt").write_text("\n".join(ids) + "\n")
    labels = (rng.random((n, num_classes)) < 0.5).astype(np.float32)
    labels[np.arange(n), np.arange(n) % num_classes] = 1.0
    np.save(root / "labels.npy", labels)


def test_cli_torchrun_two_ranks_matches_one_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save({"state_dict": TinyNet(3).state_dict()}, tmp_path / "tiny.pt")
    _write_image_folder(tmp_path, 10, 3)
    common = ["--model", "test_distributed:TinyNet", "--model-kwargs", '{"num_classes": 3}',
              "--checkpoint", str(tmp_path / "tiny.pt"), "--state-key", "state_dict", "--feature-layer", "stages",
              "--classifier-weight", "classifier.weight", "--images", str(tmp_path / "img"), "--suffix", ".png",
              "--list", str(tmp_path / "list.txt"), "--labels", str(tmp_path / "labels.npy"), "--device", "cpu",
              "--no-progress"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "lpcam_plugin"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    fit = launch + ["fit", *common, "--bank", str(tmp_path / "bank.npz"), "--set", "num_clusters=2",
                    "--set", "pool_cap=40", "--set", "storage_dtype=float16"]
    subprocess.run(fit, check=True, env=env, cwd=tmp_path, timeout=120)
    infer = launch + ["infer", *common, "--bank", str(tmp_path / "bank.npz"), "--out", str(tmp_path / "maps"),
                      "--fallback", "cam"]
    subprocess.run(infer, check=True, env=env, cwd=tmp_path, timeout=120)

    model = build_model("test_distributed:TinyNet", tmp_path / "tiny.pt", state_key="state_dict",
                        kwargs={"num_classes": 3})
    weight, _ = classifier_weight(model, "classifier.weight")
    ids = read_id_list(tmp_path / "list.txt")
    from lpcam_plugin.distributed.data import ImageListDataset

    dataset = ImageListDataset(tmp_path / "img", ids, read_labels(tmp_path / "labels.npy", ids, 3), suffix=".png")
    ref = lp.LPCAM(3, num_clusters=2, pool_cap=40, storage_dtype="float16", progress=False)
    collect_features(ref, HookedFeatures(model, "stages"), dataset, weight=weight)
    with pytest.warns(RuntimeWarning):
        ref.fit_prototypes(weight)
    bank = lp.PrototypeBank.load(tmp_path / "bank.npz")
    for c in range(3):
        torch.testing.assert_close(bank.class_prototypes[c], ref.bank_.class_prototypes[c])
        torch.testing.assert_close(bank.context_prototypes[c], ref.bank_.context_prototypes[c])
    assert bank.metadata["model"] == "test_distributed:TinyNet"
    assert sorted(p.stem for p in (tmp_path / "maps").glob("*.npz")) == ids
    keys, maps = read_map(tmp_path / "maps" / f"{ids[0]}.npz")
    assert maps.shape == (len(keys), 32, 40)


def test_cli_needs_an_image_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lpcam_plugin.cli import main

    argv = ["fit", "--model", "test_distributed:TinyNet", "--feature-layer", "stages",
            "--classifier-weight", "classifier.weight", "--bank", str(tmp_path / "b.npz"), "--list", "x.txt"]
    assert main(argv) == 2
    assert "lpcam fit: error: give --synthetic" in capsys.readouterr().err
    assert main([a if a != "classifier.weight" else "head.weight" for a in argv]) == 2
    assert "no parameter 'head.weight'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="missing: --images, --labels"):
        main(argv + ["-vv"])


def test_cli_single_process_on_synthetic_data(tmp_path: Path) -> None:
    from lpcam_plugin.cli import main

    torch.manual_seed(0)
    torch.save(TinyNet(6).state_dict(), tmp_path / "tiny.pt")
    common = ["--model", "test_distributed:TinyNet", "--model-kwargs", '{"num_classes": 6}',
              "--checkpoint", str(tmp_path / "tiny.pt"), "--feature-layer", "stages",
              "--classifier-weight", "classifier.weight", "--synthetic", '{"num_images": 12, "image_size": 32}',
              "--no-progress"]
    with pytest.warns(RuntimeWarning):
        assert main(["fit", *common, "--bank", str(tmp_path / "bank.npz"), "--set", "num_clusters=2"]) == 0
    bank = lp.PrototypeBank.load(tmp_path / "bank.npz")
    assert bank.config["num_clusters"] == 2 and bank.metadata["n_images"] == 12 and len(bank.class_names) == 6
    assert main(["infer", *common, "--bank", str(tmp_path / "bank.npz"), "--out", str(tmp_path / "maps"),
                 "--fallback", "cam"]) == 0
    assert len(list((tmp_path / "maps").glob("*.npz"))) == 12
