"""The family benchmark end to end at tiny sizes: registry, both networks, report, figures, CLI.

The barely trained tiny classifiers make the core warn about classes without (passing) prototypes;
those expected warnings are filtered.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys

import numpy as np
import pytest
import torch

from lpcam_plugin import FCAM, FCAMConfig, PrototypeBank
from lpcam_plugin.benchmark import readouts
from lpcam_plugin.benchmark.config import DemoConfig, NetworkConfig, pixelsup_overrides, pixelsup_pairs
from lpcam_plugin.benchmark.demo import run_demo
from lpcam_plugin.benchmark.figures import overlay_indices as _overlay_indices
from lpcam_plugin.benchmark.pretraining import shipped_backbone
from lpcam_plugin.benchmark.readouts import BenchmarkRow as Readout
from lpcam_plugin.benchmark.readouts import SeedContext, cam_readout, map_key, select_readouts
from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate
from lpcam_plugin.benchmark.toynet import ToyBottleneckNet, ToyResNet
from lpcam_plugin.benchmark.training import TrainConfig, load_checkpoint, save_checkpoint
from lpcam_plugin.cli import main
from lpcam_plugin.core.evaluate import evaluate_folder
from lpcam_plugin.core.formats import read_id_list
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig

TINY_NETWORKS = (
    NetworkConfig("toyresnet", "ToyResNet", {"widths": (8, 16, 16), "strides": (2, 2, 1)}),
    NetworkConfig("bottleneck", "ToyBottleneckNet",
                  {"widths": (8, 16, 16), "strides": (2, 2, 2), "mid_width": 8, "feature_dim": 64, "blocks": 1}),
)
TINY = DemoConfig(
    seeds=(0, 1),
    networks=TINY_NETWORKS,
    data=SyntheticConfig(num_images=20, image_size=48),
    train=TrainConfig(epochs=2, batch_size=8),
    lpcam_overrides={"num_clusters": 3},
    thresholds=tuple(np.round(np.arange(0, 1, 0.05), 2)),
    overlay_images=3,
    fcam_epochs=1,
)
GRID = {"toyresnet": 6, "bottleneck": 3}  # 48 px at output stride 8 and 16
#: F-CAM at test size: one epoch, a narrow decoder.
def _half_cam(ctx: SeedContext) -> torch.Tensor:
    """A stand-in for a method appended by a later issue: one function, one registry line."""
    return ctx.memo("half", lambda: 0.5 * cam_readout(ctx))


def _section(report: str, network: str) -> str:
    """The report section of ``network`` (from its heading to the next network heading)."""
    match = re.search(rf"^## {network}:.*?(?=^## |\Z)", report, flags=re.M | re.S)
    assert match, network
    return match.group(0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_every_readout_runs_on_both_networks_with_report_figures_and_cached_rerun(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(readouts, "READOUTS", readouts.READOUTS + [Readout("Half-CAM", _half_cam, "test stand-in")])
    methods = [r.name for r in select_readouts()]
    fcam_rows = ["F-CAM(CAM)", "F-CAM(LPCAM)", "F-CAM(ReCAM)", "F-CAM(ReCAM+LPCAM)"]
    assert methods == ["CAM", "LPCAM-F", "LPCAM", "ReCAM", "ReCAM+LPCAM", *fcam_rows, "Half-CAM"]
    out = tmp_path / "demo"
    summaries = run_demo(TINY, out, progress=False, figures=True)
    assert list(summaries) == ["toyresnet", "bottleneck"]
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for network in ("toyresnet", "bottleneck"):
        assert list(summaries[network]["table"]) == methods  # table order = registry order
        section = _section(report, network)
        for name in methods:
            assert f"| {name} |" in section
            assert sum(line.startswith(("| 0 | " + name + " |", "| 1 | " + name + " |"))
                       for line in section.splitlines()) == 2
            row = summaries[network]["table"][name]
            assert 0.0 <= row["miou"]["mean"] <= 100.0 and row["miou"]["std"] >= 0.0
            # the threshold chosen without masks: against the run's CAM, scored beside the best t
            for per_seed in results["networks"][network]["per_seed"]:
                auto, best = per_seed["automatic"][name], per_seed["sweeps"][name]["best"]["miou"]
                assert auto["rule"] == "share" and auto["gap"] == pytest.approx(auto["miou"] - best)
                assert 0.0 <= auto["threshold"] < 1.0 and 0.0 <= auto["miou"] <= 1.0
        assert "### Seed masks at the threshold chosen without masks" in section
        for figure in (f"threshold_curve_{network}.png", f"overlays_{network}.png"):
            assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({figure})" in section  # embedded in that network's section
        assert [s["seed"] for s in results["networks"][network]["per_seed"]] == [0, 1]
        for seed in (0, 1):
            folder = out / network / f"seed{seed}"
            model, meta = load_checkpoint(folder / "classifier.pt")
            assert isinstance(model, ToyResNet if network == "toyresnet" else ToyBottleneckNet)
            assert meta["key"]["data"] == SyntheticConfig(num_images=20, image_size=48, seed=seed).fingerprint()
            assert PrototypeBank.load(folder / "prototypes.npz").feature_dim == model.feature_dim
            with np.load(folder / "maps.npz", allow_pickle=False) as maps:
                for name in methods:
                    side = 48 if name in fcam_rows else GRID[network]  # F-CAM decodes to the image's size
                    assert maps[map_key(name)].shape == (20, TINY.data.num_classes, side, side)
                np.testing.assert_allclose(maps["half_cam"], 0.5 * maps["cam"].astype(np.float32), atol=1e-3)
    assert "| bottleneck | 1 |" in report  # wall-time row per (network, seed)

    # the exported host files reproduce the LPCAM curve of the first network and seed through `lpcam eval`'s reader
    export = out / "toyresnet" / "seed0" / "export"
    swept = evaluate_folder(export / "lpcam", export / "gt", read_id_list(export / "train.txt"), fmt="dict",
                            allow_pickle=True, thresholds=TINY.thresholds, num_classes=TINY.data.num_classes + 1,
                            progress=False)
    expected = results["networks"]["toyresnet"]["per_seed"][0]["sweeps"]["LPCAM"]["curves"]["miou"]
    np.testing.assert_allclose(swept.miou, expected, atol=1e-6)

    # a rerun reuses every checkpoint and is deterministic for the seeds
    checkpoints = sorted(out.glob("*/seed*/classifier.pt")) + sorted(out.glob("*/seed*/recam_classifier.pt"))
    assert len(checkpoints) == 8  # the classifiers and their ReCAM fine-tuned copies
    decoders = sorted(out.glob("*/seed*/fcam_*.npz"))
    assert len(decoders) == 16  # an F-CAM decoder per source, network and seed
    checkpoints += decoders
    stamps = [path.stat().st_mtime_ns for path in checkpoints]
    again = run_demo(TINY, out, progress=False, figures=False)
    assert stamps == [path.stat().st_mtime_ns for path in checkpoints]
    assert again == summaries

    # a read-out must return (N, C, h, w)
    monkeypatch.setattr(readouts, "READOUTS", [Readout("Bad", lambda ctx: ctx.features)])
    with pytest.raises(ValueError, match=r"read-out Bad returned shape \(20, 16, 6, 6\)"):
        run_demo(dataclasses.replace(TINY, seeds=(0,)), out, progress=False, figures=False)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_demo_cli_selects_networks_and_methods(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["demo", "--out", str(out), "--seed", "3", "--quick", "--num-images", "12", "--epochs", "1",
            "--networks", "bottleneck", "--methods", "LPCAM", "CAM", "--regime", "A", "--no-progress", "--no-figures"]
    assert main(argv) == 0
    regime = out / "regime-a"
    for name in ("report.md", "results.json", "bottleneck/seed3/prototypes.npz", "bottleneck/seed3/classifier.pt"):
        assert (regime / name).is_file(), name
    assert (out / "report.md").is_file() and not (out / "regime-b").exists()
    printed = capsys.readouterr().out
    assert "## bottleneck" in printed and "ToyBottleneckNet, output stride 16, D = 1024" in (
        regime / "report.md").read_text()
    assert printed.index("| CAM | A |") < printed.index("| LPCAM | A |") and "| LPCAM-F |" not in printed
    assert "--networks bottleneck --methods LPCAM CAM" in printed  # the command is recorded
    checkpoint = regime / "bottleneck" / "seed3" / "classifier.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert main(argv) == 0 and checkpoint.stat().st_mtime_ns == stamp  # reused
    before = json.loads((regime / "results.json").read_text())["networks"]["bottleneck"]
    assert main(argv + ["--retrain"]) == 0 and checkpoint.stat().st_mtime_ns != stamp  # retrained ...
    after = json.loads((regime / "results.json").read_text())["networks"]["bottleneck"]
    assert after["summary"] == before["summary"]  # ... to the same numbers
    assert after["per_seed"][0]["sweeps"] == before["per_seed"][0]["sweeps"]
    assert main(["demo", "--out", str(out), "--seeds", "0"]) == 2
    assert main(["demo", "--out", str(out), "--methods", "NoSuchCAM"]) == 2


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_demo_cli_runs_the_papers_regime_by_default_from_the_shipped_backbone(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["demo", "--out", str(out), "--quick", "--num-images", "8", "--epochs", "1", "--methods", "CAM",
            "--no-progress", "--no-figures"]
    assert main(argv) == 0
    _, meta = load_checkpoint(out / "regime-b" / "toyresnet" / "seed0" / "classifier.pt")
    assert meta["key"]["backbone_sha256"] == shipped_backbone("ToyResNet")[1]
    assert meta["key"]["train"]["backbone_lr_scale"] == 0.1 and not (out / "regime-a").exists()
    assert "| CAM | B |" in capsys.readouterr().out


def test_config_presets() -> None:
    full = DemoConfig.full()
    assert full.seeds == (0, 1, 2)
    assert [n.name for n in full.networks] == ["toyresnet", "bottleneck", "toyresnet+pss", "bottleneck+pss"]
    assert [(p.name, q.name) for p, q in pixelsup_pairs(full)] == [("toyresnet", "toyresnet+pss"),
                                                                   ("bottleneck", "bottleneck+pss")]
    default = DemoConfig()
    assert default.seeds == (0,) and [n.name for n in default.networks] == ["toyresnet"] and default.methods is None
    quick = full.quick()
    assert quick.networks == full.networks and quick.data.num_images < full.data.num_images
    assert dataclasses.replace(default, methods=("CAM",)).to_dict()["methods"] == ("CAM",)
    assert map_key("ReCAM+LPCAM") == "recam_lpcam" and map_key("LPCAM-F") == "lpcam_f"


def test_pixelsup_settings_keep_the_papers_ema_horizon_and_mam_start_as_fractions_of_training() -> None:
    default = pixelsup_overrides(TrainConfig(), 500)  # 10 epochs x 16 steps
    assert default["mam_start_epoch"] == 3 and default["seed"] == 0
    assert default["rcm_form"] == PixelSupConfig().rcm_form  # the preset's, written out
    # 13,240 paper steps at 0.997: the weight left on the initialisation after the whole run is the same
    assert 0.997 ** 13240 == pytest.approx(default["ema_momentum"] ** 160, rel=0.01)
    longer = pixelsup_overrides(TrainConfig(epochs=20), 500, rcm_form="infonce")
    assert longer["ema_momentum"] > default["ema_momentum"] and longer["mam_start_epoch"] == 6
    assert longer["rcm_form"] == "infonce"
    assert default["loss_reduction"] == PixelSupConfig().loss_reduction  # the preset's, written out
    assert pixelsup_overrides(TrainConfig(), 500, loss_reduction="sum")["loss_reduction"] == "sum"
    assert default["projection"] == PixelSupConfig().projection
    assert pixelsup_overrides(TrainConfig(), 500, projection="in_path")["projection"] == "in_path"


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_pss_network_trains_with_rcm_and_mam_and_the_report_compares_it_with_the_plain_one(tmp_path) -> None:
    plain = TINY_NETWORKS[0]
    config = dataclasses.replace(TINY, seeds=(0,), networks=(plain, dataclasses.replace(plain, name="toyresnet+pss",
                                                                                        pixelsup=True)),
                                 methods=("CAM", "LPCAM"), train=TrainConfig(epochs=4, batch_size=8),
                                 rcm_form="infonce")
    summaries = run_demo(config, tmp_path, progress=False, figures=False)
    assert list(summaries) == ["toyresnet", "toyresnet+pss"]
    base, _ = load_checkpoint(tmp_path / "toyresnet" / "seed0" / "classifier.pt")
    tuned, meta = load_checkpoint(tmp_path / "toyresnet+pss" / "seed0" / "classifier.pt")
    assert meta["key"]["train"]["pixelsup"] == pixelsup_overrides(config.train, 20, "infonce")
    assert meta["key"]["train"]["pixelsup"]["mam_start_epoch"] == 1  # MAM ran in 3 of the 4 epochs
    assert meta["stats"]["rcm"] > 0 and meta["stats"]["mam"] > 0 and "rcm" not in load_checkpoint(
        tmp_path / "toyresnet" / "seed0" / "classifier.pt")[1]["stats"]
    assert not torch.equal(base.classifier.weight, tuned.classifier.weight)  # same seed and batches, other loss
    report = (tmp_path / "report.md").read_text()
    comparison = report[report.index("## RCM + MAM"):report.index("## toyresnet:")]
    assert "| toyresnet | CAM |" in comparison and "| toyresnet | LPCAM |" in comparison


def test_select_readouts_keeps_registry_order_and_rejects_unknown_names() -> None:
    assert [r.name for r in select_readouts(["LPCAM", "CAM"])] == ["CAM", "LPCAM"]
    with pytest.raises(ValueError, match="NoSuchCAM"):
        select_readouts(["NoSuchCAM"])


def test_readout_names_must_have_distinct_file_keys(monkeypatch) -> None:
    monkeypatch.setattr(readouts, "READOUTS", readouts.READOUTS + [Readout("LPCAM F", cam_readout)])
    with pytest.raises(ValueError, match="distinct"):
        select_readouts()


def test_overlay_images_are_distinct_and_cycle_through_classes() -> None:
    data = generate(SyntheticConfig(num_images=30, image_size=32, seed=4), progress=False)
    picks = _overlay_indices(data, 8)
    assert len(picks) == 8 and len({index for index, _ in picks}) == 8
    assert [c for _, c in picks[:6]] == list(range(6))
    assert all(data.labels[index, c] > 0 for index, c in picks)


def test_viz_names_the_extra_when_matplotlib_is_missing(monkeypatch) -> None:
    from lpcam_plugin.benchmark import viz

    image = np.zeros((4, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(viz.overlay(image, np.ones((4, 4)), image_weight=1.0), 0.0)
    assert viz.label_to_rgb(np.array([[0, 1], [255, 2]])).tolist()[1][0] == [255, 255, 255]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"lpcam_plugin\[viz\]"):
        viz.overlay(image, np.zeros((4, 4)))
    assert viz.label_to_rgb(np.zeros((2, 2), dtype=np.int64)).shape == (2, 2, 3)  # numpy only


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_a_deleted_or_swapped_cached_file_is_recomputed_not_trusted(tmp_path) -> None:
    config = dataclasses.replace(TINY, seeds=(0,), networks=TINY_NETWORKS[:1], methods=("ReCAM", "F-CAM(CAM)"),
                                 overlay_images=0, export_host_files=False)
    out = tmp_path / "demo"
    first = run_demo(config, out, progress=False, figures=False)
    folder = out / "toyresnet" / "seed0"
    files = [folder / name for name in ("classifier.pt", "recam_classifier.pt", "recam.npz", "fcam_cam.npz")]

    def stamps() -> list:
        return [path.stat().st_mtime_ns for path in files]

    before = stamps()
    assert run_demo(config, out, progress=False, figures=False) == first and stamps() == before  # all reused

    (folder / "recam.npz").unlink()  # the fine-tuned network's ReCAM head is gone: fine-tune again
    assert run_demo(config, out, progress=False, figures=False) == first
    after = stamps()
    assert [a != b for a, b in zip(after, before)] == [False, True, True, False]

    model, meta = load_checkpoint(files[0])  # a classifier swapped under the same settings key
    with torch.no_grad():
        next(model.parameters()).add_(0.05)
    save_checkpoint(files[0], model, meta)
    before = stamps()
    run_demo(config, out, progress=False, figures=False)
    assert [a != b for a, b in zip(stamps(), before)] == [False, True, True, True]  # nothing cached from it kept


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_a_validation_split_chooses_fcams_seed_settings_and_is_not_scored(tmp_path) -> None:
    config = dataclasses.replace(TINY, seeds=(0,), networks=TINY_NETWORKS[:1], methods=("F-CAM(CAM)",),
                                 overlay_images=0, export_host_files=False, validation_images=6)
    out = tmp_path / "demo"
    summaries = run_demo(config, out, progress=False, figures=False)
    decoder = FCAM.load(out / "toyresnet" / "seed0" / "fcam_cam.npz")
    assert [entry["settings"]["bg_fraction"] for entry in decoder.selection_] == ["auto", 0.1, 0.3, 0.5, 0.7]
    chosen = max(decoder.selection_, key=lambda entry: entry["miou"])["settings"]["bg_fraction"]
    assert decoder.config.bg_fraction == chosen
    assert "bg_fraction chosen on the validation split" in (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["validation_images"] == 6
    assert results["networks"]["toyresnet"]["per_seed"][0]["sweeps"]["F-CAM(CAM)"]["num_images"] == 20
    assert summaries["toyresnet"]["table"]["F-CAM(CAM)"]["miou"]["mean"] >= 0


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
def test_fcam_runs_its_preset_and_rules_with_the_runs_epochs_kernel_and_the_images_normalisation(tmp_path) -> None:
    config = dataclasses.replace(TINY, seeds=(0,), networks=TINY_NETWORKS[:1], methods=("F-CAM(CAM)",),
                                 overlay_images=0, export_host_files=False, fcam_crf_kernel="window")
    out = tmp_path / "demo"
    run_demo(config, out, progress=False, figures=False)
    decoder = FCAM.load(out / "toyresnet" / "seed0" / "fcam_cam.npz")
    assert decoder.config.crf_kernel == "window" and decoder.metadata["key"]["fcam"]["crf_kernel"] == "window"
    assert json.loads((out / "results.json").read_text())["config"]["fcam_crf_kernel"] == "window"
    # the user's view: the VOC preset, only the epochs, the kernel and the images' normalisation given
    assert decoder.config == FCAMConfig.preset("voc", seed=0, epochs=1, crf_kernel="window",
                                               **readouts.FCAM_NORMALISATION)
    side = TINY.data.image_size
    assert decoder.seed_settings_["crf_sigma_xy"] == pytest.approx(100 * side / 224)
    assert decoder.seed_settings_["images_per_epoch"] == TINY.data.num_images
    assert decoder.seed_settings_["fg_samples"] == round(10 * 10_582 / (1 * TINY.data.num_images))
