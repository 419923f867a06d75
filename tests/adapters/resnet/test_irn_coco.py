"""IRN adapter on the IRN-based COCO pipeline of the LPCAM / ReCAM reference (stand-in tests/hosts/irn_coco_host):
``irn.run(args)`` with ``run_sample_coco.py``'s arguments in place of ``step_coco.make_lpcam.run(args)``."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import voc_standin

import lpcam_plugin.adapters.irn as irn
from lpcam_plugin import PrototypeBank
from lpcam_plugin.adapters.resnet.datasets import COCO, VOC, host_dataset
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.check_host.coco_data import write_coco_dataset
from lpcam_plugin.core.datasets import DATASETS
from lpcam_plugin.core.evaluate import evaluate_folder
from lpcam_plugin.core.formats import read_irn_cam
from lpcam_plugin.methods.lpcam.config import PRESETS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

SIZE = 48


def coco_args(work: Path, **extra) -> argparse.Namespace:
    """``run_sample_coco.py``'s namespace (its names, joined under the work space as it joins them), with the
    adapter's options added by ``irn.add_arguments`` and tiny-data settings."""
    args = irn.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--lpcam_device", "cpu", "--lpcam_progress", "false", "--lpcam_loader_workers", "0",
         "--lpcam_num_clusters", "2"])
    values = dict(num_workers=1, mscoco_root=str(work / "MSCOCO"), num_classes=80, cam_network="net.resnet50_cam",
                  cam_eval_thres=0.3, cam_scales=(1.0, 0.5), conf_fg_thres=0.45, conf_bg_thres=0.25,
                  work_space="ws", cam_weights_name=os.path.join("ws", "res50_cam.pth"),
                  cam_out_dir=os.path.join("ws", "cam_mask"), lpcam_out_dir=os.path.join("ws", "lpcam_mask"),
                  ir_label_out_dir=os.path.join("ws", "ir_label"))
    values.update(extra)
    for key, value in values.items():
        setattr(args, key, value)
    return args


@pytest.fixture()
def coco_fork(tmp_path):
    """The stand-in COCO pipeline (split fix applied) with a tiny synthetic COCO written by check-host's writer:
    the fork root is the working directory, holding ``mscoco/train_labels.npy`` as the pipeline reads it."""
    host = voc_standin.copy_host(tmp_path / "lpcam", "irn_coco")
    _, names, labels = write_coco_dataset(host, num_images=20, image_size=SIZE)
    with voc_standin.imported_host(host):
        from net import resnet50_cam
        torch.manual_seed(0)
        os.makedirs("ws/ir_label")
        torch.save(resnet50_cam.CAM(n_classes=80).state_dict(), "ws/res50_cam.pth")  # no .pth appended on COCO
        yield host, names, labels


def test_the_dataset_follows_the_host_arguments():
    assert host_dataset(argparse.Namespace(voc12_root="VOC2012")) is VOC
    assert host_dataset(argparse.Namespace(mscoco_root="../MSCOCO/")) is COCO
    assert irn.spec_for(argparse.Namespace(mscoco_root="../MSCOCO/")) is irn.COCO_SPEC
    assert irn.COCO_SPEC.weights_path(argparse.Namespace(cam_weights_name="ws/res50_cam.pth")) == "ws/res50_cam.pth"
    assert irn.SPEC.weights_path(argparse.Namespace(cam_weights_name="sess/res50_cam.pth")) == "sess/res50_cam.pth.pth"
    parser = irn.add_arguments(argparse.ArgumentParser())
    coco = LPCAMOptions.from_args(parser.parse_args([]), "coco")
    assert coco.preset == "coco" and coco.config == PRESETS["coco"]
    assert coco.fit_sampling == "reference" and coco.images_per_class == 100
    voc = LPCAMOptions.from_args(parser.parse_args([]))
    assert voc.fit_sampling == "all" and voc.images_per_class is None
    capped = LPCAMOptions.from_args(parser.parse_args(["--lpcam_images_per_class", "5"]))
    assert capped.fit_sampling == "capped"
    bounded = LPCAMOptions.from_args(parser.parse_args(["--lpcam_fit_sampling", "capped"]), "coco")
    assert bounded.fit_sampling == "capped" and bounded.images_per_class == 100
    with pytest.raises(ValueError, match="needs lpcam_images_per_class"):
        LPCAMOptions.from_args(parser.parse_args(["--lpcam_fit_sampling", "reference"]))


