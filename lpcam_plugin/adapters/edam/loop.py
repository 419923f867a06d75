"""Our own EDAM CAM-step loop: LPCAM in place of ``forward_cam``, writing every output
``infer_cls.py`` writes (``--out_cam`` dicts, ``--out_cam_pred`` PNGs, ``--out_crf`` dicts and
their PNGs) in EDAM's formats."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from lpcam_plugin.adapters.common.crf import CrfFn, crf_dict
from lpcam_plugin.adapters.common.items import as_image_batch, present_classes, unbatch
from lpcam_plugin.adapters.edam.host import CRF_ALPHA, CRF_ITERATIONS, NUM_CLASSES, lpcam_maps
from lpcam_plugin.adapters.edam.labels import prediction, read_saliency, save_png
from lpcam_plugin.core.formats import write_class_dict
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.bank import PrototypeBank

logger = logging.getLogger(__name__)


def voc_image_loader(voc12_root: PathLike) -> Callable[[str], np.ndarray]:
    """``name -> (H, W, 3) uint8`` from ``<voc12_root>/JPEGImages/<name>.jpg`` (for the CRF).

    The array is a writable copy (``np.array``), not the read-only ``np.asarray`` view of the image.
    """
    root = Path(voc12_root)

    def load(name: str) -> np.ndarray:
        with Image.open(root / "JPEGImages" / f"{name}.jpg") as image:
            return np.array(image.convert("RGB"))

    return load


def run(
    model: nn.Module,
    bank: PrototypeBank,
    dataset: Iterable[Tuple[Any, Sequence[Any], Any]],
    *,
    out_cam: Optional[PathLike] = None,
    out_cam_pred: Optional[PathLike] = None,
    out_crf: Optional[PathLike] = None,
    out_crf_pred: Optional[PathLike] = None,
    sal_path: Optional[PathLike] = None,
    theta: float = 0.5,
    alpha: float = 0.0,
    beta: float = 1.0,
    image_loader: Optional[Callable[[str], np.ndarray]] = None,
    crf_fn: Optional[CrfFn] = None,
    progress: Optional[bool] = None,
) -> int:
    """Write EDAM's CAM-step outputs with LPCAM in place of ``forward_cam``.

    Args:
        model: EDAM ``Net`` (any module with ``bn7`` and ``forward_as_dict``), in eval mode, on its device.
        bank: fitted :class:`~lpcam_plugin.methods.lpcam.bank.PrototypeBank` with 20 classes.
        dataset: items ``(name, views, label)`` as EDAM's ``VOC12ClsDatasetMSF`` yields them (also
            through a ``DataLoader`` with batch size 1): ``views`` = 8 normalised ``(3, h, w)``
            images (each scale, then its flip), the first at scale 1; ``label`` ``(20,)`` multi-hot.
        out_cam: folder for ``<name>.npy`` = ``{c: float32 (H, W)}`` (``--out_cam``).
        out_cam_pred: folder for label PNGs with EDAM's rule (``--out_cam_pred``; uses
            ``sal_path``/``theta``/``alpha``/``beta``, see :func:`~.labels.prediction`).
        out_crf: folder for CRF dicts ``{0: bg, c + 1: ...}`` (``--out_crf``; bg power 1, t = 3).
        out_crf_pred: folder for label PNGs of the CRF dicts. With ``sal_path`` the saliency rule of
            ``eval.py`` (``crf=True``) is applied; upstream ``infer_cls.py`` silently skips it
            (it edits the wrong array), so there its PNGs ignore saliency.
        sal_path: folder of saliency PNGs ``<name>.png`` (0..255).
        theta, alpha, beta: EDAM's thresholds (its README: 0.2, 1e-6, 0.99999 with CRF; 0.25/0.95 without).
        image_loader: ``name -> (H, W, 3) uint8`` for the CRF (e.g. :func:`voc_image_loader`).
        crf_fn: CRF implementation (default: pydensecrf, optional dependency).
        progress: progress-bar switch.

    Returns:
        number of images processed.
    """
    if all(out is None for out in (out_cam, out_cam_pred, out_crf, out_crf_pred)):
        raise ValueError("nothing to write: pass out_cam, out_cam_pred, out_crf or out_crf_pred")
    if (out_crf is not None or out_crf_pred is not None) and image_loader is None:
        raise ValueError("CRF outputs need image_loader= (e.g. edam.voc_image_loader(voc12_root))")
    count = 0
    with torch.inference_mode():
        for item in progress_bar(dataset, progress=progress, desc="EDAM LPCAM"):
            name, views, label = unbatch(item[0]), item[1], unbatch(item[2])
            if len(views) != 8:
                logger.warning("%s: %d views (infer_cls uses 8: 4 scales x flip)", name, len(views))
            size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
            classes = present_classes(label, NUM_CLASSES)
            norm = lpcam_maps(model, bank, views, size).cpu().numpy()
            cam = {c: norm[c].astype(np.float32) for c in classes}
            count += 1
            if not cam:
                logger.warning("%s: no positive class in the label; nothing written", name)
                continue
            saliency = read_saliency(sal_path, name) if sal_path is not None else None
            if out_cam is not None:
                write_class_dict(Path(out_cam) / f"{name}.npy", cam)
            if out_cam_pred is not None:
                labels = prediction(cam, theta=theta, alpha=alpha, beta=beta, saliency=saliency)
                save_png(Path(out_cam_pred) / f"{name}.png", labels)
            if out_crf is not None or out_crf_pred is not None:
                assert image_loader is not None
                crf = crf_dict(cam, image_loader(name), alpha=CRF_ALPHA, t=CRF_ITERATIONS, crf_fn=crf_fn)
                if out_crf is not None:
                    write_class_dict(Path(out_crf) / f"{name}.npy", crf)
                if out_crf_pred is not None:
                    labels = prediction(crf, theta=theta, alpha=alpha, beta=beta, saliency=saliency, crf=True)
                    save_png(Path(out_crf_pred) / f"{name}.png", labels)
    return count


__all__ = ["run", "voc_image_loader"]
