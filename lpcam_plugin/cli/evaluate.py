"""``lpcam eval``: seed-mask metrics of CAM files on disk over a threshold sweep, and the threshold
chosen without masks (``--auto-threshold``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.datasets import DATASETS
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, MEAN_METRICS, SweepResult, evaluate_folder
from lpcam_plugin.core.formats import check_unique, read_id_list
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.threshold import ThresholdChoice, folder_threshold


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


def format_automatic(choice: ThresholdChoice, result: Optional[SweepResult], at_t: Optional[Dict[str, Any]]) -> str:
    """The automatic threshold's line; with masks, its metrics ``at_t`` beside the best of the sweep ``result``."""
    line = (f"automatic threshold: {choice.threshold:.3f} ({choice.rule} rule"
            + ("" if choice.reference_threshold is None else
               f"; the reference CAM's Otsu threshold {choice.reference_threshold:.3f}")
            + f"; {100 * choice.foreground_share:.1f} % of the pixels foreground)")
    if result is None or at_t is None:
        return line
    best = result.best
    return (line + f"\nmIoU at the automatic threshold {100 * at_t['miou']:.2f} vs {100 * best['miou']:.2f} at the "
            f"best threshold {best['threshold']:.2f} ({100 * (at_t['miou'] - best['miou']):+.2f})")


def _run_eval(args: argparse.Namespace) -> int:
    ids = read_id_list(args.list)
    check_unique(ids)
    dataset = DATASETS[args.dataset]
    num_classes = dataset.num_classes if args.num_classes is None else args.num_classes
    names = dataset.class_names if num_classes == dataset.num_classes else None
    if args.reference is not None and not args.auto_threshold:
        raise ValueError("--reference is read only with --auto-threshold")
    if args.gt is None and not args.auto_threshold:
        raise ValueError("--gt is needed to score the maps (or pass --auto-threshold to only choose t)")
    choice = folder_threshold(args.cams, ids, reference_dir=args.reference, fmt=args.format,
                              allow_pickle=args.allow_pickle, num_classes=num_classes - 1,
                              progress=False if args.no_progress else None) if args.auto_threshold else None
    result = at_t = None
    if args.gt is not None:
        def scored(thresholds: Sequence[float]) -> SweepResult:
            return evaluate_folder(args.cams, args.gt, ids, fmt=args.format, allow_pickle=args.allow_pickle,
                                   thresholds=thresholds, num_classes=num_classes,
                                   ignore_index=args.ignore_index, progress=False if args.no_progress else None,
                                   gt_name=dataset.gt_name)

        result = scored(_parse_thresholds(args.thresholds))
        sys.stdout.write(format_result(result, names) + "\n")
        at_t = None if choice is None else scored([choice.threshold]).best
    if choice is not None:
        sys.stdout.write(format_automatic(choice, result, at_t) + "\n")
    if args.json:
        payload: Dict[str, Any] = {} if result is None else result.to_dict()
        if choice is not None:
            payload["automatic"] = {**choice.to_dict(),
                                    **({} if at_t is None else {name: at_t[name] for name in MEAN_METRICS})}
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=2))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam eval`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "eval",
        help="seed-mask mIoU/FP/FN/precision/recall of host CAM files over a threshold sweep",
        description=(
            "Evaluate CAM files written by IRN/AMN (dict with keys/cam/high_res) or EDAM/MCTformer "
            "({class: map} dicts) against the PNG ground truth of VOC or COCO as the hosts write it, sweeping the "
            "background threshold."
        ),
    )
    parser.add_argument("--cams", required=True, type=Path,
                        help="folder with <id>.npy CAM files (<id>.npz with --format npz)")
    parser.add_argument("--gt", type=Path, default=None,
                        help="folder with <id>.png ground-truth label maps (optional with --auto-threshold)")
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
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="voc",
                        help="voc: <id>.png ground truth, 21 labels; coco: <int image id>.png for "
                             "COCO_train2014_<12 digits> ids (the LPCAM / ReCAM COCO pipeline's annToMask.py), "
                             "81 labels, COCO's class names; coco14: AMN's coco14 branch, <12 digits>.png for "
                             "12-digit ids, 81 labels (default: voc)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="labels including background (default: the dataset's, 21 or 81)")
    parser.add_argument("--ignore-index", type=int, default=255, help="ground-truth value not scored")
    parser.add_argument("--auto-threshold", action="store_true",
                        help="choose t without masks (lpcam_plugin.auto_threshold) and print it, with its mIoU beside "
                             "the best threshold's when --gt is given")
    parser.add_argument("--reference", type=Path, default=None,
                        help="with --auto-threshold: the classifier's plain CAM files of the same images (same "
                             "format); t then keeps the share of pixels Otsu keeps on them (for LPCAM and the like)")
    parser.add_argument("--json", type=Path, default=None, help="also write the curves and best metrics here")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_eval)
