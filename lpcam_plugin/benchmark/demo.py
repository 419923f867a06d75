"""``lpcam demo``: the synthetic WSSS benchmark end to end (data, classifier, prototypes, evaluation).

Per seed: generate the data set (:mod:`lpcam_plugin.synthetic`), train the toy ResNet
(:mod:`lpcam_plugin.toynet`; a cached checkpoint is reused when data and schedule match), fit
LPCAM prototypes on the training images with the single-scale CAM as baseline, compute CAM,
LPCAM-F (class prototypes only) and LPCAM maps for every training image, and sweep the
background threshold (:func:`lpcam_plugin.evaluate.sweep`). Results are averaged over seeds.

Output folder::

    report.md              Table 1 (FP, FN, mIoU, precision, recall at each method's best t), mean ± std
    results.json           every number in report.md plus the mIoU curves per seed
    threshold_curve.png    mIoU vs background threshold (paper Figure 5d), mean ± std over seeds
    overlays.png           image | ground truth | CAM | LPCAM | seed masks, first seed
    seed<N>/classifier.pt  checkpoint (torch.load(weights_only=True))
    seed<N>/prototypes.npz the prototype bank (PrototypeBank.load)
    seed<N>/maps.npz       CAM / LPCAM-F / LPCAM maps at feature resolution, float16, (N, C, h, w)
    seed<N>/export/        first seed only: LPCAM as EDAM/MCTformer {class: map} .npy dicts, GT PNGs and
                           train.txt, so that ``lpcam eval`` reproduces the LPCAM row of that seed
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, MEAN_METRICS, SweepResult, maps_to_prediction, sweep
from lpcam_plugin.core.io import atomic_write, save_npy_atomic
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.benchmark.synthetic import PART_NAMES, SyntheticConfig, SyntheticDataset, generate, images_to_tensor
from lpcam_plugin.benchmark.toynet import TrainConfig, ToyResNet, extract_features, load_checkpoint, save_checkpoint, set_torch_seed, train_classifier

logger = logging.getLogger(__name__)

#: Methods compared, in table order.
METHODS = ("CAM", "LPCAM-F", "LPCAM")
#: Table-1 columns (paper order) -> metric key.
TABLE_COLUMNS = (("FP", "mfp"), ("FN", "mfn"), ("mIoU", "miou"), ("Precision", "mprecision"), ("Recall", "mrecall"))


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (recorded in ``results.json``)."""

    seeds: Tuple[int, ...] = (0, 1, 2)
    data: SyntheticConfig = SyntheticConfig()
    widths: Tuple[int, ...] = (32, 64, 128)
    strides: Tuple[int, ...] = (2, 2, 1)
    train: TrainConfig = TrainConfig()
    lpcam_overrides: Dict[str, Any] = field(default_factory=dict)
    thresholds: Tuple[float, ...] = DEFAULT_THRESHOLDS
    curve_window: float = 0.1
    overlay_rows: int = 6
    export_host_files: bool = True

    @classmethod
    def quick(cls, seeds: Sequence[int] = (0, 1, 2)) -> "DemoConfig":
        """Small sizes for a fast smoke run (numbers are noisier)."""
        return cls(seeds=tuple(seeds), data=SyntheticConfig(num_images=240), train=TrainConfig(epochs=8))

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = self.data.to_dict()
        return out


@dataclass
class SeedResult:
    """Results of one seed: one :class:`SweepResult` per method, plus diagnostics."""

    seed: int
    sweeps: Dict[str, SweepResult]
    diagnostics: Dict[str, Dict[str, float]]
    train_stats: Dict[str, float]
    prototype_counts: Dict[str, List[int]]
    seconds: float


# ----------------------------------------------------------------------------- stages


