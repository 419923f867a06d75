"""RCM + MAM (:class:`~lpcam_plugin.methods.pixelsup.module.PixelSelfSupervision`) in the
classifier training of the IRN-family hosts: IRN (``jiwoon-ahn/irn``) and AMN's stage 1
(``gaviotas/AMN``), whose ``step/train_cam.py`` trains ``args.cam_network``'s ``Net``.

:func:`run` is a drop-in for ``step.train_cam.run(args)``; :func:`patch` makes the unchanged
``run_sample.py`` call it (it replaces the module attribute ``step.train_cam.run``, which
``run_sample`` looks up at call time; training runs in the calling process, so unlike the CAM
step no CUDA worker spawn is involved and it works on a CPU machine too). Options:
:func:`add_arguments` (``--lpcam_pss_*``). What stays the host's, what changes, resume and DDP:
:mod:`lpcam_plugin.adapters.resnet.train_cam`, where the training lives.
"""
from __future__ import annotations

import argparse

from lpcam_plugin.adapters.common.options import (
    PAPER_MAM_FRACTION,
    add_config_options,
    add_run_options,
    config_from_args,
    loader_workers,
)
from lpcam_plugin.adapters.common.patching import patch_attribute, unpatch_attribute
from lpcam_plugin.adapters.resnet.train_cam import (
    HOST_CROP_SIZE,
    HOST_DEFAULTS,
    METHOD_NAME,
    STATE_FORMAT,
    TrainOptions,
    add_arguments,
    build_optimizer,
    train,
)

TRAIN_CAM_MODULE = "step.train_cam"


def run(args: argparse.Namespace) -> None:
    """Drop-in for ``step.train_cam.run(args)`` (IRN, AMN stage 1): see :func:`train`."""
    train(args)


def patch() -> None:
    """Make the unchanged ``step.train_cam.run(args)`` call :func:`run` (idempotent); call it once
    before ``run_sample.py`` reaches the step. Options missing from ``args`` take their defaults."""
    patch_attribute(TRAIN_CAM_MODULE, "run", run)


def unpatch() -> None:
    """Restore the host's own ``step.train_cam.run``."""
    unpatch_attribute(TRAIN_CAM_MODULE, "run")


__all__ = ["HOST_CROP_SIZE", "HOST_DEFAULTS", "METHOD_NAME", "PAPER_MAM_FRACTION", "STATE_FORMAT", "TRAIN_CAM_MODULE",
           "TrainOptions", "add_arguments", "add_config_options", "add_run_options", "build_optimizer",
           "config_from_args", "loader_workers", "patch", "run", "train", "unpatch"]
