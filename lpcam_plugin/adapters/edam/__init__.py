"""LPCAM for EDAM (``allenwu97/EDAM``, WideResNet-38, saliency post-processing).

Host facts this adapter relies on (docs/design/hosts.md section 4): the features, selection weight
and 8-view geometry are in :mod:`lpcam_plugin.adapters.edam.host`; the files are ``--out_cam``
``<id>.npy`` = ``{c: float32 (H, W)}`` for the present classes, ``--out_crf`` ``{0: bg, c + 1: ...}``
(bg = 1 - max, CRF with t = 3), and label PNGs with EDAM's saliency rule.

Two routes: :func:`run` (our own loop, writes every output) or :func:`patch` /
:func:`run_infer_cls` (replace ``Net.forward_cam`` and run the unchanged ``infer_cls.py``). Fit the
prototypes with :func:`fit`, score with :func:`evaluate`.

This package is the public face; its modules hold the EDAM family: ``host`` (host facts, maps,
EDAM's own CAM), ``labels`` (EDAM's label rule), ``loop`` (our own CAM-step loop),
``forward_cam`` (the patch route), ``fitting``, ``scoring``, ``pairs`` (the training pair list
``voc12/EDAM_train.txt``), ``fcam`` (F-CAM, public face
:mod:`lpcam_plugin.adapters.edam_fcam`) and the RCM+MAM classifier training ``train_options``,
``train_host``, ``train`` (public face :mod:`lpcam_plugin.adapters.edam_pixelsup_train`).
"""
from __future__ import annotations

from lpcam_plugin.adapters.common.crf import CrfFn, crf_dict
from lpcam_plugin.adapters.common.scoring import IOU_MEANS
from lpcam_plugin.adapters.edam.fitting import fit
from lpcam_plugin.adapters.edam.forward_cam import ForwardCamPatch, patch, run_infer_cls
from lpcam_plugin.adapters.edam.host import (
    CRF_ALPHA,
    CRF_ITERATIONS,
    DEFAULT_NETWORK,
    FEATURE_LAYER,
    HEAD_LAYER,
    METHODS,
    NO_RECAM_REASON,
    NUM_CLASSES,
    SPARE_CHANNEL,
    backbone_features,
    host_cam,
    lpcam_maps,
    prepare_model,
    selection_weight,
)
from lpcam_plugin.adapters.edam.labels import cam_dict_tensor, prediction, read_saliency
from lpcam_plugin.adapters.edam.loop import run, voc_image_loader
from lpcam_plugin.adapters.edam.pairs import write_pair_list
from lpcam_plugin.adapters.edam.scoring import evaluate

__all__ = ["CRF_ALPHA", "CRF_ITERATIONS", "DEFAULT_NETWORK", "FEATURE_LAYER", "HEAD_LAYER", "IOU_MEANS", "METHODS",
           "NO_RECAM_REASON", "NUM_CLASSES", "SPARE_CHANNEL", "CrfFn", "ForwardCamPatch", "backbone_features",
           "cam_dict_tensor", "crf_dict", "evaluate", "fit", "host_cam", "lpcam_maps", "patch", "prediction",
           "prepare_model", "read_saliency", "run", "run_infer_cls", "selection_weight", "voc_image_loader",
           "write_pair_list"]
