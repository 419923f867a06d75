"""The F-CAM decoder step for the IRN-family hosts (IRN, AMN stage 1; docs/design/fcam-spec.md).

Training: :class:`~lpcam_plugin.methods.fcam.estimator.FCAM` on the host's frozen, trained
ResNet-50 (the host weights, or the ReCAM-fine-tuned ones when the source is ``recam`` /
``recam+lpcam``), over the host's ``VOC12ClassificationDataset(train_list)`` with random crops
(:mod:`~lpcam_plugin.adapters.resnet.crop_batches`; crops seeded per ``(seed, epoch, image)``, so
DDP and resumed runs train like one uninterrupted process). The encoder is :class:`HostStages`,
a view of the host network's ``stage1..stage4`` (modules shared, no copy, no classifier);
features = ``stage4`` (stride 16), skips = ``resnet50.relu`` (conv1 + bn1 + relu, stride 2),
``stage1`` (stride 4), ``stage2`` (8), ``stage3`` (16) and the image. The source maps are the
chosen read-out's batch maps on the batch's ``stage4`` features (``HostReadout.source``).

Files beside the host weights ``<cam_weights_name>.pth``:

- ``<cam_weights_name>.fcam_<source>.npz``: the fitted F-CAM (pickle-free, checksummed), with
  ``metadata["fit_key"]`` = what it was trained from (checkpoint sha256, read-out key, options,
  train list sha256); reused while that matches exactly;
- ``<cam_weights_name>.fcam_<source>_train.pt``: the training state after every epoch while it
  runs (``FCAM.fit(checkpoint=...)``), so a stopped run resumes; removed when training ends.

Rendering is :func:`lpcam_plugin.adapters.resnet.readouts.fcam_render`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn

from lpcam_plugin.adapters.common.workers import distributed, is_writer, wait_until
from lpcam_plugin.adapters.resnet.crop_batches import crop_loader
from lpcam_plugin.adapters.resnet.datasets import HostDataset
from lpcam_plugin.adapters.resnet.options import HostValues
from lpcam_plugin.core.fingerprints import load_matching
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.readouts import BatchMaps

logger = logging.getLogger(__name__)

#: Where the F-CAM encoder is read on :class:`HostStages` (names shared with the host network).
FEATURE_LAYER = "stage4"
SKIP_LAYERS = ("resnet50.relu", "stage1", "stage2", "stage3")


class HostStages(nn.Module):
    """The host ResNet's ``stage1..stage4`` as one encoder: ``(B, 3, H, W) -> (B, D, H/16, W/16)``.

    Holds the host's own modules (``resnet50`` and the four stages, shared, so the names
    ``resnet50.relu``, ``stage1`` ... resolve as on the host network) and runs the stages as
    IRN's ``CAM.forward`` does, for any batch size (the host's ``CAM.forward`` expects an
    image + flip pair) and without the classifier.
    """

    def __init__(self, host: nn.Module) -> None:
        super().__init__()
        self.resnet50 = host.resnet50
        self.stage1, self.stage2, self.stage3, self.stage4 = host.stage1, host.stage2, host.stage3, host.stage4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> stage4 features (B, D, H/16, W/16)``."""
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


def fcam_files(weights_path: str, source: str) -> Dict[str, Path]:
    """Where the F-CAM step writes, next to the host weights ``<name>.pth``."""
    stem = os.path.splitext(weights_path)[0]
    return {"fcam": Path(f"{stem}.fcam_{source}.npz"), "training": Path(f"{stem}.fcam_{source}_train.pt")}


def fit_key(host: HostValues, data: HostDataset, weights_path: str, fcam: FCAM, source: str,
            source_key: Dict[str, Any], batch_size: int, crop_size: int) -> Dict[str, Any]:
    """Everything the decoder depends on; a saved decoder is reused only on an exact match."""
    return {"checkpoint_sha256": file_sha256(Path(weights_path)), "source": source, "source_key": source_key,
            "config": fcam.config.to_dict(), "train_list_sha256": file_sha256(data.image_list(host)),
            "batch_size": batch_size, "crop_size": crop_size, "network": host.cam_network,
            "feature_layer": FEATURE_LAYER, "skip_layers": list(SKIP_LAYERS)}


def obtain_fcam(host: HostValues, data: HostDataset, weights_path: str, fcam: FCAM, encoder: nn.Module,
                source: BatchMaps, source_name: str, source_key: Dict[str, Any], *, batch_size: int, crop_size: int,
                workers: int, train: bool = True) -> Tuple[FCAM, Path]:
    """The fitted F-CAM of this run: reused when the saved one matches, else trained now
    (``train=True``; every rank under ``torchrun``) or waited for (another worker trains it).

    Args:
        host: the run's options (or the host's namespace): ``cam_network`` and where the images are
            (``train_list``, ``voc12_root``; COCO: ``mscoco_root``).
        data: the dataset the host reads (its training images and classes).
        weights_path: the host's trained weights (``<cam_weights_name>.pth`` on VOC).
        fcam: an unfitted :class:`FCAM` with the run's settings.
        encoder: :class:`HostStages` of the network the source reads (on the training device).
        source: ``(features (B, D, h, w), labels (B, 20)) -> (B, 20, h, w)`` maps in [0, 1].
        source_name: one of the registry's F-CAM sources; source_key: what produced the source (fingerprint).
        batch_size, crop_size, workers: the training loader's batch (over all ranks), crop, workers.

    Returns:
        ``(fcam, path of the saved decoder)``; the decoder is on CPU (``FCAM.load``).
    """
    files = fcam_files(weights_path, source_name)
    key = fit_key(host, data, weights_path, fcam, source_name, source_key, batch_size, crop_size)
    fitted, reason = load_matching(files["fcam"], FCAM.load, key)
    if fitted is not None:
        logger.info("reusing the F-CAM decoder %s (same checkpoint, source, options and train list)", files["fcam"])
        return fitted, files["fcam"]
    if not train:
        waited = wait_until(lambda: load_matching(files["fcam"], FCAM.load, key), f"the F-CAM decoder {files['fcam']}")
        return waited, files["fcam"]
    logger.info("training the F-CAM decoder on %s maps (%s): %d epochs over %s", source_name, reason,
                fcam.config.epochs, data.image_list(host))
    loader = crop_loader(data.crops(host, crop_size), batch_size, workers, fcam.config.seed, seeded_items=True)
    fcam.fit(encoder, loader, source=source, feature_layer=FEATURE_LAYER, skip_layers=list(SKIP_LAYERS),
             checkpoint=files["training"])
    if is_writer():
        fcam.metadata.update({"fit_key": key, "source": source_name})
        fcam.save(files["fcam"])
        files["training"].unlink(missing_ok=True)
        logger.info("saved the F-CAM decoder %s", files["fcam"])
    if distributed():
        dist.barrier()
    return FCAM.load(files["fcam"], progress=fcam.progress), files["fcam"]


__all__ = ["FEATURE_LAYER", "SKIP_LAYERS", "HostStages", "fcam_files", "fit_key", "obtain_fcam"]
