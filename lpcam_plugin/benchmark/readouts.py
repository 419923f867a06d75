"""The benchmark's rows: how ``lpcam demo`` computes each read-out of the registry on one (network, seed).

The read-outs themselves (names, display labels, descriptions, which ones F-CAM decodes) are
the registry's, :mod:`lpcam_plugin.methods.readouts`; this module says how the benchmark makes
their maps from what one (network, seed) run has — the trained classifier, its features, the
labels, the data, a folder for caches (:class:`SeedContext`) — and lists them as rows of the
table in registry order (:data:`READOUTS`, one :class:`BenchmarkRow` per read-out and per F-CAM
source). A row's maps are ``(N, C, h, w)`` at feature resolution (F-CAM: at the image's),
non-negative, zero for each image's absent classes (the demo max-normalises and upsamples them
bilinearly per image before the threshold sweep, so the scale of a map does not matter).

The maps of the read-outs that read a classifier are the registry's batch maps
(:func:`~lpcam_plugin.methods.readouts.linear_batch_maps` for CAM and ReCAM,
:func:`~lpcam_plugin.methods.readouts.prototype_batch_maps` for the LPCAM variants) over
:func:`readout_inputs`, which are also what F-CAM decodes. A row for a method outside the
registry (e.g. one being tried) is one function and one line::

    def half_cam(ctx: SeedContext) -> torch.Tensor:
        return 0.5 * cam_readout(ctx)                                # (N, C, h, w)

    READOUTS.append(BenchmarkRow("Half-CAM", half_cam, "half the CAM"))

Rows share work through :meth:`SeedContext.memo` (in memory, for this (network, seed)) and
through files in :attr:`SeedContext.folder` (across runs; e.g. a fine-tuned network through
:func:`~lpcam_plugin.benchmark.training.load_or_train` keyed by ``ctx.classifier_key``; ``lpcam demo
--retrain`` deletes the ``*.pt`` and ``fcam_*.npz`` files of the seed folders). They must
not modify ``ctx.model``, ``ctx.features`` or ``ctx.labels`` in place (fine-tune a ``copy.deepcopy``).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from lpcam_plugin.benchmark.fits import (
    SeedContext,
    ShuffledBatches,
    fit_lpcam,
    fit_recam,
    fit_recam_lpcam,
    prototype_note,
)
from lpcam_plugin.benchmark.probes import background_prototype_share
from lpcam_plugin.benchmark.synthetic import PIXEL_MEAN, PIXEL_STD
from lpcam_plugin.benchmark.toynet import ToyClassifier
from lpcam_plugin.core.identity import value_digest
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods import readouts as registry
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.readouts import BatchMaps, linear_batch_maps, prototype_batch_maps

logger = logging.getLogger(__name__)


#: A row's computation: the context in, maps ``(N, C, h, w)`` out.
ReadoutFn = Callable[[SeedContext], torch.Tensor]


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of the benchmark table: its display name, the function computing its maps, and the
    registry read-out it is (``kind``, canonical, and ``source`` for F-CAM; None for a row of a
    method outside the registry)."""

    name: str
    compute: ReadoutFn
    description: str = ""
    kind: Optional[str] = None
    source: Optional[str] = None


class ReadoutInputs(NamedTuple):
    """What a registry read-out's maps are made of on one (network, seed).

    Attributes:
        encoder: the network whose features the maps read (the classifier, or its ReCAM-fine-tuned copy);
            F-CAM decodes on it.
        features: its ``(N, D, h, w)`` features of the training images.
        maps: the read-out as batch maps (``(features, labels) -> (B, C, h, w)`` in [0, 1], absent classes 0).
        key: what the maps depend on beyond the classifier (part of F-CAM's cache key).
    """

    encoder: ToyClassifier
    features: torch.Tensor
    maps: BatchMaps
    key: Dict[str, Any]


def readout_inputs(ctx: SeedContext, name: str) -> ReadoutInputs:
    """The encoder, features, batch maps and cache key of registry read-out ``name`` (any spelling).

    CAM and the LPCAM variants read the classifier; ReCAM and ReCAM+LPCAM the ReCAM-fine-tuned
    network. The batch maps are the registry's, fitted here: CAM of the head / ReCAM of its map
    weight (:func:`~lpcam_plugin.methods.readouts.linear_batch_maps`); LPCAM (class prototypes
    only for LPCAM-F) with the CAM of that weight for classes without prototypes
    (:func:`~lpcam_plugin.methods.readouts.prototype_batch_maps`). They give bit for bit the maps
    of the estimators' own calls (``LPCAM(...)(f, y, fallback="cam")``, ``ReCAM(...)(f, y)``).
    """
    kind = registry.get(name)
    if kind.decodes:
        raise ValueError(f"{kind.label} decodes another read-out; its maps come from fcam_readout")
    encoder, features, weight, key = ctx.model, ctx.features, ctx.weight, {}
    if kind.fine_tunes:
        tuned = fit_recam(ctx)
        encoder, features, weight = tuned.model, tuned.features, tuned.recam.map_weight_
        key = {"recam": tuned.recam.config.training_settings()}
    if not kind.fits_prototypes:
        return ReadoutInputs(encoder, features, linear_batch_maps(weight), key)
    if kind.fine_tunes:
        estimator = fit_recam_lpcam(ctx)
        key = {**key, "lpcam": ctx.lpcam_overrides, "selection": ctx.recam_selection}
    elif kind.name == "lpcam-f":
        estimator = LPCAM.from_bank(fit_lpcam(ctx).bank_.without_context(), progress=ctx.progress)
        key = {"lpcam": ctx.lpcam_overrides, "context_prototypes": False}
    else:
        estimator = fit_lpcam(ctx)
        key = {"lpcam": ctx.lpcam_overrides}
    return ReadoutInputs(encoder, features, prototype_batch_maps(estimator, weight), key)


