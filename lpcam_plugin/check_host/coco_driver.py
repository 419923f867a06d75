"""The IRN COCO driver of ``lpcam check-host --dataset coco``: the IRN-based COCO pipeline of the
LPCAM / ReCAM reference repositories (``run_sample_coco.py``, ``step_coco``, ``mscoco``).

Runs in the driver subprocess with the fork first on ``sys.path`` and the work folder (holding
``mscoco/train_labels.npy``, as the pipeline reads it) as working directory: builds ``CAM(n_classes=80)``
with random weights, runs :func:`lpcam_plugin.adapters.irn.run` where ``run_sample_coco.py`` calls
``step_coco.make_lpcam.run(args)``, checks every file of ``args.lpcam_out_dir`` against the host
format, runs the host's own ``step_coco.cam_to_ir_label`` (and ``step_coco.eval_cam`` when chainercv
imports) on them, and scores them with ``lpcam eval --dataset coco``'s reader of the
``mask/train2014/<int id>.png`` ground truth.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
from typing import Any, Dict

import numpy as np

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.offline import offline_weights
from lpcam_plugin.check_host.resnet_driver import (
    chainer_eval,
    check_resnet_files,
    lpcam_cpu_settings,
    pngs,
    save_random_weights,
    threshold_beside,
)

#: ``run_sample_coco.py``'s work space and output names (its defaults, joined as it joins them).
WORK_SPACE = "result_coco"


def _coco_args(config: Dict[str, Any]) -> argparse.Namespace:
    """The namespace ``run_sample_coco.py`` builds (its names and defaults), CPU settings."""
    from lpcam_plugin.adapters import irn

    args = irn.add_arguments(argparse.ArgumentParser()).parse_args([])
    join = os.path.join
    values = dict(num_workers=1, mscoco_root=config["mscoco_root"], num_classes=80, cam_network="net.resnet50_cam",
                  feature_dim=2048, cam_crop_size=512, cam_batch_size=16, cam_eval_thres=0.3,
                  cam_scales=(1.0, 0.5, 1.5, 2.0), conf_fg_thres=0.45, conf_bg_thres=0.25, work_space=WORK_SPACE,
                  cam_weights_name=join(WORK_SPACE, "res50_cam.pth"), cam_out_dir=join(WORK_SPACE, "cam_mask"),
                  lpcam_out_dir=join(WORK_SPACE, "lpcam_mask"), ir_label_out_dir=join(WORK_SPACE, "ir_label"),
                  **lpcam_cpu_settings(config))
    for key, value in values.items():
        setattr(args, key, value)
    for folder in (args.cam_out_dir, args.lpcam_out_dir, args.ir_label_out_dir):
        os.makedirs(folder, exist_ok=True)
    return args


def drive_irn_coco(rec: Recorder, config: Dict[str, Any]) -> None:
    """Random ``CAM(n_classes=80)`` weights, ``irn.run(args)`` on the COCO pipeline, the host's next steps."""
    from lpcam_plugin.adapters import irn
    from lpcam_plugin.core.datasets import DATASETS
    from lpcam_plugin.core.evaluate import evaluate_folder

    args = _coco_args(config)
    ids = config["ids"]
    labels = {n: np.asarray(v, np.float32) for n, v in config["labels"].items()}
    with rec.step("import the host (net, mscoco.dataloader, step_coco)"):
        importlib.import_module(args.cam_network)
        importlib.import_module("mscoco.dataloader")
        importlib.import_module("step_coco.cam_to_ir_label")
    with rec.step("host network with random weights (no download)") as info:
        save_random_weights(args.cam_network, args.cam_weights_name, 0, n_classes=80)
        info["detail"] = f"{args.cam_network}.CAM(n_classes=80) -> {args.cam_weights_name}"
    with rec.step("host dataset reads the annotations and train_labels.npy") as info:
        dataset = importlib.import_module("mscoco.dataloader").COCOClassificationDatasetMSF(
            image_dir=os.path.join(args.mscoco_root, "train2014/"),
            anno_path=os.path.join(args.mscoco_root, "annotations", "instances_train2014.json"),
            labels_path="./mscoco/train_labels.npy", scales=args.cam_scales)
        info["detail"] = f"{len(dataset)} images; item keys {sorted(dataset[0])}, first {dataset[0]['name']}"
    with offline_weights(), rec.step(f"lpcam_irn.run(args) ({args.lpcam_method} instead of "
                                     "step_coco.make_lpcam.run)") as info:
        info["detail"] = f"{irn.run(args)} files written to {args.lpcam_out_dir}"
    threshold_beside(rec, args, args.lpcam_out_dir, patched=False)
    with rec.step("files follow the host format") as info:
        images = os.path.join(args.mscoco_root, "train2014")
        info["detail"] = check_resnet_files(args.lpcam_out_dir, ids, labels,
                                            lambda n: os.path.join(images, f"{n}.jpg"), background=False)
    with rec.step("host step_coco.cam_to_ir_label.run(args) reads them") as info:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module("step_coco.cam_to_ir_label").run(args)
        info["detail"] = pngs(args.ir_label_out_dir, ids)
    chainer_eval(rec, "step_coco.eval_cam", args)
    with rec.step("lpcam eval --dataset coco reads them (mask/train2014/<int id>.png)") as info:
        layout = DATASETS["coco"]
        result = evaluate_folder(args.lpcam_out_dir, os.path.join(args.mscoco_root, "mask", "train2014"), ids,
                                 allow_pickle=True, thresholds=[args.cam_eval_thres], progress=False,
                                 num_classes=layout.num_classes, gt_name=layout.gt_name)
        miou = 100 * float(result.miou[0])
        info["detail"] = f"mIoU {miou:.1f} at threshold {args.cam_eval_thres:.3f} (random weights)"


__all__ = ["WORK_SPACE", "drive_irn_coco"]
