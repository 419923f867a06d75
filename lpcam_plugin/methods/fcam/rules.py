"""The settings F-CAM derives from the data at the first batch of a fit (the presets' ``"auto"``
values and the seed budget, :class:`~lpcam_plugin.methods.fcam.config.FCAMConfig`): the erosion from
the source's stride, the background rule, the CRF's reach from the image side, and the seeds per step
from the preset's budget over the run's epochs x images. Each is logged and kept in the fit's
``seed_settings_``."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import torch.distributed as dist

from lpcam_plugin.methods.fcam.config import AUTO, PAPER_IMAGE_SIDE, PAPER_SIGMA_XY, FCAMConfig, odd_stride

logger = logging.getLogger(__name__)


def epoch_images(loader: Any, steps_per_epoch: Optional[int], batch_size: int, distributed: bool) -> Optional[int]:
    """Images one epoch shows over all ranks: the length of the loader's ``dataset`` when it has
    one, else its batches x ``batch_size`` (the first batch's) x the world size under
    torch.distributed; None for a loader without a length."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    if steps_per_epoch is None:
        return None
    return steps_per_epoch * batch_size * (dist.get_world_size() if distributed else 1)


def data_settings(config: FCAMConfig, image_size: Tuple[int, int], source_side: int,
                  images_per_epoch: Optional[int]) -> Dict[str, Any]:
    """The seed and CRF settings of a fit on images of ``image_size`` ``(H, W)`` with source maps
    ``source_side`` wide and ``images_per_epoch`` images (None: unknown): ``{"erosion_size",
    "bg_fraction" (None: Otsu), "source_stride", "crf_sigma_xy", "images_per_epoch", "sample_factor",
    "fg_samples", "bg_samples"}`` (the counts sampled per step), logged."""
    image_side = int(image_size[-1])
    erosion = odd_stride(image_side, source_side) if config.erosion_size == AUTO else int(config.erosion_size)
    bg_fraction = None if config.bg_fraction == AUTO else float(config.bg_fraction)
    factor = 1 if images_per_epoch is None else config.sample_factor(config.epochs * images_per_epoch)
    samples = {name: None if count is None else count * factor
               for name, count in (("fg_samples", config.fg_samples), ("bg_samples", config.bg_samples))}
    sigma_xy = config.sigma_xy(max(image_size))
    logger.info("F-CAM seeds: erosion %d px (%s), background %s", erosion,
                f"the source's stride, {image_side} / {source_side} px" if config.erosion_size == AUTO
                else "as configured",
                "below each image's Otsu threshold, eroded" if bg_fraction is None
                else f"the lowest {bg_fraction:g} of each image")
    logger.info("F-CAM CRF: sigma_xy %.1f px (%s)", sigma_xy,
                f"the paper's {PAPER_SIGMA_XY:g} at {PAPER_IMAGE_SIDE} px, scaled to {max(image_size)} px"
                if config.crf_sigma_xy == AUTO else "as configured")
    if config.reference_image_steps is not None:
        if images_per_epoch is None:
            logger.warning("F-CAM: the loader has no length, so the seed budget cannot be kept; sampling "
                           "%s + %s seeds per step as configured", config.fg_samples, config.bg_samples)
        else:
            logger.info("F-CAM seed budget: %d epochs x %d images = %d image-steps against the preset's %d: "
                        "%s foreground and %s background pixels per region and step (%d x the configured)",
                        config.epochs, images_per_epoch, config.epochs * images_per_epoch,
                        config.reference_image_steps, samples["fg_samples"], samples["bg_samples"], factor)
    return {"erosion_size": erosion, "bg_fraction": bg_fraction, "source_stride": image_side / source_side,
            "crf_sigma_xy": sigma_xy, "images_per_epoch": images_per_epoch, "sample_factor": factor, **samples}


__all__ = ["data_settings", "epoch_images"]
