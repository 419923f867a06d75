"""The docs' benchmark tables, printed from a ``lpcam demo --full`` run's ``results.json`` (run by hand).

    lpcam demo --full --out lpcam-demo
    python benchmarks/doc_tables.py lpcam-demo/results.json            # every table
    python benchmarks/doc_tables.py lpcam-demo/results.json readme     # one of: readme, networks,
                                                                       # fcam, pixelsup, targets, automatic

The tables are those of README.md ("Where the numbers are"), docs/benchmark.md (per network),
docs/methods/fcam.md (F-CAM against bilinear upsampling), docs/methods/pixelsup.md (every
read-out on the classifiers trained with and without RCM + MAM) and docs/evaluation.md (the
threshold chosen without masks). Every number is read from the file; nothing is computed here
but differences of means.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

Results = Dict[str, Any]


def _table(results: Results, network: str) -> Dict[str, Any]:
    return results["networks"][network]["summary"]["table"]


def _cell(entry: Dict[str, float], digits: int = 1) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def readme(results: Results) -> List[str]:
    """Mean mIoU per read-out (rows) and network (columns); the best of each column in bold."""
    networks = list(results["networks"])
    methods = list(_table(results, networks[0]))
    best = {n: max(_table(results, n)[m]["miou"]["mean"] for m in methods if m in _table(results, n))
            for n in networks}
    lines = ["| read-out | " + " | ".join(networks) + " |", "|---|" + "---|" * len(networks)]
    for method in methods:
        cells = []
        for network in networks:
            value = _table(results, network)[method]["miou"]["mean"]
            cells.append(f"**{value:.1f}**" if value == best[network] else f"{value:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def networks(results: Results) -> List[str]:
    """Per network: FP, FN, mIoU, precision, recall, best t and the curve drop (mean ± std)."""
    lines: List[str] = []
    for network, data in results["networks"].items():
        stats = data["summary"]["network"]
        lines += ["", f"**{network}** (D = {stats['dim']['mean']:.0f}, stride {stats['stride']['mean']:.0f}; "
                      f"exact-match train accuracy {_cell(stats['train_accuracy'])} %)", "",
                  "| read-out | FP | FN | mIoU | precision | recall | best t | mIoU drop within ±0.1 of best t |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, row in data["summary"]["table"].items():
            cells = [_cell(row[key]) for key in ("mfp", "mfn", "miou", "mprecision", "mrecall")]
            lines.append(f"| {method} | " + " | ".join(cells)
                         + f" | {_cell(row['threshold'], 2)} | {_cell(row['curve_drop'])} |")
    return lines


def targets(results: Results) -> List[str]:
    """Every target's margin per network."""
    networks = list(results["networks"])
    texts = list(results["networks"][networks[0]]["summary"]["targets"])
    lines = ["| target | " + " | ".join(networks) + " |", "|---|" + "---|" * len(networks)]
    for text in texts:
        cells = []
        for network in networks:
            row = results["networks"][network]["summary"]["targets"].get(text)
            cells.append("" if row is None else f"{row['margin']:+.1f} ({'met' if row['met'] else 'not met'})")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return lines


def fcam(results: Results) -> List[str]:
    """Each F-CAM row beside its source upsampled bilinearly: mIoU, precision, recall, legs recall,
    background activation."""
    lines = ["| network | source | mIoU bilinear | mIoU F-CAM | Δ | precision bilinear → F-CAM "
             "| recall bilinear → F-CAM | legs recall bilinear → F-CAM | act. background bilinear → F-CAM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for network in results["networks"]:
        table = _table(results, network)
        for method, row in table.items():
            if not method.startswith("F-CAM("):
                continue
            source = table[method[len("F-CAM("):-1]]
            delta = row["miou"]["mean"] - source["miou"]["mean"]
            pairs = [(source["mprecision"], row["mprecision"]), (source["mrecall"], row["mrecall"]),
                     (source["diagnostics"]["recall_legs"], row["diagnostics"]["recall_legs"]),
                     (source["diagnostics"]["act_background"], row["diagnostics"]["act_background"])]
            lines.append(f"| {network} | {method[len('F-CAM('):-1]} | {_cell(source['miou'])} | {_cell(row['miou'])} "
                         f"| {delta:+.1f} | " + " | ".join(f"{a['mean']:.1f} → {b['mean']:.1f}" for a, b in pairs)
                         + " |")
    return lines


def pixelsup(results: Results) -> List[str]:
    """Every read-out on the plain classifier beside the same read-out on the RCM + MAM one."""
    lines = ["| network | read-out | mIoU plain | mIoU +pss | Δ | recall plain → +pss | precision plain → +pss |",
             "|---|---|---|---|---|---|---|"]
    for network in results["networks"]:
        if network.endswith("+pss") or f"{network}+pss" not in results["networks"]:
            continue
        plain, pss = _table(results, network), _table(results, f"{network}+pss")
        for method in plain:
            if method in pss:
                a, b = plain[method], pss[method]
                lines.append(f"| {network} | {method} | {_cell(a['miou'])} | {_cell(b['miou'])} "
                             f"| {b['miou']['mean'] - a['miou']['mean']:+.1f} "
                             f"| {a['mrecall']['mean']:.1f} → {b['mrecall']['mean']:.1f} "
                             f"| {a['mprecision']['mean']:.1f} → {b['mprecision']['mean']:.1f} |")
    return lines


def automatic(results: Results) -> List[str]:
    """The threshold chosen without masks: its gap to the best t per read-out and network (mean ± std, worst)."""
    networks = list(results["networks"])
    methods = list(_table(results, networks[0]))
    lines = ["| read-out | " + " | ".join(f"{n} gap | worst" for n in networks) + " |",
             "|---|" + "---|---|" * len(networks)]
    for method in methods:
        cells = []
        for network in networks:
            auto = _table(results, network).get(method, {}).get("automatic")
            cells += ["", ""] if auto is None else [_cell(auto["gap"]), f"{auto['worst_gap']:+.1f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


TABLES: Dict[str, Callable[[Results], List[str]]] = {"readme": readme, "networks": networks, "targets": targets,
                                                     "fcam": fcam, "pixelsup": pixelsup, "automatic": automatic}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a lpcam demo run's results.json")
    parser.add_argument("tables", nargs="*", default=[], help=f"tables to print, of {list(TABLES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.tables if name not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {list(TABLES)}")
    results = json.loads(args.results.read_text())
    for name in args.tables or list(TABLES):
        sys.stdout.write(f"\n### {name}\n\n" + "\n".join(TABLES[name](results)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
