"""EDAM's label rule: class dicts to label maps, with or without saliency (``eval.py`` npy mode,
``infer_cls.py --out_cam_pred``), and the saliency PNGs and label PNGs it reads and writes."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from PIL import Image

from lpcam_plugin.adapters.edam.host import NUM_CLASSES
from lpcam_plugin.core.io import PathLike, atomic_write


def cam_dict_tensor(cam_dict: Mapping[int, np.ndarray], *, crf: bool = False) -> np.ndarray:
    """The ``(21, H, W)`` float32 tensor ``eval.py`` builds: class ``c`` at ``c + 1`` (CRF dicts: key as is)."""
    h, w = np.shape(next(iter(cam_dict.values())))
    tensor = np.zeros((NUM_CLASSES + 1, h, w), np.float32)
    for key, value in cam_dict.items():
        tensor[int(key) if crf else int(key) + 1] = value
    return tensor


def prediction(cam_dict: Mapping[int, np.ndarray], *, theta: float, alpha: float = 0.0, beta: float = 1.0,
               saliency: Optional[np.ndarray] = None, crf: bool = False) -> np.ndarray:
    """EDAM's label rule (``eval.py`` npy mode, ``infer_cls.py --out_cam_pred``): ``(H, W)`` uint8.

    With ``saliency`` ``(H, W)`` (0..255): background = 1 where ``saliency <= theta * 100`` else 0,
    every channel value ``< alpha`` becomes -2 and ``> beta`` becomes 2 (before the background is
    written). Without saliency: background = ``theta`` (CAM dicts) or the dict's own key 0 (CRF
    dicts). Ties go to the lower channel (``np.argmax``).
    """
    tensor = cam_dict_tensor(cam_dict, crf=crf)
    if saliency is not None:
        saliency = np.asarray(saliency)
        if saliency.shape != tensor.shape[1:]:
            raise ValueError(f"saliency map is {saliency.shape}, the CAMs are {tensor.shape[1:]} "
                             "(EDAM expects single-channel saliency PNGs of the image size)")
        background = np.where(saliency <= theta * 100, 1, 0)
        tensor = np.where(tensor < alpha, -2, tensor)
        tensor = np.where(tensor > beta, 2, tensor)
        tensor[0] = background
    elif not crf:
        tensor[0] = theta
    return np.argmax(tensor, axis=0).astype(np.uint8)


def read_saliency(sal_path: PathLike, name: str) -> np.ndarray:
    """``<sal_path>/<name>.png`` as an ``(H, W)`` array, exactly as EDAM reads it (``np.array(Image.open(...))``)."""
    with Image.open(Path(sal_path) / f"{name}.png") as image:
        return np.array(image)


def save_png(path: Path, labels: np.ndarray) -> None:
    """Write an ``(H, W)`` label map as a grey-scale uint8 PNG, atomically."""
    with atomic_write(path) as tmp:
        Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG")


__all__ = ["cam_dict_tensor", "prediction", "read_saliency", "save_png"]
