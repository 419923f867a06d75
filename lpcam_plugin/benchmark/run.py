"""One (network, seed) of ``lpcam demo``: the classifier (trained or reused), its features, every
selected read-out's maps, and the background-threshold sweep with diagnostics.

:func:`run_seed` does it all and returns a :class:`~lpcam_plugin.benchmark.config.SeedResult`
and the maps; the read-outs come from :func:`lpcam_plugin.benchmark.readouts.select_readouts`.
Files written into ``<out>/<network>/seed<N>/``: ``classifier.pt``, ``maps.npz`` (every read-out,
float16) and, when asked, ``export/`` (LPCAM as EDAM/MCTformer ``{class: map}`` dicts, GT PNGs
and ``train.txt``). The read-outs write their own caches beside them.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from lpcam_plugin.benchmark.config import DemoConfig, NetworkConfig, SeedResult, pixelsup_overrides, validation_seed
from lpcam_plugin.benchmark.pretraining import pretrained_network, shipped_backbone
from lpcam_plugin.benchmark.readouts import SeedContext, map_key, select_readouts
from lpcam_plugin.benchmark.synthetic import PART_NAMES, SyntheticDataset, generate, images_to_tensor
from lpcam_plugin.benchmark.toynet import ToyClassifier
from lpcam_plugin.benchmark.training import extract_features, load_or_train, set_torch_seed, train_classifier
from lpcam_plugin.core.evaluate import SweepResult, maps_to_prediction, sweep
from lpcam_plugin.core.formats import write_class_dict, write_label_png
from lpcam_plugin.core.identity import module_digest
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.threshold import ThresholdHistogram, choose_threshold


def _classifier(network: NetworkConfig, data: SyntheticDataset, x: torch.Tensor, config: DemoConfig, seed: int,
                path: Path, progress: Optional[bool]) -> Tuple[ToyClassifier, Dict[str, float], Dict[str, Any]]:
    """Train ``network`` for ``seed`` or reuse a matching checkpoint at ``path``: ``(model, stats, key)``.

    The key returned for what is cached from the classifier adds the digest of its weights, so a
    retrained or swapped ``classifier.pt`` is never read with another's cached files."""
    train = dataclasses.replace(config.train, seed=seed)
    if network.pixelsup:
        train = dataclasses.replace(train, pixelsup=pixelsup_overrides(train, len(data), config.rcm_form,
                                                                           config.pss_reduction, config.pss_projection))
    key = {"data": data.config.fingerprint(), "train": train.to_dict(), "network": network.kind,
           "architecture": network.build(data.config.num_classes).architecture()}
    folder = None if config.backbones is None else Path(config.backbones)
    if config.pretrained:
        key["backbone_sha256"] = shipped_backbone(network.kind, folder)[1]

    def fit() -> Tuple[ToyClassifier, Dict[str, float]]:
        set_torch_seed(seed)
        if config.pretrained:
            model, _ = pretrained_network(network.kind, data.config.num_classes, dict(network.options), folder)
        else:
            model = network.build(data.config.num_classes)
        return model, train_classifier(model, x, torch.from_numpy(data.labels), train, progress=progress)

    model, stats, cached = load_or_train(path, key, fit, {"class_names": data.class_names})
    return model, {**stats, "cached": float(cached)}, {**key, "weights_sha256": module_digest(model)}


