"""Issue 9, commands: one-line errors instead of tracebacks, ``-v`` anywhere, and ``infer`` that
never mixes maps of different producers in one folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lpcam_plugin import LPCAM, PrototypeBank
from lpcam_plugin.cli import build_parser, main
from lpcam_plugin.distributed.api import infer_distributed, map_path, map_producer, read_map
from lpcam_plugin.distributed.data import ArrayImageDataset, HookedFeatures

NUM_CLASSES, DIM, NUM_IMAGES = 3, 16, 5


class TinyNet(nn.Module):
    """``stages`` give ``(B, 16, H / 4, W / 4)`` features; a 1x1-conv ``classifier`` of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, DIM, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Conv2d(DIM, NUM_CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(x).mean(dim=(2, 3), keepdim=True)).flatten(1)


def _bank(seed: int) -> PrototypeBank:
    g = torch.Generator().manual_seed(seed)
    return PrototypeBank({c: torch.randn(2, DIM, generator=g) for c in range(NUM_CLASSES)},
                         {c: torch.randn(1, DIM, generator=g) for c in range(NUM_CLASSES)})


def _setup() -> Tuple[HookedFeatures, ArrayImageDataset]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 16, 16, 3), dtype=np.uint8)
    labels = np.zeros((NUM_IMAGES, NUM_CLASSES), np.float32)
    labels[np.arange(NUM_IMAGES), np.arange(NUM_IMAGES) % NUM_CLASSES] = 1
    labels[0, 2] = 1
    return HookedFeatures(TinyNet(), "stages"), ArrayImageDataset([f"im{i}" for i in range(NUM_IMAGES)], images, labels)


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- one-line errors


def _eval_files(tmp_path: Path, ids: List[str]) -> List[str]:
    """npz maps + PNG ground truth for ``ids``; returns the common ``lpcam eval`` arguments."""
    cams, gt = tmp_path / "cams", tmp_path / "gt"
    cams.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    for image_id in sorted(set(ids)):
        np.savez(cams / f"{image_id}.npz", keys=np.array([0]), high_res=rng.random((1, 4, 4)).astype(np.float32))
        Image.fromarray(rng.integers(0, 2, (4, 4), dtype=np.uint8)).save(gt / f"{image_id}.png")
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    return ["eval", "--cams", str(cams), "--gt", str(gt), "--list", str(tmp_path / "list.txt"), "--format", "npz",
            "--no-progress"]


