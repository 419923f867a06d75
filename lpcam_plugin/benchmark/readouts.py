"""The read-outs the benchmark compares: a registry of ``name -> maps for the training images``.

A read-out turns what one (network, seed) run has — the trained classifier, its features, the
labels, the data, a folder for caches — into maps ``(N, C, h, w)`` at feature resolution (F-CAM:
at the image's), non-negative, zero for each image's absent classes (the demo max-normalises and
upsamples them bilinearly per image before the threshold sweep, so the scale of a map does not matter). :data:`READOUTS`
lists them in table order; ``lpcam demo`` runs every one for every (network, seed).

Adding a method is one function and one line::

    def recam_readout(ctx: SeedContext) -> torch.Tensor:
        tuned = fit_recam(ctx)                                  # once per (network, seed), memoised
        return tuned.recam(tuned.features, ctx.labels)          # (N, C, h, w)

    READOUTS.append(Readout("ReCAM", recam_readout, "softmax re-activation of the fine-tuned backbone"))

Read-outs share work through :meth:`SeedContext.memo` (in memory, for this (network, seed)) and
through files in :attr:`SeedContext.folder` (across runs; e.g. a fine-tuned network through
:func:`~lpcam_plugin.benchmark.toynet.load_or_train` keyed by ``ctx.classifier_key``; ``lpcam demo
--retrain`` deletes the ``*.pt`` files of the seed folders). They must
not modify ``ctx.model``, ``ctx.features`` or ``ctx.labels`` in place (fine-tune a ``copy.deepcopy``).
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

import torch

from lpcam_plugin.benchmark.synthetic import SyntheticDataset
from lpcam_plugin.benchmark.toynet import ToyClassifier, extract_features, load_or_train
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.fcam.estimator import FCAM, Source
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.recam.estimator import ReCAM

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Images per :meth:`LPCAM.partial_fit` call in :func:`fit_lpcam`.
FIT_BATCH = 128


@dataclass
class SeedContext:
    """Everything one (network, seed) run offers its read-outs.

    Attributes:
        seed: the seed of the data, the classifier and every fit.
        network: the network's name in the report (:attr:`NetworkConfig.name`).
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
        lpcam_overrides: LPCAM config overrides of this run (:class:`DemoConfig`).
        recam_selection: ReCAM+LPCAM's selection weight (``"sce"``, ``"bce"``, ``"sce*bce"``;
            None: the ReCAM preset's).
        progress: progress-bar switch to pass on (``None``: automatic, ``False``: hidden).
        notes: JSON-able facts per read-out name, shown in the report's per-seed rows.
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
    notes: Dict[str, str] = field(default_factory=dict)
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


#: A read-out: the context in, maps ``(N, C, h, w)`` out.
ReadoutFn = Callable[[SeedContext], torch.Tensor]


@dataclass(frozen=True)
class Readout:
    """One row of the benchmark table: ``name`` and the function computing its maps."""

    name: str
    compute: ReadoutFn
    description: str = ""


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
        for i in progress_bar(starts, progress=ctx.progress, desc=f"LPCAM pools ({name})", total=len(starts), leave=False):
            part = slice(i, i + FIT_BATCH)
            estimator.partial_fit(feats[part], ctx.labels[part], weight=select, ids=ctx.data.ids[part],
                                  cams=None if cams is None else cams[part])
        estimator.fit_prototypes(select, metadata={"demo_seed": ctx.seed, "network": ctx.network})
        estimator.bank_.save(ctx.folder / f"{name}.npz")
        return estimator

    return ctx.memo(f"lpcam:{name}", fit)


def cam_readout(ctx: SeedContext) -> torch.Tensor:
    """CAM: ``relu(W_c . f)`` of the classifier head, zero for absent classes."""
    return cam_map(ctx.features, ctx.weight) * ctx.labels[:, :, None, None]


def lpcam_f_readout(ctx: SeedContext) -> torch.Tensor:
    """LPCAM-F: class prototypes only (``bank.without_context()``); CAM for classes without prototypes."""
    bank = fit_lpcam(ctx).bank_
    return LPCAM.from_bank(bank.without_context(), progress=ctx.progress)(ctx.features, ctx.labels, fallback="cam",
                                                                           weight=ctx.weight)


def lpcam_readout(ctx: SeedContext) -> torch.Tensor:
    """LPCAM: class minus context prototypes; CAM for classes without prototypes."""
    estimator = fit_lpcam(ctx)
    ctx.notes["LPCAM"] = prototype_note(estimator.bank_)
    return estimator(ctx.features, ctx.labels, fallback="cam")


#: ReCAM on the benchmark: the VOC preset with one change, decided before any ReCAM result was seen.
#: The demo trains on 500 images, 21x fewer than VOC train_aug (10,582): 4 epochs of batches of 16 are
#: 128 steps instead of the reference's 2,645, so the learning rate is scaled by the same factor
#: (5e-4 -> 0.01) to give W_sce the reference's lr x steps budget.
RECAM_DEMO_OVERRIDES: Dict[str, Any] = {"learning_rate": 0.01}
RECAM_BATCH = 16


