"""The ``fit`` and ``infer`` subcommands (registered by :func:`register_cli`).

Both run in one process, or on every rank of ``torchrun --nproc_per_node N -m lpcam_plugin ...``
(the process group is initialised from torchrun's environment and destroyed at the end).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from lpcam_plugin.distributed.api import fit_distributed, infer_distributed
from lpcam_plugin.distributed.data import (ArrayImageDataset, HookedFeatures, ImageListDataset, build_model, classifier_weight,
                                           read_labels)
from lpcam_plugin.core.formats import read_id_list
from lpcam_plugin.core.torchrun import init_from_env
from lpcam_plugin.distributed.env import local_device
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM

logger = logging.getLogger(__name__)


def _add_common(parser: argparse.ArgumentParser, *, weight_required: bool) -> None:
    model = parser.add_argument_group("model (host-agnostic)")
    model.add_argument("--model", required=True, metavar="PKG.MODULE:FACTORY",
                       help="callable returning the torch.nn.Module (e.g. lpcam_plugin.toynet:ToyResNet)")
    model.add_argument("--model-kwargs", default="{}", metavar="JSON", help="keyword arguments of the factory")
    model.add_argument("--checkpoint", type=Path, help="state dict loaded with torch.load(weights_only=True)")
    model.add_argument("--state-key", help="key of the state dict inside the checkpoint (e.g. state_dict)")
    model.add_argument("--non-strict", action="store_true", help="load_state_dict(strict=False)")
    model.add_argument("--feature-layer", required=True, metavar="DOTTED.NAME",
                       help="module whose output is the feature map (B, D, h, w), e.g. stage4")
    model.add_argument("--num-prefix-tokens", type=int, help="ViT outputs: drop this many prefix tokens")
    model.add_argument("--patch-size", type=int, help="ViT outputs: grid = (H // patch, W // patch)")
    model.add_argument("--classifier-weight", required=weight_required, metavar="DOTTED.NAME",
                       help="classifier weight parameter, (C, D) or a conv kernel (C, D, kh, kw)")
    model.add_argument("--classifier-bias", metavar="DOTTED.NAME", help="classifier bias parameter")
    model.add_argument("--conv-head", choices=("sum", "center"), default="sum",
                       help="how a kh x kw conv head is reduced to (C, D) (default sum)")
    model.add_argument("--class-rows", metavar="START:STOP", help="keep these rows of the head (AMN: 1:21)")
    data = parser.add_argument_group("images (a VOC-style folder, or the synthetic benchmark)")
    data.add_argument("--images", type=Path, help="folder of <id><suffix> images")
    data.add_argument("--list", type=Path, help="image ids, one per line (first field)")
    data.add_argument("--labels", type=Path,
                      help="(N, C) .npy aligned with --list, or JSON {id: [classes]}; IRN cls_labels.npy "
                           "needs --allow-pickle")
    data.add_argument("--allow-pickle", action="store_true", help="allow a pickled label dict (trusted files only)")
    data.add_argument("--suffix", default=".jpg", help="image file suffix (default .jpg)")
    data.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="resize every image")
    data.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default ImageNet)")
    data.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default ImageNet)")
    data.add_argument("--synthetic", metavar="JSON",
                      help="use lpcam_plugin.synthetic.generate(SyntheticConfig(**JSON)) instead of a folder")
    run = parser.add_argument_group("execution")
    run.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available), cpu, cuda:0, ...")
    run.add_argument("--backend", help="process-group backend (default cpu:gloo,cuda:nccl with CUDA, else gloo)")
    run.add_argument("--timeout", type=float, help="collective timeout in seconds")
    run.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_fit_parser(subparsers: Any) -> None:
    """``lpcam fit``: collect features, merge pools over ranks, fit and save the prototype bank."""
    parser = subparsers.add_parser(
        "fit", help="fit LPCAM prototypes (one process or every torchrun rank)",
        description="Collect local features (each rank its shard of the list), merge the bounded pools exactly, "
                    "run K-means once per class and save the prototype bank (rank 0).")
    _add_common(parser, weight_required=True)
    parser.add_argument("--bank", required=True, type=Path, help="output prototype bank (.npz)")
    parser.add_argument("--preset", choices=("voc", "coco"), default="voc", help="LPCAM defaults (default voc)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an LPCAMConfig field (JSON value), e.g. --set num_clusters=8; repeatable")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.set_defaults(func=run_fit)


def add_infer_parser(subparsers: Any) -> None:
    """``lpcam infer``: write one map file per image, sharded over ranks, resumable."""
    parser = subparsers.add_parser(
        "infer", help="write LPCAM maps <out>/<id>.npz (one process or every torchrun rank)",
        description="Each rank writes the maps of its share of the images that have no valid map yet; files are "
                    "written atomically, so a rerun after a crash resumes where it stopped. A folder of maps made "
                    "with another bank, scales, flip or version is refused unless --overwrite.")
    _add_common(parser, weight_required=False)
    parser.add_argument("--bank", required=True, type=Path, help="prototype bank written by `lpcam fit`")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="image scales (default 1.0)")
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped features per scale")
    parser.add_argument("--fallback", choices=("error", "cam"), default="error",
                        help="classes without prototypes: fail, or use the plain CAM (needs --classifier-weight)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite every map, also in a folder of maps made with another bank, scales or flip")
    parser.set_defaults(func=run_infer)


@contextlib.contextmanager
def _process_group(args: argparse.Namespace) -> Iterator[None]:
    """Initialise the process group from torchrun's environment when launched by it; destroy it at the end."""
    created = init_from_env(args.backend, timeout_s=args.timeout)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def _parse_overrides(items: List[str]) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _rows(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    if spec is None:
        return None
    start, sep, stop = spec.partition(":")
    if not sep:
        raise ValueError(f"--class-rows expects START:STOP, got {spec!r}")
    return int(start), int(stop)


def _model(args: argparse.Namespace, device: torch.device) -> Tuple[torch.nn.Module, HookedFeatures]:
    kwargs = json.loads(args.model_kwargs)
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    model = build_model(args.model, args.checkpoint, strict=not args.non_strict, state_key=args.state_key,
                        kwargs=kwargs).to(device)
    features = HookedFeatures(model, args.feature_layer, num_prefix_tokens=args.num_prefix_tokens,
                              patch_size=args.patch_size)
    return model, features


def _weight(args: argparse.Namespace, model: torch.nn.Module) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    if args.classifier_weight is None:
        return None, None
    return classifier_weight(model, args.classifier_weight, args.classifier_bias, conv_mode=args.conv_head,
                             rows=_rows(args.class_rows))


def _dataset(args: argparse.Namespace, num_classes: int) -> Tuple[torch.utils.data.Dataset, Optional[List[str]]]:
    norm = {k: v for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    if args.synthetic is not None:
        from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate

        data = generate(SyntheticConfig(**json.loads(args.synthetic)), progress=False)
        if data.labels.shape[1] != num_classes:
            raise ValueError(f"the synthetic data has {data.labels.shape[1]} classes, the model {num_classes}")
        norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), **norm}
        return ArrayImageDataset(data.ids, data.images, data.labels, **norm), list(data.class_names)
    missing = [name for name in ("images", "list", "labels") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"give --synthetic, or all of --images --list --labels (missing: "
                         f"{', '.join('--' + m for m in missing)})")
    ids = read_id_list(args.list)
    labels = read_labels(args.labels, ids, num_classes, allow_pickle=args.allow_pickle)
    resize = tuple(args.resize) if args.resize else None
    return ImageListDataset(args.images, ids, labels, suffix=args.suffix, resize=resize, **norm), None


