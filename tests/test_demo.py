"""A tiny end-to-end run of the demo pipeline (small sizes), through the API and the CLI.

The barely trained tiny classifiers make the core warn about classes without (passing) prototypes;
those expected warnings are filtered.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lpcam_plugin import PrototypeBank
from lpcam_plugin.cli import main
from lpcam_plugin.benchmark.demo import METHODS, DemoConfig, run_demo
from lpcam_plugin.core.evaluate import evaluate_folder, read_id_list
from lpcam_plugin.benchmark.synthetic import SyntheticConfig
from lpcam_plugin.benchmark.toynet import TrainConfig, load_checkpoint

TINY = DemoConfig(
    seeds=(0, 1),
    data=SyntheticConfig(num_images=20, image_size=32),
    widths=(8, 16, 16),
    train=TrainConfig(epochs=2, batch_size=8),
    lpcam_overrides={"num_clusters": 3},
    thresholds=tuple(np.round(np.arange(0, 1, 0.05), 2)),
    overlay_rows=3,
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_demo_pipeline_end_to_end_and_cached_rerun(tmp_path) -> None:
    out = tmp_path / "demo"
    summary = run_demo(TINY, out, progress=False, figures=False)
    report = (out / "report.md").read_text()
    for name in METHODS:
        assert f"| {name} |" in report
        row = summary["table"][name]
        assert 0.0 <= row["miou"]["mean"] <= 100.0 and row["miou"]["std"] >= 0.0
    assert len(summary["targets"]) == 5
    results = json.loads((out / "results.json").read_text())
    assert [s["seed"] for s in results["per_seed"]] == [0, 1]
    for seed in (0, 1):
        bank = PrototypeBank.load(out / f"seed{seed}" / "prototypes.npz")
        assert bank.num_classes == TINY.data.num_classes and bank.feature_dim == 16
        _, meta = load_checkpoint(out / f"seed{seed}" / "classifier.pt")
        assert meta["key"]["data"] == SyntheticConfig(num_images=20, image_size=32, seed=seed).fingerprint()
        with np.load(out / f"seed{seed}" / "maps.npz", allow_pickle=False) as maps:
            assert maps["lpcam"].shape == (20, TINY.data.num_classes, 4, 4)

    # the exported host files reproduce the LPCAM curve of the first seed through `lpcam eval`'s reader path
    export = out / "seed0" / "export"
    swept = evaluate_folder(export / "lpcam", export / "gt", read_id_list(export / "train.txt"), fmt="dict",
                            allow_pickle=True, thresholds=TINY.thresholds, num_classes=TINY.data.num_classes + 1,
                            progress=False)
    expected = results["per_seed"][0]["sweeps"]["LPCAM"]["curves"]["miou"]
    np.testing.assert_allclose(swept.miou, expected, atol=1e-6)

    # a rerun reuses the checkpoints and is deterministic
    stamps = {seed: (out / f"seed{seed}" / "classifier.pt").stat().st_mtime_ns for seed in (0, 1)}
    again = run_demo(TINY, out, progress=False, figures=False)
    assert stamps == {seed: (out / f"seed{seed}" / "classifier.pt").stat().st_mtime_ns for seed in (0, 1)}
    assert again == summary


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_demo_cli_writes_report_and_figures(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["demo", "--out", str(out), "--seed", "3", "--seeds", "1", "--quick", "--num-images", "12",
            "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    for name in ("report.md", "results.json", "threshold_curve.png", "overlays.png", "seed3/prototypes.npz"):
        assert (out / name).is_file(), name
    assert (out / "threshold_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| LPCAM |" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--seeds", "0"]) == 2


def test_viz_names_the_extra_when_matplotlib_is_missing(monkeypatch) -> None:
    from lpcam_plugin.benchmark import viz

    image = np.zeros((4, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(viz.overlay(image, np.ones((4, 4)), image_weight=1.0), 0.0)
    assert viz.label_to_rgb(np.array([[0, 1], [255, 2]])).tolist()[1][0] == [255, 255, 255]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"lpcam_plugin\[viz\]"):
        viz.overlay(image, np.zeros((4, 4)))
    assert viz.label_to_rgb(np.zeros((2, 2), dtype=np.int64)).shape == (2, 2, 3)  # numpy only
