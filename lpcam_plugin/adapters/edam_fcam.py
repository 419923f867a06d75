"""F-CAM for EDAM (``allenwu97/EDAM``): a decoder trained on EDAM's frozen WideResNet-38, written as
EDAM ``--out_cam`` dicts ``{c: float32 (H, W)}`` that ``eval.py`` and the saliency fusion read
unchanged. Encoder, skips, sources and maps: :mod:`lpcam_plugin.adapters.edam.fcam`.

Example (in the EDAM checkout)::

    model = edam.prepare_model(Net(), "cuda"); model.load_state_dict(torch.load("EDAM_final.pth"))
    train = VOC12ClsDatasetMSF("voc12/train_aug.txt", voc12_root=VOC, scales=(1.0,), inter_transform=...)
    fcam = edam_fcam.fit(model, train, source=PrototypeBank.load("lpcam_edam.npz"), checkpoint="fcam_edam_train.pt")
    fcam.save("fcam_edam.npz")
    edam_fcam.run(model, fcam, VOC12ClsDatasetMSF(..., scales=(1.0,)), out_cam="out_fcam")

CRF dicts of those maps for ``eval.py --crf True``: :func:`crf_dict` (``alpha=1``, ``t=3`` as
``infer_cls.py``).
"""
from __future__ import annotations

from lpcam_plugin.adapters.common.crf import crf_dict
from lpcam_plugin.adapters.edam.fcam import FEATURE_LAYER, SKIP_BLOCKS, SKIP_LAYERS, EDAMBackbone, fit, read_item, run

__all__ = ["EDAMBackbone", "FEATURE_LAYER", "SKIP_BLOCKS", "SKIP_LAYERS", "crf_dict", "fit", "read_item", "run"]
