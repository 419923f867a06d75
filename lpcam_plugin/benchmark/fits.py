"""What the benchmark's rows share on one (network, seed): the run's context and the fitted estimators.

:class:`SeedContext` is everything one (network, seed) run offers the rows of
:mod:`lpcam_plugin.benchmark.readouts`; :func:`fit_lpcam`, :func:`fit_recam` and
:func:`fit_recam_lpcam` fit the estimators several rows read, once per (network, seed) through
:meth:`SeedContext.memo`, and cache them in :attr:`SeedContext.folder` across runs (the prototype
banks as ``*.npz``; the ReCAM step as ``recam.npz`` and ``recam_classifier.pt``, reused when the
classifier's key and the settings match).
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple, TypeVar

import torch

from lpcam_plugin.benchmark.synthetic import SyntheticDataset
from lpcam_plugin.benchmark.toynet import ToyClassifier
from lpcam_plugin.benchmark.training import extract_features, load_or_train
from lpcam_plugin.core.identity import module_digest
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.recam.estimator import ReCAM

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Images per :meth:`LPCAM.partial_fit` call in :func:`fit_lpcam`.
FIT_BATCH = 128


@dataclass
class SeedContext:
    """Everything one (network, seed) run offers its read-outs.

    Attributes:
        seed: the seed of the data, the classifier and every fit.
        network: the network's name in the report
            (:attr:`~lpcam_plugin.benchmark.config.NetworkConfig.name`).
        model: the trained classifier, eval mode (:class:`~lpcam_plugin.benchmark.toynet.ToyClassifier`;
            hook ``model.FEATURE_LAYER`` / ``model.HEAD`` by dotted name).
        images: ``(N, 3, S, S)`` float32 network inputs (standardised).
        features: ``(N, D, h, w)`` features of ``model.FEATURE_LAYER`` (non-negative; inference
            tensors: a read-out that trains recomputes features from ``images``).
        labels: ``(N, C)`` float32 multi-hot image labels.
        data: the generated data set (images, masks, class names, ids, config).
        folder: ``<out>/<network>/seed<N>/``, for files a read-out caches across runs.
        classifier_key: JSON-able key of the classifier checkpoint (data, schedule, architecture);
            include it in the key of anything cached from the classifier.
        lpcam_overrides: LPCAM config overrides of this run
            (:class:`~lpcam_plugin.benchmark.config.DemoConfig`).
        recam_selection: ReCAM+LPCAM's selection weight (``"sce"``, ``"bce"``, ``"sce*bce"``;
            None: the ReCAM preset's).
        progress: progress-bar switch to pass on (``None``: automatic, ``False``: hidden).
        validation: ``(images (V, 3, S, S), labels (V, C), masks (V, S, S))`` of the held-out split
            (:attr:`~lpcam_plugin.benchmark.config.DemoConfig.validation_images`), or None.
        fcam_crf_kernel: F-CAM's CRF kernel of this run (``"window"``, ``"dense"``; None: the preset's).
        fcam_epochs: F-CAM's training epochs of this run (None: the preset's).
        notes: JSON-able facts per read-out name, shown in the report's per-seed rows.
        probes: per read-out name, fractions measured while computing it (e.g. the share of LPCAM's
            prototypes that are mostly background), added to its diagnostics.
    """

    seed: int
    network: str
    model: ToyClassifier
    images: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    data: SyntheticDataset
    folder: Path
    classifier_key: Dict[str, Any]
    lpcam_overrides: Dict[str, Any] = field(default_factory=dict)
    recam_selection: Optional[str] = None
    progress: Optional[bool] = None
    validation: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
    fcam_crf_kernel: Optional[str] = None
    fcam_epochs: Optional[int] = None
    notes: Dict[str, str] = field(default_factory=dict)
    probes: Dict[str, Dict[str, float]] = field(default_factory=dict)
    _memo: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def weight(self) -> torch.Tensor:
        """The classifier head as a ``(C, D)`` matrix."""
        return self.model.class_weight()

    def memo(self, key: str, factory: Callable[[], T]) -> T:
        """``factory()`` the first time ``key`` is asked for in this (network, seed), the stored value after."""
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]


def prototype_note(bank: PrototypeBank) -> str:
    """Prototype counts of ``bank`` as ``"class [..] / context [..]"`` (one number per class)."""
    counts = [int(bank.class_prototypes[c].shape[0]) for c in range(bank.num_classes)]
    context = [int(bank.context_prototypes[c].shape[0]) if c in bank.context_prototypes else 0
               for c in range(bank.num_classes)]
    return f"prototypes class {counts} / context {context}"


def fit_lpcam(ctx: SeedContext, *, features: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
              cams: Optional[torch.Tensor] = None, name: str = "prototypes") -> LPCAM:
    """An LPCAM estimator fitted on the training images, once per (network, seed) and ``name``.

    Args:
        features: ``(N, D, h, w)`` features to cluster (default ``ctx.features``).
        weight: ``(C, D)`` selection classifier (default the classifier head).
        cams: ``(N, C, h', w')`` max-normalised maps for the Stage-1 split (default the
            single-scale CAM of ``weight``).
        name: memo key and file stem: the bank is written to ``ctx.folder / f"{name}.npz"``.

    Returns:
        The fitted estimator (``bank_`` set, ``weight_`` = ``weight``).
    """

    def fit() -> LPCAM:
        feats = ctx.features if features is None else features
        select = ctx.weight if weight is None else weight
        estimator = LPCAM(ctx.data.config.num_classes, "voc", class_names=ctx.data.class_names,
                          progress=ctx.progress, seed=ctx.seed, **ctx.lpcam_overrides)
        starts = range(0, feats.shape[0], FIT_BATCH)
        for i in progress_bar(starts, progress=ctx.progress, desc=f"LPCAM pools ({name})", total=len(starts),
                              leave=False):
            part = slice(i, i + FIT_BATCH)
            estimator.partial_fit(feats[part], ctx.labels[part], weight=select, ids=ctx.data.ids[part],
                                  cams=None if cams is None else cams[part])
        estimator.fit_prototypes(select, metadata={"demo_seed": ctx.seed, "network": ctx.network})
        estimator.bank_.save(ctx.folder / f"{name}.npz")
        return estimator

    return ctx.memo(f"lpcam:{name}", fit)


#: ReCAM on the benchmark runs the VOC preset as a user gets it: on the demo's 500 images, 4 epochs of
#: batches of 16 are 128 steps instead of the reference's 2,644, and ``fit``'s budget rule trains at
#: 5e-4 x 2,644 / 128 = 0.0103 (the reference's learning rate x steps).
RECAM_BATCH = 16


class ShuffledBatches:
    """``(images, labels)`` batches of a reshuffled, randomly flipped training set (as the toy
    classifier trains); :meth:`set_epoch` reseeds both with ``seed + epoch`` (resumable). ``dataset``
    is what it batches, as a ``DataLoader``'s (methods count an epoch's images from it)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        self.dataset = torch.utils.data.TensorDataset(images, labels)
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def __len__(self) -> int:
        return -(-self.images.shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.images.shape[0], generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            x = self.images[batch]
            flip = torch.rand(x.shape[0], generator=self.generator) < 0.5
            yield torch.where(flip[:, None, None, None], x.flip(-1), x), self.labels[batch]


class FineTuned(NamedTuple):
    """The ReCAM step of one (network, seed): the fitted read-out, the fine-tuned network and its features."""

    recam: ReCAM
    model: ToyClassifier
    features: torch.Tensor


def fit_recam(ctx: SeedContext) -> FineTuned:
    """ReCAM fine-tuned from a copy of the classifier, the fine-tuned network and its features
    ``(N, D, h, w)``; once per (network, seed), cached in ``ctx.folder`` (``recam.npz`` and
    ``recam_classifier.pt``) under the classifier's key and the ReCAM settings."""

    def fit() -> FineTuned:
        recam = ReCAM(ctx.data.config.num_classes, "voc", progress=ctx.progress, seed=ctx.seed)
        path = ctx.folder / "recam.npz"
        key = json.loads(json.dumps({**ctx.classifier_key, "recam": recam.config.training_settings(),
                                     "recam_batch": RECAM_BATCH}))  # as read back from the file's JSON

        def train() -> Tuple[ToyClassifier, Dict[str, float]]:
            model = copy.deepcopy(ctx.model)
            recam.fit(model, ShuffledBatches(ctx.images, ctx.labels, RECAM_BATCH, ctx.seed),
                      feature_layer=model.FEATURE_LAYER, head=model.HEAD)
            recam.metadata.update({"key": key, "classifier_sha256": module_digest(model)})
            recam.save(path)
            return model, dict(recam.loss_history_[-1])

        stored = _stored_recam(path, key)
        classifier = ctx.folder / "recam_classifier.pt"
        model, stats, cached = load_or_train(classifier, key, train, reuse=stored is not None)
        if cached and stored is not None and stored.metadata.get("classifier_sha256") != module_digest(model):
            logger.info("%s is not the network %s was fitted with; fine-tuning again", classifier, path)
            model, stats, cached = load_or_train(classifier, key, train, reuse=False)
        fitted = stored if cached and stored is not None else recam
        ctx.notes["ReCAM"] = (f"last epoch: cls {stats['cls']:.3f}, sce {stats['sce']:.3f}"
                              if "cls" in stats else "")
        return FineTuned(fitted, model, extract_features(model, ctx.images, progress=ctx.progress))

    return ctx.memo("recam", fit)


def _stored_recam(path: Path, key: Dict[str, Any]) -> Optional[ReCAM]:
    """The ReCAM step cached at ``path`` when it is readable and was fitted under ``key``; else None (logged)."""
    if not path.is_file():
        return None
    try:
        stored = ReCAM.load(path)
    except ValueError as error:
        logger.warning("ignoring unreadable ReCAM file %s: %s", path, error)
        return None
    if stored.metadata.get("key") != key:
        logger.info("%s was fitted with other settings; fine-tuning again", path)
        return None
    return stored


def fit_recam_lpcam(ctx: SeedContext) -> LPCAM:
    """LPCAM on the fine-tuned features, split by ReCAM maps, selected by ``recam.selection_weight_``
    (or ``ctx.recam_selection``); once per (network, seed)."""
    tuned = fit_recam(ctx)
    selection = tuned.recam.weight(ctx.recam_selection) if ctx.recam_selection else tuned.recam.selection_weight_
    return fit_lpcam(ctx, features=tuned.features, weight=selection, cams=tuned.recam(tuned.features, ctx.labels),
                     name="recam_prototypes")
