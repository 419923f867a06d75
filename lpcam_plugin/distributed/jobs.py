"""What ``lpcam fit`` and ``lpcam infer`` run, as library calls: a host-agnostic model, an image
source, and one fit or infer job on every rank of a ``torchrun`` launch (or in one process).

The command module (:mod:`lpcam_plugin.cli.scaleout`) turns its options into a :class:`ModelSpec`
and a :data:`DatasetFactory` and calls :func:`run_fit_job` / :func:`run_infer_job`; a script can
call them the same way. The process group is initialised from torchrun's environment when
launched by it and destroyed at the end.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from lpcam_plugin.core.formats import read_id_list
from lpcam_plugin.core.torchrun import init_from_env
from lpcam_plugin.distributed.data import HookedFeatures, ImageListDataset, build_model, classifier_weight, read_labels
from lpcam_plugin.distributed.env import local_device
from lpcam_plugin.distributed.fit import fit_distributed
from lpcam_plugin.distributed.infer import InferResult, infer_distributed
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM

logger = logging.getLogger(__name__)

#: ``num_classes -> (dataset of (id, image (3, H, W), labels (C,)) items, class names or None)``; called
#: once the classifier (fit) or the bank (infer) has said how many classes there are.
DatasetFactory = Callable[[int], Tuple["torch.utils.data.Dataset", Optional[List[str]]]]


@dataclass(frozen=True)
class ModelSpec:
    """A host-agnostic model: factory, checkpoint, the feature layer and the classifier head.

    Attributes:
        factory: ``"pkg.module:callable"`` returning the ``torch.nn.Module``.
        feature_layer: dotted name of the module whose output is the feature map ``(B, D, h, w)``.
        kwargs: keyword arguments of the factory.
        checkpoint: a state dict loaded with ``torch.load(weights_only=True)``; ``state_key``
            picks a nested dict; ``strict`` is passed to ``load_state_dict``.
        num_prefix_tokens, patch_size: ViT outputs (see :class:`~lpcam_plugin.distributed.data.HookedFeatures`).
        classifier_weight, classifier_bias: dotted parameter names of the head.
        conv_head: how a ``kh x kw`` conv head is reduced to ``(C, D)`` (``"sum"`` or ``"center"``).
        class_rows: ``(start, stop)`` rows of the head to keep (AMN: ``(1, 21)``).
    """

    factory: str
    feature_layer: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    state_key: Optional[str] = None
    strict: bool = True
    num_prefix_tokens: Optional[int] = None
    patch_size: Optional[int] = None
    classifier_weight: Optional[str] = None
    classifier_bias: Optional[str] = None
    conv_head: str = "sum"
    class_rows: Optional[Tuple[int, int]] = None

    def load(self, device: torch.device) -> Tuple[torch.nn.Module, HookedFeatures]:
        """The model on ``device`` (eval mode) and its feature function."""
        model = build_model(self.factory, self.checkpoint, strict=self.strict, state_key=self.state_key,
                            kwargs=self.kwargs).to(device)
        features = HookedFeatures(model, self.feature_layer, num_prefix_tokens=self.num_prefix_tokens,
                                  patch_size=self.patch_size)
        return model, features

    def head(self, model: torch.nn.Module) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The ``(C, D)`` classifier weight and ``(C,)`` bias, or ``(None, None)`` without ``classifier_weight``."""
        if self.classifier_weight is None:
            return None, None
        return classifier_weight(model, self.classifier_weight, self.classifier_bias, conv_mode=self.conv_head,
                                 rows=self.class_rows)


@dataclass(frozen=True)
class ImageFolder:
    """A VOC-style image source: ``<images>/<id><suffix>`` files, an id list and labels aligned with it.

    ``labels``: an ``(N, C)`` ``.npy``, a JSON ``{id: [classes]}``, or (``allow_pickle`` only) an
    IRN ``cls_labels.npy`` dict (:func:`~lpcam_plugin.distributed.data.read_labels`).
    ``mean``/``std``: normalisation (``None``: ImageNet's); ``resize``: ``(H, W)`` for every image.
    """

    images: Path
    list: Path
    labels: Path
    suffix: str = ".jpg"
    allow_pickle: bool = False
    resize: Optional[Tuple[int, int]] = None
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None

    def __call__(self, num_classes: int) -> Tuple[ImageListDataset, None]:
        """The :class:`~lpcam_plugin.distributed.data.ImageListDataset` (a :data:`DatasetFactory`)."""
        norm = {k: v for k, v in (("mean", self.mean), ("std", self.std)) if v is not None}
        ids = read_id_list(self.list)
        labels = read_labels(self.labels, ids, num_classes, allow_pickle=self.allow_pickle)
        return ImageListDataset(self.images, ids, labels, suffix=self.suffix, resize=self.resize, **norm), None


