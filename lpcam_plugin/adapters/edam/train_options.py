"""The command line of EDAM's RCM+MAM classifier training: ``train_EDAM_cls.py``'s arguments (same
names and defaults) plus the ``--lpcam_pss_*`` options, resolved once into :class:`TrainOptions`."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from lpcam_plugin.adapters.common.options import (
    add_config_options,
    add_run_options,
    config_from_args,
    loader_workers,
)
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig

#: ``train_EDAM_cls.py`` names its checkpoints ``global_step // 1322`` (steps of one original epoch).
HOST_EPOCH_STEPS = 1322


def build_parser() -> argparse.ArgumentParser:
    """``train_EDAM_cls.py``'s arguments (same names and defaults) plus the ``--lpcam_pss_*`` options."""
    parser = argparse.ArgumentParser(prog="python -m lpcam_plugin.adapters.edam_pixelsup_train",
                                     description="EDAM's train_EDAM_cls.py with RCM+MAM (lpcam_plugin)")
    parser.add_argument("--batch_size", default=8, type=int)
    parser.add_argument("--max_epoches", default=1, type=int)
    parser.add_argument("--network", default="network.resnet38_EDAM_cls", type=str)
    parser.add_argument("--lr", default=0.01, type=float)
    parser.add_argument("--num_workers", default=20, type=int)
    parser.add_argument("--wt_dec", default=5e-4, type=float)
    parser.add_argument("--weights", required=True, type=str)
    parser.add_argument("--train_list", default="voc12/EDAM_train.txt", type=str)
    parser.add_argument("--session_name", default="EDAM", type=str)
    parser.add_argument("--crop_size", default=368, type=int)
    parser.add_argument("--voc12_root", required=True, type=str)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse._ArgumentGroup:
    """Add the ``--lpcam_pss_*`` options (those shared with the IRN-family drop-in and EDAM's
    ``--lpcam_pss_epoch_steps``) to ``parser``."""
    group = parser.add_argument_group("RCM+MAM classifier training (lpcam_plugin)")
    add_config_options(group, preset, mam_help="first epoch (global_step // epoch_steps) with MAM (default: "
                                                "round(0.3 x the run's epochs), the paper's 6 of 20)")
    group.add_argument("--lpcam_pss_epoch_steps", type=int, default=None,
                       help=f"steps per epoch as pss counts them (default: the script's {HOST_EPOCH_STEPS})")
    add_run_options(group, checkpoint="<session_name>.pss_train.pt",
                    device="'auto' (CUDA when available), 'cpu', 'cuda:1' ...",
                    workers="DataLoader workers (default: the script's --num_workers)")
    return group


@dataclass(frozen=True)
class TrainOptions:
    """EDAM's training arguments and the ``--lpcam_pss_*`` options, resolved and checked: the one
    carrier of the training loop."""

    config: PixelSupConfig
    network: str
    weights: str
    train_list: str
    voc12_root: str
    session_name: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    crop_size: int
    workers: int
    epoch_steps: int
    checkpoint: Path
    device: str = "auto"
    progress: Optional[bool] = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, pairs: Optional[int] = None) -> "TrainOptions":
        """Read ``args``; ``pairs`` (the dataset's length) sets the default MAM start and EMA momentum.
        One-line ``ValueError`` on a bad value."""
        for name in ("network", "weights", "train_list", "voc12_root", "session_name"):
            if not getattr(args, name, None):
                raise ValueError(f"args.{name} is missing: pass train_EDAM_cls.py's arguments")
        for name in ("batch_size", "max_epoches", "crop_size"):
            value = getattr(args, name, None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"--{name} must be an int >= 1, got {value!r}")
        epoch_steps = getattr(args, "lpcam_pss_epoch_steps", None) or HOST_EPOCH_STEPS
        if epoch_steps < 1:
            raise ValueError(f"--lpcam_pss_epoch_steps must be >= 1, got {epoch_steps}")
        max_step = (pairs // args.batch_size) * args.max_epoches if pairs is not None else 0
        config, _, _ = config_from_args(args, max_step, max_step / epoch_steps)
        config = config.replace(cls_weight=0.0)  # EDAM's own BCE is the classification term
        workers = loader_workers(args, getattr(args, "num_workers", 0))
        checkpoint = getattr(args, "lpcam_pss_checkpoint", None) or args.session_name + ".pss_train.pt"
        return cls(config=config, network=args.network, weights=args.weights, train_list=args.train_list,
                   voc12_root=args.voc12_root, session_name=args.session_name, batch_size=args.batch_size,
                   epochs=args.max_epoches, learning_rate=float(getattr(args, "lr", 0.01)),
                   weight_decay=float(getattr(args, "wt_dec", 5e-4)), crop_size=args.crop_size,
                   workers=int(workers), epoch_steps=int(epoch_steps), checkpoint=Path(checkpoint),
                   device=getattr(args, "lpcam_pss_device", None) or "auto",
                   progress=getattr(args, "lpcam_pss_progress", None))

    def fingerprint(self) -> Dict[str, Any]:
        """What a training state depends on; a state written with other values is refused."""
        return {"config": self.config.to_dict(), "network": self.network, "weights": self.weights,
                "train_list_sha256": file_sha256(self.train_list), "batch_size": self.batch_size,
                "epochs": self.epochs, "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                "crop_size": self.crop_size, "epoch_steps": self.epoch_steps}


__all__ = ["HOST_EPOCH_STEPS", "TrainOptions", "add_arguments", "build_parser"]
