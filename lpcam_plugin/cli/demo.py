"""``lpcam demo``: the synthetic WSSS benchmark of the CAM family (:func:`lpcam_plugin.benchmark.demo.run_demo`).

The options become a :class:`~lpcam_plugin.benchmark.config.DemoConfig`; the report is printed
and written to ``--out`` with ``results.json``, the figures and the cached checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Tuple

from lpcam_plugin.benchmark.config import NETWORK_PRESETS, DemoConfig
from lpcam_plugin.benchmark.readouts import READOUTS, select_readouts
from lpcam_plugin.benchmark.regimes import regime_folder, run_regimes
from lpcam_plugin.cli.arguments import output_folder, positive_int
from lpcam_plugin.cli.pretrain import BACKBONES, pretrain_backbones
from lpcam_plugin.methods.fcam.crf import CRF_KERNELS
from lpcam_plugin.methods.pixelsup.config import LOSS_REDUCTIONS, PROJECTIONS, RCM_FORMS
from lpcam_plugin.methods.recam.config import WEIGHT_KINDS

logger = logging.getLogger(__name__)


#: Options that set the :class:`DemoConfig` field of the same name when given.
CONFIG_OPTIONS = ("recam_selection", "rcm_form", "pss_reduction", "pss_projection", "fcam_crf_kernel",
                  "fcam_epochs", "validation_images")


def _command(args: argparse.Namespace) -> str:
    """The ``lpcam demo`` command line equivalent to ``args`` (for the report)."""
    parts = ["lpcam demo", f"--out {args.out}", f"--seed {args.seed}"]
    parts += [f"--seeds {args.seeds}"] if args.seeds is not None else []
    parts += [f"--regime {args.regime}"] if args.regime is not None else []
    parts += [flag for flag, on in (("--full", args.full), ("--quick", args.quick), ("--retrain", args.retrain),
                                    ("--pretrain", args.pretrain)) if on]
    parts += [f"--{name} {' '.join(values)}" for name, values in
              (("networks", args.networks), ("methods", args.methods)) if values]
    parts += [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("num_images", "epochs", *CONFIG_OPTIONS)
              if getattr(args, name) is not None]
    return " ".join(parts)


def _regimes(args: argparse.Namespace) -> Tuple[str, ...]:
    """The regimes to run: ``--regime``, else both with ``--full`` and B (the papers' regime) without."""
    chosen = args.regime if args.regime is not None else ("both" if args.full else "B")
    return ("A", "B") if chosen == "both" else (chosen,)


def _config(args: argparse.Namespace, regime: str, seeds: Tuple[int, ...]) -> DemoConfig:
    """The :class:`DemoConfig` of one regime with every option of ``args`` applied."""
    config = DemoConfig.for_regime(regime, seeds=seeds)
    if args.full:
        config = dataclasses.replace(config, networks=DemoConfig.full(seeds).networks)
    if regime == "B" and args.pretrain:
        config = dataclasses.replace(config, backbones=str(args.out / "pretrained"))
    if args.networks:
        config = dataclasses.replace(config, networks=tuple(NETWORK_PRESETS[name] for name in args.networks))
    if args.methods:
        select_readouts(args.methods)  # ValueError naming the unknown ones: a one-line error
        config = dataclasses.replace(config, methods=tuple(args.methods))
    if args.quick:
        config = config.quick()
    if args.num_images is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_images=args.num_images))
    if args.epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    return dataclasses.replace(config, **{name: getattr(args, name) for name in CONFIG_OPTIONS
                                          if getattr(args, name) is not None})


def _run_cli(args: argparse.Namespace) -> int:
    seeds_count = args.seeds if args.seeds is not None else (3 if args.full else 1)
    seeds = tuple(args.seed + k for k in range(seeds_count))
    configs = {regime: _config(args, regime, seeds) for regime in _regimes(args)}
    if args.retrain:
        for regime, config in configs.items():
            for network in config.networks:
                for seed in seeds:
                    folder = regime_folder(args.out, regime) / network.name / f"seed{seed}"
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
    if "B" in configs and args.pretrain:
        kinds = {network.kind for network in configs["B"].networks}
        pretrain_backbones([name for name, network in BACKBONES.items() if network.kind in kinds],
                           args.out / "pretrained", not args.no_progress)
    run_regimes(configs, args.out, progress=False if args.no_progress else None, figures=figures,
                command=_command(args))
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
        "Default: regime B (the papers' regime), the toyresnet network, one seed; --full: both regimes, every "
        "network, three seeds.",
    )
    parser.add_argument("--out", type=output_folder, default=Path("lpcam-demo"),
                        help="report folder (default: lpcam-demo)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="number of seeds: seed, seed+1, ... (default 1; 3 with --full)")
    parser.add_argument("--full", action="store_true",
                        help=f"both regimes, every network ({', '.join(NETWORK_PRESETS)}) and 3 seeds")
    parser.add_argument("--regime", choices=("A", "B", "both"), default=None,
                        help="B: the papers' regime (pretrained backbones, large objects, a rider on a mount); "
                             "A: toy classifiers from scratch, small objects; both (default: B; both with --full)")
    parser.add_argument("--pretrain", action="store_true",
                        help="pretrain regime B's backbones into OUT/pretrained first and use them, instead of the "
                             "shipped ones (about 20 min on 2 cores; `lpcam pretrain` alone writes them)")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORK_PRESETS), default=None,
                        help="networks to run (default: toyresnet; every one with --full)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help=f"read-outs to run, in table order (default: all of {readouts}); the registry's "
                             "spellings (lpcam, f-cam(recam), ...) work too")
    parser.add_argument("--quick", action="store_true", help="small sizes (240 images, 8 epochs) for a fast smoke run")
    parser.add_argument("--num-images", type=positive_int, default=None, help="override the number of images per seed")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the classifier's training epochs")
    parser.add_argument("--retrain", action="store_true", help="delete the cached checkpoints (*.pt: classifiers and "
                        "ReCAM; fcam_*.npz: F-CAM decoders) of the selected networks and seeds first")
    parser.add_argument("--recam-selection", choices=WEIGHT_KINDS, default=None,
                        help="ReCAM+LPCAM selection weight (default: the ReCAM preset's, bce)")
    parser.add_argument("--rcm-form", choices=RCM_FORMS, default=None,
                        help="RCM loss of the +pss networks' training (default: the preset's)")
    parser.add_argument("--pss-reduction", choices=LOSS_REDUCTIONS, default=None,
                        help="RCM's and MAM's reduction over the feature map's pixels in the +pss networks' training: "
                             "mean, or sum as Eq. 5 and 8 write it (default: the preset's)")
    parser.add_argument("--fcam-crf-kernel", choices=CRF_KERNELS, default=None,
                        help="F-CAM's CRF kernel: window (truncated, local) or dense (every pair on a grid of at most "
                             "1024 pixels) (default: the preset's)")
    parser.add_argument("--fcam-epochs", type=positive_int, default=None, metavar="N",
                        help="F-CAM's training epochs; its seed budget rule scales the seeds per step to them "
                             "(default: 2, the CPU's budget)")
    parser.add_argument("--pss-projection", choices=PROJECTIONS, default=None,
                        help="where the RCM projection sits in the +pss networks: side (beside the head) or in_path "
                             "(the paper: the CAMs read the projected features) (default: the preset's)")
    parser.add_argument("--validation-images", type=positive_int, default=None, metavar="N",
                        help="a held-out split of N images with masks (another seed) on which F-CAM chooses its "
                             "seed settings, as its paper does (default: none, F-CAM's data rules)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs (no matplotlib needed)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_cli)
