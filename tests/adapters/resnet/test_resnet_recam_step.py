"""ReCAM through the IRN / AMN adapters (stand-in hosts): the ReCAM step, its files, the host
format of ReCAM and ReCAM+LPCAM maps read by IRN's unchanged next steps, reuse, and the
clear errors where a CAM step has no GAP-linear head."""
from __future__ import annotations

import argparse
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MIOU, voc_standin

import lpcam_plugin.adapters.amn as amn
import lpcam_plugin.adapters.irn as irn
from lpcam_plugin import PrototypeBank, ReCAM, cam_map
from lpcam_plugin.adapters.resnet import host as hosts
from lpcam_plugin.adapters.resnet.crop_batches import PackBatches
from lpcam_plugin.adapters.resnet.recam_step import recam_files

pytestmark = [pytest.mark.filterwarnings("ignore:class \\d+:RuntimeWarning"), pytest.mark.slow]

N_IMAGES, N_TRAIN = 8, 5
RECAM_OPTIONS = ["--lpcam_recam_epochs", "2", "--lpcam_recam_batch_size", "4", "--lpcam_recam_learning_rate", "0.01",
                 "--lpcam_recam_crop_size", "64"]


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """A stand-in IRN fork whose CAM step is ``lpcam_irn.run(args)``, run end to end with
    ``--lpcam_method recam+lpcam``: train_cam -> ReCAM step + ReCAM+LPCAM maps -> eval_cam ->
    cam_to_ir_label -> make_sem_seg_labels."""
    root = tmp_path_factory.mktemp("irn_recam")
    ids = voc_standin.image_ids(N_IMAGES)
    labels = voc_standin.make_voc(root / "voc", ids, ids[:N_TRAIN])
    host = voc_standin.make_host(root / "irn", "irn", labels, ids, ids[:N_TRAIN])
    script = voc_standin.irn_fork(host)
    cmd = ["--voc12_root", str(root / "voc"), "--num_workers", "0", "--cam_eval_thres", "0.3",
           "--conf_fg_thres", "0.45", "--conf_bg_thres", "0.25", "--sem_seg_bg_thres", "0.35",
           "--lpcam_progress", "false", "--lpcam_method", "recam+lpcam", *RECAM_OPTIONS]
    proc = voc_standin.run_fork(script, host, cmd)
    return {"root": root, "host": host, "voc": root / "voc", "ids": ids, "labels": labels, "script": script,
            "cmd": cmd, "proc": proc}


def host_args(fork, **extra) -> argparse.Namespace:
    values = dict(num_workers=0, voc12_root=str(fork["voc"]), train_list="voc12/train_aug.txt",
                  cam_network="net.resnet50_cam", cam_scales=(1.0, 0.5), cam_weights_name="sess/res50_cam.pth",
                  cam_out_dir="result/recam", lpcam_progress=False, lpcam_recam_epochs=2, lpcam_recam_batch_size=4,
                  lpcam_recam_learning_rate=0.01, lpcam_recam_crop_size=64)
    values.update(extra)
    return argparse.Namespace(**values)


def check_irn_format(path: Path, label: np.ndarray) -> dict:
    d = voc_standin.load_host_dict(path)
    assert list(d) == ["keys", "cam", "high_res"]
    assert d["keys"].dtype == torch.int64 and d["keys"].tolist() == np.nonzero(label)[0].tolist()
    assert d["cam"].dtype == torch.float32 and d["high_res"].dtype == np.float32
    for maps in (d["cam"].numpy(), d["high_res"]):  # divided by max + 1e-5
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() < 1
    return d