def run_fit(args: argparse.Namespace) -> int:
    """Handler of ``lpcam fit``."""

    overrides = _parse_overrides(args.set)
    with _process_group(args):
        device = local_device(args.device)
        model, features = _model(args, device)
        weight, bias = _weight(args, model)
        assert weight is not None
        dataset, class_names = _dataset(args, weight.shape[0])
        progress = False if args.no_progress else None
        estimator = LPCAM(int(weight.shape[0]), preset=args.preset, class_names=class_names, progress=progress,
                          **overrides)
        metadata = {"model": args.model, "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
                    "feature_layer": args.feature_layer, "classifier_weight": args.classifier_weight,
                    "num_images": len(dataset)}
        fit_distributed(estimator, features, dataset, weight, bias, bank_path=args.bank, batch_size=args.batch_size,
                        num_workers=args.workers, device=device, metadata=metadata, progress=progress)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    """Handler of ``lpcam infer``."""

    with _process_group(args):
        device = local_device(args.device)
        model, features = _model(args, device)
        weight, _ = _weight(args, model)
        bank = PrototypeBank.load(args.bank)
        if weight is not None and weight.shape[0] != bank.num_classes:
            raise ValueError(f"the classifier has {weight.shape[0]} classes, the bank {bank.num_classes}")
        dataset, _ = _dataset(args, bank.num_classes)
        estimator = LPCAM.from_bank(bank)
        result = infer_distributed(estimator, features, dataset, args.out, scales=args.scales, flip=args.flip,
                                   fallback=args.fallback, weight=weight, device=device, num_workers=args.workers,
                                   overwrite=args.overwrite, progress=False if args.no_progress else None,
                                   manifest={"bank": str(args.bank), "model": args.model})
        logger.info("wrote %d map(s); %d of %d already existed", len(result.written), result.skipped, result.total)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``fit`` and ``infer`` subcommands to the ``lpcam`` parser."""
    add_fit_parser(subparsers)
    add_infer_parser(subparsers)
