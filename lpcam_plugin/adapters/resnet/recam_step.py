"""The ReCAM step for the IRN-family hosts (IRN, AMN stage 1), between ``train_cam`` and the CAM step.

It fine-tunes the host's trained ``Net`` (``cam_network``) the way the ReCAM reference does
(``step/train_recam.py`` of ``zhaozhengChen/ReCAM``; docs/design/recam-spec.md): the host's
``VOC12ClassificationDataset`` over ``train_list`` with ``resize_long=(320, 640)``, horizontal
flips and random crops (:mod:`~lpcam_plugin.adapters.resnet.crop_batches`), ``stage4`` features
and the ``classifier`` head. It writes, beside the host's weights ``<cam_weights_name>.pth``:

- ``<cam_weights_name>.recam.pth``: the fine-tuned network, a plain state dict (the host's own
  format: its ``CAM`` class loads it);
- ``<cam_weights_name>.recam.npz``: the fitted :class:`~lpcam_plugin.methods.recam.estimator.ReCAM`
  (``W_bce``, ``W_sce``, settings; pickle-free, checksummed), with the fingerprint of what it was
  trained from;
- ``<cam_weights_name>.recam_train.pt``: training state after every epoch while it runs, so a
  stopped run resumes (removed when training ends).

Both files are reused while the host checkpoint, the options and the train list stay the same.
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist

from lpcam_plugin.adapters.common.checkpoints import save_state_dict
from lpcam_plugin.adapters.common.workers import distributed, is_writer, wait_until
from lpcam_plugin.adapters.resnet.crop_batches import crop_loader
from lpcam_plugin.adapters.resnet.datasets import HostDataset
from lpcam_plugin.adapters.resnet.options import HostValues
from lpcam_plugin.core.fingerprints import load_matching
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.methods.recam.estimator import ReCAM

logger = logging.getLogger(__name__)


def recam_files(weights_path: str) -> Dict[str, Path]:
    """Where the ReCAM step writes, next to the host weights ``<name>.pth``."""
    stem = os.path.splitext(weights_path)[0]
    return {"weights": Path(stem + ".recam.pth"), "recam": Path(stem + ".recam.npz"),
            "training": Path(stem + ".recam_train.pt")}


def _fit_key(host: HostValues, data: HostDataset, weights_path: str, recam: ReCAM, batch_size: int,
             crop_size: int) -> Dict[str, Any]:
    """Everything the fine-tuned files depend on; they are reused only on an exact match."""
    return {"checkpoint_sha256": file_sha256(Path(weights_path)), "config": recam.config.training_settings(),
            "train_list_sha256": file_sha256(data.image_list(host)), "batch_size": batch_size, "crop_size": crop_size,
            "network": host.cam_network}


def _reusable(files: Dict[str, Path], key: Dict[str, Any]) -> Tuple[Optional[ReCAM], str]:
    if not files["weights"].exists():
        return None, "not trained yet"
    recam, reason = load_matching(files["recam"], ReCAM.load, key)
    if recam is None:
        return None, reason
    if recam.metadata.get("weights_sha256") != file_sha256(files["weights"]):
        return None, f"{files['weights']} was changed after training"
    return recam, ""


def obtain_recam(host: HostValues, data: HostDataset, weights_path: str, recam: ReCAM, device: torch.device, *,
                 batch_size: int, crop_size: int, workers: int, train: bool = True,
                 network_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[ReCAM, Path]:
    """The fitted ReCAM and the fine-tuned weights file for this run: reused when the saved pair
    matches, else trained now (``train=True``) or waited for (another worker trains them).

    Args:
        host: the run's options (or the host's namespace): ``cam_network`` and where the images are
            (``train_list``, ``voc12_root``; COCO: ``mscoco_root``).
        data: the dataset the host reads (its training images, classes and network arguments).
        weights_path: the host's trained weights (``<cam_weights_name>.pth`` on VOC).
        recam: an unfitted :class:`ReCAM` with the run's settings.
        device: where to train.
        batch_size, crop_size, workers: the training loader's batch (over all ranks), crop and workers.
        network_kwargs: what the host passes to its ``Net`` (COCO: ``n_classes=80`` / ``coco=True``).
    """
    files = recam_files(weights_path)
    key = _fit_key(host, data, weights_path, recam, batch_size, crop_size)
    fitted, reason = _reusable(files, key)
    if fitted is not None:
        logger.info("reusing the ReCAM step %s (same checkpoint, options and train list)", files["recam"])
        return fitted, files["weights"]
    if not train:
        return wait_until(lambda: _reusable(files, key), f"the ReCAM step {files['recam']}"), files["weights"]
    logger.info("training the ReCAM step (%s): %d epochs over %s", reason, recam.config.epochs, data.image_list(host))
    model = importlib.import_module(host.cam_network).Net(**(network_kwargs or {}))
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    loader = crop_loader(data.crops(host, crop_size), batch_size, workers, recam.config.seed)
    recam.fit(model, loader, feature_layer="stage4", head="classifier", checkpoint=files["training"], device=device)
    if is_writer():
        save_state_dict(files["weights"], model)
        recam.metadata.update({"fit_key": key, "weights_sha256": file_sha256(files["weights"])})
        recam.save(files["recam"])
        files["training"].unlink(missing_ok=True)
        logger.info("saved the fine-tuned network %s and ReCAM %s", files["weights"], files["recam"])
    if distributed():
        dist.barrier()
        recam = ReCAM.load(files["recam"])
    return recam, files["weights"]


__all__ = ["obtain_recam", "recam_files"]
