"""Pieces shared by the EDAM and MCTformer adapters: class-dict files, CRF dicts, batch unwrapping.

Both hosts write one pickled ``np.save`` of a dict per image:

- CAM dicts ``{c: (H, W) float32}`` with 0-based VOC class ids ``c`` of the present classes;
- CRF dicts ``{0: background, c + 1: ...}`` where the background score is ``(1 - max_c cam_c) ** alpha``
  and all channels went through a dense CRF (``pydensecrf``, an optional dependency).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from lpcam_plugin.core.evaluate import SweepResult

#: ``crf_fn(image (H, W, 3) uint8, probs (L, H, W) float32, t, labels) -> (L, H, W)`` CRF marginals.
CrfFn = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


def require_lpcam(host: str, method: str, reason: str) -> None:
    """Refuse a method these hosts cannot run: only LPCAM reads out their heads (``reason`` says why)."""
    if method != "lpcam":
        raise ValueError(f"{host}: method {method!r} is not available ({reason}); only 'lpcam' is")


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
        dict with key 0 (background) and ``c + 1`` for each class ``c`` of ``cam_dict``.
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


#: How a host-specific ``evaluate`` averages per-class IoU: ``"all"`` = over every label, a class
#: absent from both ground truth and prediction counting 0 (EDAM ``eval.py``, MCTformer
#: ``evaluation.py``: ``TP / (T + P - TP + 1e-10)``, then ``np.mean`` over 21); ``"present"`` =
#: over the classes that occur (:func:`lpcam_plugin.evaluate.seed_metrics`, IRN's ``np.nanmean``).
IOU_MEANS = ("all", "present")


class AllClassSweepResult(SweepResult):
    """A :class:`~lpcam_plugin.evaluate.SweepResult` whose IoU/FP/FN means count absent classes as 0.

    ``metrics`` already holds the host-rule values (see :func:`with_iou_mean`); :meth:`at` reads
    them instead of recomputing the present-class means.
    """

    def at(self, index: int) -> Dict[str, Any]:
        out = super().at(index)
        for per_class, mean in _HOST_MEANS:
            out[per_class] = self.metrics[per_class][index]
            out[mean] = float(self.metrics[mean][index])
        return out


_HOST_MEANS = (("iou", "miou"), ("fp", "mfp"), ("fn", "mfn"))


def with_iou_mean(result: SweepResult, mean: str) -> SweepResult:
    """``result`` with its IoU (and FP/FN) means taken by ``mean`` (one of :data:`IOU_MEANS`)."""
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    if mean == "present":
        return result
    metrics = dict(result.metrics)
    for per_class, name in _HOST_MEANS:
        values = np.nan_to_num(np.asarray(metrics[per_class], dtype=np.float64), nan=0.0)
        metrics[per_class] = values
        metrics[name] = values.mean(axis=-1)
    return AllClassSweepResult(thresholds=result.thresholds, confusion=result.confusion, metrics=metrics,
                               num_images=result.num_images)


def unbatch(value: Any) -> Any:
    """Drop the batch dimension a ``DataLoader(batch_size=1)`` adds to names, labels and images."""
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1 and value.shape[0] == 1 and value.ndim in (2, 4):
        return value[0]
    return value


def as_image_batch(view: Any, device: torch.device) -> torch.Tensor:
    """One view ``(3, h, w)`` or ``(1, 3, h, w)`` (tensor or array) as a float ``(1, 3, h, w)`` tensor."""
    tensor = torch.as_tensor(np.ascontiguousarray(view) if isinstance(view, np.ndarray) else view)
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        raise ValueError(f"each view must be (3, h, w) or (1, 3, h, w), got {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def present_classes(label: Any, num_classes: int) -> Sequence[int]:
    """Indices ``c`` with ``label[c] > 1e-5`` of a ``(C,)`` or ``(1, C)`` multi-hot label (the hosts' rule)."""
    values = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).reshape(-1)
    if values.numel() != num_classes:
        raise ValueError(f"label must have {num_classes} entries, got {values.numel()}")
    return [int(c) for c in torch.nonzero(values.float() > 1e-5).reshape(-1)]


def all_class_maps(features: torch.Tensor, bank: Any, num_classes: int, *, normalize: bool = False) -> torch.Tensor:
    """LPCAM of every class ``0..num_classes-1`` from ``features`` ``(B, D, h, w)``; returns ``(B, C, h, w)`` float32.

    Computed by the core's :func:`lpcam_plugin.lpcam_map` (float32, outside autocast). Classes
    without class prototypes in ``bank`` get all-zero maps (no NaN).
    """
    from lpcam_plugin.methods.lpcam import maps as core_maps

    if bank.num_classes != num_classes:
        raise ValueError(f"the bank has {bank.num_classes} classes, the host has {num_classes}")
    with_protos = [c for c in range(num_classes) if bank.has_prototypes(c)]
    if not with_protos:
        raise ValueError("the prototype bank has no class prototypes at all")
    b, _, h, w = features.shape
    out = torch.zeros(b, num_classes, h, w, dtype=torch.float32, device=features.device)
    out[:, with_protos] = core_maps.lpcam_map(features.float(), bank, with_protos, normalize=normalize)
    return out