def test_lpcam_on_the_coco_pipeline_writes_what_its_next_steps_read(coco_fork, caplog):
    host, names, labels = coco_fork
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    args = coco_args(host, lpcam_auto_threshold=True)
    assert irn.run(args) == 20
    out = Path(args.lpcam_out_dir)
    assert sorted(p.stem for p in out.glob("*.npy")) == sorted(names)
    assert not any(Path(args.cam_out_dir).glob("*.npy"))  # the host's own CAM folder is left alone
    for name in names:
        keys, high = read_irn_cam(out / f"{name}.npy", allow_pickle=True)
        assert keys.tolist() == np.nonzero(labels[name])[0].tolist()
        assert high.shape == (len(keys), SIZE, SIZE)
    empty = names[-1]  # the image without objects: no keys, no maps, as the reference writes it
    data = np.load(out / f"{empty}.npy", allow_pickle=True).item()
    assert data["keys"].numel() == 0 and tuple(data["cam"].shape) == (0, SIZE // 4, SIZE // 4)
    # The bank: 80 classes, COCO's names, fitted on the reference's per-class draws (one class per entry).
    bank = PrototypeBank.load(Path("ws/res50_cam.lpcam_bank.npz"))
    assert bank.num_classes == 80 and bank.class_names[0] == "person"
    assert "reference sampling" in caplog.text and "instances_train2014.json" in caplog.text
    assert args.cam_eval_thres != 0.3 and (out / "lpcam_threshold.json").is_file()
    # The host's next steps read them; the host's evaluation equals lpcam eval --dataset coco.
    from step_coco import cam_to_ir_label, eval_cam
    cam_to_ir_label.run(args)
    assert len(list(Path(args.ir_label_out_dir).glob("*.png"))) == 20
    host_miou = eval_cam.run(args)
    layout = DATASETS["coco"]
    ours = evaluate_folder(out, host / "MSCOCO" / "mask" / "train2014", names, allow_pickle=True,
                           thresholds=[args.cam_eval_thres], num_classes=layout.num_classes, gt_name=layout.gt_name,
                           progress=False)
    assert float(ours.miou[0]) == pytest.approx(host_miou, abs=1e-9)


def test_fcam_over_cam_trains_on_the_coco_images(coco_fork):
    host, names, labels = coco_fork
    args = coco_args(host, lpcam_method="fcam", lpcam_fcam_epochs=1, lpcam_fcam_batch_size=4,
                     lpcam_fcam_crop_size=32, lpcam_fcam_decoder_channels=[8, 4])
    assert irn.run(args) == 20
    assert Path("ws/res50_cam.fcam_cam.npz").is_file()
    keys, high = read_irn_cam(Path(args.lpcam_out_dir) / f"{names[0]}.npy", allow_pickle=True)
    assert keys.tolist() == np.nonzero(labels[names[0]])[0].tolist() and high.shape[1:] == (SIZE, SIZE)


def test_the_unfixed_split_fails_in_the_host_step_as_upstream(tmp_path):
    host = voc_standin.copy_host(tmp_path / "lpcam", "irn_coco", fix_split=False)
    write_coco_dataset(host, num_images=20, image_size=SIZE)
    with voc_standin.imported_host(host):
        from step_coco import cam_to_ir_label
        with pytest.raises(ValueError, match="Index must be of type integer"):
            cam_to_ir_label.run(coco_args(host))
