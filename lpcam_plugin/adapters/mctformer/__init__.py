"""LPCAM for MCTformer-V2 (``xulianuwa/MCTformer`` at ``9606597``, DeiT-S with one class token per class:
20 on VOC, 80 on COCO).

Host facts this adapter relies on (docs/design/hosts.md section 5):

- features: the patch-token map that enters ``model.head``, ``(B, 384, H/16, W/16)`` (patch tokens
  after the last block, no final norm), captured with a forward pre-hook; equivalently the last
  block's tokens ``(B, C + N, 384)`` with the C class tokens dropped (:func:`feature_hook`);
- selection weight: ``head.weight`` ``(C, 384, 3, 3)`` summed over its taps (``weight_mode``),
  ``head.bias`` passed along and used only with ``use_bias=True`` (the reference uses no bias);
- CAM step: ``engine.generate_attention_maps_ms`` under ``torch.cuda.amp.autocast()``. V2's
  ``forward`` computes PatchCAM = ``relu(head(x))``; :func:`patch` makes ``head`` return LPCAM
  instead, so the unchanged engine does the attention fusion, patch-affinity refinement,
  resizing, target masking, min-max normalisation, ``--cam-npy-dir`` dicts and ``--out-crf``
  ``_1``/``_12`` CRF dicts.

Fit the prototypes with :func:`fit`, score with :func:`evaluate` / :func:`host_best`. The two
``main.py`` edits of ``examples/mctformer/main.patch`` call :func:`add_arguments` and
:func:`main_step` (without ``--lpcam-*`` flags the host generates its own maps). PSA's CRF dicts
of any ``{class: map}`` dict (F-CAM's, for instance): :func:`crf_dict`.

This package is the public face; its modules hold the MCTformer family: ``host`` (host facts,
features, the host's own CAM), ``head_patch`` (the patch route), ``fitting``, ``main_step`` (the
``main.py`` edit), ``scoring`` and ``fcam`` (F-CAM, public face :mod:`lpcam_plugin.adapters.mctformer_fcam`).
"""
from __future__ import annotations

from lpcam_plugin.adapters.common.crf import CrfFn, crf_dict, dense_crf
from lpcam_plugin.adapters.common.scoring import IOU_MEANS
from lpcam_plugin.adapters.mctformer.fitting import fit
from lpcam_plugin.adapters.mctformer.head_patch import HeadPatch, LPCAMHeadHook, patch
from lpcam_plugin.adapters.mctformer.host import (
    ATTENTION_TYPES,
    HEAD_LAYER,
    LAYER_INDEX,
    METHODS,
    NO_RECAM_REASON,
    PRESETS,
    feature_hook,
    host_cam,
    num_classes,
    selection_weight,
)
from lpcam_plugin.adapters.mctformer.main_step import MAIN_PATCH, add_arguments, apply_patch, main_step
from lpcam_plugin.adapters.mctformer.scoring import evaluate, host_best

__all__ = ["ATTENTION_TYPES", "HEAD_LAYER", "IOU_MEANS", "LAYER_INDEX", "MAIN_PATCH", "METHODS", "NO_RECAM_REASON",
           "PRESETS", "CrfFn", "HeadPatch", "LPCAMHeadHook", "add_arguments", "apply_patch", "crf_dict", "dense_crf",
           "evaluate", "feature_hook", "fit", "host_best", "host_cam", "main_step", "num_classes", "patch",
           "selection_weight"]