class ShuffledBatches:
    """``(images, labels)`` batches of a reshuffled, randomly flipped training set (as the toy
    classifier trains); :meth:`set_epoch` reseeds both with ``seed + epoch`` (resumable)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
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
        recam = ReCAM(ctx.data.config.num_classes, "voc", progress=ctx.progress, seed=ctx.seed, **RECAM_DEMO_OVERRIDES)
        path = ctx.folder / "recam.npz"
        key = {**ctx.classifier_key, "recam": recam.config.training_settings(), "recam_batch": RECAM_BATCH}

        def train() -> Tuple[ToyClassifier, Dict[str, float]]:
            model = copy.deepcopy(ctx.model)
            recam.fit(model, ShuffledBatches(ctx.images, ctx.labels, RECAM_BATCH, ctx.seed),
                      feature_layer=model.FEATURE_LAYER, head=model.HEAD)
            recam.save(path)
            return model, dict(recam.loss_history_[-1])

        model, stats, cached = load_or_train(ctx.folder / "recam_classifier.pt", key, train)
        fitted = ReCAM.load(path) if cached else recam
        ctx.notes["ReCAM"] = (f"last epoch: cls {stats['cls']:.3f}, sce {stats['sce']:.3f}"
                              if "cls" in stats else "")
        return FineTuned(fitted, model, extract_features(model, ctx.images, progress=ctx.progress))

    return ctx.memo("recam", fit)


def recam_readout(ctx: SeedContext) -> torch.Tensor:
    """ReCAM: ``relu((W_sce ⊙ W_bce)_c . f)`` of the fine-tuned network's features."""
    tuned = fit_recam(ctx)
    return tuned.recam(tuned.features, ctx.labels)


def fit_recam_lpcam(ctx: SeedContext) -> LPCAM:
    """LPCAM on the fine-tuned features, split by ReCAM maps, selected by ``recam.selection_weight_``
    (or ``ctx.recam_selection``); once per (network, seed)."""
    tuned = fit_recam(ctx)
    selection = tuned.recam.weight(ctx.recam_selection) if ctx.recam_selection else tuned.recam.selection_weight_
    return fit_lpcam(ctx, features=tuned.features, weight=selection, cams=tuned.recam(tuned.features, ctx.labels),
                     name="recam_prototypes")


def recam_lpcam_readout(ctx: SeedContext) -> torch.Tensor:
    """ReCAM+LPCAM: :func:`fit_recam_lpcam`'s maps; ReCAM maps for classes without prototypes."""
    tuned = fit_recam(ctx)
    estimator = fit_recam_lpcam(ctx)
    ctx.notes["ReCAM+LPCAM"] = prototype_note(estimator.bank_)
    return estimator(tuned.features, ctx.labels, fallback="cam", weight=tuned.recam.map_weight_)


#: F-CAM on the benchmark: the VOC preset with these changes, decided before any F-CAM result was seen
#: (except the epoch count, cut from 5 to 2, with 300 instead of 120 seeds per step, for the CPU budget
#: after one seed had run; README "F-CAM on the benchmark").
#: Spatial settings are scaled from the paper's 224-pixel images to the demo's 80 (sigma_xy 100 -> 36,
#: the 11-pixel erosion -> 3, the nearest odd size); the images' normalisation is the demo's
#: (``(x - 0.5) / 0.25`` on [0, 1]); the decoder is a quarter of the default's width (64 ... 8 instead of
#: 256 ... 32: the toy encoders are 2-16x narrower than ResNet-50, D = 128 or 1024 instead of 2048); and the
#: CPU budget allows 2 epochs over 500 images (1,000 image-steps instead of the paper's ~300,000), so each
#: step samples 300 seed pixels per region instead of 1: training sees as many seeds as the paper's.
FCAM_DEMO_OVERRIDES: Dict[str, Any] = {"crf_sigma_xy": 36.0, "erosion_size": 3, "decoder_channels": (64, 32, 16, 8),
                                       "epochs": 2, "fg_samples": 300, "bg_samples": 300,
                                       "pixel_mean": (127.5, 127.5, 127.5), "pixel_std": (63.75, 63.75, 63.75)}
FCAM_BATCH = 16
#: Images per :meth:`FCAM.predict` call.
PREDICT_BATCH = 64


