"""LPCAM for EDAM (``allenwu97/EDAM``, WideResNet-38, saliency post-processing).

Host facts this adapter relies on (hosts.md section 4):

- features: ``model.bn7`` output = ``forward_as_dict(x)["conv6"]``, ``(B, 4096, h/8, w/8)``, no ReLU
  (cosine similarity handles signed features);
- selection weight: ``mask_layer.weight`` ``(21, 4096, 3, 3)`` summed over its taps, **rows 0..19
  only**. Channel 20 is a spare channel that EDAM's training never selects; it is not a class and
  not background, so it does not enter the selection softmax (the bank is invariant to it; tested);
- geometry of ``infer_cls.py``: 8 views (scales 1, 0.5, 1.5, 2, each followed by its flip), each
  map upsampled bilinearly straight to the image size ``(H, W)``, odd views flipped back, summed,
  divided by the per-class max;
- files: ``--out_cam`` ``<id>.npy`` = ``{c: float32 (H, W)}`` for the present classes; ``--out_crf``
  ``{0: bg, c + 1: ...}`` (bg = 1 - max, CRF with t = 3); label PNGs with EDAM's saliency rule.

Two routes: :func:`run` (our own loop, writes every output) or :func:`patch` /
:func:`run_infer_cls` (replace ``Net.forward_cam`` and run the unchanged ``infer_cls.py``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import runpy
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.formats import load_class_dict, write_class_dict
from lpcam_plugin.adapters._edam_mct_shared import (IOU_MEANS, CrfFn, all_class_maps, as_image_batch, crf_dict,
                                                    present_classes, unbatch, with_iou_mean, require_lpcam)

logger = logging.getLogger(__name__)

NUM_CLASSES = 20
#: ``mask_layer`` channel that is neither a class nor background (never selected in training).
SPARE_CHANNEL = 20
FEATURE_LAYER = "bn7"
HEAD_LAYER = "mask_layer"
DEFAULT_NETWORK = "network.resnet38_EDAM_cls"
#: ``infer_cls.py``'s CRF iterations and background power.
CRF_ITERATIONS = 3
CRF_ALPHA = 1
_PATCH_MARK = "_lpcam_patch"


# --------------------------------------------------------------------------- weight and features


#: Why ReCAM (and its compositions) cannot run here: LPCAM is the only read-out of this host.
NO_RECAM_REASON = ("EDAM's classifier is a 3x3 mask_layer followed by per-class transformers, not the GAP-linear "
                   "head whose softmax re-activation ReCAM fine-tunes")

def prepare_model(model: nn.Module, device: Union[str, torch.device]) -> nn.Module:
    """Put an EDAM ``Net`` in eval mode on ``device`` and return it.

    EDAM's ``resnet38d.Net.train(mode)`` returns None, so ``model.eval()`` returns None too and
    ``model.eval().to(device)`` fails with ``'NoneType' object has no attribute 'to'``: the two
    calls are made separately here.
    """
    model.eval()
    model.to(device)
    return model


def selection_weight(model_or_weight: Union[nn.Module, torch.Tensor], *, mode: str = "sum") -> torch.Tensor:
    """The ``(20, D)`` selection weight: ``mask_layer.weight`` reduced over its taps, rows 0..19.

    Args:
        model_or_weight: an EDAM ``Net`` (its ``mask_layer``) or the ``(21, D, 3, 3)`` weight.
        mode: ``"sum"`` (sum of the 9 taps, hosts.md 6.1) or ``"center"`` (centre tap).
    """
    from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

    weight = getattr(model_or_weight, HEAD_LAYER).weight if isinstance(model_or_weight, nn.Module) else model_or_weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[0] != NUM_CLASSES + 1:
        raise ValueError(f"EDAM's mask_layer weight must be (21, D, kh, kw), got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    reduced, _ = reduce_conv_head(weight.detach().float(), mode=mode)
    return reduced[:NUM_CLASSES].clone()


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``bn7`` output ``(B, D, h, w)`` for ``images`` ``(B, 3, H, W)``, captured with a forward hook."""
    from lpcam_plugin.core.hooks import FeatureHook

    if not hasattr(model, "forward_as_dict"):
        raise TypeError(f"{type(model).__name__} has no forward_as_dict; expected an EDAM/PSA resnet38d Net")
    with FeatureHook(getattr(model, FEATURE_LAYER)) as hook:
        model.forward_as_dict(images)
        features = hook.features
    if features is None:
        raise RuntimeError(f"{FEATURE_LAYER} did not run in forward_as_dict")
    return features


