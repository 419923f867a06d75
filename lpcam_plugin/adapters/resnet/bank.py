"""The IRN-family CAM step's prototype bank: fitted once, saved with a fingerprint of what it was
fitted from, and reused only on an exact match.

Fitting: baseline CAMs computed the host way (or read from the host's own CAM files), the
single-scale unflipped ``stage4`` features of the fit list, then K-means and selection
(:class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM`).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from lpcam_plugin.adapters.common.workers import wait_until
from lpcam_plugin.adapters.resnet.files import lpcam_written_ids
from lpcam_plugin.adapters.resnet.host import HostSpec, image_stacks, pack_size, scale_one_index, stage4_features
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.core.fingerprints import load_matching
from lpcam_plugin.core.formats import read_irn_cam
from lpcam_plugin.core.hooks import FeatureHook
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.lpcam.fit_images import FitEntry, fit_plan, plan_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSource:
    """What a bank is fitted from besides the images: the network, selection weight and baseline.

    Attributes:
        weights: the network's weights file (the host's, or the ReCAM-fine-tuned one).
        weight, bias: ``(C, D)`` selection weight and optional ``(C,)`` bias; ``description`` names it.
        baseline: ``(model, stacks, label, size, name, options) -> (K, H, W)`` max-normalised maps
            of the present classes that split the local features (the host's CAM, or ReCAM's maps).
        host_files: whether the host's own CAM files may stand in for ``baseline``.
        bank_path: where the bank is saved.
        extra_key: further facts that must match for the bank to be reused.
    """

    weights: Path
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    description: str
    baseline: Callable[..., torch.Tensor]
    host_files: bool
    bank_path: Path
    extra_key: Dict[str, Any]


@dataclass
class FitPlan:
    """What a fit uses: the host dataset over the fit list (scales = ``cam_scales``, plus 1.0 at the
    end when missing), the fit entries (image index, classes fed) and their ids, the selection
    weight and the fingerprint."""

    dataset: Any
    scales: Tuple[float, ...]
    entries: List[FitEntry]
    fit_ids: List[str]
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    baseline_dir: Optional[Path]
    key: Dict[str, Any]


def _fit_key(spec: HostSpec, opts: LPCAMOptions, source: FitSource, fit_ids: Sequence[str],
             baseline_dir: Optional[Path]) -> Dict[str, Any]:
    """Everything the bank depends on; the bank is reused only when this matches exactly."""
    return {
        "host": spec.name,
        "features": "stage4 output, scale 1.0, unflipped",
        "selection_weight": source.description,
        "checkpoint_sha256": file_sha256(source.weights),
        "config": {k: v for k, v in opts.config.to_dict().items() if k != "spill_dir"},
        "fit_list_sha256": hashlib.sha256("\n".join(fit_ids).encode()).hexdigest(),
        "fit_images": len(fit_ids),
        "cam_scales": [float(s) for s in opts.scales()],
        "baseline_files": None if baseline_dir is None else str(baseline_dir.resolve()),
        **(spec.extra_fit_key(opts) if spec.extra_fit_key is not None else {}),
        **source.extra_key,
    }


def _try_load_bank(path: Path, key: Dict[str, Any]) -> Tuple[Optional[PrototypeBank], str]:
    """The bank at ``path`` if it was fitted with exactly ``key``; else None and the reason."""
    return load_matching(path, PrototypeBank.load, key, made="fitted", missing="no bank file yet",
                         unreadable="unreadable bank")


def _baseline_from_file(path: Path, valid_cat: torch.Tensor, opts: LPCAMOptions) -> Optional[torch.Tensor]:
    """The host's ``(K, H, W)`` CAM of one image read from its file, or None when its keys differ."""
    keys, high_res = read_irn_cam(path, allow_pickle=opts.allow_pickle)
    if keys.tolist() != valid_cat.tolist():
        logger.warning("%s: keys %s do not match the image label %s; computing the baseline CAM instead",
                       path, keys.tolist(), valid_cat.tolist())
        return None
    return torch.from_numpy(np.ascontiguousarray(high_res))


def _baseline_dir(spec: HostSpec, opts: LPCAMOptions) -> Optional[Path]:
    folder = opts.baseline_dir if opts.baseline_dir is not None else getattr(opts, spec.baseline_dir_arg
                                                                             or spec.out_dir_arg)
    return None if folder is None else Path(folder)


def _fit_list(spec: HostSpec, opts: LPCAMOptions) -> str:
    """What the fit images are drawn from: the fit list, or the reference COCO pipeline's annotation file."""
    return spec.dataset.fit_images(opts) or spec.dataset.image_list(opts)


def plan_fit(spec: HostSpec, opts: LPCAMOptions, source: FitSource) -> FitPlan:
    """Build the fit dataset, pick the fit images and compute the bank fingerprint (no forward pass)."""
    scales = tuple(float(s) for s in opts.scales())
    if 1.0 not in scales:
        scales = scales + (1.0,)
    host_data = spec.dataset
    dataset = host_data.msf(opts, scales, host_data.fit_images(opts))
    entries = fit_plan(host_data.labels(dataset), opts.fit_sampling, opts.images_per_class, opts.config.seed)
    fit_ids = plan_ids(entries, host_data.names(dataset))
    baseline_dir = _baseline_dir(spec, opts) if source.host_files else None
    key = _fit_key(spec, opts, source, fit_ids, baseline_dir if opts.allow_pickle else None)
    return FitPlan(dataset, scales, entries, fit_ids, source.weight, source.bias, baseline_dir, key)


