"""The pretrained backbones: the shipped files (checksum, recorded accuracy, the command's first steps),
the file format's checks, and regime B's classifiers fine-tuned from a backbone."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lpcam_plugin.benchmark.config import BOTTLENECK, TOYRESNET, DemoConfig, NetworkConfig
from lpcam_plugin.benchmark.pretraining import (
    CorpusConfig,
    PretrainConfig,
    accuracy,
    file_sha256,
    first_steps,
    generate_corpus,
    manifest,
    pretrained_network,
    pretraining_network,
    read_backbone,
    run_pretraining,
    sample_indices,
    shipped_backbone,
)
from lpcam_plugin.benchmark.regimes import regime_folder, run_regimes
from lpcam_plugin.benchmark.synthetic import images_to_tensor
from lpcam_plugin.benchmark.training import load_checkpoint

SHIPPED = [(network.kind, dict(network.options)) for network in (TOYRESNET, BOTTLENECK)]


@pytest.mark.parametrize(("kind", "options"), SHIPPED)
def test_shipped_backbone_matches_its_checksum_and_its_recorded_accuracy(kind, options) -> None:
    path, sha256 = shipped_backbone(kind)
    assert file_sha256(path) == sha256
    entry = manifest()[kind]
    assert entry["corpus"]["seed"] == 1234 and entry["command"] == "lpcam pretrain --out lpcam_plugin/benchmark/weights"
    assert path.stat().st_size < 4 * 2**20  # a few MB at most
    model, recorded = pretraining_network(kind)
    assert model.architecture()["num_classes"] == 64 and not model.training
    corpus = CorpusConfig()
    sample = sample_indices(corpus)
    images, labels = generate_corpus(corpus, sample, progress=False)
    measured = accuracy(model, images_to_tensor(images), torch.from_numpy(labels))
    assert measured == pytest.approx(recorded["sample_accuracy"], abs=1.5 / len(sample))
    assert measured > 0.5  # far above the 1/64 of chance: the backbone learned the parts


@pytest.mark.parametrize(("kind", "options"), SHIPPED)
def test_the_pretraining_commands_first_steps_match_the_recorded_ones(kind, options) -> None:
    losses = first_steps(kind, options, steps=3)
    np.testing.assert_allclose(losses, manifest()[kind]["first_losses"], rtol=2e-4)


TINY = NetworkConfig("toyresnet", "ToyResNet", {"widths": (8, 16, 16), "strides": (2, 2, 1)})


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    run_pretraining([(TINY.kind, dict(TINY.options))], folder, corpus=CorpusConfig(images_per_class=2, image_size=48),
                    schedule=PretrainConfig(epochs=1, batch_size=32), progress=False, command="test")
    return folder


def test_a_backbone_loads_under_a_fresh_head_and_refuses_a_changed_or_foreign_file(tiny_backbones, tmp_path) -> None:
    path, sha256 = shipped_backbone(TINY.kind, tiny_backbones)
    state, meta = read_backbone(path, sha256)
    assert meta["command"] == "test" and meta["corpus_classes"] == 64
    model, digest = pretrained_network(TINY.kind, 6, dict(TINY.options), tiny_backbones)
    assert digest == sha256 and model.classifier.weight.shape[0] == 6  # the task's own head
    for name, value in model.state_dict().items():
        if not name.startswith("classifier."):
            torch.testing.assert_close(value.float(), state[name].float())  # the float16 weights, read back
    with np.load(path, allow_pickle=False) as payload:  # pickle-free
        assert all(payload[name].dtype != object for name in payload.files)
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "manifest.json").write_text((tiny_backbones / "manifest.json").read_text())
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    (changed / path.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        pretrained_network(TINY.kind, 6, dict(TINY.options), changed)
    with pytest.raises(ValueError, match="backbone of ToyResNet"):
        pretrained_network(TINY.kind, 6, {"widths": (8, 16, 32), "strides": (2, 2, 1)}, tiny_backbones)
    with pytest.raises(LookupError, match="lpcam pretrain"):
        shipped_backbone("ToyBottleneckNet", tiny_backbones)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:ReCAM:UserWarning")
def test_both_regimes_side_by_side_with_the_claims_read_off(tiny_backbones, tmp_path) -> None:
    methods = ("CAM", "LPCAM", "ReCAM", "F-CAM(CAM)")
    configs = {}
    for regime in ("A", "B"):
        config = DemoConfig.for_regime(regime, networks=(TINY,), methods=methods, backbones=str(tiny_backbones),
                                       lpcam_overrides={"num_clusters": 3}, fcam_epochs=1, overlay_images=2)
        configs[regime] = dataclasses.replace(config, data=dataclasses.replace(config.data, num_images=24,
                                                                               image_size=64 if regime == "B" else 48),
                                              train=dataclasses.replace(config.train, epochs=1, batch_size=8))
    assert configs["B"].regime == "B" and configs["B"].pretrained and configs["B"].train.backbone_lr_scale == 0.1
    run_regimes(configs, tmp_path, progress=False, figures=False, command="test")
    report = (tmp_path / "report.md").read_text()
    for regime in ("A", "B"):
        for method in methods:
            assert f"| {method} | {regime} |" in report
    assert "| LPCAM: legs recall up | toyresnet |" in report and "| ReCAM: rider-on-mount" in report
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    diagnostics = comparison["B"]["networks"]["toyresnet"]["table"]["CAM"]["diagnostics"]
    assert {"recall_head", "recall_body", "recall_legs", "cross_rider_on_mount"} <= set(diagnostics)
    _, meta_b = load_checkpoint(regime_folder(tmp_path, "B") / "toyresnet" / "seed0" / "classifier.pt")
    _, meta_a = load_checkpoint(regime_folder(tmp_path, "A") / "toyresnet" / "seed0" / "classifier.pt")
    assert meta_b["key"]["backbone_sha256"] == shipped_backbone(TINY.kind, tiny_backbones)[1]
    assert "backbone_sha256" not in meta_a["key"]  # regime A trains from scratch


@pytest.mark.filterwarnings("ignore:class:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:no foreground centre:RuntimeWarning")
def test_demo_pretrain_writes_backbones_into_the_report_folder_and_runs_regime_b_from_them(tmp_path, monkeypatch,
                                                                                         caplog) -> None:
    import functools

    from lpcam_plugin.cli import main
    from lpcam_plugin.cli import pretrain as pretrain_cli

    small = functools.partial(run_pretraining, corpus=CorpusConfig(images_per_class=2, image_size=48),
                              schedule=PretrainConfig(epochs=1, batch_size=32))
    monkeypatch.setattr(pretrain_cli, "run_pretraining", small)  # the full corpus takes half an hour
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pretrain", "--quick", "--num-images", "8", "--epochs", "1",
                 "--methods", "CAM", "--no-progress", "--no-figures"]) == 0
    written = json.loads((out / "pretrained" / "manifest.json").read_text())
    assert list(written) == ["ToyResNet"]  # only the networks the run uses
    _, meta = load_checkpoint(regime_folder(out, "B") / "toyresnet" / "seed0" / "classifier.pt")
    assert meta["key"]["backbone_sha256"] == written["ToyResNet"]["sha256"] != shipped_backbone("ToyResNet")[1]
    assert "differs from the shipped file" in caplog.text