def _classifier(data: SyntheticDataset, x: torch.Tensor, config: DemoConfig, seed: int, path: Path,
                progress: Optional[bool]) -> Tuple[ToyResNet, Dict[str, float]]:
    """Train the toy classifier for ``seed`` or reuse a matching checkpoint at ``path``."""
    train = dataclasses.replace(config.train, seed=seed)
    fresh = ToyResNet(data.config.num_classes, config.widths, config.strides)
    key = {"data": data.config.fingerprint(), "train": train.to_dict(), "architecture": fresh.architecture()}
    if path.is_file():
        try:
            model, meta = load_checkpoint(path)
        except (ValueError, RuntimeError, KeyError) as error:
            logger.warning("ignoring unreadable checkpoint %s: %s", path, error)
        else:
            if meta.get("key") == key:
                logger.info("reusing classifier checkpoint %s", path)
                return model, dict(meta.get("stats", {}))
            logger.info("checkpoint %s was trained with other settings; retraining", path)
    set_torch_seed(seed)
    model = ToyResNet(data.config.num_classes, config.widths, config.strides)
    stats = train_classifier(model, x, torch.from_numpy(data.labels), train, progress=progress)
    save_checkpoint(path, model, {"key": key, "stats": stats, "class_names": data.class_names})
    return model, stats


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
    act = {name: [] for name in PART_NAMES[1:] + ("background", "other_objects")}
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
    out["auc"] = float(roc_auc_score(np.r_[np.ones(own_all.size), np.zeros(bg_all.size)], np.r_[own_all, bg_all]))
    return out


def _export_host_files(folder: Path, data: SyntheticDataset, maps: torch.Tensor, progress: Optional[bool]) -> None:
    """Write LPCAM maps as EDAM/MCTformer ``{class: (H, W)}`` dicts, GT PNGs and an id list."""
    from PIL import Image

    size = data.config.image_size
    items = zip(data.ids, data.masks, _image_maps(maps, data.labels, size))
    for image_id, mask, (keys, image_maps) in progress_bar(items, progress=progress, desc="export host files", total=len(data), leave=False):
        save_npy_atomic(folder / "lpcam" / f"{image_id}.npy", {int(k): m for k, m in zip(keys, image_maps)}, allow_pickle=True)
        with atomic_write(folder / "gt" / f"{image_id}.png") as tmp:
            Image.fromarray(mask).save(tmp, format="PNG")
    with atomic_write(folder / "train.txt") as tmp:
        tmp.write_text("\n".join(data.ids) + "\n")