def _view_maps(model: nn.Module, views: Sequence[Any], size: Tuple[int, int],
               map_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """EDAM geometry: ``map_fn`` per view, upsampled to ``size``, odd views flipped back, summed: ``(C, H, W)``."""
    device = next(model.parameters()).device
    total: Optional[torch.Tensor] = None
    for i, view in enumerate(views):
        maps = map_fn(as_image_batch(view, device))
        maps = F.interpolate(maps.float(), size, mode="bilinear", align_corners=False)[0]
        if i % 2 == 1:
            maps = maps.flip(-1)
        total = maps if total is None else total + maps
    if total is None:
        raise ValueError("no views given")
    return total


def _divide_by_max(maps: torch.Tensor) -> torch.Tensor:
    """EDAM's ``sum_cam / max`` per class ``(C, H, W)``; an all-zero map stays zero instead of NaN."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))


def lpcam_maps(model: nn.Module, bank: Any, views: Sequence[Any], size: Tuple[int, int]) -> torch.Tensor:
    """LPCAM of all 20 classes with EDAM's multi-scale geometry: ``(20, H, W)`` float32 in [0, 1].

    Per view: ``bn7`` features, raw ``relu`` LPCAM (not normalised per view, like ``forward_cam``'s
    per-view output); then upsample, flip back, sum, divide by the max.
    """
    with torch.no_grad():
        summed = _view_maps(model, views, size, lambda x: all_class_maps(backbone_features(model, x), bank, NUM_CLASSES))
    return _divide_by_max(summed)


def host_cam(model: nn.Module, views: Sequence[Any], size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """EDAM's own CAM (``forward_cam``, 8-view geometry) and the first view's ``bn7`` features.

    Returns:
        ``(cam (20, H, W) in [0, 1], features (D, h, w))``; channel 20 is dropped as ``infer_cls`` does.
    """
    from lpcam_plugin.core.hooks import FeatureHook

    if hasattr(type(model).forward_cam, _PATCH_MARK):
        raise RuntimeError("Net.forward_cam is patched with LPCAM; remove the patch before fitting on the host CAM")
    captured: List[torch.Tensor] = []

    def cam_fn(x: torch.Tensor) -> torch.Tensor:
        with FeatureHook(getattr(model, FEATURE_LAYER)) as hook:
            cam = model.forward_cam(x)
            if not captured:
                captured.append(hook.features[0])
        return cam

    with torch.no_grad():
        cam = _divide_by_max(_view_maps(model, views, size, cam_fn)[:NUM_CLASSES])
    return cam, captured[0]


# --------------------------------------------------------------------------- saliency rule


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
    """``<sal_path>/<name>.png`` as an array, exactly as EDAM reads it (``np.array(Image.open(...))``)."""
    from PIL import Image

    with Image.open(Path(sal_path) / f"{name}.png") as image:
        return np.array(image)


def _save_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    from lpcam_plugin.core.io import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG")


# --------------------------------------------------------------------------- our own loop


def voc_image_loader(voc12_root: PathLike) -> Callable[[str], np.ndarray]:
    """``name -> (H, W, 3) uint8`` from ``<voc12_root>/JPEGImages/<name>.jpg`` (for the CRF).

    The array is a writable copy (``np.array``), not the read-only ``np.asarray`` view of the image.
    """
    root = Path(voc12_root)

    def load(name: str) -> np.ndarray:
        from PIL import Image

        with Image.open(root / "JPEGImages" / f"{name}.jpg") as image:
            return np.array(image.convert("RGB"))

    return load


def run(
    model: nn.Module,
    bank: Any,
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
        bank: fitted :class:`lpcam_plugin.PrototypeBank` with 20 classes.
        dataset: items ``(name, views, label)`` as EDAM's ``VOC12ClsDatasetMSF`` yields them (also
            through a ``DataLoader`` with batch size 1): ``views`` = 8 normalised ``(3, h, w)``
            images (each scale, then its flip), the first at scale 1; ``label`` ``(20,)`` multi-hot.
        out_cam: folder for ``<name>.npy`` = ``{c: float32 (H, W)}`` (``--out_cam``).
        out_cam_pred: folder for label PNGs with EDAM's rule (``--out_cam_pred``; uses
            ``sal_path``/``theta``/``alpha``/``beta``, see :func:`prediction`).
        out_crf: folder for CRF dicts ``{0: bg, c + 1: ...}`` (``--out_crf``; bg power 1, t = 3).
        out_crf_pred: folder for label PNGs of the CRF dicts. With ``sal_path`` the saliency rule of
            ``eval.py`` (``crf=True``) is applied; upstream ``infer_cls.py`` silently skips it
            (it edits the wrong array), so there its PNGs ignore saliency.
        sal_path: folder of saliency PNGs ``<name>.png`` (0..255).
        theta, alpha, beta: EDAM's thresholds (README: 0.2, 1e-6, 0.99999 with CRF; 0.25/0.95 without).
        image_loader: ``name -> (H, W, 3) uint8`` for the CRF (e.g. :func:`voc_image_loader`).
        crf_fn: CRF implementation (default: pydensecrf, optional dependency).
        progress: progress-bar switch.

    Returns:
        number of images processed.
    """
    from lpcam_plugin.core.progress import progress_bar

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
                _save_png(Path(out_cam_pred) / f"{name}.png", labels)
            if out_crf is not None or out_crf_pred is not None:
                crf = crf_dict(cam, image_loader(name), alpha=CRF_ALPHA, t=CRF_ITERATIONS, crf_fn=crf_fn)
                if out_crf is not None:
                    write_class_dict(Path(out_crf) / f"{name}.npy", crf)
                if out_crf_pred is not None:
                    labels = prediction(crf, theta=theta, alpha=alpha, beta=beta, saliency=saliency, crf=True)
                    _save_png(Path(out_crf_pred) / f"{name}.png", labels)
    return count


# --------------------------------------------------------------------------- patch route


class ForwardCamPatch:
    """Handle of :func:`patch`: restores the original ``Net.forward_cam`` on :meth:`remove` (idempotent)."""

    def __init__(self, net_class: type, original: Optional[Callable[..., torch.Tensor]]) -> None:
        self.net_class = net_class
        self.original = original

    @property
    def active(self) -> bool:
        """Whether ``forward_cam`` is still replaced by this patch."""
        current = self.net_class.__dict__.get("forward_cam")
        return getattr(current, _PATCH_MARK, None) is self

    def remove(self) -> None:
        """Put the original ``forward_cam`` back."""
        if self.active:
            if self.original is None:
                delattr(self.net_class, "forward_cam")
            else:
                self.net_class.forward_cam = self.original

    def __enter__(self) -> "ForwardCamPatch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def patch(bank: Any, *, network: Union[str, type] = DEFAULT_NETWORK) -> ForwardCamPatch:
    """Replace ``Net.forward_cam`` of ``network`` by LPCAM, for the unchanged ``infer_cls.py``.

    The replacement returns a non-negative ``(B, 21, h, w)`` float32 map: channel ``c`` = raw
    (``relu``, not normalised) LPCAM of class ``c`` from ``bn7`` (= ``forward_as_dict(x)["conv6"]``),
    channel 20 = 0. ``infer_cls.py`` then upsamples each view, flips back, sums, divides by the max
    and keeps channels 0..19: the same maps as :func:`run`. It is thread-safe (no hooks), as
    ``infer_cls`` calls it from a thread pool.

    Args:
        bank: fitted 20-class :class:`lpcam_plugin.PrototypeBank`.
        network: the module name ``infer_cls`` receives as ``--network`` (imported here, so the host
            must be importable) or the ``Net`` class itself.

    Returns:
        a handle (also a context manager) whose ``remove()`` restores the original method.
    """
    net_class = getattr(importlib.import_module(network), "Net") if isinstance(network, str) else network
    if not isinstance(net_class, type) or not issubclass(net_class, nn.Module):
        raise TypeError(f"network must name a module with an nn.Module class Net, got {net_class!r}")
    if bank.num_classes != NUM_CLASSES:
        raise ValueError(f"EDAM has {NUM_CLASSES} classes, the bank has {bank.num_classes}")
    current = net_class.__dict__.get("forward_cam")
    if hasattr(getattr(net_class, "forward_cam", None), _PATCH_MARK):
        raise RuntimeError(f"{net_class.__qualname__}.forward_cam is already patched")

    def forward_cam(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_as_dict(x)["conv6"]
        maps = all_class_maps(features, bank, NUM_CLASSES)
        spare = maps.new_zeros(maps.shape[0], 1, *maps.shape[2:])
        return torch.cat([maps, spare], dim=1)

    handle = ForwardCamPatch(net_class, current)
    setattr(forward_cam, _PATCH_MARK, handle)
    net_class.forward_cam = forward_cam
    return handle


def run_infer_cls(bank: Any, argv: Sequence[str], *, script: PathLike = "infer_cls.py") -> None:
    """Run EDAM's unchanged ``infer_cls.py`` (through ``runpy``) with ``forward_cam`` patched to LPCAM.

    ``argv`` are the script's arguments (``--weights ... --out_cam ...``); the ``--network`` given
    there (default ``network.resnet38_EDAM_cls``) is the module patched. Run it from the EDAM
    checkout (the script reads ``voc12/cls_labels.npy`` relative to the working directory) with
    the checkout on ``sys.path``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--network", default=DEFAULT_NETWORK)
    known, _ = parser.parse_known_args(list(argv))
    saved_argv = sys.argv
    with patch(bank, network=known.network):
        sys.argv = [str(script)] + list(argv)
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = saved_argv


# --------------------------------------------------------------------------- fitting


def fit(
    model: nn.Module,
    dataset: Iterable[Tuple[Any, Sequence[Any], Any]],
    *,
    baseline: str = "host",
    weight_mode: str = "sum",
    preset: str = "voc",
    config: Any = None,
    bank_path: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    method: str = "lpcam",
    **overrides: Any,
) -> Any:
    """Fit LPCAM prototypes on EDAM: collect ``bn7`` features per class, cluster, select.

    Features are the first view's (scale 1, unflipped) ``bn7`` map, as in the LPCAM reference.
    The split baseline is EDAM's own multi-scale CAM (``baseline="host"``, ``forward_cam`` with
    the 8-view geometry, divided by the max) or the single-scale CAM of the selection weight
    (``baseline="cam"``). Image ids (``name``) key the pool sampling (order-independent).

    Args:
        model: EDAM ``Net`` in eval mode.
        dataset: ``(name, views, label)`` items as for :func:`run`.
        baseline: ``"host"`` or ``"cam"``.
        weight_mode: tap reduction of ``mask_layer`` (``"sum"`` or ``"center"``).
        preset, config, overrides: passed to :class:`lpcam_plugin.LPCAM`.
        bank_path: if given, the fitted bank is saved there.
        progress: progress-bar switch.
        method: the read-out; only ``"lpcam"`` (ReCAM needs a GAP-linear head, see ``NO_RECAM_REASON``).

    Returns:
        the fitted :class:`lpcam_plugin.LPCAM` (its ``bank_`` holds the prototypes).
    """
    require_lpcam("EDAM", method, NO_RECAM_REASON)
    from lpcam_plugin import LPCAM
    from lpcam_plugin.core.progress import progress_bar

    if baseline not in ("host", "cam"):
        raise ValueError(f"baseline must be 'host' or 'cam', got {baseline!r}")
    weight = selection_weight(model, mode=weight_mode)
    estimator = LPCAM(NUM_CLASSES, preset, config=config, progress=progress, **overrides)
    with torch.inference_mode():
        for item in progress_bar(dataset, progress=progress, desc="EDAM features"):
            name, views, label = unbatch(item[0]), item[1], unbatch(item[2])
            labels = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
            labels = labels.float().reshape(1, NUM_CLASSES).cpu()
            if baseline == "host":
                size = tuple(as_image_batch(views[0], torch.device("cpu")).shape[-2:])
                cam, features = host_cam(model, views, size)
                estimator.partial_fit([features.float().cpu()], labels, cams=[cam.cpu()], ids=[str(name)])
            else:
                device = next(model.parameters()).device
                features = backbone_features(model, as_image_batch(views[0], device))
                estimator.partial_fit(features.float().cpu(), labels, weight=weight, ids=[str(name)])
    estimator.fit_prototypes(weight, metadata={"host": "EDAM", "feature_layer": FEATURE_LAYER,
                                               "weight": f"{HEAD_LAYER}.weight[:20]", "weight_mode": weight_mode,
                                               "baseline": baseline})
    if bank_path is not None:
        estimator.bank_.save(bank_path)
    return estimator


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predict_dir: PathLike,
    gt_dir: PathLike,
    names: Sequence[str],
    *,
    thetas: Union[float, Sequence[float]] = (0.40, 0.42, 0.44, 0.46, 0.48, 0.50, 0.52, 0.54, 0.56, 0.58),
    alpha: float = 0.0,
    beta: float = 1.0,
    crf: bool = False,
    sal_path: Optional[PathLike] = None,
    allow_pickle: bool = False,
    mean: str = "all",
    progress: Optional[bool] = None,
) -> Any:
    """Score EDAM-format dicts with ``eval.py``'s npy rule through :mod:`lpcam_plugin.evaluate`.

    Predictions follow :func:`prediction` (``theta`` is the background score, or with ``sal_path``
    the saliency cut ``theta * 100``); metrics come from :func:`lpcam_plugin.evaluate.confusion_matrix`
    and :func:`~lpcam_plugin.evaluate.seed_metrics`. Default ``thetas`` = ``eval.py --curve``.
    CRF dicts without saliency do not depend on ``theta``.

    ``mean="all"`` (default) averages IoU, FP and FN over all 21 labels with a class absent from
    ground truth and prediction counting 0, as ``eval.py`` does, so the mIoU equals the script's on
    any subset; ``mean="present"`` averages over the classes that occur (same on VOC train, where
    every class occurs).

    Returns:
        :class:`lpcam_plugin.evaluate.SweepResult` over ``thetas``.
    """
    from lpcam_plugin.core import evaluate as ev
    from lpcam_plugin.core.progress import progress_bar

    values = [float(thetas)] if np.isscalar(thetas) else [float(t) for t in thetas]
    if not values:
        raise ValueError("thetas must not be empty")
    if mean not in IOU_MEANS:
        raise ValueError(f"mean must be one of {IOU_MEANS}, got {mean!r}")
    n = NUM_CLASSES + 1
    confusion = np.zeros((len(values), n, n), dtype=np.int64)
    for name in progress_bar(names, progress=progress, desc="EDAM eval", total=len(names)):
        cam = load_class_dict(Path(predict_dir) / f"{name}.npy", allow_pickle=allow_pickle)
        gt = ev.read_label_png(Path(gt_dir) / f"{name}.png")
        saliency = read_saliency(sal_path, name) if sal_path is not None else None
        for i, theta in enumerate(values):
            pred = prediction(cam, theta=theta, alpha=alpha, beta=beta, saliency=saliency, crf=crf)
            confusion[i] += ev.confusion_matrix(pred.astype(np.int64), gt, n)
    per_threshold = [ev.seed_metrics(c) for c in confusion]
    metrics = {key: np.stack([np.asarray(m[key], dtype=np.float64) for m in per_threshold])
               for key in ev.PER_CLASS_METRICS + ev.MEAN_METRICS}
    result = ev.SweepResult(thresholds=np.asarray(values), confusion=confusion, metrics=metrics, num_images=len(names))
    return with_iou_mean(result, mean)
