"""``lpcam eval``: seed-mask metrics of CAM files on disk over a threshold sweep."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, MEAN_METRICS, SweepResult, evaluate_folder
from lpcam_plugin.core.formats import read_id_list
from lpcam_plugin.core.io import atomic_write


def format_result(result: SweepResult, class_names: Optional[Sequence[str]] = None) -> str:
    """Plain-text summary: the best threshold, the Table-1 means and per-class IoU."""
    best = result.best
    lines = [
        f"images: {result.num_images}   best threshold: {best['threshold']:.2f}",
        "mIoU {:.2f}  FP {:.2f}  FN {:.2f}  precision {:.2f}  recall {:.2f}".format(
            *(100 * best[m] for m in MEAN_METRICS)
        ),
        "per-class IoU:",
    ]
    for index, iou in enumerate(best["iou"]):
        name = "background" if index == 0 else (class_names[index - 1] if class_names else f"class {index - 1}")
        lines.append(f"  {name:>16s} {100 * iou:6.2f}")
    return "\n".join(lines)


def _parse_thresholds(values: Optional[Sequence[str]]) -> Tuple[float, ...]:
    """``--thresholds`` accepts floats and ``start:stop:step`` ranges (stop exclusive); ``ValueError`` otherwise."""
    if not values:
        return DEFAULT_THRESHOLDS
    out: List[float] = []
    for value in values:
        if ":" in value:
            parts = value.split(":")
            if len(parts) != 3:
                raise ValueError(f"bad --thresholds: range {value!r} must be start:stop:step")
            start, stop, step = (_threshold_number(p) for p in parts)
            if not step > 0:
                raise ValueError(f"bad --thresholds: range {value!r} needs a positive step")
            count = int(np.floor((stop - start) / step - 1e-9)) + 1
            out.extend(round(start + i * step, 10) for i in range(max(count, 0)))
        else:
            out.append(_threshold_number(value))
    return tuple(out)


def _threshold_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad --thresholds: {text!r} is not a number") from None


def _run_eval(args: argparse.Namespace) -> int:
    thresholds = _parse_thresholds(args.thresholds)
    ids = read_id_list(args.list)
    result = evaluate_folder(
        args.cams,
        args.gt,
        ids,
        fmt=args.format,
        allow_pickle=args.allow_pickle,
        thresholds=thresholds,
        num_classes=args.num_classes,
        ignore_index=args.ignore_index,
        progress=False if args.no_progress else None,
    )
    sys.stdout.write(format_result(result) + "\n")
    if args.json:
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(result.to_dict(), indent=2))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam eval`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "eval",
        help="seed-mask mIoU/FP/FN/precision/recall of host CAM files over a threshold sweep",
        description=(
            "Evaluate CAM files written by IRN/AMN (dict with keys/cam/high_res) or EDAM/MCTformer "
            "({class: map} dicts) against VOC-style PNG ground truth, sweeping the background threshold."
        ),
    )
    parser.add_argument("--cams", required=True, type=Path,
                        help="folder with <id>.npy CAM files (<id>.npz with --format npz)")
    parser.add_argument("--gt", required=True, type=Path, help="folder with <id>.png ground-truth label maps")
    parser.add_argument("--list", required=True, type=Path, help="image-id list (plain ids or EDAM/PSA lines)")
    parser.add_argument("--format", choices=("irn", "dict", "npz", "auto"), default="auto",
                        help="CAM files: irn (IRN/AMN dicts), dict (EDAM/MCTformer), npz (lpcam infer), "
                             "auto (one of the two host .npy formats)")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="read pickled host .npy dicts (only for files you trust)"
    )
    parser.add_argument(
        "--thresholds", nargs="+", default=None,
        help="background thresholds: floats and/or start:stop:step ranges (default 0:1:0.01)",
    )
    parser.add_argument("--num-classes", type=int, default=21, help="labels including background (default 21)")
    parser.add_argument("--ignore-index", type=int, default=255, help="ground-truth value not scored")
    parser.add_argument("--json", type=Path, default=None, help="also write the curves and best metrics here")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_eval)