def fit_bank(spec: HostSpec, model: nn.Module, opts: LPCAMOptions, device: torch.device, source: FitSource, *,
             n_procs: int = 1) -> PrototypeBank:
    """Reuse the saved bank if its fingerprint matches; else collect, fit, save and return it.

    Per fit image: the baseline is ``source.baseline`` (the host's own CAM, also read from its
    file in the baseline folder when allowed and present; or ReCAM's maps), computed the host
    way (multi-scale + flip), and the features are the scale-1.0, unflipped ``stage4`` output
    ``(D, h, w)`` (captured by a hook during the host's forward), as in the LPCAM reference.
    """
    plan = plan_fit(spec, opts, source)
    path = source.bank_path
    bank, reason = _try_load_bank(path, plan.key)
    if bank is not None:
        logger.info("reusing the LPCAM bank %s (same checkpoint, config and fit list)", path)
        return bank
    host_data = spec.dataset
    fit_list = _fit_list(spec, opts)
    feeds: Dict[int, List[Optional[Tuple[int, ...]]]] = {}
    for index, classes in plan.entries:
        feeds.setdefault(index, []).append(classes)
    order = sorted(feeds)
    logger.info("fitting the LPCAM bank %s: %s; %d entries (%s sampling) over %d images of %s", path, reason,
                len(plan.entries), opts.fit_sampling, len(order), fit_list)
    baseline_dir = plan.baseline_dir
    written = lpcam_written_ids(baseline_dir) if baseline_dir is not None else set()
    estimator = LPCAM(host_data.num_classes, config=opts.config, class_names=host_data.class_names,
                      progress=opts.progress)
    loader = DataLoader(Subset(plan.dataset, order), shuffle=False, num_workers=opts.workers(n_procs),
                        pin_memory=False)
    one = scale_one_index(plan.scales)
    n_host_scales = len(opts.scales())
    n_files = 0
    with torch.no_grad(), FeatureHook(model.stage4, keep_all=True) as hook:
        for index, pack in zip(order, progress_bar(loader, progress=opts.progress, desc="LPCAM features",
                                                   total=len(loader), position=0 if n_procs > 1 else None)):
            name, label = pack["name"][0], pack["label"][0]
            valid_cat = torch.nonzero(label)[:, 0]
            stacks = [s.to(device) for s in image_stacks(pack)]
            hook.clear()
            cams = None
            file = None if baseline_dir is None else baseline_dir / f"{name}.npy"
            if file is not None and opts.allow_pickle and file.exists() and name not in written:
                cams = _baseline_from_file(file, valid_cat, opts)
                n_files += cams is not None
            if cams is None:
                cams = source.baseline(model, stacks[:n_host_scales], label, pack_size(pack), name, opts)
            if len(hook.history) <= one:
                stage4_features(model, stacks[one])
                features = hook.features[0]
            else:
                features = hook.history[one][0]
            full = torch.zeros((host_data.num_classes,) + tuple(cams.shape[1:]))
            full[valid_cat] = cams.float().cpu()
            for classes in feeds[index]:
                fed = label[None].float()
                if classes is not None:  # the reference's per-class draw: this class's pools only
                    fed = torch.zeros_like(fed)
                    fed[0, list(classes)] = 1.0
                estimator.partial_fit([features], fed, cams=[full], ids=[name])
    if n_files:
        logger.info("baseline CAMs: %d of %d read from the host's files in %s", n_files, len(order), baseline_dir)
    elif baseline_dir is not None and not opts.allow_pickle and any(baseline_dir.glob("*.npy")):
        logger.info("host CAM files in %s are not read (pass --lpcam_allow_pickle True to use them); "
                    "the baseline CAMs were computed the host way", baseline_dir)
    weight, bias = plan.weight.to(device), None if plan.bias is None else plan.bias.to(device)
    estimator.fit_prototypes(weight, bias, metadata={"fit_key": plan.key, "fit_list": fit_list,
                                                     "baseline_from_files": n_files})
    estimator.bank_.save(path)
    logger.info("saved the LPCAM bank %s: %r", path, estimator.bank_)
    return estimator.bank_


def obtain_bank(spec: HostSpec, model: nn.Module, opts: LPCAMOptions, device: torch.device, source: FitSource,
                process_id: int, n_procs: int) -> PrototypeBank:
    """The bank for this run. Worker 0 fits (or reuses) it; other workers wait until a bank whose
    fingerprint matches theirs is saved (torch's ``spawn`` stops them if worker 0 fails)."""
    if process_id == 0:
        return fit_bank(spec, model, opts, device, source, n_procs=n_procs)
    key = plan_fit(spec, opts, source).key
    return wait_until(lambda: _try_load_bank(source.bank_path, key), f"the LPCAM bank {source.bank_path}")


__all__ = ["FitPlan", "FitSource", "fit_bank", "obtain_bank", "plan_fit"]
