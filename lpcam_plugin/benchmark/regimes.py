"""Both benchmarks side by side: regime A (toy classifiers from scratch, small objects, classes drawn
independently) and regime B (the papers' regime: pretrained backbones, objects over many cells, a
rider on a mount), each a full ``lpcam demo`` run in ``<out>/regime-<a|b>/``.

:func:`run_regimes` runs them and writes ``<out>/report.md``: per network, every method in both
regimes (mIoU, precision, recall, per-part recall, the pair's cross-activation; mean ± std over
seeds) and each method's claim read off both (:data:`CLAIMS`); ``<out>/comparison.json`` holds the
same numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lpcam_plugin.benchmark.config import DemoConfig, pixelsup_pairs
from lpcam_plugin.benchmark.demo import run_demo
from lpcam_plugin.benchmark.report import format_cell
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.methods import readouts as registry

#: What each regime is, for the report's header.
REGIME_NOTES = {
    "A": "toy classifiers trained from scratch with image labels; objects 2-5 cells wide; classes independent",
    "B": "backbones pretrained on a 64-class part corpus, fine-tuned; objects >= 10 cells (stride 8); "
         "class 0 rides class 2",
}
#: Columns of the side-by-side table: (header, diagnostics or table key, is a diagnostic).
COLUMNS: Tuple[Tuple[str, str, bool], ...] = (
    ("mIoU", "miou", False), ("precision", "mprecision", False), ("recall", "mrecall", False),
    ("recall head", "recall_head", True), ("recall body", "recall_body", True), ("recall legs", "recall_legs", True),
    ("rider on mount", "cross_rider_on_mount", True), ("mount on rider", "cross_mount_on_rider", True),
    ("background prototypes", "background_prototypes", True),
)
#: Each method's claim as a difference of means, read off both regimes: (claim, method, baseline, key,
#: sign: +1 when the claim is that the difference is positive).
CLAIMS: List[Tuple[str, str, str, str, int]] = [
    ("LPCAM: body recall up", "LPCAM", "CAM", "recall_body", 1),
    ("LPCAM: legs recall up", "LPCAM", "CAM", "recall_legs", 1),
    ("LPCAM: mIoU up", "LPCAM", "CAM", "miou", 1),
    ("ReCAM: rider-on-mount cross-activation down", "ReCAM", "CAM", "cross_rider_on_mount", -1),
    ("ReCAM: mIoU up", "ReCAM", "CAM", "miou", 1),
] + [(f"{registry.label('fcam', s)}: mIoU above {registry.label(s)}'s", registry.label("fcam", s),
      registry.label(s), "miou", 1) for s in registry.fcam_sources()]


def regime_folder(out: Path, regime: str) -> Path:
    """The folder of one regime's run: ``<out>/regime-a`` or ``<out>/regime-b``."""
    return out / f"regime-{regime.lower()}"


def _cell(row: Dict[str, Any], key: str, diagnostic: bool) -> Optional[Dict[str, float]]:
    cell = row["diagnostics"].get(key) if diagnostic else row.get(key)
    return cell if cell is not None and cell["mean"] is not None else None  # None: nothing to count on any seed


def _fmt(cell: Optional[Dict[str, float]], spread: bool) -> str:
    return "—" if cell is None else format_cell(cell, spread=spread)


