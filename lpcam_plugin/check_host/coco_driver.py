"""The COCO drivers of ``lpcam check-host --dataset coco``.

:func:`drive_irn_coco`: the IRN-based COCO pipeline of the LPCAM / ReCAM reference repositories
(``run_sample_coco.py``, ``step_coco``, ``mscoco``). It runs in the driver subprocess with the
fork first on ``sys.path`` and the work folder (holding ``mscoco/train_labels.npy``, as the pipeline
reads it) as working directory: builds ``CAM(n_classes=80)`` with random weights, runs
:func:`lpcam_plugin.adapters.irn.run` where ``run_sample_coco.py`` calls
``step_coco.make_lpcam.run(args)``, checks every file of ``args.lpcam_out_dir`` against the host
format, runs the host's own ``step_coco.cam_to_ir_label`` (and ``step_coco.eval_cam`` when chainercv
imports) on them, and scores them with ``lpcam eval --dataset coco``'s reader of the
``mask/train2014/<int id>.png`` ground truth.

:func:`drive_amn_coco14`: AMN's ``coco14`` branch. Route "a" writes the stage-1 maps with
``CAM(coco=True)`` where ``step.make_cam_coco.run(args)`` would, then runs the host's
``step.cam_to_ir_label_coco``; route "b" also writes AMN's own maps where
``step.make_amn_cam_coco.run(args)`` would and runs ``step.amn_cam_to_ir_label_coco``. The host's
``eval_*_coco`` steps read a hard-coded ``/data/coco_2014/coco_seg_anno``: they are skipped and the
files scored with ``lpcam eval --dataset coco14``'s reader.
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
    fill_namespace,
    import_host,
    lpcam_cpu_settings,
    pngs,
    save_random_weights,
    threshold_beside,
)

#: ``run_sample_coco.py``'s work space and output names (its defaults, joined as it joins them).
WORK_SPACE = "result_coco"
#: What a user of AMN's coco14 evaluation steps must change (they ignore ``--coco14_root``).
AMN_EVAL_FIX = ("step/eval_cam_coco.py, eval_amn_cam_coco.py: the ground truth path is hard-coded "
                "('/data/coco_2014/coco_seg_anno/%s.png'); write os.path.join(args.coco14_root, 'coco_seg_anno', "
                "id + '.png'), or score with lpcam eval --dataset coco14")


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
    return fill_namespace(args, values, [values[k] for k in ("cam_out_dir", "lpcam_out_dir", "ir_label_out_dir")])


def drive_irn_coco(rec: Recorder, config: Dict[str, Any]) -> None:
    """Random ``CAM(n_classes=80)`` weights, ``irn.run(args)`` on the COCO pipeline, the host's next steps."""
    from lpcam_plugin.adapters import irn

    args = _coco_args(config)
    ids = config["ids"]
    labels = {n: np.asarray(v, np.float32) for n, v in config["labels"].items()}
    import_host(rec, "net, mscoco.dataloader, step_coco",
                [args.cam_network, "mscoco.dataloader", "step_coco.cam_to_ir_label"])
    save_random_weights(rec, args.cam_network, args.cam_weights_name, 0, n_classes=80)
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
    _host_step(rec, "step_coco.cam_to_ir_label", args, args.ir_label_out_dir, ids)
    chainer_eval(rec, "step_coco.eval_cam", args)
    _score(rec, args.lpcam_out_dir, os.path.join(args.mscoco_root, "mask", "train2014"), ids, args.cam_eval_thres,
           "coco")


def _amn_coco14_args(config: Dict[str, Any]) -> argparse.Namespace:
    """The namespace AMN's ``run_sample_coco.py`` builds (its names and defaults), CPU settings.

    ``num_workers`` is 0: the host's ``cam_to_ir_label_coco`` always starts 16 processes and the one
    numbered ``num_workers - 1`` divides by ``len(its images) // 20``, zero on a tiny set."""
    from lpcam_plugin.adapters import amn

    args = amn.add_arguments(argparse.ArgumentParser()).parse_args([])
    values = dict(num_workers=0, coco14_root=config["coco14_root"], train_list="coco14/train14.txt",
                  infer_list="coco14/train14.txt", cam_network="net.resnet50_cam", amn_network="net.resnet50_amn",
                  cam_eval_thres=0.25, cam_scales=(1.0, 0.5, 1.5, 2.0), conf_fg_thres=0.45, conf_bg_thres=0.15,
                  cam_weights_name="sess/res50_cam_coco.pth", amn_weights_name="sess/res50_amn_coco.pth",
                  cam_out_dir="result/cam_coco", ir_label_out_dir="result/ir_label_coco",
                  amn_cam_out_dir="result/amn_cam_coco", amn_ir_label_out_dir="result/amn_ir_label_coco",
                  **lpcam_cpu_settings(config))
    return fill_namespace(args, values, ["sess"] + [values[k] for k in ("cam_out_dir", "ir_label_out_dir",
                                                                        "amn_cam_out_dir", "amn_ir_label_out_dir")])