@contextlib.contextmanager
def process_group(backend: Optional[str] = None, timeout_s: Optional[float] = None) -> Iterator[None]:
    """Initialise the process group from torchrun's environment when launched by it; destroy it at the end."""
    created = init_from_env(backend, timeout_s=timeout_s)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: json.loads(VALUE) or the raw string}`` (``--set``)."""
    overrides: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def parse_rows(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"START:STOP"`` -> ``(start, stop)`` (``--class-rows``); None stays None."""
    if spec is None:
        return None
    start, sep, stop = spec.partition(":")
    if not sep:
        raise ValueError(f"--class-rows expects START:STOP, got {spec!r}")
    return int(start), int(stop)


def run_fit_job(model_spec: ModelSpec, data: DatasetFactory, bank: Path, *, preset: str = "voc",
                overrides: Optional[Dict[str, Any]] = None, batch_size: int = 1, workers: int = 0,
                device: str = "auto", backend: Optional[str] = None, timeout_s: Optional[float] = None,
                progress: Optional[bool] = None) -> PrototypeBank:
    """``lpcam fit``: collect features on every rank, merge the pools, fit and save the bank (rank 0).

    Needs ``model_spec.classifier_weight``; the bank records the model, checkpoint, layers and image count.
    """
    with process_group(backend, timeout_s):
        where = local_device(device)
        model, features = model_spec.load(where)
        weight, bias = model_spec.head(model)
        if weight is None:
            raise ValueError("fitting prototypes needs the classifier weight (--classifier-weight)")
        dataset, class_names = data(int(weight.shape[0]))
        estimator = LPCAM(int(weight.shape[0]), preset=preset, class_names=class_names, progress=progress,
                          **(overrides or {}))
        metadata = {"model": model_spec.factory,
                    "checkpoint": None if model_spec.checkpoint is None else str(model_spec.checkpoint),
                    "feature_layer": model_spec.feature_layer, "classifier_weight": model_spec.classifier_weight,
                    "num_images": len(dataset)}
        return fit_distributed(estimator, features, dataset, weight, bias, bank_path=bank, batch_size=batch_size,
                               num_workers=workers, device=where, metadata=metadata, progress=progress)


def run_infer_job(model_spec: ModelSpec, data: DatasetFactory, bank: Path, out: Path, *,
                  scales: Sequence[float] = (1.0,), flip: bool = False, fallback: str = "error",
                  overwrite: bool = False, workers: int = 0, device: str = "auto", backend: Optional[str] = None,
                  timeout_s: Optional[float] = None, progress: Optional[bool] = None) -> InferResult:
    """``lpcam infer``: write the maps ``<out>/<id>.npz`` of the images without a valid one, sharded over ranks."""
    with process_group(backend, timeout_s):
        where = local_device(device)
        model, features = model_spec.load(where)
        weight, _ = model_spec.head(model)
        prototypes = PrototypeBank.load(bank)
        if weight is not None and weight.shape[0] != prototypes.num_classes:
            raise ValueError(f"the classifier has {weight.shape[0]} classes, the bank {prototypes.num_classes}")
        dataset, _ = data(prototypes.num_classes)
        result = infer_distributed(LPCAM.from_bank(prototypes), features, dataset, out, scales=scales, flip=flip,
                                   fallback=fallback, weight=weight, device=where, num_workers=workers,
                                   overwrite=overwrite, progress=progress,
                                   manifest={"bank": str(bank), "model": model_spec.factory})
        logger.info("wrote %d map(s); %d of %d already existed", len(result.written), result.skipped, result.total)
    return result


__all__ = ["DatasetFactory", "ImageFolder", "ModelSpec", "parse_overrides", "parse_rows", "process_group",
           "run_fit_job", "run_infer_job"]
