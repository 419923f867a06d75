"""CRF dicts of the ``{class: map}`` hosts (EDAM, MCTformer): ``{0: background, c + 1: ...}``.

The background score is ``(1 - max_c cam_c) ** alpha`` and all channels go through a dense CRF
(``pydensecrf``, an optional dependency, or any ``crf_fn`` with the same contract).

Public under the host adapters that write or need such dicts: ``lpcam_plugin.adapters.edam.crf_dict``,
``lpcam_plugin.adapters.mctformer.crf_dict`` (PSA's ``--la_crf_dir`` / ``--ha_crf_dir``),
``lpcam_plugin.adapters.edam_fcam.crf_dict`` and ``lpcam_plugin.adapters.mctformer_fcam.crf_dict``;
this module is where they live (importing it from here keeps working).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import numpy as np

#: ``crf_fn(image (H, W, 3) uint8, probs (L, H, W) float32, t, labels) -> (L, H, W)`` CRF marginals.
CrfFn = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


def writable_image(image: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable copy of ``image``.

    Images read with ``np.asarray(PIL.Image)`` are read-only views; pydensecrf's Cython
    signatures reject read-only buffers, so every image handed to a CRF goes through this.
    """
    return np.array(image, order="C", copy=True)


def dense_crf(image: np.ndarray, probs: np.ndarray, t: int, labels: int) -> np.ndarray:
    """Dense CRF with the settings both hosts use (Gaussian sxy 3 compat 3; bilateral sxy 80, srgb 13, compat 10).

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        probs: ``(labels, H, W)`` scores used as soft unaries.
        t: number of mean-field iterations (EDAM 3, MCTformer 10).
        labels: number of labels (``probs.shape[0]``).

    Returns:
        ``(labels, H, W)`` float32 marginals.

    Raises:
        ImportError: pydensecrf (or its fork pydensecrf2) is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except Exception as error:  # a broken build raises more than ImportError
        raise ImportError("CRF dicts need pydensecrf: pip install pydensecrf (or the maintained fork "
                          "pydensecrf2), or pass crf_fn= with your own CRF") from error
    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    # pydensecrf takes a writable buffer only: a read-only np.asarray(PIL image) would fail with
    # "buffer source array is read-only" (the hosts pass np.copy(img) for the same reason).
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=writable_image(image), compat=10)
    return np.array(crf.inference(t), dtype=np.float32).reshape(labels, h, w)


def crf_dict(cam_dict: Mapping[int, np.ndarray], image: np.ndarray, *, alpha: float, t: int,
             crf_fn: Optional[CrfFn] = None) -> Dict[int, np.ndarray]:
    """The hosts' ``_crf_with_alpha``: ``{0: bg, c + 1: ...}`` CRF marginals of a CAM dict.

    Args:
        cam_dict: ``{c: (H, W)}`` maps in [0, 1] (dict order = channel order, as the hosts).
        image: ``(H, W, 3)`` uint8 RGB image of the same size.
        alpha: background power: bg score = ``(1 - max_c cam_c) ** alpha``.
        t: CRF iterations.
        crf_fn: CRF implementation; default :func:`dense_crf` (needs pydensecrf).

    Returns:
        dict with key 0 (background) and ``c + 1`` for each class ``c`` of ``cam_dict``, each
        ``(H, W)`` float32.
    """
    if not cam_dict:
        raise ValueError("cam_dict is empty: no class to run the CRF on")
    image = writable_image(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    maps = np.stack([np.asarray(v, dtype=np.float32) for v in cam_dict.values()])
    if maps.shape[1:] != image.shape[:2]:
        raise ValueError(f"maps are {maps.shape[1:]} but the image is {image.shape[:2]}")
    bg = np.power(1 - maps.max(axis=0, keepdims=True), alpha)
    scores = np.concatenate([bg, maps]).astype(np.float32)
    marginals = (crf_fn or dense_crf)(image, scores, t, scores.shape[0])
    if np.shape(marginals) != scores.shape:
        raise ValueError(f"crf_fn returned shape {np.shape(marginals)}, expected {scores.shape}")
    out = {0: np.asarray(marginals[0], dtype=np.float32)}
    for i, c in enumerate(cam_dict):
        out[int(c) + 1] = np.asarray(marginals[i + 1], dtype=np.float32)
    return out


__all__ = ["CrfFn", "crf_dict", "dense_crf", "writable_image"]