def _score(rec: Recorder, folder: str, gt_dir: str, ids: Any, threshold: float, dataset: str) -> None:
    """``lpcam eval --dataset <dataset>``'s reader on the written files (random weights: agreement, not quality)."""
    from lpcam_plugin.core.datasets import DATASETS
    from lpcam_plugin.core.evaluate import evaluate_folder

    with rec.step(f"lpcam eval --dataset {dataset} reads them") as info:
        layout = DATASETS[dataset]
        result = evaluate_folder(folder, gt_dir, ids, allow_pickle=True, thresholds=[threshold], progress=False,
                                 num_classes=layout.num_classes, gt_name=layout.gt_name)
        info["detail"] = f"mIoU {100 * float(result.miou[0]):.1f} at threshold {threshold:.3f} (random weights)"


def _host_step(rec: Recorder, module: str, args: argparse.Namespace, out_dir: str, ids: Any) -> None:
    with rec.step(f"host {module}.run(args) reads them") as info:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(module).run(args)
        info["detail"] = pngs(out_dir, ids)


def drive_amn_coco14(rec: Recorder, route: str, config: Dict[str, Any]) -> None:
    """AMN's coco14 branch: route "a" (stage-1 maps, ``cam_to_ir_label_coco``), route "b" (also AMN's maps,
    ``amn_cam_to_ir_label_coco``); the files scored against ``coco_seg_anno/<12 digits>.png``."""
    from lpcam_plugin.adapters import amn

    args = _amn_coco14_args(config)
    ids = config["ids"]
    labels = {n: np.asarray(v, np.float32) for n, v in config["labels"].items()}
    gt_dir = os.path.join(args.coco14_root, "coco_seg_anno")
    images = os.path.join(args.coco14_root, "JPEGImages", "train2014")

    def image_path(name: str) -> str:
        return os.path.join(images, f"COCO_train2014_{name}.jpg")

    import_host(rec, "net, coco14.dataloader, step",
                [args.cam_network, "coco14.dataloader", "step.cam_to_ir_label_coco"])
    save_random_weights(rec, args.cam_network, args.cam_weights_name + ".pth", 0, coco=True)
    with rec.step("host dataset reads coco14/train14.txt and cls_labels_coco.npy") as info:
        dataset = importlib.import_module("coco14.dataloader").COCO14ClassificationDatasetMSF(
            args.train_list, coco14_root=args.coco14_root, scales=args.cam_scales)
        info["detail"] = f"{len(dataset)} images; item keys {sorted(dataset[0])}, first {dataset[0]['name']}"
    with offline_weights(), rec.step(f'lpcam_amn.run(args, route="a") ({args.lpcam_method} instead of '
                                     "step.make_cam_coco.run)") as info:
        info["detail"] = f"{amn.run(args, route='a')} files written to {args.cam_out_dir}"
    threshold_beside(rec, args, args.cam_out_dir, patched=False)
    with rec.step("files follow the host format") as info:
        info["detail"] = check_resnet_files(args.cam_out_dir, ids, labels, image_path, background=False,
                                            empty_keys_only=True)
    _host_step(rec, "step.cam_to_ir_label_coco", args, args.ir_label_out_dir, ids)
    rec.add("steps", "host step.eval_cam_coco.run (seed mIoU)", "skip", "reads /data/coco_2014/coco_seg_anno",
            AMN_EVAL_FIX)
    _score(rec, args.cam_out_dir, gt_dir, ids, args.cam_eval_thres, "coco14")
    if route != "b":
        return
    save_random_weights(rec, args.amn_network, args.amn_weights_name + ".pth", 1, "AMN network")
    with offline_weights(), rec.step('lpcam_amn.run(args, route="b") (LPCAM instead of make_amn_cam_coco)') as info:
        info["detail"] = f"{amn.run(args, route='b')} files written to {args.amn_cam_out_dir}"
    threshold_beside(rec, args, args.amn_cam_out_dir, patched=False)
    with rec.step("AMN files follow the host format") as info:
        info["detail"] = check_resnet_files(args.amn_cam_out_dir, ids, labels, image_path, background=True,
                                            empty_keys_only=True)
    _host_step(rec, "step.amn_cam_to_ir_label_coco", args, args.amn_ir_label_out_dir, ids)
    _score(rec, args.amn_cam_out_dir, gt_dir, ids, args.cam_eval_thres, "coco14")


__all__ = ["AMN_EVAL_FIX", "WORK_SPACE", "drive_amn_coco14", "drive_irn_coco"]