def run_seed(seed: int, config: DemoConfig, out: Path, *, progress: Optional[bool] = None,
             export: bool = False) -> Tuple[SeedResult, Dict[str, Any]]:
    """Run the whole pipeline for one seed; returns the result and the arrays needed for figures."""
    start = time.perf_counter()
    folder = out / f"seed{seed}"
    data = generate(dataclasses.replace(config.data, seed=seed), progress=progress)
    x = images_to_tensor(data.images)
    model, train_stats = _classifier(data, x, config, seed, folder / "classifier.pt", progress)
    features = extract_features(model, x, progress=progress)
    weight = model.class_weight()
    labels = torch.from_numpy(data.labels)

    estimator = LPCAM(data.config.num_classes, "voc", class_names=data.class_names, progress=progress,
                      seed=seed, **config.lpcam_overrides)
    batch = 128
    starts = range(0, len(data), batch)
    for i in progress_bar(starts, progress=progress, desc="LPCAM features", total=len(starts)):
        estimator.partial_fit(features[i : i + batch], labels[i : i + batch], weight=weight, ids=data.ids[i : i + batch])
    estimator.fit_prototypes(weight, metadata={"demo_seed": seed})
    bank: PrototypeBank = estimator.bank_
    bank.save(folder / "prototypes.npz")
    lpcam_f = LPCAM.from_bank(bank.without_context(), progress=progress)

    # Classes whose baseline CAM never exceeded tau_split have no prototypes; they fall back to CAM.
    maps = {
        "CAM": cam_map(features, weight) * labels[:, :, None, None],
        "LPCAM-F": lpcam_f(features, labels, fallback="cam", weight=weight),
        "LPCAM": estimator(features, labels, fallback="cam"),
    }
    with atomic_write(folder / "maps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, labels=data.labels, **{k.lower().replace("-", "_"): v.numpy().astype(np.float16) for k, v in maps.items()})
    if export:
        _export_host_files(folder / "export", data, maps["LPCAM"], progress)

    size = data.config.image_size
    sweeps, diagnostics = {}, {}
    num_labels = data.config.num_classes + 1
    for name in METHODS:
        sweeps[name] = sweep(_image_maps(maps[name], data.labels, size), (m.astype(np.int64) for m in data.masks),
                             config.thresholds, num_labels, progress=progress, total=len(data))
        diagnostics[name] = _part_diagnostics(maps[name], data, sweeps[name].best_threshold)
    counts = {
        "class": [int(bank.class_prototypes[c].shape[0]) for c in range(bank.num_classes)],
        "context": [int(bank.context_prototypes[c].shape[0]) if c in bank.context_prototypes else 0 for c in range(bank.num_classes)],
    }
    result = SeedResult(seed, sweeps, diagnostics, train_stats, counts, time.perf_counter() - start)
    return result, {"data": data, "maps": maps}


# ----------------------------------------------------------------------------- summary


def summarize(results: Sequence[SeedResult], window: float = 0.1) -> Dict[str, Any]:
    """Mean and sample std (ddof=1; 0 for one seed) over seeds, in %, and the issue's targets."""

    def stats(values: Sequence[float]) -> Dict[str, float]:
        arr = 100.0 * np.asarray(values, dtype=np.float64)
        return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}

    table: Dict[str, Dict[str, Any]] = {}
    for name in METHODS:
        bests = [r.sweeps[name].best for r in results]
        row = {key: stats([b[key] for b in bests]) for key in MEAN_METRICS}
        row["threshold"] = {"mean": float(np.mean([b["threshold"] for b in bests])),
                            "std": float(np.std([b["threshold"] for b in bests], ddof=1)) if len(bests) > 1 else 0.0}
        row["curve_drop"] = stats([r.sweeps[name].curve_drop(window) for r in results])
        row["diagnostics"] = {key: stats([r.diagnostics[name][key] for r in results]) for key in results[0].diagnostics[name]}
        table[name] = row

    def mean(name: str, key: str) -> float:
        return table[name][key]["mean"]

    targets = {
        "LPCAM mIoU >= CAM mIoU + 5": (mean("LPCAM", "miou") - mean("CAM", "miou"), 5.0),
        "LPCAM recall >= CAM recall + 10": (mean("LPCAM", "mrecall") - mean("CAM", "mrecall"), 10.0),
        "LPCAM-F recall > CAM recall": (mean("LPCAM-F", "mrecall") - mean("CAM", "mrecall"), 0.0),
        "LPCAM precision > LPCAM-F precision": (mean("LPCAM", "mprecision") - mean("LPCAM-F", "mprecision"), 0.0),
        f"LPCAM curve drop (±{window}) < CAM curve drop": (mean("CAM", "curve_drop") - mean("LPCAM", "curve_drop"), 0.0),
    }
    target_rows = {
        text: {"margin": margin, "required": need, "met": bool(margin >= need if need > 0 else margin > 0)}
        for text, (margin, need) in targets.items()
    }
    return {"table": table, "targets": target_rows, "seeds": [r.seed for r in results]}


