"""``lpcam fit`` and ``lpcam infer``: LPCAM prototypes and maps in one process or on every torchrun rank.

Both run in one process, or on every rank of ``torchrun --nproc_per_node N -m lpcam_plugin ...``
(the process group is initialised from torchrun's environment and destroyed at the end). The
jobs themselves are :func:`lpcam_plugin.distributed.jobs.run_fit_job` and
:func:`~lpcam_plugin.distributed.jobs.run_infer_job`; this module holds the options.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, List, Optional, Tuple

import torch

from lpcam_plugin.distributed.data import ArrayImageDataset
from lpcam_plugin.distributed.jobs import (
    DatasetFactory,
    ImageFolder,
    ModelSpec,
    parse_overrides,
    parse_rows,
    run_fit_job,
    run_infer_job,
)


def _add_common(parser: argparse.ArgumentParser, *, weight_required: bool) -> None:
    model = parser.add_argument_group("model (host-agnostic)")
    model.add_argument("--model", required=True, metavar="PKG.MODULE:FACTORY",
                       help="callable returning the torch.nn.Module (e.g. lpcam_plugin.benchmark.toynet:ToyResNet)")
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
                      help="use lpcam_plugin.benchmark.synthetic.generate(SyntheticConfig(**JSON)) instead of a folder")
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


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    kwargs = json.loads(args.model_kwargs)
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    return ModelSpec(args.model, args.feature_layer, kwargs=kwargs, checkpoint=args.checkpoint,
                     state_key=args.state_key, strict=not args.non_strict, num_prefix_tokens=args.num_prefix_tokens,
                     patch_size=args.patch_size, classifier_weight=args.classifier_weight,
                     classifier_bias=args.classifier_bias, conv_head=args.conv_head,
                     class_rows=parse_rows(args.class_rows))


def _dataset_factory(args: argparse.Namespace) -> DatasetFactory:
    """The images of ``--synthetic`` or of ``--images --list --labels``, built once the class count is known."""

    def build(num_classes: int) -> Tuple[torch.utils.data.Dataset, Optional[List[str]]]:
        norm = {k: v for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
        if args.synthetic is not None:
            from lpcam_plugin.benchmark.synthetic import PIXEL_MEAN, PIXEL_STD, SyntheticConfig, generate

            data = generate(SyntheticConfig(**json.loads(args.synthetic)), progress=False)
            if data.labels.shape[1] != num_classes:
                raise ValueError(f"the synthetic data has {data.labels.shape[1]} classes, the model {num_classes}")
            norm = {"mean": (PIXEL_MEAN,) * 3, "std": (PIXEL_STD,) * 3, **norm}
            return ArrayImageDataset(data.ids, data.images, data.labels, **norm), list(data.class_names)
        missing = [name for name in ("images", "list", "labels") if getattr(args, name) is None]
        if missing:
            raise ValueError(f"give --synthetic, or all of --images --list --labels (missing: "
                             f"{', '.join('--' + m for m in missing)})")
        folder = ImageFolder(args.images, args.list, args.labels, suffix=args.suffix, allow_pickle=args.allow_pickle,
                             resize=tuple(args.resize) if args.resize else None, mean=args.mean, std=args.std)
        return folder(num_classes)

    return build


def run_fit(args: argparse.Namespace) -> int:
    """Handler of ``lpcam fit``."""
    run_fit_job(_model_spec(args), _dataset_factory(args), args.bank, preset=args.preset,
                overrides=parse_overrides(args.set), batch_size=args.batch_size, workers=args.workers,
                device=args.device, backend=args.backend, timeout_s=args.timeout,
                progress=False if args.no_progress else None)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    """Handler of ``lpcam infer``."""
    run_infer_job(_model_spec(args), _dataset_factory(args), args.bank, args.out, scales=args.scales, flip=args.flip,
                  fallback=args.fallback, overwrite=args.overwrite, workers=args.workers, device=args.device,
                  backend=args.backend, timeout_s=args.timeout, progress=False if args.no_progress else None)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``fit`` and ``infer`` subcommands to the ``lpcam`` command line."""
    add_fit_parser(subparsers)
    add_infer_parser(subparsers)
