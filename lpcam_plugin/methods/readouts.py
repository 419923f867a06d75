"""The one registry of read-outs: which maps a name means, what it needs, how its batch maps are made.

A *read-out* turns a classifier's features into class maps. The family has five that read a
trained classifier (CAM, LPCAM-F, LPCAM, ReCAM, ReCAM+LPCAM) and one that decodes another
read-out at full resolution (F-CAM over a *source*). Hosts, the benchmark, ``lpcam check-host``
and the command line all ask this module; adding a method means adding one :class:`ReadoutKind`
to :data:`READOUTS`.

Names are case-insensitive: ``"cam"`` and ``"CAM"`` are the same read-out, and F-CAM over a
source is written ``"F-CAM(CAM)"`` (tables) or ``"fcam"`` + ``source="cam"`` (host options);
:func:`parse` accepts both and returns the canonical pair.

>>> from lpcam_plugin.methods import readouts
>>> readouts.get("ReCAM+LPCAM").name
'recam+lpcam'
>>> readouts.parse("F-CAM(lpcam)")
('fcam', 'lpcam')
>>> readouts.label("fcam", "recam+lpcam")
'F-CAM(ReCAM+LPCAM)'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.methods.cam import cam_map

#: Batch maps: ``(features (B, D, h, w), labels (B, C)) -> (B, C, h, w)`` in [0, 1], absent classes 0.
#: What F-CAM decodes (:class:`lpcam_plugin.methods.fcam.estimator.FCAM` takes it as ``source``).
BatchMaps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ReadoutKind:
    """One read-out of the family.

    Attributes:
        name: the canonical, lower-case key (``"recam+lpcam"``): host options, files, caches.
        label: the display name in tables and figures (``"ReCAM+LPCAM"``).
        description: one line for tables and ``--help``.
        fits_prototypes: needs an LPCAM prototype bank fitted on data.
        fine_tunes: needs ReCAM's fine-tuning step (the maps come from the fine-tuned backbone).
        decodes: a decoder over another read-out (F-CAM), named by a source.
        fcam_source: may be the source F-CAM decodes.
    """

    name: str
    label: str
    description: str
    fits_prototypes: bool = False
    fine_tunes: bool = False
    decodes: bool = False
    fcam_source: bool = False


#: Every read-out, in table order.
READOUTS: Dict[str, ReadoutKind] = {kind.name: kind for kind in (
    ReadoutKind("cam", "CAM", "classifier head on the features", fcam_source=True),
    ReadoutKind("lpcam-f", "LPCAM-F", "LPCAM with class prototypes only", fits_prototypes=True),
    ReadoutKind("lpcam", "LPCAM", "class prototypes minus context prototypes", fits_prototypes=True,
                fcam_source=True),
    ReadoutKind("recam", "ReCAM", "softmax re-activation: fine-tuned backbone, W_sce ⊙ W_bce", fine_tunes=True,
                fcam_source=True),
    ReadoutKind("recam+lpcam", "ReCAM+LPCAM",
                "LPCAM on the ReCAM backbone, split by ReCAM maps, selected by the ReCAM selection weight",
                fits_prototypes=True, fine_tunes=True, fcam_source=True),
    ReadoutKind("fcam", "F-CAM", "F-CAM decoder over a source read-out's maps, full resolution", decodes=True),
)}

_FCAM_LABEL = re.compile(r"^\s*f-?cam\s*\(\s*(?P<source>[^()]+?)\s*\)\s*$", re.IGNORECASE)


def get(name: str) -> ReadoutKind:
    """The read-out called ``name`` (any case: ``"cam"``, ``"CAM"``); ``ValueError`` naming the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"a read-out name must be a string, got {type(name).__name__}")
    kind = READOUTS.get(name.strip().lower())
    if kind is None:
        raise ValueError(f"unknown read-out {name!r}; known: {names()}")
    return kind


def names(*, decodes: Optional[bool] = None, fcam_source: Optional[bool] = None) -> Tuple[str, ...]:
    """Canonical names in table order, optionally only those with the given properties."""
    return tuple(kind.name for kind in READOUTS.values()
                 if (decodes is None or kind.decodes == decodes)
                 and (fcam_source is None or kind.fcam_source == fcam_source))


def fcam_sources() -> Tuple[str, ...]:
    """The canonical names F-CAM may decode (``("cam", "lpcam", "recam", "recam+lpcam")``)."""
    return names(fcam_source=True)


def parse(text: str, source: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``(name, source)`` of a read-out written ``"F-CAM(CAM)"``, ``"fcam"`` + ``source``, or a plain name.

    The source is ``None`` for read-outs that decode nothing; ``ValueError`` for an unknown name,
    a decoder without a source, a source that cannot be decoded, or a source given to a read-out
    that decodes nothing.
    """
    match = _FCAM_LABEL.match(text) if isinstance(text, str) else None
    if match:
        if source is not None and get(source).name != get(match["source"]).name:
            raise ValueError(f"read-out {text!r} names source {match['source']!r} but source={source!r} was given")
        text, source = "fcam", match["source"]
    kind = get(text)
    if not kind.decodes:
        if source is not None:
            raise ValueError(f"read-out {kind.name!r} decodes no source; got source={source!r}")
        return kind.name, None
    if source is None:
        raise ValueError(f"read-out {kind.name!r} needs a source, one of {fcam_sources()}")
    source_kind = get(source)
    if not source_kind.fcam_source:
        raise ValueError(f"{kind.label} cannot decode {source_kind.label}; sources: {fcam_sources()}")
    return kind.name, source_kind.name


def label(name: str, source: Optional[str] = None) -> str:
    """Display name: ``"ReCAM+LPCAM"``, or ``"F-CAM(CAM)"`` for a decoder over a source."""
    name, source = parse(name, source)
    if source is None:
        return READOUTS[name].label
    return f"{READOUTS[name].label}({READOUTS[source].label})"


def linear_batch_maps(weight: torch.Tensor) -> BatchMaps:
    """CAM (and ReCAM with its map weight) as batch maps: ``relu(W_c . f)`` divided by its max +
    1e-5, absent classes 0. ``weight``: ``(C, D)``."""
    def maps(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = cam_map(features, weight.to(features.device), normalize=True)
        return out * (labels > 0).to(out)[:, :, None, None]
    return maps


def prototype_batch_maps(estimator: Callable[..., torch.Tensor], fallback_weight: torch.Tensor) -> BatchMaps:
    """LPCAM (fitted ``estimator``) as batch maps: ReLU'd, divided by its max + 1e-5, absent classes
    0; classes without prototypes fall back to the CAM of ``fallback_weight`` ``(C, D)``."""
    def maps(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = estimator(features, labels.float(), normalize=False, fallback="cam",
                        weight=fallback_weight.to(features.device))
        return max_normalize(out.float().clamp(min=0))
    return maps


__all__ = [
    "BatchMaps",
    "READOUTS",
    "ReadoutKind",
    "fcam_sources",
    "get",
    "label",
    "linear_batch_maps",
    "names",
    "parse",
    "prototype_batch_maps",
]
