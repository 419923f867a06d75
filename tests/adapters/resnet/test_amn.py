"""AMN adapter against the stand-in AMN host (tests/hosts/irn_host + amn_host): both routes, head reduction."""
from __future__ import annotations

import argparse
import logging
import re
from typing import Dict

import numpy as np
import pytest
import torch
from conftest import MIOU, voc_standin
from PIL import Image
from torch import nn

import lpcam_plugin.adapters.amn as amn
from lpcam_plugin import PrototypeBank
from lpcam_plugin.core.evaluate import sweep
from lpcam_plugin.core.formats import read_irn_cam, read_label_png

pytestmark = pytest.mark.filterwarnings("ignore:class \\d+:RuntimeWarning")

EVAL_THRESHOLD = 0.3
N_IMAGES, N_TRAIN = 6, 4


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Dict[str, object]:
    """A stand-in AMN fork with ``amn.patch("a")`` before ``make_cam`` and ``amn.patch("b")`` before
    ``make_amn_cam``, run end to end in a subprocess (each CAM step spawns one worker)."""
    root = tmp_path_factory.mktemp("amn")
    ids = voc_standin.image_ids(N_IMAGES)
    labels = voc_standin.make_voc(root / "voc", ids, ids[:N_TRAIN], seed=1)
    host = voc_standin.make_host(root / "amn", "amn", labels, ids, ids[:N_TRAIN])
    script = voc_standin.make_fork(host, {
        "    args = parser.parse_args()":
            "    import logging\n    logging.basicConfig(level=logging.INFO)\n" + voc_standin.fake_gpus(1) +
            "    import lpcam_plugin.adapters.amn as lpcam_amn\n"
            "    lpcam_amn.add_arguments(parser)\n    args = parser.parse_args()",
        "        step.make_cam.run(args)": "        lpcam_amn.patch('a')\n        step.make_cam.run(args)",
        "        step.make_amn_cam.run(args)": "        lpcam_amn.patch('b')\n        step.make_amn_cam.run(args)",
        '    parser.add_argument("--sem_seg_bg_thres", default=0.25)':
            '    parser.add_argument("--sem_seg_bg_thres", default=0.25, type=float)',
    })
    passes = ["train_cam", "make_cam", "eval_cam", "cam_to_ir_label", "train_amn", "make_amn_cam", "eval_amn_cam",
              "amn_cam_to_ir_label", "make_sem_seg"]
    cmd = ["--voc12_root", str(root / "voc"), "--num_workers", "1",
           "--cam_eval_thres", str(EVAL_THRESHOLD), "--sem_seg_bg_thres", "0.35",
           "--lpcam_loader_workers", "0", "--lpcam_progress", "false", "--lpcam_device", "cpu"]
    for name in passes:
        cmd += [f"--{name}_pass", "true"]
    proc = voc_standin.run_fork(script, host, cmd)
    return {"root": root, "host": host, "voc": root / "voc", "ids": ids, "labels": labels,
            "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.slow
def test_both_routes_write_host_formats_in_spawned_workers(pipeline):
    host, voc, labels = pipeline["host"], pipeline["voc"], pipeline["labels"]
    assert len(re.findall(r"\[lpcam pid \d+\] INFO worker 0: wrote \d lpcam files to result/(\w+)",
                          pipeline["stderr"])) == 2, pipeline["stderr"][-2000:]
    for image_id in pipeline["ids"]:
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            w, h = image.size
        keys = np.nonzero(labels[image_id])[0]
        stage1 = voc_standin.load_host_dict(host / "result/cam" / f"{image_id}.npy")
        mine = voc_standin.load_host_dict(host / "result/amn_cam" / f"{image_id}.npy")
        assert stage1["high_res"].shape == (len(keys), h, w)  # route a: IRN format, no background
        assert list(mine) == ["keys", "cam", "high_res"]
        assert mine["keys"].dtype == torch.int64 and mine["keys"].tolist() == keys.tolist()
        assert isinstance(mine["cam"], torch.Tensor) and mine["cam"].dtype == torch.float32
        assert tuple(mine["cam"].shape) == (1 + len(keys), (h - 1) // 4 + 1, (w - 1) // 4 + 1)
        assert isinstance(mine["high_res"], np.ndarray) and mine["high_res"].dtype == np.float32
        assert mine["high_res"].shape == (1 + len(keys), h, w)
        for maps in (mine["cam"].numpy(), mine["high_res"]):
            assert np.isfinite(maps).all() and maps.min() >= 0
            np.testing.assert_allclose(maps[1:].max(axis=(1, 2)), 1.0, atol=1e-3)
            np.testing.assert_allclose(maps[0], 1.0 - maps[1:].max(axis=0), atol=1e-6)  # bg placeholder
        assert read_label_png(host / "result/amn_ir_label" / f"{image_id}.png").shape == (h, w)
    for image_id in pipeline["ids"][:N_TRAIN]:
        assert (host / "result/sem_seg" / f"{image_id}.png").exists()
    banks = {PrototypeBank.load(host / "sess" / name).metadata["fit_key"]["host"]: name
             for name in ("res50_cam.pth.lpcam_bank.npz", "res50_amn.pth.lpcam_bank.npz")}
    assert banks == {"irn": "res50_cam.pth.lpcam_bank.npz", "amn": "res50_amn.pth.lpcam_bank.npz"}


@pytest.mark.slow
def test_lpcam_evaluate_matches_host_eval_amn_cam(pipeline):
    stage1_miou, amn_miou = (float(m) for m in MIOU.findall(pipeline["stdout"]))
    ids = (pipeline["voc"] / "ImageSets/Segmentation/train.txt").read_text().split()
    gts = [read_label_png(pipeline["voc"] / "SegmentationClass" / f"{i}.png") for i in ids]
    for folder, host_miou in (("cam", stage1_miou), ("amn_cam", amn_miou)):
        maps = [read_irn_cam(pipeline["host"] / "result" / folder / f"{i}.npy", allow_pickle=True) for i in ids]
        result = sweep(maps, gts, [EVAL_THRESHOLD], 21, progress=False)
        assert result.metrics["miou"][0] == pytest.approx(host_miou, abs=1e-9)


@pytest.mark.slow
def test_in_process_route_b_equals_patched_worker(pipeline, caplog):
    host = pipeline["host"]
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    args = argparse.Namespace(
        num_workers=0, voc12_root=str(pipeline["voc"]), train_list="voc12/train_aug.txt",
        cam_scales=(1.0, 0.5, 1.5, 2.0),
        amn_network="net.resnet50_amn", amn_weights_name="sess/res50_amn.pth", ir_label_out_dir="result/ir_label",
        amn_cam_out_dir="result/amn_cam_inproc", lpcam_progress=False)
    with voc_standin.imported_host(host):
        assert amn.run(args, route="b") == N_IMAGES
    assert "reusing the LPCAM bank sess/res50_amn.pth.lpcam_bank.npz" in caplog.text
    for image_id in pipeline["ids"]:
        a = voc_standin.load_host_dict(host / "result/amn_cam" / f"{image_id}.npy")
        b = voc_standin.load_host_dict(host / "result/amn_cam_inproc" / f"{image_id}.npy")
        assert torch.equal(a["keys"], b["keys"]) and torch.allclose(a["cam"], b["cam"], atol=1e-6)
        np.testing.assert_allclose(a["high_res"], b["high_res"], atol=1e-6)


def _aspp_head(dim: int) -> nn.Module:
    with voc_standin.imported_host(voc_standin.HOSTS / "amn_host"):
        from net.resnet50_amn import _ASPP  # the stand-in's head class (imports net.resnet50 from irn_host)
    torch.manual_seed(0)
    head = nn.Sequential(nn.Dropout(0.1), _ASPP(in_ch=dim, out_ch=21, rates=[6, 12, 18, 24]))
    for conv in head[1].children():
        nn.init.normal_(conv.weight, std=0.1)
        nn.init.normal_(conv.bias, std=0.1)
    return head.eval()


def test_aspp_reduction_equals_the_head_on_constant_features(monkeypatch):
    monkeypatch.syspath_prepend(str(voc_standin.HOSTS / "irn_host"))
    dim = 16
    head = _aspp_head(dim)
    f = torch.rand(dim)
    weight, bias = amn.aspp_selection_weight(head, "sum")
    assert weight.shape == (20, dim) and bias.shape == (20,)
    # Away from the border (49 x 49 map, centre pixel: every tap of rate 24 is inside), the
    # 4-branch dilated head on a constant feature is the summed-tap linear map, row 0 = background.
    with torch.no_grad():
        inside = head(f[None, :, None, None].expand(1, dim, 49, 49))[0, :, 24, 24]
        corner = head(f[None, :, None, None])[0, :, 0, 0]  # 1 x 1 map: only the centre taps see data
    torch.testing.assert_close(weight @ f + bias, inside[1:], atol=1e-4, rtol=1e-4)
    centre_w, centre_b = amn.aspp_selection_weight(head, "center")
    torch.testing.assert_close(centre_w @ f + centre_b, corner[1:], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(weight, centre_w)
    with pytest.raises(ValueError, match="head reduction"):
        amn.aspp_selection_weight(head, "mean")
    with pytest.raises(ValueError, match="21 channels"):
        amn.aspp_selection_weight(nn.Sequential(nn.Conv2d(dim, 20, 3)), "sum")


def test_patch_refuses_without_cuda(pipeline, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with voc_standin.imported_host(pipeline["host"]):
        from step import make_amn_cam, make_cam
        originals = make_cam._work, make_amn_cam._work
        with pytest.raises(RuntimeError, match=r'make_amn_cam\.run\(args\) would spawn zero workers.*route="b"'):
            amn.patch("b")
        with pytest.raises(RuntimeError, match=r"step\.make_cam\.run\(args\) would spawn zero workers"):
            amn.patch("a")
        assert (make_cam._work, make_amn_cam._work) == originals


def test_routes_are_validated_and_patch_targets_the_right_worker(pipeline, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="route must be one of"):
        amn.patch("c")
    with pytest.raises(ValueError, match="lpcam_head_reduction"):
        amn.spec("mean")
    with voc_standin.imported_host(pipeline["host"]):
        from step import make_amn_cam, make_cam
        originals = make_cam._work, make_amn_cam._work
        amn.patch("b")
        assert make_amn_cam._work is amn._work and make_cam._work is originals[0]
        amn.patch("a")
        assert make_cam._work.__module__ == "lpcam_plugin.adapters.irn"
        amn.unpatch("a")
        amn.unpatch("b")
        assert (make_cam._work, make_amn_cam._work) == originals
