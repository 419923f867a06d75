"""``lpcam demo``: the synthetic WSSS benchmark that judges the CAM family on the same data and seeds.

Per seed the data set is generated once (:mod:`lpcam_plugin.benchmark.synthetic`); per
(network, seed) the classifier is trained (:mod:`lpcam_plugin.benchmark.toynet`; a cached
checkpoint is reused when data, schedule and architecture match), its features are extracted,
every read-out of :data:`~lpcam_plugin.benchmark.readouts.READOUTS` computes maps ``(N, C, h, w)``
for the training images, and the background threshold is swept
(:func:`lpcam_plugin.core.evaluate.sweep`). Results are averaged over seeds per network.

Output folder::

    report.md                       per network: FP, FN, mIoU, precision, recall at each method's best t
                                    (mean ± std over seeds), targets, diagnostics, per-seed rows, wall times,
                                    and the figures below embedded
    results.json                    every number in report.md plus the mIoU curves per seed
    threshold_curve_<network>.png   mIoU vs background threshold, one line per method, mean ± std over seeds
    overlays_<network>.png          first seed: image | each method's map; GT | each method's seed mask
    <network>/seed<N>/classifier.pt checkpoint (torch.load(weights_only=True))
    <network>/seed<N>/prototypes.npz the LPCAM prototype bank (PrototypeBank.load)
    <network>/seed<N>/maps.npz      every read-out's maps at feature resolution, float16, (N, C, h, w)
    <network>/seed<N>/export/       first network, first seed: LPCAM as EDAM/MCTformer {class: map} .npy
                                    dicts, GT PNGs and train.txt, so that ``lpcam eval`` reproduces that row
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from lpcam_plugin.benchmark.readouts import FCAM_SOURCES, READOUTS, SeedContext, map_key, select_readouts
from lpcam_plugin.benchmark.synthetic import PART_NAMES, SyntheticConfig, SyntheticDataset, generate, images_to_tensor
from lpcam_plugin.benchmark.toynet import (
    ToyClassifier,
    TrainConfig,
    build_network,
    extract_features,
    load_or_train,
    set_torch_seed,
    train_classifier,
)
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, MEAN_METRICS, SweepResult, maps_to_prediction, sweep
from lpcam_plugin.core.formats import write_class_dict, write_label_png
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.pixelsup.config import RCM_FORMS, PixelSupConfig
from lpcam_plugin.methods.recam.config import WEIGHT_KINDS

logger = logging.getLogger(__name__)

#: Table columns (paper Table 1 order) -> metric key.
TABLE_COLUMNS = (("FP", "mfp"), ("FN", "mfn"), ("mIoU", "miou"), ("Precision", "mprecision"), ("Recall", "mrecall"))
#: Claims checked from the means: (text, method a, method b, key, required margin of mean(a) - mean(b)).
#: A target is reported only when both of its methods ran.
TARGETS: List[Tuple[str, str, str, str, float]] = [
    ("LPCAM mIoU >= CAM mIoU + 5", "LPCAM", "CAM", "miou", 5.0),
    ("LPCAM recall >= CAM recall + 10", "LPCAM", "CAM", "mrecall", 10.0),
    ("LPCAM-F recall > CAM recall", "LPCAM-F", "CAM", "mrecall", 0.0),
    ("LPCAM precision > LPCAM-F precision", "LPCAM", "LPCAM-F", "mprecision", 0.0),
    ("LPCAM curve drop < CAM curve drop", "CAM", "LPCAM", "curve_drop", 0.0),
    ("ReCAM mIoU > CAM mIoU (paper: +6.0 on VOC)", "ReCAM", "CAM", "miou", 0.0),
    ("ReCAM+LPCAM mIoU > ReCAM mIoU", "ReCAM+LPCAM", "ReCAM", "miou", 0.0),
] + [(f"F-CAM({name}) mIoU > {name} mIoU (bilinear)", f"F-CAM({name})", name, "miou", 0.0) for name in FCAM_SOURCES]
_DIAGNOSTIC_KEYS = ("recall_head", "recall_body", "recall_legs", "context_fp", "act_head", "act_body", "act_legs",
                    "act_background", "act_other_objects", "auc")


@dataclass(frozen=True)
class NetworkConfig:
    """A benchmark network: ``name`` (table and folder name), ``kind`` (key of ``toynet.NETWORKS``), options.

    ``pixelsup``: train the classifier with RCM + MAM (:func:`pixelsup_overrides`) on the same schedule.
    """

    name: str
    kind: str
    options: Dict[str, Any] = field(default_factory=dict)
    pixelsup: bool = False

    def build(self, num_classes: int) -> ToyClassifier:
        """A fresh, untrained network for ``num_classes`` classes."""
        return build_network(self.kind, num_classes, **self.options)


#: IRN-like basic-block ResNet: output stride 8, D = 128.
TOYRESNET = NetworkConfig("toyresnet", "ToyResNet", {"widths": (32, 64, 128), "strides": (2, 2, 1)})
#: ResNet-50-stage-4-like: bottlenecks expanding to D = 1024 at output stride 16.
BOTTLENECK = NetworkConfig("bottleneck", "ToyBottleneckNet",
                           {"widths": (32, 64, 128), "strides": (2, 2, 2), "mid_width": 128, "feature_dim": 1024,
                            "blocks": 3})
#: The same two networks, their classifiers trained with RCM + MAM.
TOYRESNET_PSS = dataclasses.replace(TOYRESNET, name="toyresnet+pss", pixelsup=True)
BOTTLENECK_PSS = dataclasses.replace(BOTTLENECK, name="bottleneck+pss", pixelsup=True)
#: Networks selectable by name on the command line, in report order.
NETWORK_PRESETS: Dict[str, NetworkConfig] = {n.name: n for n in (TOYRESNET, BOTTLENECK, TOYRESNET_PSS, BOTTLENECK_PSS)}

#: The paper's schedule for RCM + MAM (Yoon et al.): 20 epochs of VOC train_aug (10,582 images) in batches
#: of 16, MAM from epoch 6.
PAPER_PSS_STEPS = 20 * math.ceil(10582 / 16)
PAPER_MAM_START_FRACTION = 6 / 20


def pixelsup_overrides(train: TrainConfig, num_images: int, rcm_form: Optional[str] = None) -> Dict[str, Any]:
    """RCM + MAM on the benchmark: the VOC preset with its two schedule-bound settings scaled to the
    demo's schedule (decided before any result was seen). The EMA keeps the paper's horizon as a
    fraction of training: ``0.997 ** (13,240 / steps)`` (0.78 for the default 160 steps; at 0.997 the
    SupportNet would still be 62 % its random initialisation after 160 steps); MAM starts at the
    paper's 30 % of the epochs (epoch 3 of 10). ``rcm_form``: None for the preset's (always written
    out, so a checkpoint trained with the default form is reused when that form is asked for by name)."""
    steps = train.epochs * math.ceil(num_images / train.batch_size)
    return {"ema_momentum": round(0.997 ** (PAPER_PSS_STEPS / steps), 4),
            "mam_start_epoch": int(round(PAPER_MAM_START_FRACTION * train.epochs)), "seed": train.seed,
            "rcm_form": rcm_form if rcm_form is not None else PixelSupConfig.preset("voc").rcm_form}


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (recorded in ``results.json``).

    ``methods``: read-out names to run (``None``: every entry of ``READOUTS``, in its order).
    ``rcm_form``: RCM's loss form for the ``+pss`` networks (``None``: the preset's).
    ``overlay_images``: images (distinct, one per class first) in each ``overlays_<network>.png``.
    """

    seeds: Tuple[int, ...] = (0,)
    networks: Tuple[NetworkConfig, ...] = (TOYRESNET,)
    methods: Optional[Tuple[str, ...]] = None
    data: SyntheticConfig = SyntheticConfig()
    train: TrainConfig = TrainConfig()
    lpcam_overrides: Dict[str, Any] = field(default_factory=dict)
    recam_selection: Optional[str] = None
    rcm_form: Optional[str] = None
    thresholds: Tuple[float, ...] = DEFAULT_THRESHOLDS
    curve_window: float = 0.1
    overlay_images: int = 6
    export_host_files: bool = True

    @classmethod
    def full(cls, seeds: Sequence[int] = (0, 1, 2)) -> "DemoConfig":
        """Every network preset (plain and RCM + MAM classifiers), three seeds."""
        return cls(seeds=tuple(seeds), networks=tuple(NETWORK_PRESETS.values()))

    def quick(self) -> "DemoConfig":
        """The same run at small sizes, for a fast smoke run (numbers are noisier)."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, num_images=240),
                                   train=dataclasses.replace(self.train, epochs=8))

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = self.data.to_dict()
        return out


@dataclass
class SeedResult:
    """One (network, seed): a :class:`SweepResult` per method, diagnostics, timings and notes.

    ``seconds`` holds the wall time of each stage (``"classifier"``, ``"features"``, one entry per
    read-out, ``"evaluation"``) and their ``"total"``; a fit that several read-outs share is
    charged to the first one that needs it. Data generation (shared by the networks) and figures
    count only in the run's wall time. ``network_stats``: classifier training numbers
    (``cached`` = 1 when the checkpoint was reused) and feature statistics.
    """

    seed: int
    network: str
    sweeps: Dict[str, SweepResult]
    diagnostics: Dict[str, Dict[str, float]]
    network_stats: Dict[str, float]
    notes: Dict[str, str]
    seconds: Dict[str, float]


# ----------------------------------------------------------------------------- stages


def _classifier(network: NetworkConfig, data: SyntheticDataset, x: torch.Tensor, config: DemoConfig, seed: int,
                path: Path, progress: Optional[bool]) -> Tuple[ToyClassifier, Dict[str, float], Dict[str, Any]]:
    """Train ``network`` for ``seed`` or reuse a matching checkpoint at ``path``: ``(model, stats, key)``."""
    train = dataclasses.replace(config.train, seed=seed)
    if network.pixelsup:
        train = dataclasses.replace(train, pixelsup=pixelsup_overrides(train, len(data), config.rcm_form))
    key = {"data": data.config.fingerprint(), "train": train.to_dict(), "network": network.kind,
           "architecture": network.build(data.config.num_classes).architecture()}

    def fit() -> Tuple[ToyClassifier, Dict[str, float]]:
        set_torch_seed(seed)
        model = network.build(data.config.num_classes)
        return model, train_classifier(model, x, torch.from_numpy(data.labels), train, progress=progress)

    model, stats, cached = load_or_train(path, key, fit, {"class_names": data.class_names})
    return model, {**stats, "cached": float(cached)}, key


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


def _upsampled(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``(K, h, w)`` -> ``(K, size, size)`` bilinear (align_corners=False), then max-normalised (IRN)."""
    if maps.shape[0] == 0:
        return maps.new_zeros(0, size, size)
    up = F.interpolate(maps[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    return max_normalize(up.clamp_min(0))


def _image_maps(maps: torch.Tensor, labels: np.ndarray, size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Per image: ``(keys, (K, size, size) maps)`` of its positive classes, from ``(N, C, h, w)`` maps."""
    for index in range(maps.shape[0]):
        keys = np.flatnonzero(labels[index] > 0)
        yield keys, _upsampled(maps[index, keys], size).numpy()


def _part_diagnostics(maps: torch.Tensor, data: SyntheticDataset, threshold: float) -> Dict[str, float]:
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
    for index, (keys, image_maps) in enumerate(_image_maps(maps, data.labels, size)):
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
    out["auc"] = float(roc_auc_score(np.r_[np.ones(own_all.size), np.zeros(bg_all.size)], np.r_[own_all, bg_all])) if both else float("nan")
    return out


def _export_host_files(folder: Path, data: SyntheticDataset, maps: torch.Tensor, progress: Optional[bool]) -> None:
    """Write maps as EDAM/MCTformer ``{class: (H, W)}`` dicts under ``lpcam/``, GT PNGs and an id list."""
    size = data.config.image_size
    items = zip(data.ids, data.masks, _image_maps(maps, data.labels, size))
    for image_id, mask, (keys, image_maps) in progress_bar(items, progress=progress, desc="export host files", total=len(data), leave=False):
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
                      progress=progress)
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
    sweeps, diagnostics = {}, {}
    for name, method_maps in maps.items():
        sweeps[name] = sweep(_image_maps(method_maps, data.labels, size), (m.astype(np.int64) for m in data.masks),
                             config.thresholds, c + 1, progress=progress, total=n)
        diagnostics[name] = _part_diagnostics(method_maps, data, sweeps[name].best_threshold)
    lap("evaluation")
    seconds["total"] = sum(seconds.values())
    return SeedResult(seed, network.name, sweeps, diagnostics, network_stats, dict(ctx.notes), seconds), maps


# ----------------------------------------------------------------------------- summary


def _stats(values: Sequence[float], scale: float = 100.0) -> Dict[str, float]:
    """Mean and sample std (ddof=1; 0 for one value) of ``scale * values``."""
    arr = scale * np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def summarize(results: Sequence[SeedResult], window: float = 0.1) -> Dict[str, Any]:
    """One network's table: per method the mean ± std over seeds (in %) of the best-threshold metrics.

    Returns ``{"table": {method: {metric: {"mean", "std"}, "threshold", "curve_drop", "diagnostics"}},
    "targets": {text: {"margin", "required", "met"}}, "seeds": [...], "network": {key: {"mean", "std"}}}``,
    where ``"network"`` holds the classifier's train accuracy and the features' zero fraction (in %),
    their mean L2 norms on object / background cells, D, grid side and output stride.
    """
    table: Dict[str, Dict[str, Any]] = {}
    for name in results[0].sweeps:
        bests = [r.sweeps[name].best for r in results]
        row: Dict[str, Any] = {key: _stats([b[key] for b in bests]) for key in MEAN_METRICS}
        row["threshold"] = _stats([b["threshold"] for b in bests], 1.0)
        row["curve_drop"] = _stats([r.sweeps[name].curve_drop(window) for r in results])
        row["diagnostics"] = {key: _stats([r.diagnostics[name][key] for r in results]) for key in results[0].diagnostics[name]}
        table[name] = row
    targets = {}
    for text, a, b, key, need in TARGETS:
        if a in table and b in table:
            margin = table[a][key]["mean"] - table[b][key]["mean"]
            targets[text] = {"margin": margin, "required": need, "met": bool(margin >= need if need > 0 else margin > 0)}
    network = {key: _stats([r.network_stats[key] for r in results], 100.0 if key in ("train_accuracy", "zero_fraction") else 1.0)
               for key in ("train_accuracy", "zero_fraction", "norm_object", "norm_background", "dim", "grid", "stride")}
    return {"table": table, "targets": targets, "seeds": [r.seed for r in results], "network": network}


def _fmt(cell: Dict[str, float], digits: int = 1, spread: bool = True) -> str:
    """``"mean ± std"``, or ``"mean"`` without ``spread`` (one seed)."""
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}" if spread else f"{cell['mean']:.{digits}f}"


def _network_title(network: NetworkConfig, summary: Dict[str, Any]) -> str:
    stats = summary["network"]
    grid = int(stats["grid"]["mean"])
    return (f"{network.name}: {network.kind}, output stride {int(stats['stride']['mean'])}, "
            f"D = {int(stats['dim']['mean'])}, feature grid {grid}x{grid}")


def _render_network(network: NetworkConfig, summary: Dict[str, Any], results: Sequence[SeedResult],
                    config: DemoConfig, figures: bool) -> List[str]:
    """The report section of one network."""
    table, stats = summary["table"], summary["network"]
    methods = list(table)
    spread = len(results) > 1
    lines = [
        f"## {_network_title(network, summary)}",
        "",
        f"Constructor options `{json.dumps(network.options)}`; classifier exact-match train accuracy "
        f"{_fmt(stats['train_accuracy'], spread=spread)} %; features {stats['zero_fraction']['mean']:.0f} % zeros, mean L2 "
        f"norm {stats['norm_object']['mean']:.1f} on object cells vs {stats['norm_background']['mean']:.1f} on "
        "background cells.",
        "",
        "### Seed masks at each method's best background threshold ("
        + (f"{len(results)} seeds, mean ± sample std, %)" if spread else f"seed {results[0].seed}, %)"),
        "",
        f"| method | FP | FN | mIoU | precision | recall | best t | mIoU drop within ±{config.curve_window:.2f} of best t |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        row = table[name]
        cells = [_fmt(row[key], spread=spread) for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_fmt(row['threshold'], 2, spread)} | {_fmt(row['curve_drop'], spread=spread)} |")
    if summary["targets"]:
        lines += ["", "### Targets (from the means)", "", "| target | margin | met |", "|---|---|---|"]
        for text, row in summary["targets"].items():
            lines.append(f"| {text} | {row['margin']:+.1f} | {'yes' if row['met'] else 'no'} |")
    lines += [
        "",
        "### Where the pixels are won or lost (mean over seeds, %)",
        "",
        "| method | recall head | recall body | recall legs | context FP | act. head | act. body | act. legs | act. background | act. other objects | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        diag = table[name]["diagnostics"]
        lines.append(f"| {name} | " + " | ".join(f"{diag[key]['mean']:.1f}" for key in _DIAGNOSTIC_KEYS) + " |")
    lines += ["", "### Per seed", "",
              "| seed | method | FP | FN | mIoU | precision | recall | best t | read-out s | notes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name in methods:
            best = r.sweeps[name].best
            cells = " | ".join(f"{100 * best[key]:.1f}" for _, key in TABLE_COLUMNS)
            lines.append(f"| {r.seed} | {name} | {cells} | {best['threshold']:.2f} | {r.seconds[name]:.1f} | "
                         f"{r.notes.get(name, '')} |")
    if figures:
        lines += ["", "### Figures", "",
                  f"![mIoU vs background threshold, {network.name}](threshold_curve_{network.name}.png)", "",
                  f"![maps and seed masks, {network.name}, seed {results[0].seed}](overlays_{network.name}.png)"]
    return lines + [""]


def pixelsup_pairs(config: DemoConfig) -> List[Tuple[NetworkConfig, NetworkConfig]]:
    """``(plain, +pss)`` pairs of networks of this run: same kind and options, classifier trained without / with RCM + MAM."""
    plain = [n for n in config.networks if not n.pixelsup]
    return [(p, n) for n in config.networks if n.pixelsup for p in plain
            if (p.kind, p.options) == (n.kind, n.options)]


def _render_pixelsup(summaries: Dict[str, Dict[str, Any]], config: DemoConfig) -> List[str]:
    """Every read-out on the plainly trained classifier beside the same read-out on the RCM + MAM one."""
    pairs = pixelsup_pairs(config)
    if not pairs:
        return []
    lines = ["## RCM + MAM: every read-out on the classifier trained without / with it (mIoU, recall, %)", "",
             "| network | method | mIoU plain | mIoU +pss | Δ mIoU | recall plain | recall +pss | precision plain | precision +pss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for plain, pss in pairs:
        a, b = summaries[plain.name]["table"], summaries[pss.name]["table"]
        spread = len(summaries[plain.name]["seeds"]) > 1
        for method in a:
            if method not in b:
                continue
            delta = b[method]["miou"]["mean"] - a[method]["miou"]["mean"]
            cells = [_fmt(a[method]["miou"], spread=spread), _fmt(b[method]["miou"], spread=spread), f"{delta:+.1f}"]
            cells += [_fmt(t[method][key], spread=spread) for key in ("mrecall", "mprecision") for t in (a, b)]
            lines.append(f"| {plain.name} | {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def render_report(summaries: Dict[str, Dict[str, Any]], results: Dict[str, List[SeedResult]], config: DemoConfig,
                  command: str, seconds: float, figures: bool = True) -> str:
    """The Markdown report: run facts, wall times, then one section per network."""
    methods = list(next(iter(summaries.values()))["table"])
    data = config.data
    lines = [
        "# Synthetic WSSS benchmark: the CAM family",
        "",
        f"Command: `{command}`  ",
        f"Seeds {', '.join(str(s) for s in config.seeds)} (generator, classifier and every fit); "
        f"{data.num_images} training images of {data.image_size}x{data.image_size}, {data.num_classes} classes; "
        f"{config.train.epochs} classifier epochs; networks {', '.join(n.name for n in config.networks)}; "
        f"methods {', '.join(methods)}.  ",
        f"Wall time: {seconds:.0f} s.",
        "",
        "FP/FN are the per-class FP/(TP+FP+FN) and FN/(TP+FP+FN) rates, averaged over background + classes. "
        "Each method is scored at its own best background threshold t, per seed. Diagnostics: part recall is the "
        "fraction of a part's pixels labelled with the right class at the best t; context FP the background pixels "
        "labelled as a present class that has a context background; act. the mean max-normalised map value of a "
        "class on its own parts, the background and other objects; AUC the ROC AUC of the map value, own-object "
        "vs background pixels (threshold-free).",
        "",
        "### Wall time per stage (s; a fit shared by several read-outs is charged to the first)",
        "",
        "| network | seed | classifier | features | " + " | ".join(methods) + " | evaluation | total |",
        "|---|---|---|---|" + "---|" * len(methods) + "---|---|",
    ]
    for network in config.networks:
        for r in results[network.name]:
            cached = " (cached)" if r.network_stats.get("cached") else ""
            cells = [f"{r.seconds['classifier']:.1f}{cached}", f"{r.seconds['features']:.1f}"]
            cells += [f"{r.seconds[m]:.1f}" for m in methods] + [f"{r.seconds['evaluation']:.1f}", f"{r.seconds['total']:.1f}"]
            lines.append(f"| {network.name} | {r.seed} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += _render_pixelsup(summaries, config)
    for network in config.networks:
        lines += _render_network(network, summaries[network.name], results[network.name], config, figures)
    if figures:
        lines += [
            "How to read the figures. Threshold curve: the seed-mask mIoU for every background threshold t, one "
            "line per method (mean over seeds, shaded ± sample std). The dot marks the peak of the mean curve (the "
            "best single t for all seeds); the cross with error bars the mean ± std of each seed's own best "
            "(t, mIoU), which is what the table reports and is never below the mean curve's peak. A flat curve "
            "around the optimum means the method is insensitive to t. Overlays (first seed): for each image, the "
            "top row shows the image and each method's map of the named class (max-normalised, colour bar), the "
            "bottom row the ground truth and each method's seed mask at that method's best t of that seed (class "
            "colours in the legend).",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def _overlay_indices(data: SyntheticDataset, count: int) -> List[Tuple[int, int]]:
    """``count`` distinct ``(image index, class)`` pairs: classes in turn, each image at most once."""
    used: set = set()
    picks: List[Tuple[int, int]] = []
    for k in range(count * data.config.num_classes):
        if len(picks) == count:
            break
        c = k % data.config.num_classes
        for index in np.flatnonzero(data.labels[:, c] > 0):
            if int(index) not in used:
                used.add(int(index))
                picks.append((int(index), c))
                break
    return picks


def write_overlays(path: Path, network: NetworkConfig, result: SeedResult, data: SyntheticDataset,
                   maps: Dict[str, torch.Tensor], images: int) -> None:
    """``overlays_<network>.png``: per image a map row (image | each method's map of one class, jet)
    and a mask row (ground truth | each method's seed mask at its best t of this seed)."""
    from lpcam_plugin.benchmark.viz import label_to_rgb, overlay, plot_grid, voc_palette

    size = data.config.image_size
    methods = list(maps)
    panels, row_titles = [], []
    for index, c in _overlay_indices(data, images):
        keys = np.flatnonzero(data.labels[index] > 0)
        heat = {name: _upsampled(maps[name][index, keys], size).numpy() for name in methods}
        position = list(keys).index(c)
        panels.append([data.images[index]] + [overlay(data.images[index], heat[name][position]) for name in methods])
        panels.append([label_to_rgb(data.masks[index].astype(np.int64))]
                      + [label_to_rgb(maps_to_prediction(heat[name], keys, result.sweeps[name].best_threshold))
                         for name in methods])
        row_titles += [f"{data.ids[index]}\nmap of {data.class_names[c]}",
                       "GT / seed masks\n" + ", ".join(data.class_names[int(k)] for k in keys)]
    columns = ["image (top) / GT"] + [f"{name}\nmask @ t={result.sweeps[name].best_threshold:.2f}" for name in methods]
    palette = voc_palette(data.config.num_classes + 1)
    legend = {"background": palette[0], **{name: palette[c + 1] for c, name in enumerate(data.class_names)}}
    plot_grid(panels, path, column_titles=columns, row_titles=row_titles, legend=legend,
              colorbar=("jet", "map value (max-normalised)"), panel_size=1.35,
              title=f"{network.name}, seed {result.seed}: top rows, each method's map of the named class;\n"
                    f"bottom rows, ground truth and each method's seed mask at its best t of seed {result.seed}")


def write_threshold_curve(path: Path, network: NetworkConfig, results: Sequence[SeedResult]) -> None:
    """``threshold_curve_<network>.png``: mIoU vs t per method, mean ± std over seeds, both optima marked."""
    from lpcam_plugin.benchmark.viz import ThresholdCurve, plot_threshold_curves

    curves = {}
    for name in results[0].sweeps:
        stack = 100.0 * np.stack([r.sweeps[name].miou for r in results])
        bests = [r.sweeps[name].best for r in results]
        t_best, v_best = _stats([b["threshold"] for b in bests], 1.0), _stats([b["miou"] for b in bests])
        several = len(results) > 1
        curves[name] = ThresholdCurve(results[0].sweeps[name].thresholds, stack.mean(axis=0),
                                      stack.std(axis=0, ddof=1) if several else None,
                                      (t_best["mean"], t_best["std"], v_best["mean"], v_best["std"]) if several else None)
    seeds = ", ".join(str(r.seed) for r in results)
    which = f"seeds {seeds}; mean ± std band" if len(results) > 1 else f"seed {seeds}"
    plot_threshold_curves(curves, path, title=f"{network.name}: seed-mask mIoU vs background threshold ({which})")


# ----------------------------------------------------------------------------- run


def run_demo(config: DemoConfig, out: Path, *, progress: Optional[bool] = None, figures: bool = True,
             command: str = "lpcam demo") -> Dict[str, Dict[str, Any]]:
    """Run every (network, seed), write ``report.md``, ``results.json`` and (with ``figures``) the PNGs.

    Returns ``{network name: summarize(...)}``.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    select_readouts(config.methods)  # fail on unknown names before any training
    results: Dict[str, List[SeedResult]] = {n.name: [] for n in config.networks}
    shown: Dict[str, Tuple[SyntheticDataset, Dict[str, torch.Tensor]]] = {}
    for k, seed in enumerate(progress_bar(config.seeds, progress=progress, desc="seeds", total=len(config.seeds))):
        data = generate(dataclasses.replace(config.data, seed=seed), progress=progress)
        for j, network in enumerate(config.networks):
            result, maps = run_seed(network, data, config, out, progress=progress,
                                    export=config.export_host_files and k == 0 and j == 0)
            logger.info("%s seed %d: %s (%.0f s)", network.name, seed,
                        ", ".join(f"{m} mIoU {100 * s.best['miou']:.1f}" for m, s in result.sweeps.items()),
                        result.seconds["total"])
            results[network.name].append(result)
            if network.name not in shown:
                shown[network.name] = (data, maps)
    summaries = {name: summarize(rs, config.curve_window) for name, rs in results.items()}
    if figures:
        for network in config.networks:
            first = results[network.name][0]
            data, maps = shown[network.name]
            write_threshold_curve(out / f"threshold_curve_{network.name}.png", network, results[network.name])
            write_overlays(out / f"overlays_{network.name}.png", network, first, data, maps, config.overlay_images)
    seconds = time.perf_counter() - start
    report = render_report(summaries, results, config, command, seconds, figures)
    first_network, first_seed = config.networks[0].name, config.seeds[0]
    if config.export_host_files and "LPCAM" in summaries[first_network]["table"]:
        export = out / first_network / f"seed{first_seed}" / "export"
        report += (
            f"\nReproduce the LPCAM row of {first_network}, seed {first_seed} from the exported host-format files:\n\n"
            f"    lpcam eval --cams {export / 'lpcam'} --gt {export / 'gt'} --list {export / 'train.txt'} "
            f"--format dict --allow-pickle --num-classes {config.data.num_classes + 1}\n"
        )
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text(report)
    payload = {
        "config": config.to_dict(),
        "seconds": seconds,
        "networks": {
            name: {
                "summary": summaries[name],
                "per_seed": [
                    {"seed": r.seed, "seconds": r.seconds, "network": r.network_stats, "notes": r.notes,
                     "diagnostics": r.diagnostics, "sweeps": {m: s.to_dict() for m, s in r.sweeps.items()}}
                    for r in rs
                ],
            }
            for name, rs in results.items()
        },
    }
    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    return summaries


# ----------------------------------------------------------------------------- CLI


def _command(args: argparse.Namespace) -> str:
    """The ``lpcam demo`` command line equivalent to ``args`` (for the report)."""
    parts = ["lpcam demo", f"--out {args.out}", f"--seed {args.seed}"]
    parts += [f"--seeds {args.seeds}"] if args.seeds is not None else []
    parts += [flag for flag, on in (("--full", args.full), ("--quick", args.quick), ("--retrain", args.retrain)) if on]
    parts += [f"--{name} {' '.join(values)}" for name, values in (("networks", args.networks), ("methods", args.methods)) if values]
    parts += [f"--{name.replace('_', '-')} {value}" for name, value in
              (("num_images", args.num_images), ("epochs", args.epochs), ("recam_selection", args.recam_selection),
               ("rcm_form", args.rcm_form))
              if value is not None]
    return " ".join(parts)


def _run_cli(args: argparse.Namespace) -> int:
    seeds_count = args.seeds if args.seeds is not None else (3 if args.full else 1)
    if seeds_count < 1:
        logger.error("--seeds must be >= 1, got %d", seeds_count)
        return 2
    seeds = tuple(args.seed + k for k in range(seeds_count))
    config = DemoConfig.full(seeds) if args.full else DemoConfig(seeds=seeds)
    if args.networks:
        config = dataclasses.replace(config, networks=tuple(NETWORK_PRESETS[name] for name in args.networks))
    if args.methods:
        try:
            select_readouts(args.methods)
        except ValueError as error:
            logger.error("%s", error)
            return 2
        config = dataclasses.replace(config, methods=tuple(args.methods))
    if args.quick:
        config = config.quick()
    if args.num_images is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_images=args.num_images))
    if args.epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    if args.recam_selection is not None:
        config = dataclasses.replace(config, recam_selection=args.recam_selection)
    if args.rcm_form is not None:
        config = dataclasses.replace(config, rcm_form=args.rcm_form)
    if args.retrain:
        for network in config.networks:
            for seed in seeds:
                folder = args.out / network.name / f"seed{seed}"
                for checkpoint in [*folder.glob("*.pt"), *folder.glob("fcam_*.npz")]:
                    checkpoint.unlink()
    figures = not args.no_figures
    if figures:
        try:
            from lpcam_plugin.benchmark.viz import _matplotlib

            _matplotlib()  # figures are drawn on bare Figure objects: no backend is selected or needed
        except ImportError as error:
            logger.error("%s (or pass --no-figures)", error)
            return 2
    run_demo(config, args.out, progress=False if args.no_progress else None, figures=figures, command=_command(args))
    sys.stdout.write((args.out / "report.md").read_text())
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam demo`` to the ``lpcam`` command line."""
    readouts = ", ".join(r.name for r in READOUTS)
    parser = subparsers.add_parser(
        "demo",
        help=f"synthetic WSSS benchmark: train toy classifiers, compare {readouts}",
        description="Generate the synthetic benchmark, train (or reuse) each network's classifier per seed, run every "
        f"read-out ({readouts}), evaluate seed masks over a threshold sweep and write a report folder. "
        "Default: the toyresnet network, one seed; --full: every network, three seeds.",
    )
    parser.add_argument("--out", type=Path, default=Path("lpcam-demo"), help="report folder (default: lpcam-demo)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds: seed, seed+1, ... (default 1; 3 with --full)")
    parser.add_argument("--full", action="store_true", help=f"every network ({', '.join(NETWORK_PRESETS)}) and 3 seeds")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORK_PRESETS), default=None,
                        help="networks to run (default: toyresnet; every one with --full)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help=f"read-outs to run, in table order (default: all of {readouts})")
    parser.add_argument("--quick", action="store_true", help="small sizes (240 images, 8 epochs) for a fast smoke run")
    parser.add_argument("--num-images", type=int, default=None, help="override the number of images per seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the classifier's training epochs")
    parser.add_argument("--retrain", action="store_true", help="delete the cached checkpoints (*.pt: classifiers and "
                        "ReCAM; fcam_*.npz: F-CAM decoders) of the selected networks and seeds first")
    parser.add_argument("--recam-selection", choices=WEIGHT_KINDS, default=None,
                        help="ReCAM+LPCAM selection weight (default: the ReCAM preset's, bce)")
    parser.add_argument("--rcm-form", choices=RCM_FORMS, default=None,
                        help="RCM loss of the +pss networks' training (default: the preset's)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs (no matplotlib needed)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_cli)
