"""The IRN / AMN driver of ``lpcam check-host``: random weights, the adapter's route, then the host's steps.

Runs in the driver subprocess with the fork first on ``sys.path``: builds the host's ``CAM``
network with random weights (or trains it with the RCM+MAM ``train_cam`` adapter,
``--train-cam pss``), runs :mod:`lpcam_plugin.adapters.irn` / :mod:`lpcam_plugin.adapters.amn`
on the documented route, checks every file against the host format, then runs the host's own
``cam_to_ir_label`` and chainercv evaluation steps on them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import numpy as np

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.environment import module_version
from lpcam_plugin.check_host.fixes import known_fix
from lpcam_plugin.check_host.offline import offline_weights

#: ``--train-cam pss``: the tiny training schedule (IRN's run_sample names; 20 images, 5 steps per epoch).
PSS_TRAIN_SETTINGS: Dict[str, Any] = dict(
    cam_batch_size=4, cam_num_epoches=2, cam_learning_rate=0.01, cam_weight_decay=1e-4, lpcam_pss_crop_size=64,
    lpcam_pss_device="cpu", lpcam_pss_progress=False, lpcam_pss_loader_workers=0)


def lpcam_cpu_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """The ``--lpcam_*`` values of a check: CPU, no workers or bars, the tiny set's sizes, the checked read-out."""
    return dict(lpcam_device="cpu", lpcam_loader_workers=0, lpcam_progress=False, lpcam_num_clusters=4,
                lpcam_method=config.get("method", "lpcam"), lpcam_recam_epochs=1, lpcam_recam_batch_size=4,
                lpcam_recam_crop_size=64, lpcam_fcam_source=config.get("fcam_source", "cam"),
                lpcam_fcam_epochs=1, lpcam_fcam_batch_size=4, lpcam_fcam_crop_size=64,
                lpcam_fcam_decoder_channels=[16, 8], lpcam_auto_threshold=True)


def fill_namespace(args: argparse.Namespace, values: Dict[str, Any], folders: Sequence[str]) -> argparse.Namespace:
    """``args`` with ``values`` set (the host's ``run_sample`` names) and the output ``folders`` made."""
    for key, value in values.items():
        setattr(args, key, value)
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    return args


def _resnet_args(config: Dict[str, Any]) -> argparse.Namespace:
    """The namespace IRN's / AMN's ``run_sample.py`` builds (their names and defaults), CPU settings."""
    from lpcam_plugin.adapters import amn

    args = amn.add_arguments(argparse.ArgumentParser()).parse_args([])
    values = dict(num_workers=1, voc12_root=config["voc12_root"], train_list="voc12/train_aug.txt",
                  infer_list="voc12/train.txt", chainer_eval_set="train", cam_network="net.resnet50_cam",
                  amn_network="net.resnet50_amn", cam_scales=(1.0, 0.5, 1.5, 2.0), cam_eval_thres=0.15,
                  conf_fg_thres=0.30, conf_bg_thres=0.05, cam_weights_name="sess/res50_cam.pth",
                  amn_weights_name="sess/res50_amn.pth", cam_out_dir="result/cam", ir_label_out_dir="result/ir_label",
                  amn_cam_out_dir="result/amn_cam", amn_ir_label_out_dir="result/amn_ir_label",
                  **lpcam_cpu_settings(config))
    return fill_namespace(args, values, ["sess"] + [values[k] for k in ("cam_out_dir", "ir_label_out_dir",
                                                                        "amn_cam_out_dir", "amn_ir_label_out_dir")])


def import_host(rec: Recorder, what: str, modules: Sequence[str]) -> None:
    """One step importing the host's ``modules`` (``what`` names them in the checklist)."""
    with rec.step(f"import the host ({what})"):
        for module in modules:
            importlib.import_module(module)


def save_random_weights(rec: Recorder, network: str, path: str, seed: int, what: str = "host network",
                        **model_kwargs: Any) -> None:
    """A step saving ``<network>.CAM(**model_kwargs)`` with seeded random weights to ``path`` (nothing downloaded)."""
    import torch

    with rec.step(f"{what} with random weights (no download)") as info:
        torch.manual_seed(seed)
        with offline_weights():
            model = importlib.import_module(network).CAM(**model_kwargs)
        torch.save(model.state_dict(), path)
        arguments = ", ".join(f"{k}={v!r}" for k, v in model_kwargs.items())
        info["detail"] = f"{network}.CAM({arguments}) -> {path}"


