"""``--lpcam_auto_threshold``: the background threshold of the maps the IRN-family CAM step wrote, chosen
without masks (:func:`lpcam_plugin.core.threshold.choose_threshold`), written beside them.

After the step has written its maps, one pass over the images of ``train_list`` reads them back and
collects the histogram of their best present-class values; for every method but CAM it also
computes the host network's own CAM of the same image (``HostSpec.host_cams``), whose
Otsu share the threshold then keeps (the ``"share"`` rule). The choice goes to
``<out_dir>/lpcam_threshold.json`` and into ``args.cam_eval_thres``, so the host's ``eval_cam``
step of the same ``run_sample.py`` run reads it.

The maps read back are this package's own files: only ids in the step's done logs
(:func:`~lpcam_plugin.adapters.resnet.files.lpcam_written_ids`) are read, with ``allow_pickle``
because the hosts' format is a pickled dict.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from lpcam_plugin.adapters.common.workers import distributed
from lpcam_plugin.adapters.resnet.files import lpcam_written_ids
from lpcam_plugin.adapters.resnet.host import HostSpec, image_stacks, load_host_model, pack_size
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.core.formats import read_irn_cam
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.threshold import ThresholdChoice, ThresholdHistogram, choose_threshold
from lpcam_plugin.core.version import __version__

logger = logging.getLogger(__name__)

#: The file written beside the maps.
THRESHOLD_FILE = "lpcam_threshold.json"


def _all_reduce(histogram: ThresholdHistogram) -> None:
    """Sum ``histogram`` over the ranks of the process group (in place)."""
    counts = torch.from_numpy(histogram.counts.copy())
    images = torch.tensor([histogram.num_images], dtype=torch.int64)
    dist.all_reduce(counts)
    dist.all_reduce(images)
    histogram.counts[...] = counts.numpy()
    histogram.num_images = int(images.item())


def collect_step_histograms(spec: HostSpec, opts: LPCAMOptions, device: torch.device, dataset: Any = None
                            ) -> Dict[str, Optional[ThresholdHistogram]]:
    """``{"maps": ..., "reference": ...}``: histograms of the written maps and (not for CAM) of the host CAM.

    ``dataset``: the step's multi-scale dataset when the caller holds it (the COCO pipeline's parses
    the whole annotation file), else built here. Under torchrun each rank reads images
    ``rank, rank + world, ...`` and the counts are summed. Raises ``FileNotFoundError`` naming an
    image of ``train_list`` the step has not written.
    """
    out_dir = spec.out_dir(opts)
    if dataset is None:
        dataset = spec.dataset.msf(opts, opts.scales())
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)
    subset = Subset(dataset, list(range(rank, len(dataset), world)))
    written = lpcam_written_ids(out_dir)
    model = load_host_model(spec, opts, device) if opts.method != "cam" else None
    num_classes = spec.dataset.num_classes
    maps, reference = ThresholdHistogram(num_classes), ThresholdHistogram(num_classes)
    loader = DataLoader(subset, shuffle=False, num_workers=opts.workers(world), pin_memory=False)
    unlabelled = 0
    with torch.no_grad():
        for pack in progress_bar(loader, progress=opts.progress, desc=f"auto threshold {spec.name}", total=len(loader)):
            name = pack["name"][0]
            path = out_dir / f"{name}.npy"
            if name not in written or not path.is_file():
                raise FileNotFoundError(f"{path}: the CAM step has not written this image's maps; run it first")
            keys, high = read_irn_cam(path, allow_pickle=True)
            if keys.size == 0:  # an image without labels (COCO has some): all background, nothing to count
                unlabelled += 1
                continue
            maps.add(keys, high)
            if model is not None:
                stacks = [s.to(device) for s in image_stacks(pack)]
                cam = spec.host_cams(model, stacks, pack["label"][0].to(device), pack_size(pack), name, opts)
                reference.add(keys, cam.float().cpu().numpy())
    if unlabelled:
        logger.info("auto threshold: %d image(s) without labels skipped (their maps are empty)", unlabelled)
    if world > 1:
        _all_reduce(maps)
        _all_reduce(reference)
    return {"maps": maps, "reference": reference if model is not None else None}


def write_threshold(spec: HostSpec, opts: LPCAMOptions, device: torch.device, args: Any = None,
                    dataset: Any = None) -> ThresholdChoice:
    """Choose the threshold of the step's maps, write ``<out_dir>/lpcam_threshold.json`` (rank 0) and set
    ``args.cam_eval_thres`` to it when ``args`` has that attribute (logging the value it replaces).
    ``dataset``: as for :func:`collect_step_histograms`."""
    histograms = collect_step_histograms(spec, opts, device, dataset)
    choice = choose_threshold(histograms["maps"], histograms["reference"])
    path = spec.out_dir(opts) / THRESHOLD_FILE
    if not distributed() or dist.get_rank() == 0:
        record = {**choice.to_dict(), "method": opts.method, "host": spec.name,
                  "train_list": spec.dataset.image_list(opts), "maps": str(spec.out_dir(opts)),
                  "produced_by": f"lpcam_plugin {__version__}"}
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2))
    if args is not None and hasattr(args, "cam_eval_thres"):
        logger.info("cam_eval_thres: %s -> %.3f (chosen without masks, %s)", args.cam_eval_thres, choice.threshold,
                    path)
        args.cam_eval_thres = choice.threshold
    return choice


__all__ = ["THRESHOLD_FILE", "collect_step_histograms", "write_threshold"]