def _one_line_error(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lpcam {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_eval_failure_is_one_line_with_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = _eval_files(tmp_path, ["a", "b"])
    (tmp_path / "cams" / "b.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(argv) == 2
    assert "b.npz: not an LPCAM map file" in _one_line_error(capsys, "eval")


def test_a_failing_command_prints_no_traceback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "lpcam_plugin", "eval", "--cams", str(tmp_path), "--gt", str(tmp_path),
            "--list", str(tmp_path / "missing.txt")]
    env = {**os.environ, "LPCAM_DEBUG": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("lpcam eval: error: ") and "missing.txt" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_verbose_after_the_subcommand_and_debug_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    argv = _eval_files(tmp_path, ["a"])
    assert build_parser().parse_args(argv + ["-v"]).verbose == 1
    assert build_parser().parse_args(["-vv"] + argv).verbose == 2
    assert main(argv + ["-v", "--thresholds", "0.5"]) == 0
    capsys.readouterr()
    bad = argv + ["--thresholds", "2"]
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        main(bad + ["-vv"])
    monkeypatch.setenv("LPCAM_DEBUG", "1")
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        main(bad)


@pytest.mark.parametrize("thresholds, message", [(["1.5"], r"thresholds must be in [0, 1]"),
                                                 (["nan"], r"thresholds must be in [0, 1]"),
                                                 (["0:1.2:0.1"], r"thresholds must be in [0, 1]"),
                                                 (["-0.1", "0.5"], r"thresholds must be in [0, 1]"),
                                                 (["abc"], "'abc' is not a number"),
                                                 (["0:1:0"], "needs a positive step")])
def test_eval_rejects_bad_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture, thresholds: List[str],
                                     message: str) -> None:
    argv = _eval_files(tmp_path, ["a"])
    assert main(argv + ["--thresholds", *thresholds]) == 2
    assert message in _one_line_error(capsys, "eval")


def test_eval_rejects_an_id_listed_twice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = _eval_files(tmp_path, ["a", "b", "a"])
    assert main(argv) == 2
    assert "image id 'a' is listed 2 times" in _one_line_error(capsys, "eval")


# --------------------------------------------------------------------------- infer producers


def test_infer_resumes_same_producer_and_refuses_another(tmp_path: Path) -> None:
    features, dataset = _setup()
    model = LPCAM.from_bank(_bank(0))
    first = infer_distributed(model, features, dataset, tmp_path)
    assert len(first.written) == NUM_IMAGES
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["producer"] == map_producer(model)
    assert manifest["producer"]["bank_sha256"] == _bank(0).checksum()
    again = infer_distributed(model, features, dataset, tmp_path)
    assert again.written == [] and again.skipped == NUM_IMAGES
    before = _snapshot(tmp_path)
    other = LPCAM.from_bank(_bank(1))
    for change, kwargs in (("bank_sha256", {"model": other}), ("scales", {"scales": (1.0, 0.5)}),
                           ("flip", {"flip": True})):
        with pytest.raises(ValueError, match=f"different {change}.*overwrite=True"):
            infer_distributed(kwargs.pop("model", model), features, dataset, tmp_path, **kwargs)
        assert _snapshot(tmp_path) == before  # nothing written, the manifest still names the old producer
    forced = infer_distributed(other, features, dataset, tmp_path, overwrite=True)
    assert len(forced.written) == NUM_IMAGES
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["producer"]["bank_sha256"] == _bank(1).checksum()
    assert (tmp_path / "im3.npz").read_bytes() != before["im3.npz"]


def test_infer_recomputes_corrupt_and_mismatched_maps(tmp_path: Path) -> None:
    features, dataset = _setup()
    model = LPCAM.from_bank(_bank(0))
    infer_distributed(model, features, dataset, tmp_path)
    good = read_map(map_path(tmp_path, "im4"))
    data = map_path(tmp_path, "im0").read_bytes()
    map_path(tmp_path, "im0").write_bytes(data[: len(data) // 2])                       # truncated
    np.savez(map_path(tmp_path, "im1"), keys=np.array([2]), high_res=good[1][:1])      # wrong keys for im1's labels
    np.savez(map_path(tmp_path, "im2"), keys=np.array([2]), high_res=np.full((1, 16, 16), np.nan, np.float32))
    np.savez(map_path(tmp_path, "im3"), keys=np.array([0]))                            # no high_res
    rerun = infer_distributed(model, features, dataset, tmp_path)
    assert sorted(rerun.written) == ["im0", "im1", "im2", "im3"] and rerun.skipped == 1
    for i in range(4):
        keys, maps = read_map(map_path(tmp_path, f"im{i}"))
        np.testing.assert_array_equal(keys, np.flatnonzero(dataset.labels[i]))
        assert maps.shape == (len(keys), 16, 16) and np.isfinite(maps).all()


def test_infer_refuses_maps_without_a_manifest(tmp_path: Path) -> None:
    features, dataset = _setup()
    np.savez(map_path(tmp_path, "im2"), keys=np.array([2]), high_res=np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="holds 1 map file.*but no manifest.json"):
        infer_distributed(LPCAM.from_bank(_bank(0)), features, dataset, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im2.npz"]
    assert len(infer_distributed(LPCAM.from_bank(_bank(0)), features, dataset, tmp_path, overwrite=True).written) == 5


def test_a_killed_run_resumes_because_the_manifest_comes_first(tmp_path: Path) -> None:
    features, dataset = _setup()
    model = LPCAM.from_bank(_bank(0))
    calls = []

    def dying(images: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return features(images)

    with pytest.raises(KeyboardInterrupt):
        infer_distributed(model, dying, dataset, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["producer"] == map_producer(model)
    resumed = infer_distributed(model, features, dataset, tmp_path)
    assert resumed.skipped == 2 and len(resumed.written) == NUM_IMAGES - 2


def test_infer_command_refuses_other_scales_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bank(0).save(tmp_path / "bank.npz")
    images = tmp_path / "img"
    images.mkdir()
    ids = ["a", "b"]
    for image_id in ids:
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(images / f"{image_id}.png")
    (tmp_path / "list.txt").write_text("a\nb\n")
    (tmp_path / "labels.json").write_text(json.dumps({"a": [0], "b": [1, 2]}))
    argv = ["infer", "--model", "test_one_line_errors_and_infer_resume:TinyNet", "--feature-layer", "stages", "--bank",
            str(tmp_path / "bank.npz"), "--out", str(tmp_path / "maps"), "--images", str(images), "--suffix", ".png",
            "--list", str(tmp_path / "list.txt"), "--labels", str(tmp_path / "labels.json"), "--device", "cpu",
            "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv + ["--scales", "1.0", "0.5"]) == 2
    assert "different scales" in _one_line_error(capsys, "infer")
    assert main(argv + ["--scales", "1.0", "0.5", "--overwrite"]) == 0
    manifest = json.loads((tmp_path / "maps" / "manifest.json").read_text())
    assert manifest["producer"]["scales"] == [1.0, 0.5] and manifest["bank"] == str(tmp_path / "bank.npz")