def fcam_source(ctx: SeedContext, name: str) -> Tuple[ToyClassifier, Source, Dict[str, Any]]:
    """The encoder, the source maps and the source's cache key for F-CAM over read-out ``name``.

    CAM and LPCAM decode the classifier; ReCAM and ReCAM+LPCAM decode the ReCAM-fine-tuned
    network (their maps come from its features). Source maps are max-normalised, 0 for absent classes.
    """
    if name == "CAM":
        weight = ctx.weight
        return ctx.model, lambda f, y: cam_map(f, weight.to(f.device)) * (y > 0)[:, :, None, None], {}
    if name == "LPCAM":
        estimator = fit_lpcam(ctx)
        return ctx.model, lambda f, y: estimator(f, y, fallback="cam"), {"lpcam": ctx.lpcam_overrides}
    tuned = fit_recam(ctx)
    key = {"recam": tuned.recam.config.training_settings()}
    if name == "ReCAM":
        return tuned.model, lambda f, y: tuned.recam(f, y), key
    if name == "ReCAM+LPCAM":
        estimator = fit_recam_lpcam(ctx)
        return (tuned.model, lambda f, y: estimator(f, y, fallback="cam", weight=tuned.recam.map_weight_),
                {**key, "lpcam": ctx.lpcam_overrides, "selection": ctx.recam_selection})
    raise ValueError(f"F-CAM has no source {name!r}; choose one of {FCAM_SOURCES}")


#: The read-outs F-CAM decodes in the benchmark.
FCAM_SOURCES = ("CAM", "LPCAM", "ReCAM", "ReCAM+LPCAM")


def fit_fcam(ctx: SeedContext, source_name: str) -> Tuple[FCAM, ToyClassifier]:
    """F-CAM's decoder trained over ``source_name``'s maps on the frozen encoder, and that encoder;
    cached in ``ctx.folder / "fcam_<source>.npz"`` under the classifier's key, the source and the settings."""
    model, source, source_key = fcam_source(ctx, source_name)
    fcam = FCAM(ctx.data.config.num_classes, "voc", progress=ctx.progress, seed=ctx.seed, **FCAM_DEMO_OVERRIDES)
    key = json.loads(json.dumps({**ctx.classifier_key, "source": source_name, "source_key": source_key,
                                 "fcam": fcam.config.to_dict(), "batch": FCAM_BATCH, "skip_layers": model.SKIP_LAYERS}))
    path = ctx.folder / f"fcam_{map_key(source_name)}.npz"
    if path.is_file():
        try:
            cached = FCAM.load(path, progress=ctx.progress)
        except ValueError as error:
            logger.warning("ignoring unreadable F-CAM file %s: %s", path, error)
        else:
            if cached.metadata.get("key") == key:
                return cached, model
    fcam.fit(model, ShuffledBatches(ctx.images, ctx.labels, FCAM_BATCH, ctx.seed), source=source,
             feature_layer=model.FEATURE_LAYER, skip_layers=list(model.SKIP_LAYERS))
    fcam.metadata = {"key": key}
    fcam.save(path)
    return fcam, model


def fcam_readout(ctx: SeedContext, source_name: str) -> torch.Tensor:
    """F-CAM over ``source_name``: the decoder's full-resolution class probabilities ``(N, C, S, S)``."""
    fcam, model = fit_fcam(ctx, source_name)
    last = fcam.loss_history_[-1] if fcam.loss_history_ else {}
    ctx.notes[f"F-CAM({source_name})"] = (f"last epoch: seg {last['seg']:.3f}, crf {last['crf']:.3f}, "
                                          f"size {last['size']:.3f}" if last else "")
    starts = range(0, ctx.images.shape[0], PREDICT_BATCH)
    return torch.cat([fcam.predict(model, ctx.images[i:i + PREDICT_BATCH], ctx.labels[i:i + PREDICT_BATCH])
                      for i in progress_bar(starts, progress=ctx.progress, desc=f"F-CAM({source_name}) maps",
                                            total=len(starts), leave=False)])


#: The benchmark's rows, in table order (append to add a method).
READOUTS: List[Readout] = [
    Readout("CAM", cam_readout, "classifier head on the features"),
    Readout("LPCAM-F", lpcam_f_readout, "LPCAM with class prototypes only"),
    Readout("LPCAM", lpcam_readout, "class prototypes minus context prototypes"),
    Readout("ReCAM", recam_readout, "softmax re-activation: fine-tuned backbone, W_sce ⊙ W_bce"),
    Readout("ReCAM+LPCAM", recam_lpcam_readout, "LPCAM on the ReCAM backbone, split by ReCAM maps, selected by the ReCAM selection weight"),
] + [Readout(f"F-CAM({name})", functools.partial(fcam_readout, source_name=name),
             f"F-CAM decoder over {name}'s maps, full resolution") for name in FCAM_SOURCES]


def map_key(name: str) -> str:
    """File-safe key of a read-out name (``maps.npz``): ``"ReCAM+LPCAM"`` -> ``"recam_lpcam"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def select_readouts(names: Optional[Sequence[str]] = None) -> List[Readout]:
    """The read-outs named in ``names`` in :data:`READOUTS` order (all of them for ``None``).

    Raises ``ValueError`` for unknown names, and when two registered names share a :func:`map_key`.
    """
    known = [r.name for r in READOUTS]
    if len({map_key(name) for name in known}) != len(known):
        raise ValueError(f"READOUTS names must have distinct file keys (map_key): {known}")
    if names is None:
        return list(READOUTS)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown read-out(s) {unknown}; known: {known}")
    return [r for r in READOUTS if r.name in set(names)]
