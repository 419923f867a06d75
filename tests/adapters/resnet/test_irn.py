"""IRN adapter against the stand-in IRN host (tests/hosts/irn_host): files, spawn, resume, bank reuse."""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from conftest import MIOU, voc_standin
from PIL import Image

import lpcam_plugin.adapters.irn as irn
from lpcam_plugin import LPCAMConfig, PrototypeBank
from lpcam_plugin.adapters.resnet import host as hosts
from lpcam_plugin.adapters.resnet.files import DONE_LOG_PREFIX, lpcam_written_ids
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.core.evaluate import maps_to_prediction, sweep
from lpcam_plugin.core.formats import read_irn_cam, read_label_png
from lpcam_plugin.core.threshold import choose_threshold, collect_histogram

pytestmark = pytest.mark.filterwarnings("ignore:class \\d+:RuntimeWarning")

EVAL_THRESHOLD = 0.3
N_IMAGES, N_TRAIN = 8, 5


def host_args(host: Path, voc: Path, **extra) -> argparse.Namespace:
    """The namespace IRN's run_sample.py would build, plus LPCAM options."""
    values = dict(num_workers=0, voc12_root=str(voc), train_list="voc12/train_aug.txt", infer_list="voc12/train.txt",
                  chainer_eval_set="train", cam_network="net.resnet50_cam", cam_eval_thres=EVAL_THRESHOLD,
                  cam_scales=(1.0, 0.5, 1.5, 2.0), conf_fg_thres=0.45, conf_bg_thres=0.25, sem_seg_bg_thres=0.35,
                  cam_weights_name="sess/res50_cam.pth", cam_out_dir="result/cam", lpcam_progress=False)
    values.update(extra)
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Dict[str, object]:
    """A stand-in IRN fork patched with ``irn.patch()``, run end to end in a subprocess:
    train_cam (random weights) -> make_cam (2 spawned workers, patched) -> eval_cam ->
    cam_to_ir_label -> make_sem_seg_labels."""
    root = tmp_path_factory.mktemp("irn")
    ids = voc_standin.image_ids(N_IMAGES)
    labels = voc_standin.make_voc(root / "voc", ids, ids[:N_TRAIN])
    host = voc_standin.make_host(root / "irn", "irn", labels, ids, ids[:N_TRAIN])
    script = voc_standin.irn_fork(host, gpus=2)
    cmd = ["--voc12_root", str(root / "voc"), "--num_workers", "2",
           "--cam_eval_thres", str(EVAL_THRESHOLD), "--conf_fg_thres", "0.45", "--conf_bg_thres", "0.25",
           "--sem_seg_bg_thres", "0.35", "--lpcam_loader_workers", "0", "--lpcam_progress", "false",
           "--lpcam_device", "cpu"]
    proc = voc_standin.run_fork(script, host, cmd)
    return {"root": root, "host": host, "voc": root / "voc", "ids": ids, "labels": labels,
            "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.slow
def test_patched_make_cam_writes_irn_format_in_spawned_workers(pipeline):
    host, voc, labels = pipeline["host"], pipeline["voc"], pipeline["labels"]
    out = host / "result" / "cam"
    # Both spawned workers ran our _work (IRN's own worker never logs this).
    pids = set(re.findall(r"\[lpcam pid (\d+)\] INFO worker \d: wrote (\d) lpcam files", pipeline["stderr"]))
    assert {n for _, n in pids} == {"4"} and len({p for p, _ in pids}) == 2, pipeline["stderr"][-2000:]
    # worker 0 alone fits the bank (worker 1 waits for it or, if it comes later, reuses it: timing decides)
    assert pipeline["stderr"].count("fitting the LPCAM bank") == 1, pipeline["stderr"][-2000:]
    assert not list(out.glob(".*.tmp"))
    for image_id in pipeline["ids"]:
        d = voc_standin.load_host_dict(out / f"{image_id}.npy")
        assert list(d) == ["keys", "cam", "high_res"]
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            w, h = image.size
        expected_keys = np.nonzero(labels[image_id])[0]
        assert isinstance(d["keys"], torch.Tensor) and d["keys"].dtype == torch.int64
        assert d["keys"].tolist() == expected_keys.tolist()
        assert isinstance(d["cam"], torch.Tensor) and d["cam"].dtype == torch.float32 and d["cam"].device.type == "cpu"
        assert tuple(d["cam"].shape) == (len(expected_keys), (h - 1) // 4 + 1, (w - 1) // 4 + 1)
        assert isinstance(d["high_res"], np.ndarray) and d["high_res"].dtype == np.float32
        assert d["high_res"].shape == (len(expected_keys), h, w)
        for maps in (d["cam"].numpy(), d["high_res"]):
            assert np.isfinite(maps).all() and maps.min() >= 0
            np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-3)  # divided by max + 1e-5
    for folder, ids in (("ir_label", pipeline["ids"]), ("sem_seg", pipeline["ids"][:N_TRAIN])):
        for image_id in ids:
            assert read_label_png(host / "result" / folder / f"{image_id}.png").shape == voc_standin.load_host_dict(
                out / f"{image_id}.npy")["high_res"].shape[1:]


@pytest.mark.slow
def test_lpcam_evaluate_matches_host_eval_cam(pipeline):
    host_miou = float(MIOU.search(pipeline["stdout"]).group(1))
    ids = [line for line in (pipeline["voc"] / "ImageSets/Segmentation/train.txt").read_text().split()]
    out = pipeline["host"] / "result" / "cam"
    maps = [read_irn_cam(out / f"{i}.npy", allow_pickle=True) for i in ids]
    gts = [read_label_png(pipeline["voc"] / "SegmentationClass" / f"{i}.png") for i in ids]
    result = sweep(maps, gts, [EVAL_THRESHOLD - 0.1, EVAL_THRESHOLD], 21, progress=False)
    assert result.metrics["miou"][1] == pytest.approx(host_miou, abs=1e-9)
    # Same per-pixel rule as eval_cam: constant background plane first, argmax, keys + 1.
    with voc_standin.imported_host(pipeline["host"]):
        from step import eval_cam
        for _, (keys, high_res) in zip(ids, maps):
            host_pred = eval_cam.predict(high_res, torch.from_numpy(keys), EVAL_THRESHOLD)
            np.testing.assert_array_equal(maps_to_prediction(high_res, keys, EVAL_THRESHOLD), host_pred)


@pytest.mark.slow
def test_in_process_run_equals_spawned_output_and_resumes(pipeline, caplog):
    host = pipeline["host"]
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    with voc_standin.imported_host(host):
        args = host_args(host, pipeline["voc"], cam_out_dir="result/cam_inproc")
        assert irn.run(args) == N_IMAGES
        assert "reusing the LPCAM bank" in caplog.text  # same checkpoint, config and fit list
        spawned, mine = host / "result" / "cam", host / "result" / "cam_inproc"
        for image_id in pipeline["ids"]:
            a = voc_standin.load_host_dict(spawned / f"{image_id}.npy")
            b = voc_standin.load_host_dict(mine / f"{image_id}.npy")
            assert torch.equal(a["keys"], b["keys"]) and torch.allclose(a["cam"], b["cam"], atol=1e-6)
            np.testing.assert_allclose(a["high_res"], b["high_res"], atol=1e-6)
        # LPCAM differs from the host's own CAM of the same network (so the workers did not run IRN's _work).
        from step import make_cam
        model = hosts.load_host_model(irn.SPEC, args, torch.device("cpu"))
        dataset = irn.SPEC.dataset.msf(args, args.cam_scales)
        host_args_cam = host_args(host, pipeline["voc"], cam_out_dir=str(host / "result" / "host_cam"))
        os.makedirs(host_args_cam.cam_out_dir)
        make_cam._work(0, model, [dataset], host_args_cam)
        differs = [not np.allclose(voc_standin.load_host_dict(host / "result/host_cam" / f"{i}.npy")["high_res"],
                                   voc_standin.load_host_dict(mine / f"{i}.npy")["high_res"], atol=1e-3)
                   for i in pipeline["ids"]]
        assert any(differs)
        # Resume: only the missing file is written again; the others are untouched.
        victim = mine / f"{pipeline['ids'][3]}.npy"
        before = {p.name: p.stat().st_mtime_ns for p in mine.glob("*.npy") if p != victim}
        reference = voc_standin.load_host_dict(victim)
        victim.unlink()
        caplog.clear()
        assert irn.run(args) == 1
        assert f"skipped {N_IMAGES - 1} already written" in caplog.text
        assert {p.name: p.stat().st_mtime_ns for p in mine.glob("*.npy") if p != victim} == before
        np.testing.assert_allclose(voc_standin.load_host_dict(victim)["high_res"], reference["high_res"], atol=1e-6)


@pytest.mark.slow
def test_auto_threshold_is_written_beside_the_maps_and_set_for_eval_cam(pipeline):
    host = pipeline["host"]
    with voc_standin.imported_host(host):
        args = host_args(host, pipeline["voc"], cam_out_dir="result/cam_auto", lpcam_auto_threshold=True)
        assert irn.run(args) == N_IMAGES
        record = json.loads((host / "result/cam_auto" / "lpcam_threshold.json").read_text())
        # The same choice from the written LPCAM files and the host's own CAM of the same images.
        model = hosts.load_host_model(irn.SPEC, args, torch.device("cpu"))
        dataset = irn.SPEC.dataset.msf(args, args.cam_scales)
        from step import make_cam
        host_cam = host_args(host, pipeline["voc"], cam_out_dir=str(host / "result" / "host_cam_auto"))
        os.makedirs(host_cam.cam_out_dir)
        make_cam._work(0, model, [dataset], host_cam)
        ids = [dataset[i]["name"] for i in range(len(dataset))]
        written = collect_histogram((read_irn_cam(host / "result/cam_auto" / f"{i}.npy", allow_pickle=True)
                                     for i in ids), num_classes=20)
        cams = collect_histogram((read_irn_cam(host / "result/host_cam_auto" / f"{i}.npy", allow_pickle=True)
                                  for i in ids), num_classes=20)
        expected = choose_threshold(written, cams)
    assert record["rule"] == "share" and record["method"] == "lpcam" and record["num_images"] == N_IMAGES
    assert record["threshold"] == pytest.approx(expected.threshold)
    assert args.cam_eval_thres == record["threshold"] != EVAL_THRESHOLD
    # Without the option nothing is chosen and the host's threshold stays.
    with voc_standin.imported_host(host):
        plain = host_args(host, pipeline["voc"], cam_out_dir="result/cam_auto")
        assert irn.run(plain) == 0 and plain.cam_eval_thres == EVAL_THRESHOLD
        assert irn.write_threshold(plain) == pytest.approx(expected.threshold)
        assert plain.cam_eval_thres == pytest.approx(expected.threshold)


@pytest.mark.slow
def test_bank_refit_reasons_and_host_file_baseline(pipeline, caplog, tmp_path):
    host = pipeline["host"]
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host_cam = host / "result" / "host_cam_for_baseline"
    with voc_standin.imported_host(host):
        from step import make_cam
        base = host_args(host, pipeline["voc"], cam_out_dir=str(host_cam))
        host_cam.mkdir()
        model = hosts.load_host_model(irn.SPEC, base, torch.device("cpu"))
        make_cam._work(0, model, [irn.SPEC.dataset.msf(base, base.cam_scales, "voc12/train.txt")], base)

        def run_with(bank: str, **extra) -> PrototypeBank:
            caplog.clear()
            irn.run(host_args(host, pipeline["voc"], cam_out_dir=str(tmp_path / f"{bank}_out"),
                              lpcam_bank=str(tmp_path / bank), lpcam_baseline_dir=str(host_cam), **extra))
            return PrototypeBank.load(tmp_path / bank)

        computed = run_with("computed.npz")
        assert "are not read (pass --lpcam_allow_pickle True" in caplog.text
        from_files = run_with("files.npz", lpcam_allow_pickle=True)
        assert f"baseline CAMs: {N_TRAIN} of {N_TRAIN} read from the host's files" in caplog.text
        assert from_files.metadata["baseline_from_files"] == N_TRAIN
        for c in range(20):  # host files hold the same multi-scale CAM the adapter computes
            torch.testing.assert_close(from_files.class_prototypes[c], computed.class_prototypes[c], atol=1e-4, rtol=0)
        run_with("files.npz", lpcam_allow_pickle=True, lpcam_num_clusters=3)
        assert "fitted with a different config" in caplog.text
        assert PrototypeBank.load(tmp_path / "files.npz").config["num_clusters"] == 3
        # Files that LPCAM wrote (listed in the done log) are never taken for host CAMs.
        caplog.clear()
        irn.run(host_args(host, pipeline["voc"], cam_out_dir=str(tmp_path / "other"),
                          lpcam_bank=str(tmp_path / "l.npz"), lpcam_baseline_dir=str(host / "result" / "cam"),
                          lpcam_allow_pickle=True))
        assert "read from the host's files" not in caplog.text
        assert lpcam_written_ids(host / "result" / "cam") == set(pipeline["ids"])


def test_failed_write_leaves_no_partial_file(pipeline, monkeypatch, tmp_path):
    host = pipeline["host"]
    calls = []

    def broken_save(handle, obj, allow_pickle=False):
        calls.append(1)
        handle.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    with voc_standin.imported_host(host):
        monkeypatch.setattr("lpcam_plugin.core.io.np.save", broken_save)
        args = host_args(host, pipeline["voc"], cam_out_dir=str(tmp_path / "out"))
        with pytest.raises(OSError, match="disk full"):
            irn.run(args)
    assert calls and not any(p.suffix in (".npy", ".tmp") for p in (tmp_path / "out").iterdir())
    assert all(not log.read_text() for log in (tmp_path / "out").glob(DONE_LOG_PREFIX + "*"))


def test_patch_refuses_without_cuda(pipeline, monkeypatch):
    """IRN's make_cam spawns torch.cuda.device_count() workers: with none, a patched step would
    silently write nothing, so patch() must fail when it is called, naming the alternative."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with voc_standin.imported_host(pipeline["host"]):
        from step import make_cam
        original = make_cam._work
        with pytest.raises(RuntimeError, match=r"no CUDA device is visible.*zero workers.*irn\.run\(args\)") as error:
            irn.patch()
        assert "\n" not in str(error.value)
        assert make_cam._work is original


def test_patch_installs_an_importable_module_level_worker(pipeline, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with voc_standin.imported_host(pipeline["host"]):
        from step import make_cam
        original = make_cam._work
        irn.patch()
        irn.patch()  # idempotent
        assert make_cam._work is irn._work
        # What spawn sends to the children: a reference by module and name, not the code.
        assert pickle.loads(pickle.dumps(make_cam._work)) is irn._work
        assert b"lpcam_plugin.adapters.irn" in pickle.dumps(make_cam._work)
        irn.unpatch()
        assert make_cam._work is original


def test_options_follow_the_preset_and_tolerate_missing_attributes():
    parser = irn.add_arguments(argparse.ArgumentParser())
    voc = LPCAMOptions.from_args(parser.parse_args([]))
    assert voc.config == LPCAMConfig.preset("voc") and voc.images_per_class is None
    coco = LPCAMOptions.from_args(parser.parse_args(["--lpcam_preset", "coco", "--lpcam_num_clusters", "7"]))
    assert coco.config == LPCAMConfig.preset("coco", num_clusters=7) and coco.images_per_class == 100
    window = LPCAMOptions.from_args(parser.parse_args(["--lpcam_context_window", "0.1", "0.8",
                                                             "--lpcam_use_bias", "true"]))
    assert window.config.context_window == (0.1, 0.8) and window.config.use_bias is True
    bare = LPCAMOptions.from_args(argparse.Namespace(cam_out_dir="x"))  # patch() without add_arguments
    assert bare.config == LPCAMConfig() and bare.device == "auto" and not bare.allow_pickle
    with pytest.raises(ValueError, match="split_threshold"):
        LPCAMOptions.from_args(parser.parse_args(["--lpcam_split_threshold", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--lpcam_preset", "ade"])


def test_fcam_seed_options_take_auto_or_a_number():
    parser = argparse.ArgumentParser()
    irn.add_arguments(parser)
    args = parser.parse_args(["--lpcam_fcam_bg_fraction", "0.3", "--lpcam_fcam_erosion_size", "auto"])
    args.cam_out_dir = "result/cam"
    fcam = LPCAMOptions.from_args(args).fcam
    assert fcam.bg_fraction == 0.3 and fcam.erosion_size == "auto"
    default = parser.parse_args([])
    default.cam_out_dir = "result/cam"
    assert LPCAMOptions.from_args(default).fcam.bg_fraction == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--lpcam_fcam_erosion_size", "large"])