def _fmt(cell: Dict[str, float], digits: int = 1) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def render_report(summary: Dict[str, Any], results: Sequence[SeedResult], config: DemoConfig, command: str,
                  seconds: float) -> str:
    """The Markdown report."""
    table = summary["table"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines = [
        "# LPCAM demo: synthetic WSSS benchmark",
        "",
        f"Command: `{command}`  ",
        f"Seeds: {seeds} (generator and classifier); {config.data.num_images} training images of "
        f"{config.data.image_size}x{config.data.image_size}, {config.data.num_classes} classes; "
        f"classifier widths {list(config.widths)} (output stride 8), {config.train.epochs} epochs; wall time {seconds:.0f} s.",
        "",
        "## Seed masks at each method's best background threshold (paper Table 1 columns)",
        "",
        "Mean ± sample std over seeds, in %. FP/FN are the per-class FP/(TP+FP+FN) and FN/(TP+FP+FN) "
        "rates, averaged over background + classes.",
        "",
        "| method | FP | FN | mIoU | precision | recall | best t | mIoU drop within ±%.2f of best t |" % config.curve_window,
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        row = table[name]
        cells = [_fmt(row[key]) for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(row['threshold'], 2)} | {_fmt(row['curve_drop'])} |")
    lines += ["", "## Targets (from the means)", "", "| target | margin | met |", "|---|---|---|"]
    for text, row in summary["targets"].items():
        lines.append(f"| {text} | {row['margin']:+.1f} | {'yes' if row['met'] else 'no'} |")
    lines += [
        "",
        "## Where the pixels are won or lost",
        "",
        "Part recall: fraction of a part's pixels labelled with the right class at the method's best "
        "threshold. Context FP: background pixels labelled as a present class that has a context "
        "background. Mean activation: mean value of a class's max-normalised map on its own head / body / "
        "legs, on the background and on other objects (threshold-free). AUC: ROC AUC of the map value, "
        "own-object pixels vs background pixels (threshold-free separability). All in %.",
        "",
        "| method | recall head | recall body | recall legs | context FP | act. head | act. body | act. legs | act. background | act. other objects | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["recall_head", "recall_body", "recall_legs", "context_fp", "act_head", "act_body", "act_legs",
            "act_background", "act_other_objects", "auc"]
    for name in METHODS:
        diag = table[name]["diagnostics"]
        lines.append(f"| {name} | " + " | ".join(_fmt(diag[key]) for key in keys) + " |")
    lines += ["", "## Per seed", "", "| seed | method | mIoU | precision | recall | best t | classifier exact-match acc | prototypes (class / context per class) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name in METHODS:
            best = r.sweeps[name].best
            protos = ""
            if name == "LPCAM":
                protos = f"{r.prototype_counts['class']} / {r.prototype_counts['context']}"
            lines.append(
                f"| {r.seed} | {name} | {100 * best['miou']:.1f} | {100 * best['mprecision']:.1f} | {100 * best['mrecall']:.1f} | "
                f"{best['threshold']:.2f} | {100 * r.train_stats.get('train_accuracy', float('nan')):.1f} | {protos} |"
            )
    lines += ["", "Figures: `threshold_curve.png` (mIoU vs t, mean ± std), `overlays.png` (first seed).", ""]
    return "\n".join(lines)


def _overlay_rows(figure_data: Dict[str, Any], sweeps: Dict[str, SweepResult], rows: int) -> Tuple[List[List[np.ndarray]], List[str]]:
    """Panels for ``overlays.png``: one row per (image, class), cycling through the classes."""
    from lpcam_plugin.benchmark.viz import label_to_rgb, overlay

    data: SyntheticDataset = figure_data["data"]
    maps = figure_data["maps"]
    size = data.config.image_size
    panels, titles = [], []
    for k in range(rows):
        c = k % data.config.num_classes
        candidates = np.flatnonzero(data.labels[:, c] > 0)
        if candidates.size <= k // data.config.num_classes:
            continue
        index = int(candidates[k // data.config.num_classes])
        keys = np.flatnonzero(data.labels[index] > 0)
        row = [data.images[index], label_to_rgb(data.masks[index].astype(np.int64))]
        heat = {}
        for name in ("CAM", "LPCAM"):
            up = _upsampled(maps[name][index, keys], size).numpy()
            heat[name] = up
            row.append(overlay(data.images[index], up[list(keys).index(c)]))
        for name in ("CAM", "LPCAM"):
            pred = maps_to_prediction(heat[name], keys, sweeps[name].best_threshold)
            row.append(label_to_rgb(pred))
        panels.append(row)
        titles.append(f"{data.ids[index][-5:]} {data.class_names[c]}")
    return panels, titles


def write_figures(out: Path, results: Sequence[SeedResult], figure_data: Dict[str, Any], config: DemoConfig) -> None:
    """``threshold_curve.png`` (mean ± std over seeds) and ``overlays.png`` (first seed)."""
    from lpcam_plugin.benchmark.viz import plot_grid, plot_threshold_curves

    curves = {}
    for name in METHODS:
        stack = 100.0 * np.stack([r.sweeps[name].miou for r in results])
        std = stack.std(axis=0, ddof=1) if len(results) > 1 else None
        curves[name] = (results[0].sweeps[name].thresholds, stack.mean(axis=0), std)
    plot_threshold_curves(curves, out / "threshold_curve.png",
                          title=f"seed mIoU vs background threshold ({len(results)} seed(s), mean ± std)")
    panels, titles = _overlay_rows(figure_data, results[0].sweeps, config.overlay_rows)
    plot_grid(panels, out / "overlays.png", row_titles=titles,
              column_titles=["image", "ground truth", "CAM", "LPCAM", "CAM seeds (best t)", "LPCAM seeds (best t)"])


def run_demo(config: DemoConfig, out: Path, *, progress: Optional[bool] = None, figures: bool = True,
             command: str = "lpcam demo") -> Dict[str, Any]:
    """Run every seed, write ``report.md``, ``results.json`` and (with ``figures``) the PNGs; return the summary."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    results, first_figure_data = [], None
    for k, seed in enumerate(progress_bar(config.seeds, progress=progress, desc="seeds", total=len(config.seeds))):
        result, figure_data = run_seed(seed, config, out, progress=progress, export=config.export_host_files and k == 0)
        logger.info("seed %d: %s (%.0f s)", seed,
                    ", ".join(f"{m} mIoU {100 * result.sweeps[m].best['miou']:.1f}" for m in METHODS), result.seconds)
        results.append(result)
        if first_figure_data is None:
            first_figure_data = figure_data
    summary = summarize(results, config.curve_window)
    if figures:
        write_figures(out, results, first_figure_data, config)
    seconds = time.perf_counter() - start
    report = render_report(summary, results, config, command, seconds)
    if config.export_host_files:
        first = config.seeds[0]
        report += (
            f"\nReproduce the LPCAM row of seed {first} from the exported host-format files:\n\n"
            f"    lpcam eval --cams {out / f'seed{first}/export/lpcam'} --gt {out / f'seed{first}/export/gt'} "
            f"--list {out / f'seed{first}/export/train.txt'} --format dict --allow-pickle --num-classes "
            f"{config.data.num_classes + 1}\n"
        )
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text(report)
    payload = {
        "config": config.to_dict(),
        "summary": summary,
        "seconds": seconds,
        "per_seed": [
            {"seed": r.seed, "seconds": r.seconds, "train": r.train_stats, "prototypes": r.prototype_counts,
             "diagnostics": r.diagnostics,
             "sweeps": {name: r.sweeps[name].to_dict() for name in METHODS}}
            for r in results
        ],
    }
    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    return summary


# ----------------------------------------------------------------------------- CLI


def _run_cli(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        logger.error("--seeds must be >= 1, got %d", args.seeds)
        return 2
    seeds = tuple(args.seed + k for k in range(args.seeds))
    config = DemoConfig.quick(seeds) if args.quick else DemoConfig(seeds=seeds)
    if args.num_images is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_images=args.num_images))
    if args.epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    if args.retrain:
        for seed in seeds:
            (args.out / f"seed{seed}" / "classifier.pt").unlink(missing_ok=True)
    figures = not args.no_figures
    if figures:
        try:
            from lpcam_plugin.benchmark.viz import _matplotlib

            _matplotlib()  # figures are drawn on bare Figure objects: no backend is selected or needed
        except ImportError as error:
            logger.error("%s (or pass --no-figures)", error)
            return 2
    command = f"lpcam demo --out {args.out} --seed {args.seed} --seeds {args.seeds}" + "".join(
        f" {flag}" for flag, on in (("--quick", args.quick), ("--retrain", args.retrain)) if on
    ) + "".join(f" --{name.replace('_', '-')} {value}" for name, value in (("num_images", args.num_images), ("epochs", args.epochs)) if value is not None)
    run_demo(config, args.out, progress=False if args.no_progress else None, figures=figures, command=command)
    sys.stdout.write((args.out / "report.md").read_text())
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam demo`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "demo",
        help="synthetic WSSS benchmark: train a toy classifier, fit LPCAM, report CAM vs LPCAM-F vs LPCAM",
        description="Generate the synthetic benchmark, train (or reuse) the classifier per seed, fit LPCAM "
        "prototypes, evaluate seed masks over a threshold sweep and write a report folder.",
    )
    parser.add_argument("--out", type=Path, default=Path("lpcam-demo"), help="report folder (default: lpcam-demo)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds: seed, seed+1, ... (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast smoke run")
    parser.add_argument("--num-images", type=int, default=None, help="override the number of images per seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the classifier's training epochs")
    parser.add_argument("--retrain", action="store_true", help="ignore cached classifier checkpoints")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs (no matplotlib needed)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_cli)
