"""F-CAM for MCTformer-V2 (``xulianuwa/MCTformer`` at ``9606597``): a decoder trained on the frozen
ViT, written as ``--cam-npy-dir`` dicts ``{c: float32 (H, W)}`` in [0, 1] that ``evaluation.py``
and ``psa/`` read unchanged. Token folding, skips, sources and maps:
:mod:`lpcam_plugin.adapters.mctformer.fcam`.

Example (in the MCTformer checkout)::

    fcam = mctformer_fcam.fit(model, VOC12DatasetMS(..., scales=(1.0,)), source=bank, checkpoint="fcam_train.pt")
    mctformer_fcam.run(model, fcam, DataLoader(VOC12DatasetMS(...)), names=ids, cam_npy_dir="out_fcam")

PSA's ``--la_crf_dir`` / ``--ha_crf_dir`` dicts of those maps: :func:`crf_dict` (``alpha`` 1 and
12, ``t=10`` as the engine's ``_crf_with_alpha``).
"""
from __future__ import annotations

from lpcam_plugin.adapters.common.crf import crf_dict
from lpcam_plugin.adapters.mctformer.fcam import FEATURE_LAYER, MCTformerBackbone, TokenFold, fit, read_item, run

__all__ = ["FEATURE_LAYER", "MCTformerBackbone", "TokenFold", "crf_dict", "fit", "read_item", "run"]
