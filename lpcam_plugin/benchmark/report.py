"""The report of a ``lpcam demo`` run: per-network summaries over seeds, ``report.md`` and ``results.json``.

:func:`summarize` turns one network's :class:`~lpcam_plugin.benchmark.config.SeedResult` list into
its table (mean ± std over seeds of each method's best-threshold metrics), the targets
(:data:`TARGETS`) and network statistics; :func:`render_report` writes the Markdown;
:func:`write_results` the JSON with every number of the report plus the curves per seed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.benchmark.config import DemoConfig, NetworkConfig, SeedResult, pixelsup_pairs
from lpcam_plugin.core.evaluate import MEAN_METRICS
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.methods import readouts as registry

#: Table columns (paper Table 1 order) -> metric key.
TABLE_COLUMNS = (("FP", "mfp"), ("FN", "mfn"), ("mIoU", "miou"), ("Precision", "mprecision"), ("Recall", "mrecall"))
#: Claims checked from the means: (text, method a, method b, key, required margin of mean(a) - mean(b)).
#: A target is reported only when both of its methods ran. The F-CAM rows: one per source of the
#: read-out registry (:func:`lpcam_plugin.methods.readouts.fcam_sources`).
TARGETS: List[Tuple[str, str, str, str, float]] = [
    ("LPCAM mIoU >= CAM mIoU + 5", "LPCAM", "CAM", "miou", 5.0),
    ("LPCAM recall >= CAM recall + 10", "LPCAM", "CAM", "mrecall", 10.0),
    ("LPCAM-F recall > CAM recall", "LPCAM-F", "CAM", "mrecall", 0.0),
    ("LPCAM precision > LPCAM-F precision", "LPCAM", "LPCAM-F", "mprecision", 0.0),
    ("LPCAM curve drop < CAM curve drop", "CAM", "LPCAM", "curve_drop", 0.0),
    ("ReCAM mIoU > CAM mIoU (paper: +6.0 on VOC)", "ReCAM", "CAM", "miou", 0.0),
    ("ReCAM+LPCAM mIoU > ReCAM mIoU", "ReCAM+LPCAM", "ReCAM", "miou", 0.0),
] + [(f"{registry.label('fcam', source)} mIoU > {registry.label(source)} mIoU (bilinear)",
      registry.label("fcam", source), registry.label(source), "miou", 0.0) for source in registry.fcam_sources()]
#: The automatic threshold's target: its mIoU within this many points of the best threshold's, on every seed.
AUTO_THRESHOLD_TOLERANCE = 1.5
#: Diagnostics shown per method (:func:`lpcam_plugin.benchmark.run.part_diagnostics`), in column order.
DIAGNOSTIC_KEYS = ("recall_head", "recall_body", "recall_legs", "context_fp", "act_head", "act_body", "act_legs",
                   "act_background", "act_other_objects", "auc")


def mean_std(values: Sequence[float], scale: float = 100.0) -> Dict[str, float]:
    """Mean and sample std (ddof=1; 0 for one value) of ``scale * values``."""
    arr = scale * np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def defined_mean_std(values: Sequence[float], scale: float = 100.0) -> Dict[str, Optional[float]]:
    """:func:`mean_std` of the values that are defined (a diagnostic is NaN on a seed where it has no
    pixels to count, e.g. no image holds both classes of a pair); ``None`` for both when none is."""
    finite = [v for v in values if np.isfinite(v)]
    return dict(mean_std(finite, scale)) if finite else {"mean": None, "std": None}


def summarize(results: Sequence[SeedResult], window: float = 0.1) -> Dict[str, Any]:
    """One network's table: per method the mean ± std over seeds (in %) of the best-threshold metrics.

    Returns ``{"table": {method: {metric: {"mean", "std"}, "threshold", "curve_drop", "diagnostics",
    "automatic"}}, "targets": {text: {"margin", "required", "met"}}, "seeds": [...],
    "network": {key: {"mean", "std"}}}``, where ``"automatic"`` (when every seed has it) holds the
    threshold chosen without masks, the mIoU there, its gap to the best threshold's (mean ± std, and
    the worst seed's) and the rule, and ``"network"`` holds the classifier's train accuracy and the
    features' zero fraction (in %), their mean L2 norms on object / background cells, D, grid side and output stride.
    """
    table: Dict[str, Dict[str, Any]] = {}
    for name in results[0].sweeps:
        bests = [r.sweeps[name].best for r in results]
        row: Dict[str, Any] = {key: mean_std([b[key] for b in bests]) for key in MEAN_METRICS}
        row["threshold"] = mean_std([b["threshold"] for b in bests], 1.0)
        row["curve_drop"] = mean_std([r.sweeps[name].curve_drop(window) for r in results])
        row["diagnostics"] = {key: defined_mean_std([r.diagnostics[name][key] for r in results])
                              for key in results[0].diagnostics[name]}
        if all(name in r.automatic for r in results):
            autos = [r.automatic[name] for r in results]
            row["automatic"] = {"threshold": mean_std([a["threshold"] for a in autos], 1.0),
                                "miou": mean_std([a["miou"] for a in autos]),
                                "gap": mean_std([a["gap"] for a in autos]),
                                "worst_gap": 100 * min(a["gap"] for a in autos),
                                "rule": "/".join(sorted({a["rule"] for a in autos}))}
        table[name] = row
    targets = {}
    for text, a, b, key, need in TARGETS:
        if a in table and b in table:
            margin = table[a][key]["mean"] - table[b][key]["mean"]
            targets[text] = {"margin": margin, "required": need,
                             "met": bool(margin >= need if need > 0 else margin > 0)}
    network_keys = ("train_accuracy", "zero_fraction", "norm_object", "norm_background", "dim", "grid", "stride")
    percent_keys = ("train_accuracy", "zero_fraction")
    network = {key: mean_std([r.network_stats[key] for r in results], 100.0 if key in percent_keys else 1.0)
               for key in network_keys}
    return {"table": table, "targets": targets, "seeds": [r.seed for r in results], "network": network}


def format_cell(cell: Dict[str, float], digits: int = 1, spread: bool = True) -> str:
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
        f"{format_cell(stats['train_accuracy'], spread=spread)} %; "
        f"features {stats['zero_fraction']['mean']:.0f} % zeros, "
        f"mean L2 norm {stats['norm_object']['mean']:.1f} on object cells vs {stats['norm_background']['mean']:.1f} on "
        "background cells.",
        "",
        "### Seed masks at each method's best background threshold ("
        + (f"{len(results)} seeds, mean ± sample std, %)" if spread else f"seed {results[0].seed}, %)"),
        "",
        f"| method | FP | FN | mIoU | precision | recall | best t "
        f"| mIoU drop within ±{config.curve_window:.2f} of best t |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        row = table[name]
        cells = [format_cell(row[key], spread=spread) for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {format_cell(row['threshold'], 2, spread)} "
                       f"| {format_cell(row['curve_drop'], spread=spread)} |")
    lines += _render_automatic(table, config, spread)
    if summary["targets"]:
        lines += ["", "### Targets (from the means)", "", "| target | margin | met |", "|---|---|---|"]
        for text, row in summary["targets"].items():
            lines.append(f"| {text} | {row['margin']:+.1f} | {'yes' if row['met'] else 'no'} |")
    lines += [
        "",
        "### Where the pixels are won or lost (mean over seeds, %)",
        "",
        "| method | recall head | recall body | recall legs | context FP | act. head | act. body | act. legs "
        "| act. background | act. other objects | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        diag = table[name]["diagnostics"]
        lines.append(f"| {name} | " + " | ".join("—" if diag[key]["mean"] is None else f"{diag[key]['mean']:.1f}"
                                                 for key in DIAGNOSTIC_KEYS) + " |")
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


def _render_automatic(table: Dict[str, Any], config: DemoConfig, spread: bool) -> List[str]:
    """The table of the threshold chosen without masks beside the best one (empty when not computed)."""
    methods = [name for name in table if "automatic" in table[name]]
    if not methods:
        return []
    lines = ["", "### Seed masks at the threshold chosen without masks (`auto_threshold`; docs/evaluation.md)", "",
             "Rule `share`: the share of pixels that Otsu's cut keeps on this classifier's CAM; `otsu`: Otsu over "
             "the method's own positive values (no CAM in the run). "
             f"Target: gap within {AUTO_THRESHOLD_TOLERANCE:.1f} points of the best t's mIoU.", "",
             "| method | best t | mIoU at best t | automatic t | rule | mIoU at automatic t | gap | worst seed's gap "
             "| within target |", "|---|---|---|---|---|---|---|---|---|"]
    for name in methods:
        row, auto = table[name], table[name]["automatic"]
        met = auto["worst_gap"] >= -AUTO_THRESHOLD_TOLERANCE
        lines.append(f"| {name} | {format_cell(row['threshold'], 2, spread)} | "
                     f"{format_cell(row['miou'], spread=spread)} | {format_cell(auto['threshold'], 2, spread)} | "
                     f"{auto['rule']} | {format_cell(auto['miou'], spread=spread)} | "
                     f"{format_cell(auto['gap'], spread=spread)} | {auto['worst_gap']:+.1f} | "
                     f"{'yes' if met else 'no'} |")
    return lines


def _render_pixelsup(summaries: Dict[str, Dict[str, Any]], config: DemoConfig) -> List[str]:
    """Every read-out on the plainly trained classifier beside the same read-out on the RCM + MAM one."""
    pairs = pixelsup_pairs(config)
    if not pairs:
        return []
    lines = ["## RCM + MAM: every read-out on the classifier trained without / with it (mIoU, recall, %)", "",
             "| network | method | mIoU plain | mIoU +pss | Δ mIoU | recall plain | recall +pss "
             "| precision plain | precision +pss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for plain, pss in pairs:
        a, b = summaries[plain.name]["table"], summaries[pss.name]["table"]
        spread = len(summaries[plain.name]["seeds"]) > 1
        for method in a:
            if method not in b:
                continue
            delta = b[method]["miou"]["mean"] - a[method]["miou"]["mean"]
            cells = [format_cell(a[method]["miou"], spread=spread), format_cell(b[method]["miou"], spread=spread),
                     f"{delta:+.1f}"]
            cells += [format_cell(t[method][key], spread=spread) for key in ("mrecall", "mprecision") for t in (a, b)]
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
            cells += ([f"{r.seconds[m]:.1f}" for m in methods]
                      + [f"{r.seconds['evaluation']:.1f}", f"{r.seconds['total']:.1f}"])
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
            "(t, mIoU), which is what the table reports and is never below the mean curve's peak; the triangle the "
            "threshold chosen without masks (`auto_threshold`, mean over seeds) and the mIoU there. A flat curve "
            "around the optimum means the method is insensitive to t. Overlays (first seed): for each image, the "
            "top row shows the image and each method's map of the named class (max-normalised, colour bar), the "
            "bottom row the ground truth and each method's seed mask at that method's best t of that seed (class "
            "colours in the legend).",
            "",
        ]
    return "\n".join(lines)


def reproduce_note(config: DemoConfig, summaries: Dict[str, Dict[str, Any]], out: Path) -> str:
    """The report's closing paragraph: the ``lpcam eval`` command that reproduces the LPCAM row of the
    first network and seed from the exported host files ("" when nothing was exported)."""
    first_network, first_seed = config.networks[0].name, config.seeds[0]
    if not (config.export_host_files and "LPCAM" in summaries[first_network]["table"]):
        return ""
    export = out / first_network / f"seed{first_seed}" / "export"
    return (
        f"\nReproduce the LPCAM row of {first_network}, seed {first_seed} from the exported host-format files:\n\n"
        f"    lpcam eval --cams {export / 'lpcam'} --gt {export / 'gt'} --list {export / 'train.txt'} "
        f"--format dict --allow-pickle --num-classes {config.data.num_classes + 1}\n"
    )


def write_results(path: Path, config: DemoConfig, seconds: float, summaries: Dict[str, Dict[str, Any]],
                  results: Dict[str, List[SeedResult]]) -> None:
    """``results.json``: the config, the wall time, and per network its summary and per-seed results
    (curves included)."""
    payload = {
        "config": config.to_dict(),
        "seconds": seconds,
        "networks": {
            name: {
                "summary": summaries[name],
                "per_seed": [
                    {"seed": r.seed, "seconds": r.seconds, "network": r.network_stats, "notes": r.notes,
                     "diagnostics": r.diagnostics, "automatic": r.automatic,
                     "sweeps": {m: s.to_dict() for m, s in r.sweeps.items()}}
                    for r in rs
                ],
            }
            for name, rs in results.items()
        },
    }
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