def claim_margins(summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Per claim of :data:`CLAIMS`, ``sign x (mean(method) - mean(baseline))`` in points (None when a
    method did not run or the value is undefined): positive means the claim holds on these means."""
    table = summary["table"]
    out: Dict[str, Optional[float]] = {}
    for text, method, baseline, key, sign in CLAIMS:
        diagnostic = key not in ("miou", "mprecision", "mrecall")
        cells = [_cell(table[m], key, diagnostic) if m in table else None for m in (method, baseline)]
        out[text] = None if None in cells else sign * (cells[0]["mean"] - cells[1]["mean"])
    return out


def pixelsup_margin(summaries: Dict[str, Dict[str, Any]], plain: Optional[str], trained: str) -> Optional[float]:
    """CAM's mIoU on the RCM + MAM classifier ``trained`` minus on ``plain`` (None unless both ran)."""
    if plain is None or plain not in summaries or trained not in summaries:
        return None
    return summaries[trained]["table"]["CAM"]["miou"]["mean"] - summaries[plain]["table"]["CAM"]["miou"]["mean"]


def render_comparison(configs: Dict[str, DemoConfig], summaries: Dict[str, Dict[str, Dict[str, Any]]],
                      command: str) -> str:
    """``report.md`` of :func:`run_regimes`: per network the methods of every regime, then the claims."""
    regimes = list(configs)
    lines = [f"# lpcam demo: {' and '.join(f'regime {r}' for r in regimes)}", "", f"Command: `{command}`", ""]
    for regime in regimes:
        config = configs[regime]
        lines.append(f"- **Regime {regime}** ({REGIME_NOTES[regime]}): {config.data.num_images} images of "
                     f"{config.data.image_size} px per seed, seeds {', '.join(map(str, config.seeds))}; full report "
                     f"[{regime_folder(Path('.'), regime)}/report.md]({regime_folder(Path('.'), regime)}/report.md)")
    lines += ["", "Each method at its own best background threshold per seed; mean ± sample std over seeds, %. "
              "Cross-activation: over the images holding both classes of the pair (regime B: the rider, class 0, "
              "and its mount, class 2; regime A: the same two classes, which meet only by chance), the share of "
              "one class's ground-truth pixels where the other's max-normalised map exceeds the method's threshold.",
              ""]
    networks = list(dict.fromkeys(n.name for r in regimes for n in configs[r].networks))
    plain_of = {r: {trained.name: plain.name for plain, trained in pixelsup_pairs(configs[r])} for r in regimes}
    for network in networks:
        present = [r for r in regimes if network in summaries[r]]
        lines += [f"## {network}", "", "| method | regime | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        methods = list(dict.fromkeys(m for r in present for m in summaries[r][network]["table"]))
        for method in methods:
            for regime in present:
                table = summaries[regime][network]["table"]
                if method in table:
                    spread = len(summaries[regime][network]["seeds"]) > 1
                    cells = [_fmt(_cell(table[method], key, diag), spread) for _, key, diag in COLUMNS]
                    lines.append(f"| {method} | {regime} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Each method's claim, by regime", "",
              "Difference of the means in points, signed so that a positive number means the claim holds.", "",
              "| claim | network | " + " | ".join(f"regime {r}" for r in regimes) + " |",
              "|---|---|" + "---|" * len(regimes)]
    for network in networks:
        margins = {r: claim_margins(summaries[r][network]) if network in summaries[r] else {} for r in regimes}
        for text, *_ in CLAIMS:
            values = [margins[r].get(text) for r in regimes]
            if any(v is not None for v in values):
                lines.append(f"| {text} | {network} | "
                             + " | ".join("—" if v is None else f"{v:+.1f}" for v in values) + " |")
        shares = [_cell(summaries[r][network]["table"]["LPCAM"], "background_prototypes", True)
                  if network in summaries[r] and "LPCAM" in summaries[r][network]["table"] else None for r in regimes]
        if any(cell is not None for cell in shares):
            lines.append("| LPCAM: class prototypes that are mostly background (%, the claim: fewer in B) | "
                         f"{network} | "
                         + " | ".join("—" if v is None else f"{v['mean']:.1f}" for v in shares) + " |")
        if any(network in plain_of[r] for r in regimes):
            values = [pixelsup_margin(summaries[r], plain_of[r].get(network), network) for r in regimes]
            lines.append(f"| RCM + MAM: CAM mIoU above the plain classifier's | {network} | "
                         + " | ".join("—" if v is None else f"{v:+.1f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def run_regimes(configs: Dict[str, DemoConfig], out: Path, *, progress: Optional[bool] = None, figures: bool = True,
                command: str = "lpcam demo") -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Run each regime's demo into :func:`regime_folder` and write the side-by-side ``report.md`` and
    ``comparison.json`` into ``out``. Returns ``{regime: {network: summary}}``."""
    summaries = {regime: run_demo(config, regime_folder(out, regime), progress=progress, figures=figures,
                                  command=command)
                 for regime, config in configs.items()}
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text(render_comparison(configs, summaries, command))
    payload = {regime: {"config": configs[regime].to_dict(),
                        "networks": {name: {"table": s["table"], "claims": claim_margins(s)}
                                     for name, s in summaries[regime].items()}}
               for regime in configs}
    with atomic_write(out / "comparison.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    return summaries