def test_recam_step_files_and_host_steps_read_the_maps(fork):
    host, proc = fork["host"], fork["proc"]
    files = recam_files(str(host / "sess" / "res50_cam.pth.pth"))
    assert files["weights"].exists() and files["recam"].exists() and not files["training"].exists()
    recam = ReCAM.load(files["recam"])
    assert recam.n_steps_ == 2 * (N_IMAGES // 4) and len(recam.loss_history_) == 2
    # the fine-tuned network is in the host's own checkpoint format: its CAM class loads it
    with voc_standin.imported_host(host):
        from net import resnet50_cam
        model = resnet50_cam.CAM()
        model.load_state_dict(torch.load(files["weights"], weights_only=True), strict=True)
        torch.testing.assert_close(model.classifier.weight[:, :, 0, 0], recam.bce_weight_)
    bank = PrototypeBank.load(files["weights"].with_suffix(".lpcam_bank.npz"))
    assert bank.metadata["fit_key"]["split"] == "ReCAM maps (sce*bce)"
    assert "ReCAM selection weight (bce)" == bank.metadata["fit_key"]["selection_weight"]
    for image_id in fork["ids"]:
        check_irn_format(host / "result" / "cam" / f"{image_id}.npy", fork["labels"][image_id])
    assert MIOU.search(proc.stdout), proc.stdout[-2000:]  # eval_cam scored them
    for image_id in fork["ids"][:N_TRAIN]:
        assert (host / "result" / "sem_seg" / f"{image_id}.png").exists()  # make_sem_seg_labels read them


def test_rerun_reuses_the_recam_step_and_recam_maps_match_the_fitted_weights(fork, caplog):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    with voc_standin.imported_host(host):
        args = host_args(fork)
        assert irn.run(args, method="recam") == N_IMAGES
        assert "reusing the ReCAM step" in caplog.text and "training the ReCAM step" not in caplog.text
        files = recam_files(str(host / "sess" / "res50_cam.pth.pth"))
        recam = ReCAM.load(files["recam"])
        model = hosts.load_host_model(irn.SPEC, args, torch.device("cpu"), files["weights"])
        dataset = irn.SPEC.dataset.msf(args, (1.0,))
        pack = dataset[1]
        stack = torch.from_numpy(np.ascontiguousarray(pack["img"]))
        classes = torch.nonzero(pack["label"])[:, 0].tolist()
        with torch.no_grad():
            feats = hosts.stage4_features(model, stack)
            single = cam_map(feats, recam.sce_weight_ * recam.bce_weight_, classes, normalize=False)
        expected = single[0] + single[1].flip(-1)  # the reference's forward2: relu per view, flip summed
        single_scale = host_args(fork, cam_scales=(1.0,), cam_out_dir="result/recam_single")
        assert irn.run(single_scale, method="recam") == N_IMAGES
        d = check_irn_format(host / "result" / "recam_single" / f"{pack['name']}.npy", fork["labels"][pack["name"]])
        size = pack["size"]
        up = hosts.resize(expected, hosts.strided_up_size(size))[:, :size[0], :size[1]]
        up = up / (up.amax(dim=(1, 2), keepdim=True) + 1e-5)
        np.testing.assert_allclose(d["high_res"], up.numpy(), atol=1e-5)
        # a rerun of the same producer skips every file; another method writes into its own done log
        caplog.clear()
        assert irn.run(args, method="recam") == 0
        assert irn.run(host_args(fork, cam_out_dir="result/recam"), method="cam") == N_IMAGES


class Stop(Exception):
    pass


def test_a_stopped_recam_step_resumes_to_the_uninterrupted_result(fork, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    real_set_epoch = PackBatches.set_epoch

    def seeded_augmentation(self, epoch):  # IRN draws its crops and flips from Python's random
        random.seed(epoch)
        real_set_epoch(self, epoch)

    monkeypatch.setattr(PackBatches, "set_epoch", seeded_augmentation)
    with voc_standin.imported_host(host):
        results = {}
        for name in ("straight", "stopped"):
            weights = host / "sess" / f"{name}.pth"
            weights.write_bytes((host / "sess" / "res50_cam.pth.pth").read_bytes())
            args = host_args(fork, cam_weights_name=str(host / "sess" / name), cam_out_dir=str(tmp_path / name))
            if name == "stopped":
                real = ReCAM._set_learning_rates

                def dies_in_epoch_two(self, optimizer, step, total, real=real):
                    if step == total // 2:
                        raise Stop
                    real(self, optimizer, step, total)

                monkeypatch.setattr(ReCAM, "_set_learning_rates", dies_in_epoch_two)
                with pytest.raises(Stop):
                    irn.run(args, method="recam")
                monkeypatch.setattr(ReCAM, "_set_learning_rates", real)
                assert recam_files(str(weights))["training"].exists()
                caplog.clear()
            assert irn.run(args, method="recam") == N_IMAGES
            results[name] = ReCAM.load(recam_files(str(weights))["recam"])
        assert "resuming from" in caplog.text and "after epoch 1 of 2" in caplog.text
        torch.testing.assert_close(results["stopped"].bce_weight_, results["straight"].bce_weight_)
        torch.testing.assert_close(results["stopped"].sce_weight_, results["straight"].sce_weight_)


def test_amn_route_b_and_unknown_methods_are_refused(fork):
    args = host_args(fork, lpcam_method="recam")
    with pytest.raises(ValueError, match="cannot write --lpcam_method recam: AMN's own CAM"):
        amn.run(args, route="b")
    with pytest.raises(ValueError, match="lpcam_method must be one of"):
        irn.run(host_args(fork), method="gradcam")


@pytest.mark.parametrize("host, reason", [("edam", "3x3 mask_layer"), ("mctformer", "class tokens")])
def test_edam_and_mctformer_refuse_recam_and_say_why(host, reason):
    import importlib

    adapter = importlib.import_module(f"lpcam_plugin.adapters.{host}")
    with pytest.raises(ValueError, match=f"method 'recam' is not available .*{reason}"):
        adapter.fit(torch.nn.Identity(), [], method="recam")


def test_patched_step_spawned_workers_share_one_recam_step(tmp_path):
    """``patch()`` + the unchanged ``make_cam.run`` with 2 (faked) GPUs and ``--lpcam_method
    recam+lpcam``: worker 0 alone trains the ReCAM step and fits the bank, and the two workers
    write every image in IRN's format."""
    ids = voc_standin.image_ids(N_IMAGES)
    labels = voc_standin.make_voc(tmp_path / "voc", ids, ids[:N_TRAIN])
    host = voc_standin.make_host(tmp_path / "irn", "irn", labels, ids, ids[:N_TRAIN])
    script = voc_standin.irn_fork(host, gpus=2)
    cmd = ["--voc12_root", str(tmp_path / "voc"), "--num_workers", "2", "--eval_cam_pass", "off",
           "--cam_to_ir_label_pass", "off", "--make_sem_seg_pass", "off", "--lpcam_loader_workers", "0",
           "--lpcam_progress", "false", "--lpcam_device", "cpu", "--lpcam_method", "recam+lpcam", *RECAM_OPTIONS]
    proc = voc_standin.run_fork(script, host, cmd)
    # worker 0 alone trains the ReCAM step and fits the bank; worker 1 waits or reuses (timing decides)
    assert proc.stderr.count("training the ReCAM step") == 1, proc.stderr[-2000:]
    assert proc.stderr.count("fitting the LPCAM bank") == 1, proc.stderr[-2000:]
    written = re.findall(r"worker (\d): wrote (\d) recam\+lpcam files", proc.stderr)
    assert sorted(written) == [("0", "4"), ("1", "4")], proc.stderr[-2000:]
    for image_id in ids:
        check_irn_format(host / "result" / "cam" / f"{image_id}.npy", labels[image_id])