def _maps(ctx: SeedContext, name: str) -> torch.Tensor:
    """Registry read-out ``name``'s maps ``(N, C, h, w)`` of the training images."""
    inputs = readout_inputs(ctx, name)
    return inputs.maps(inputs.features, ctx.labels)


def cam_readout(ctx: SeedContext) -> torch.Tensor:
    """CAM: ``relu(W_c . f)`` of the classifier head, zero for absent classes."""
    return _maps(ctx, "cam")


def lpcam_f_readout(ctx: SeedContext) -> torch.Tensor:
    """LPCAM-F: class prototypes only (``bank.without_context()``); CAM for classes without prototypes."""
    return _maps(ctx, "lpcam-f")


def lpcam_readout(ctx: SeedContext) -> torch.Tensor:
    """LPCAM: class minus context prototypes; CAM for classes without prototypes."""
    maps = _maps(ctx, "lpcam")
    estimator = fit_lpcam(ctx)
    ctx.notes["LPCAM"] = prototype_note(estimator.bank_)
    cams = linear_batch_maps(ctx.weight)(ctx.features, ctx.labels)
    ctx.probes["LPCAM"] = background_prototype_share(estimator.bank_, ctx.features, cams, ctx.labels, ctx.data.masks,
                                                     estimator.config.split_threshold)
    return maps


def recam_readout(ctx: SeedContext) -> torch.Tensor:
    """ReCAM: ``relu((W_sce ⊙ W_bce)_c . f)`` of the fine-tuned network's features."""
    return _maps(ctx, "recam")


def recam_lpcam_readout(ctx: SeedContext) -> torch.Tensor:
    """ReCAM+LPCAM: :func:`fit_recam_lpcam`'s maps; ReCAM maps for classes without prototypes."""
    maps = _maps(ctx, "recam+lpcam")
    ctx.notes["ReCAM+LPCAM"] = prototype_note(fit_recam_lpcam(ctx).bank_)
    return maps


#: F-CAM on the benchmark runs the VOC preset as a user gets it, with what a user must state: how the
#: images are normalised (the demo's :data:`~lpcam_plugin.benchmark.synthetic.PIXEL_MEAN` and ``PIXEL_STD``
#: on [0, 1], here in 0-255 units) and the epochs the CPU affords (:attr:`DemoConfig.fcam_epochs
#: <lpcam_plugin.benchmark.config.DemoConfig.fcam_epochs>`). The preset's rules derive the rest from the
#: data: the CRF's reach from the image side, the seed budget from epochs x images, the erosion from the
#: source's stride, the background from each image's Otsu threshold (docs/methods/fcam.md).
FCAM_NORMALISATION: Dict[str, Any] = {"pixel_mean": (255 * PIXEL_MEAN,) * 3, "pixel_std": (255 * PIXEL_STD,) * 3}
FCAM_BATCH = 16
#: Images per :meth:`FCAM.predict` call.
PREDICT_BATCH = 64


def fit_fcam(ctx: SeedContext, source: str) -> Tuple[FCAM, ToyClassifier]:
    """F-CAM's decoder trained over read-out ``source``'s maps on the frozen encoder, and that encoder;
    cached in ``ctx.folder / "fcam_<source>.npz"`` under the classifier's key, the source and the settings."""
    label = registry.label(registry.parse("fcam", source)[1])  # the cache key names the source by its label
    model, _, maps, source_key = readout_inputs(ctx, source)
    given = {name: value for name, value in (("crf_kernel", ctx.fcam_crf_kernel), ("epochs", ctx.fcam_epochs))
             if value is not None}
    fcam = FCAM(ctx.data.config.num_classes, "voc", progress=ctx.progress, seed=ctx.seed, **FCAM_NORMALISATION,
                **given)
    key = json.loads(json.dumps({**ctx.classifier_key, "source": label, "source_key": source_key,
                                 "source_sha256": value_digest(maps),
                                 "validation_sha256": None if ctx.validation is None else value_digest(ctx.validation),
                                 "fcam": fcam.config.to_dict(), "batch": FCAM_BATCH, "skip_layers": model.SKIP_LAYERS}))
    path = ctx.folder / f"fcam_{map_key(label)}.npz"
    if path.is_file():
        try:
            cached = FCAM.load(path, progress=ctx.progress)
        except ValueError as error:
            logger.warning("ignoring unreadable F-CAM file %s: %s", path, error)
        else:
            if cached.metadata.get("key") == key:
                return cached, model
    fcam.fit(model, ShuffledBatches(ctx.images, ctx.labels, FCAM_BATCH, ctx.seed), source=maps,
             feature_layer=model.FEATURE_LAYER, skip_layers=list(model.SKIP_LAYERS), validation=ctx.validation)
    fcam.metadata = {"key": key}
    fcam.save(path)
    return fcam, model