def _validation_split(data: SyntheticDataset, images: int, progress: Optional[bool]
                      ) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``images`` held-out images with masks, generated like ``data`` from :func:`validation_seed`; None for 0."""
    if images == 0:
        return None
    split = generate(dataclasses.replace(data.config, seed=validation_seed(data.config.seed), num_images=images),
                     progress=progress)
    return (images_to_tensor(split.images), torch.from_numpy(split.labels),
            torch.from_numpy(split.masks.astype(np.int64)))


def _feature_stats(features: torch.Tensor, masks: np.ndarray) -> Dict[str, float]:
    """Sparsity and magnitude of ``(N, D, h, w)`` features: zero fraction, mean L2 norm on object / background cells.

    A cell counts as object when more than half of its pixels (``masks`` ``(N, S, S)``) are foreground.
    """
    n, d, h, w = features.shape
    fg = torch.from_numpy((masks > 0).astype(np.float32))[:, None]
    cover = F.adaptive_avg_pool2d(fg, (h, w))[:, 0] > 0.5
    norms = features.float().norm(dim=1)
    return {"dim": float(d), "grid": float(h), "zero_fraction": float((features == 0).float().mean()),
            "norm_object": float(norms[cover].mean()) if cover.any() else float("nan"),
            "norm_background": float(norms[~cover].mean()) if (~cover).any() else float("nan")}


def upsampled(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``(K, h, w)`` -> ``(K, size, size)`` bilinear (align_corners=False), then max-normalised (IRN)."""
    if maps.shape[0] == 0:
        return maps.new_zeros(0, size, size)
    up = F.interpolate(maps[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    return max_normalize(up.clamp_min(0))


def per_image_maps(maps: torch.Tensor, labels: np.ndarray, size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Per image: ``(keys, (K, size, size) maps)`` of its positive classes, from ``(N, C, h, w)`` maps."""
    for index in range(maps.shape[0]):
        keys = np.flatnonzero(labels[index] > 0)
        yield keys, upsampled(maps[index, keys], size).numpy()


def part_diagnostics(maps: torch.Tensor, data: SyntheticDataset, threshold: float) -> Dict[str, float]:
    """Where a method's maps put their mass, per (image, positive class) map.

    Returns (all fractions):
    ``recall_<part>``: pixels of the part labelled with the right class at ``threshold``;
    ``context_fp``: background pixels labelled as a present class that has a context background
    (computed over images containing such a class);
    ``act_<part>`` / ``act_background`` / ``act_other_objects``: mean map value (max-normalised,
    full resolution) of the class's map on its own parts, on background pixels and on other objects;
    ``auc``: threshold-free separability, ROC AUC of the map value for own-object vs background pixels.
    """
    from sklearn.metrics import roc_auc_score

    hits = np.zeros(len(PART_NAMES))
    totals = np.zeros(len(PART_NAMES))
    act: Dict[str, List[float]] = {name: [] for name in PART_NAMES[1:] + ("background", "other_objects")}
    own_values, bg_values = [], []
    ctx_hits = ctx_total = 0
    size = data.config.image_size
    for index, (keys, image_maps) in enumerate(per_image_maps(maps, data.labels, size)):
        pred = maps_to_prediction(image_maps, keys, threshold)
        mask, parts = data.masks[index], data.parts[index]
        correct = pred == mask
        background = mask == 0
        for part in range(1, len(PART_NAMES)):
            sel = parts == part
            hits[part] += correct[sel].sum()
            totals[part] += sel.sum()
        for c, class_map in zip(keys, image_maps):
            own = mask == int(c) + 1
            for part in range(1, len(PART_NAMES)):
                sel = own & (parts == part)
                if sel.any():
                    act[PART_NAMES[part]].append(float(class_map[sel].mean()))
            other = ~own & ~background
            if other.any():
                act["other_objects"].append(float(class_map[other].mean()))
            if background.any():
                act["background"].append(float(class_map[background].mean()))
            own_values.append(class_map[own])
            bg_values.append(class_map[background])
            if int(c) in data.context:
                ctx_hits += int((pred[background] == int(c) + 1).sum())
                ctx_total += int(background.sum())
    out = {f"recall_{PART_NAMES[p]}": float(hits[p] / max(totals[p], 1)) for p in range(1, len(PART_NAMES))}
    out["context_fp"] = float(ctx_hits / max(ctx_total, 1))
    out.update({f"act_{name}": float(np.mean(values)) if values else float("nan") for name, values in act.items()})
    own_all, bg_all = np.concatenate(own_values), np.concatenate(bg_values)
    both = own_all.size > 0 and bg_all.size > 0
    out["auc"] = (float(roc_auc_score(np.r_[np.ones(own_all.size), np.zeros(bg_all.size)], np.r_[own_all, bg_all]))
                  if both else float("nan"))
    return out


#: The classes whose cross-activation the report shows: ``(rider, mount)``; the data's own pair when it
#: has one (regime B), else classes 0 and 2, which meet only by chance (regime A: the control).
DEFAULT_PAIR = (0, 2)


def cross_activation(maps: torch.Tensor, data: SyntheticDataset, threshold: float) -> Dict[str, float]:
    """How much each class of the pair ``(rider, mount)`` fires on the other's pixels.

    Over the images labelled with both: ``cross_rider_on_mount`` is the share of the mount's
    ground-truth pixels where the rider's map (upsampled, max-normalised) exceeds ``threshold``, and
    ``cross_mount_on_rider`` the reverse; NaN when no image holds both (or the data has < 3 classes).
    """
    rider, mount = data.pair if data.pair is not None else DEFAULT_PAIR
    out = {"cross_rider_on_mount": float("nan"), "cross_mount_on_rider": float("nan")}
    if max(rider, mount) >= data.config.num_classes:
        return out
    both = np.flatnonzero((data.labels[:, rider] > 0) & (data.labels[:, mount] > 0))
    hits, totals = np.zeros(2), np.zeros(2)
    size = data.config.image_size
    for index in both:
        pair_maps = upsampled(maps[index, [rider, mount]], size).numpy()
        for k, (source, target) in enumerate(((0, mount), (1, rider))):
            pixels = data.masks[index] == target + 1
            hits[k] += int((pair_maps[source][pixels] > threshold).sum())
            totals[k] += int(pixels.sum())
    for k, key in enumerate(out):
        if totals[k] > 0:
            out[key] = float(hits[k] / totals[k])
    return out


def counted(items: Iterator[Tuple[np.ndarray, np.ndarray]], histogram: ThresholdHistogram
            ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``items`` (per image ``(keys, maps)``) passed on unchanged, each also added to ``histogram``: the
    sweep's own pass over the maps collects what the automatic threshold needs."""
    for keys, image_maps in items:
        histogram.add(keys, image_maps)
        yield keys, image_maps


def automatic_thresholds(maps: Dict[str, torch.Tensor], data: SyntheticDataset, sweeps: Dict[str, SweepResult],
                         histograms: Dict[str, ThresholdHistogram], reference: Optional[str] = "CAM"
                         ) -> Dict[str, Dict[str, Any]]:
    """Per method, the threshold chosen without masks and the mIoU it gives (:attr:`SeedResult.automatic`).

    ``histograms``: per method, its maps as the sweep read them (upsampled, max-normalised;
    :func:`counted`). ``reference`` names the method whose maps are the classifier's CAM
    (``auto_threshold(..., reference=cam)``), None or absent from ``maps`` for the two-argument form.
    """
    size, num_classes = data.config.image_size, data.config.num_classes
    ref = histograms.get(reference) if reference is not None else None
    out = {}
    for name, method_maps in maps.items():
        choice = choose_threshold(histograms[name], ref)
        at_t = sweep(per_image_maps(method_maps, data.labels, size), (m.astype(np.int64) for m in data.masks),
                     [choice.threshold], num_classes + 1, progress=False)
        miou = float(at_t.miou[0])
        out[name] = {"threshold": choice.threshold, "rule": choice.rule, "miou": miou,
                     "gap": miou - float(sweeps[name].best["miou"])}
    return out


def _export_host_files(folder: Path, data: SyntheticDataset, maps: torch.Tensor, progress: Optional[bool]) -> None:
    """Write maps as EDAM/MCTformer ``{class: (H, W)}`` dicts under ``lpcam/``, GT PNGs and an id list."""
    size = data.config.image_size
    items = zip(data.ids, data.masks, per_image_maps(maps, data.labels, size))
    for image_id, mask, (keys, image_maps) in progress_bar(items, progress=progress, desc="export host files",
                                                           total=len(data), leave=False):
        write_class_dict(folder / "lpcam" / f"{image_id}.npy", dict(zip(keys, image_maps)))
        write_label_png(folder / "gt" / f"{image_id}.png", mask)
    with atomic_write(folder / "train.txt") as tmp:
        tmp.write_text("\n".join(data.ids) + "\n")


def run_seed(network: NetworkConfig, data: SyntheticDataset, config: DemoConfig, out: Path, *,
             progress: Optional[bool] = None, export: bool = False) -> Tuple[SeedResult, Dict[str, torch.Tensor]]:
    """Classifier, features, every selected read-out and the sweep for one (network, seed) on ``data``.

    Returns the result and the maps ``{method: (N, C, h, w)}`` (float32, CPU).
    """
    seed = data.config.seed
    seconds: Dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    folder = out / network.name / f"seed{seed}"
    x = images_to_tensor(data.images)
    model, train_stats, key = _classifier(network, data, x, config, seed, folder / "classifier.pt", progress)
    lap("classifier")
    features = extract_features(model, x, progress=progress)
    network_stats = {**train_stats, "stride": float(model.stride), **_feature_stats(features, data.masks)}
    lap("features")
    ctx = SeedContext(seed=seed, network=network.name, model=model, images=x, features=features,
                      labels=torch.from_numpy(data.labels), data=data, folder=folder, classifier_key=key,
                      lpcam_overrides=dict(config.lpcam_overrides), recam_selection=config.recam_selection,
                      progress=progress, validation=_validation_split(data, config.validation_images, progress),
                      fcam_crf_kernel=config.fcam_crf_kernel, fcam_epochs=config.fcam_epochs)
    n, c = len(data), data.config.num_classes
    maps: Dict[str, torch.Tensor] = {}
    readouts = select_readouts(config.methods)
    for readout in progress_bar(readouts, progress=progress, desc=f"read-outs ({network.name}, seed {seed})",
                                total=len(readouts), leave=False):
        set_torch_seed(seed)  # a read-out's numbers do not depend on which read-outs ran before it
        result = readout.compute(ctx)
        if tuple(result.shape[:2]) != (n, c) or result.dim() != 4:
            raise ValueError(f"read-out {readout.name} returned shape {tuple(result.shape)}, expected ({n}, {c}, h, w)")
        maps[readout.name] = result.detach().float().cpu()
        lap(readout.name)
    with atomic_write(folder / "maps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, labels=data.labels,
                                **{map_key(k): v.numpy().astype(np.float16) for k, v in maps.items()})
    if export and "LPCAM" in maps:
        _export_host_files(folder / "export", data, maps["LPCAM"], progress)

    size = data.config.image_size
    sweeps, diagnostics, histograms = {}, {}, {}
    for name, method_maps in maps.items():
        histograms[name] = ThresholdHistogram(c)
        sweeps[name] = sweep(counted(per_image_maps(method_maps, data.labels, size), histograms[name]),
                             (m.astype(np.int64) for m in data.masks), config.thresholds, c + 1, progress=progress,
                             total=n)
        diagnostics[name] = {**part_diagnostics(method_maps, data, sweeps[name].best_threshold),
                             **cross_activation(method_maps, data, sweeps[name].best_threshold),
                             **ctx.probes.get(name, {})}
    automatic = automatic_thresholds(maps, data, sweeps, histograms)
    lap("evaluation")
    seconds["total"] = sum(seconds.values())
    return SeedResult(seed, network.name, sweeps, diagnostics, network_stats, dict(ctx.notes), seconds,
                      automatic), maps
