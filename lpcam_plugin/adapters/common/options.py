"""Command-line options shared by the host families: the ``--lpcam_*`` switch type and the
``--lpcam_pss_*`` options of the RCM+MAM classifier-training drop-ins (IRN / AMN stage 1, EDAM)."""
from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Optional, Tuple

from lpcam_plugin.methods.pixelsup.config import (
    LOSS_REDUCTIONS,
    PAPER_MAM_FRACTION,
    PROJECTIONS,
    RCM_FORMS,
    PixelSupConfig,
    schedule_settings,
)

#: PixelSupConfig fields exposed as ``--lpcam_pss_<field>``: (argparse type, nargs, help).
PSS_CONFIG_OPTIONS: Dict[str, Tuple[Any, Optional[str], str]] = {
    "scales": (float, "+", "input scales through F and G, must include 1.0"),
    "ema_momentum": (float, None, "EMA momentum of the SupportNet G (default: 0.997 ** (13240 / the run's "
                                  "steps), the paper's horizon as a fraction of training)"),
    "embed_dim": (int, None, "channels of the RCM projection"),
    "threshold": (float, None, "region-mask threshold on G's fused CAMs"),
    "temperature": (float, None, "RCM softmax temperature"),
    "rcm_form": (str, None, f"RCM loss form, one of {RCM_FORMS}"),
    "projection": (str, None, f"where the RCM projection sits, one of {PROJECTIONS} (in_path: IRN/AMN only)"),
    "loss_reduction": (str, None, f"RCM's and MAM's reduction over pixels, one of {LOSS_REDUCTIONS}"),
    "rcm_weight": (float, None, "lambda_2, weight of the RCM loss"),
    "mam_weight": (float, None, "lambda_3 once MAM is on"),
    "mam_start_epoch": (int, None, "first 0-based epoch with MAM (default: round(0.3 x cam_num_epoches), "
                                   "the paper's 6 of 20)"),
    "seed": (int, None, "seed of the projection, the model's new layers and the crops/order"),
}


def str2bool(value: Any) -> bool:
    """argparse type for the ``--lpcam_*`` switches (AMN's ``str2bool`` convention)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


def add_run_options(group: Any, *, checkpoint: str, device: str, workers: str) -> None:
    """Add ``--lpcam_pss_checkpoint``, ``_device``, ``_loader_workers`` and ``_progress`` (shared by the
    host training adapters); the arguments are the host-specific help texts."""
    group.add_argument("--lpcam_pss_checkpoint", default=None, help=f"resumable training state (default: {checkpoint})")
    group.add_argument("--lpcam_pss_device", default=None, help=device)
    group.add_argument("--lpcam_pss_loader_workers", type=int, default=None, help=workers)
    group.add_argument("--lpcam_pss_progress", type=str2bool, default=None,
                       help="progress bars (default: only on a terminal)")


def add_config_options(group: Any, preset: str = "voc", *, mam_help: Optional[str] = None) -> None:
    """Add ``--lpcam_pss_preset`` and one ``--lpcam_pss_<field>`` per :class:`PixelSupConfig` knob
    to ``group`` (shared by the host training adapters); ``mam_help`` replaces the help of
    ``--lpcam_pss_mam_start_epoch``."""
    presets = sorted(PixelSupConfig.presets())
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {presets}")
    base = PixelSupConfig.preset(preset)
    group.add_argument("--lpcam_pss_preset", default=preset, choices=presets,
                       help="defaults of the options below (default: %(default)s)")
    for name, (kind, nargs, text) in PSS_CONFIG_OPTIONS.items():
        text = mam_help if name == "mam_start_epoch" and mam_help else text
        group.add_argument(f"--lpcam_pss_{name}", type=kind, nargs=nargs, default=None,
                           help=f"{text} (preset: {getattr(base, name)!r})")


def config_from_args(args: argparse.Namespace, total_steps: int, epochs: float
                     ) -> Tuple[PixelSupConfig, str, Dict[str, Any]]:
    """``(config, preset, overrides)`` from the ``--lpcam_pss_*`` attributes of ``args``: missing ones
    take the preset's values, except ``ema_momentum`` and ``mam_start_epoch``, which follow the run's
    ``total_steps`` and ``epochs`` (:func:`~lpcam_plugin.methods.pixelsup.config.schedule_settings`; the
    EMA keeps the preset's when ``total_steps`` is 0, not yet known). One-line ``ValueError`` on a bad value."""
    preset = getattr(args, "lpcam_pss_preset", None) or "voc"
    overrides = {name: getattr(args, f"lpcam_pss_{name}") for name in PSS_CONFIG_OPTIONS
                 if getattr(args, f"lpcam_pss_{name}", None) is not None}
    if "scales" in overrides:
        overrides["scales"] = tuple(overrides["scales"])
    schedule = (schedule_settings(total_steps, epochs) if total_steps > 0
                else {"mam_start_epoch": math.floor(PAPER_MAM_FRACTION * epochs + 0.5)})
    for name, value in schedule.items():
        overrides.setdefault(name, value)
    try:
        config = PixelSupConfig.preset(preset, **overrides)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--lpcam_pss_* options: {error}") from None
    return config, preset, overrides


def loader_workers(args: argparse.Namespace, host_default: int) -> int:
    """``--lpcam_pss_loader_workers``, else the host's own worker count; one-line error when negative."""
    workers = getattr(args, "lpcam_pss_loader_workers", None)
    workers = host_default if workers is None else workers
    if workers < 0:
        raise ValueError(f"--lpcam_pss_loader_workers must be >= 0, got {workers}")
    return int(workers)


__all__ = ["PAPER_MAM_FRACTION", "PSS_CONFIG_OPTIONS", "add_config_options", "add_run_options", "config_from_args",
           "loader_workers", "str2bool"]