def fcam_readout(ctx: SeedContext, source: str) -> torch.Tensor:
    """F-CAM over read-out ``source``: the decoder's full-resolution class probabilities ``(N, C, S, S)``."""
    fcam, model = fit_fcam(ctx, source)
    last = fcam.loss_history_[-1] if fcam.loss_history_ else {}
    name = registry.label("fcam", source)
    derived = fcam.seed_settings_
    ctx.notes[name] = (f"last epoch: seg {last['seg']:.3f}, crf {last['crf']:.3f}, "
                       f"size {last['size']:.3f}" if last else "")
    if derived:
        ctx.notes[name] += (f"; seeds per region and step {derived['fg_samples']} "
                            f"(budget x{derived['sample_factor']}), erosion {derived['erosion_size']} px, "
                            f"sigma_xy {derived['crf_sigma_xy']:.1f} px")
    if fcam.selection_:
        ctx.notes[name] += "; bg_fraction chosen on the validation split: " + ", ".join(
            f"{entry['settings']['bg_fraction']} {100 * entry['miou']:.1f}" for entry in fcam.selection_)
    starts = range(0, ctx.images.shape[0], PREDICT_BATCH)
    return torch.cat([fcam.predict(model, ctx.images[i:i + PREDICT_BATCH], ctx.labels[i:i + PREDICT_BATCH])
                      for i in progress_bar(starts, progress=ctx.progress, desc=f"{name} maps",
                                            total=len(starts), leave=False)])


#: How the benchmark computes each registry read-out that reads a classifier (F-CAM: :func:`fcam_readout`).
_COMPUTE: Dict[str, ReadoutFn] = {"cam": cam_readout, "lpcam-f": lpcam_f_readout, "lpcam": lpcam_readout,
                                  "recam": recam_readout, "recam+lpcam": recam_lpcam_readout}


def _registry_rows() -> List[BenchmarkRow]:
    """A row per registry read-out, in registry order; a decoder gets a row per source it may decode."""
    rows: List[BenchmarkRow] = []
    for name in registry.names():
        kind = registry.get(name)
        if kind.decodes:
            rows += [BenchmarkRow(registry.label(name, source), functools.partial(fcam_readout, source=source),
                                  kind.description, name, source) for source in registry.fcam_sources()]
        elif name in _COMPUTE:
            rows.append(BenchmarkRow(kind.label, _COMPUTE[name], kind.description, name))
        else:
            raise LookupError(f"the benchmark has no computation for read-out {name!r}; add one to _COMPUTE")
    return rows


#: The benchmark's rows, in table order: every read-out of the registry (append a row to try a method).
READOUTS: List[BenchmarkRow] = _registry_rows()


def map_key(name: str) -> str:
    """File-safe key of a row name (``maps.npz``): ``"ReCAM+LPCAM"`` -> ``"recam_lpcam"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def row_name(text: str) -> str:
    """The row name ``text`` means: a row's name as is, or a registry spelling (``"lpcam"``,
    ``"f-cam(recam)"``) as its display label; anything else unchanged."""
    if text in {r.name for r in READOUTS}:
        return text
    try:
        return registry.label(*registry.parse(text))
    except (TypeError, ValueError):
        return text


def select_readouts(names: Optional[Sequence[str]] = None) -> List[BenchmarkRow]:
    """The rows named in ``names`` (row names or registry spellings) in :data:`READOUTS` order (all for ``None``).

    Raises ``ValueError`` for unknown names, and when two rows share a :func:`map_key`.
    """
    known = [r.name for r in READOUTS]
    if len({map_key(name) for name in known}) != len(known):
        raise ValueError(f"READOUTS names must have distinct file keys (map_key): {known}")
    if names is None:
        return list(READOUTS)
    wanted = {row_name(name) for name in names}
    unknown = sorted(name for name in set(names) if row_name(name) not in known)
    if unknown:
        raise ValueError(f"unknown read-out(s) {unknown}; known: {known}")
    return [r for r in READOUTS if r.name in wanted]