def check_resnet_files(folder: str, ids: Sequence[str], labels: Dict[str, np.ndarray], image_path: Callable[[str], str],
                       background: bool, empty_keys_only: bool = False) -> str:
    """Check every file against the IRN (``background=False``) or AMN contract; return a summary.

    ``image_path``: name -> the image file (its size is the maps' size). ``empty_keys_only``: an
    image without labels must hold ``{"keys": empty}`` alone (AMN's ``coco14`` steps)."""
    import torch
    from PIL import Image

    for name in ids:
        data = np.load(os.path.join(folder, f"{name}.npy"), allow_pickle=True).item()
        if empty_keys_only and not labels[name].any():
            if sorted(data) != ["keys"] or data["keys"].numel():
                raise AssertionError(f"{folder}/{name}.npy: an image without labels must hold only empty 'keys'")
            continue
        with Image.open(image_path(name)) as image:
            w, h = image.size
        keys = np.nonzero(labels[name])[0]
        k = len(keys) + int(background)
        problems = []
        if sorted(data) != ["cam", "high_res", "keys"]:
            problems.append(f"keys {sorted(data)}")
        elif not (isinstance(data["keys"], torch.Tensor) and data["keys"].dtype == torch.int64
                  and data["keys"].tolist() == keys.tolist()):
            problems.append(f"'keys' {data['keys']!r}, expected int64 tensor {keys.tolist()}")
        elif not (isinstance(data["cam"], torch.Tensor)
                  and tuple(data["cam"].shape) == (k, (h - 1) // 4 + 1, (w - 1) // 4 + 1)):
            problems.append(f"'cam' {type(data['cam']).__name__} {tuple(np.shape(data['cam']))}")
        elif not (isinstance(data["high_res"], np.ndarray) and data["high_res"].shape == (k, h, w)
                  and data["high_res"].dtype == np.float32 and np.isfinite(data["high_res"]).all()):
            problems.append(f"'high_res' {type(data['high_res']).__name__} {np.shape(data['high_res'])}")
        if problems:
            raise AssertionError(f"{folder}/{name}.npy: " + "; ".join(problems))
    return f"{len(ids)} files in {folder} follow the {'AMN' if background else 'IRN'} format"


def pngs(folder: str, ids: Sequence[str]) -> str:
    """``"<n> PNGs in <folder>"``; ``AssertionError`` naming a missing one."""
    missing = [n for n in ids if not os.path.isfile(os.path.join(folder, f"{n}.png"))]
    if missing:
        raise AssertionError(f"{len(missing)} of {len(ids)} PNGs missing in {folder}, e.g. {missing[0]}.png")
    return f"{len(ids)} PNGs in {folder}"


def chainer_eval(rec: Recorder, module: str, args: argparse.Namespace) -> None:
    """The host's chainercv evaluation step, or a skip line when chainercv is not importable."""
    version, error = module_version("chainercv")
    if version is None:
        rec.add("steps", f"host {module}.run (seed mIoU)", "skip", error, known_fix("No module named 'chainercv'"))
        return
    with rec.step(f"host {module}.run (seed mIoU)") as info:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            importlib.import_module(module).run(args)
        printed = buffer.getvalue().strip().splitlines()
        scores = [line for line in printed if "miou" in line.lower()] or printed[-1:]  # the line with the mIoU
        info["detail"] = scores[-1][:200] if scores else ""


def _host_reads_files(rec: Recorder, args: argparse.Namespace, ids: Sequence[str], labels: Dict[str, np.ndarray],
                      cam_dir: str, ir_step: str, ir_dir: str, eval_step: str, *, background: bool) -> None:
    """Check the CAM files in ``cam_dir`` against the host format, then run the host's own
    ``step.<ir_step>`` on them (PNGs expected in ``ir_dir``) and its chainercv ``step.<eval_step>``."""
    with rec.step("files follow the host format") as info:
        info["detail"] = check_resnet_files(cam_dir, ids, labels,
                                            lambda n: os.path.join(args.voc12_root, "JPEGImages", f"{n}.jpg"),
                                            background=background)
    with rec.step(f"host step.{ir_step}.run(args) reads them") as info:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(f"step.{ir_step}").run(args)
        info["detail"] = pngs(ir_dir, ids)
    chainer_eval(rec, f"step.{eval_step}", args)


def drive_resnet(rec: Recorder, host: str, route: str, config: Dict[str, Any]) -> None:
    """IRN / AMN: random weights, the adapter's route, the host's ``cam_to_ir_label`` (and eval)."""
    from lpcam_plugin.adapters import amn, irn

    args = _resnet_args(config)
    ids = config["ids"]
    labels = {n: np.asarray(v, np.float32) for n, v in config["labels"].items()}
    import_host(rec, "net, voc12.dataloader, step", [args.cam_network, "step.make_cam", "step.cam_to_ir_label"])
    if config.get("train_cam") == "pss":
        _train_cam_pss(rec, args)
    else:
        save_random_weights(rec, args.cam_network, args.cam_weights_name + ".pth", 0)
    with rec.step("host dataset reads the lists") as info:
        dataset = importlib.import_module("voc12.dataloader").VOC12ClassificationDatasetMSF(
            args.train_list, voc12_root=args.voc12_root, scales=args.cam_scales)
        info["detail"] = f"{len(dataset)} images of {args.train_list}; item keys {sorted(dataset[0])}"
    stage1 = host == "irn" or route in ("a", "b")
    if stage1:
        with offline_weights():
            if route == "patch":
                _patched_make_cam(rec, "step.make_cam", irn.patch, args)
            else:
                with rec.step(f"lpcam_irn.run(args) ({args.lpcam_method} instead of step.make_cam.run)" if host == "irn"
                              else f'lpcam_amn.run(args, route="a") ({args.lpcam_method})') as info:
                    written = irn.run(args) if host == "irn" else amn.run(args, route="a")
                    info["detail"] = f"{written} files written"
            threshold_beside(rec, args, args.cam_out_dir, patched=route == "patch")
        _host_reads_files(rec, args, ids, labels, args.cam_out_dir, "cam_to_ir_label", args.ir_label_out_dir,
                          "eval_cam", background=False)
    if host == "amn" and route == "b":
        save_random_weights(rec, args.amn_network, args.amn_weights_name + ".pth", 1, "AMN network")
        with offline_weights(), rec.step('lpcam_amn.run(args, route="b") (LPCAM instead of make_amn_cam)') as info:
            info["detail"] = f"{amn.run(args, route='b')} files written"
        threshold_beside(rec, args, args.amn_cam_out_dir, patched=False)
        _host_reads_files(rec, args, ids, labels, args.amn_cam_out_dir, "amn_cam_to_ir_label",
                          args.amn_ir_label_out_dir, "eval_amn_cam", background=True)


def _train_cam_pss(rec: Recorder, args: argparse.Namespace) -> None:
    """``--train-cam pss``: the adapter's ``patch()`` + the unchanged ``step.train_cam.run(args)`` trains
    the host's ``Net`` with RCM + MAM (ImageNet weights replaced by random ones); the host's ``CAM``
    then loads the weights file strictly."""
    import torch

    from lpcam_plugin.adapters import pixelsup_train

    for key, value in PSS_TRAIN_SETTINGS.items():
        setattr(args, key, value)
    with offline_weights(), rec.step("pixelsup_train.patch() + unchanged step.train_cam.run(args)") as info:
        pixelsup_train.patch()
        try:
            importlib.import_module("step.train_cam").run(args)
        finally:
            pixelsup_train.unpatch()
        history = torch.load(args.cam_weights_name + ".pss_train.pt", weights_only=True)["history"]
        info["detail"] = "; ".join(f"epoch {i + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in h.items())
                                   for i, h in enumerate(history))
    with offline_weights(), rec.step("host CAM loads the trained weights (strict)") as info:
        model = importlib.import_module(args.cam_network).CAM()
        model.load_state_dict(torch.load(args.cam_weights_name + ".pth", weights_only=True), strict=True)
        info["detail"] = f"{args.cam_network}.CAM <- {args.cam_weights_name}.pth"


def threshold_beside(rec: Recorder, args: argparse.Namespace, cam_dir: str, *, patched: bool) -> None:
    """``--lpcam_auto_threshold``: ``lpcam_threshold.json`` beside the maps and ``args.cam_eval_thres`` set to it
    (the patch route calls ``irn.write_threshold(args)`` after the step, as the docs say)."""
    from lpcam_plugin.adapters import irn
    from lpcam_plugin.adapters.resnet.threshold import THRESHOLD_FILE

    with rec.step("threshold chosen without masks, beside the maps" + (" (irn.write_threshold)" if patched else "")
                  ) as info:
        if patched:
            irn.write_threshold(args)
        record = json.loads((Path(cam_dir) / THRESHOLD_FILE).read_text())
        if args.cam_eval_thres != record["threshold"]:
            raise AssertionError(f"args.cam_eval_thres is {args.cam_eval_thres}, {THRESHOLD_FILE} says "
                                 f"{record['threshold']}")
        info["detail"] = (f"t = {record['threshold']:.3f} ({record['rule']} rule, {record['num_images']} images) "
                          "in args.cam_eval_thres")


def _patched_make_cam(rec: Recorder, module: str, patch: Callable[[], None], args: argparse.Namespace) -> None:
    """The patch route: ``patch()`` then the unchanged host step (needs CUDA)."""
    with rec.step("patch() + unchanged step.make_cam.run(args)") as info:
        patch()
        importlib.import_module(module).run(args)
        info["detail"] = f"{len(list(Path(args.cam_out_dir).glob('*.npy')))} files written by the spawned workers"


__all__ = ["PSS_TRAIN_SETTINGS", "chainer_eval", "check_resnet_files", "drive_resnet", "fill_namespace", "import_host",
           "lpcam_cpu_settings", "pngs", "save_random_weights", "threshold_beside"]
