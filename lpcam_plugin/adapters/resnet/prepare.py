"""Preparing what the IRN-family CAM step writes: the network to run and the
:class:`~lpcam_plugin.adapters.resnet.readouts.HostReadout` of ``--lpcam_method``.

The method is a registry name (:mod:`lpcam_plugin.methods.readouts`); what it needs follows from
its registry entry: a decoder over a source (F-CAM: the source's preparation, then the decoder
step), ReCAM's fine-tuning step (the maps come from the fine-tuned backbone), a prototype bank
(fitted on the host's or ReCAM's baseline), or none of these (the head's CAM).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from lpcam_plugin.adapters.resnet.bank import FitSource, obtain_bank
from lpcam_plugin.adapters.resnet.fcam_step import HostStages, obtain_fcam
from lpcam_plugin.adapters.resnet.host import HostSpec, load_host_model, prepare_model
from lpcam_plugin.adapters.resnet.options import LPCAMOptions, check_method
from lpcam_plugin.adapters.resnet.readouts import HostReadout, fcam_render, host_maps, linear_readout, lpcam_readout
from lpcam_plugin.adapters.resnet.recam_step import obtain_recam, recam_files
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.methods import readouts
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.recam.estimator import ReCAM

logger = logging.getLogger(__name__)


def _check_method(spec: HostSpec, opts: LPCAMOptions) -> None:
    check_method(opts.method)
    if opts.method not in spec.methods:
        raise ValueError(f"the {spec.name} CAM step cannot write --lpcam_method {opts.method}: {spec.methods_note}")


def _recam(spec: HostSpec, opts: LPCAMOptions, device: torch.device, process_id: int,
           n_procs: int) -> Tuple[ReCAM, Path]:
    """The ReCAM step of this run (trained by process 0, reused when its files match)."""
    recam = ReCAM(spec.dataset.num_classes, config=opts.recam, progress=opts.progress)
    return obtain_recam(opts, spec.dataset, spec.weights_path(opts), recam, device, batch_size=opts.recam_batch(),
                        crop_size=opts.recam_crop(), workers=opts.workers(n_procs), train=process_id == 0,
                        network_kwargs=spec.model_kwargs)


def _host_fit_source(spec: HostSpec, model: nn.Module, opts: LPCAMOptions) -> FitSource:
    """LPCAM on the host network: split by the host's own CAM, selection by its head."""
    weight, bias, description = spec.selection_weight(model)
    return FitSource(weights=Path(spec.weights_path(opts)), weight=weight, bias=bias, description=description,
                     baseline=spec.host_cams, host_files=True, bank_path=spec.bank_path(opts), extra_key={})


def _recam_fit_source(spec: HostSpec, opts: LPCAMOptions, recam: ReCAM, weights: Path) -> FitSource:
    """LPCAM on the ReCAM backbone: split by ReCAM's maps (computed the host way), selection by
    ``recam.selection_weight_``; the bank goes next to the fine-tuned weights."""
    readout = HostReadout("recam", linear_readout(recam.map_weight_), {})

    def baseline(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
                 name: str, options: LPCAMOptions) -> torch.Tensor:
        classes: List[int] = torch.nonzero(label)[:, 0].tolist()
        return host_maps(model, readout, stacks, classes, size, high_res_direct=spec.high_res_direct)[1]

    bank_path = Path(opts.bank) if opts.bank else weights.with_suffix(".lpcam_bank.npz")
    return FitSource(weights=weights, weight=recam.selection_weight_, bias=None,
                     description=f"ReCAM selection weight ({recam.config.selection_weight})", baseline=baseline,
                     host_files=False, bank_path=bank_path,
                     extra_key={"split": f"ReCAM maps ({recam.config.map_weight})"})


def prepare_readout(spec: HostSpec, model: Optional[nn.Module], opts: LPCAMOptions, device: torch.device, *,
                    process_id: int = 0, n_procs: int = 1) -> Tuple[nn.Module, HostReadout]:
    """The network to run and the read-out to write for ``opts.method``.

    ``model``: the host's network already built by the host step (patched workers), or None to
    load it here. Read-outs that fine-tune first run (or reuse) the ReCAM step and load the
    fine-tuned weights into the network.
    """
    _check_method(spec, opts)
    kind = readouts.get(opts.method)
    if kind.decodes:
        return _fcam_readout(spec, model, opts, device, process_id=process_id, n_procs=n_procs)
    weights = Path(spec.weights_path(opts))
    recam = None
    if kind.fine_tunes:
        recam, weights = _recam(spec, opts, device, process_id, n_procs)
    if model is None:
        model = load_host_model(spec, opts, device, weights)
    else:
        if recam is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        model = prepare_model(model, device)
    if not kind.fits_prototypes:
        if recam is None:
            weight = spec.selection_weight(model)[0]
            key = {"method": kind.name, "checkpoint_sha256": file_sha256(weights)}
        else:
            weight = recam.map_weight_
            key = {"method": kind.name, "recam_sha256": file_sha256(recam_files(spec.weights_path(opts))["recam"])}
        return model, HostReadout(kind.name, linear_readout(weight), key, source=readouts.linear_batch_maps(weight))
    source = _host_fit_source(spec, model, opts) if recam is None else _recam_fit_source(spec, opts, recam, weights)
    bank = obtain_bank(spec, model, opts, device, source, process_id, n_procs)
    missing = bank.classes_without_prototypes
    if missing and process_id == 0:
        logger.warning("classes %s have no prototypes; their maps fall back to the plain CAM", missing)
    fallback = source.weight if recam is None else recam.map_weight_
    estimator = LPCAM.from_bank(bank, progress=False)
    key = {"method": kind.name, "bank_sha256": file_sha256(source.bank_path)}
    return model, HostReadout(kind.name, lpcam_readout(estimator, fallback), key,
                              source=readouts.prototype_batch_maps(estimator, fallback))


def _fcam_readout(spec: HostSpec, model: Optional[nn.Module], opts: LPCAMOptions, device: torch.device, *,
                  process_id: int = 0, n_procs: int = 1) -> Tuple[nn.Module, HostReadout]:
    """F-CAM over ``opts.fcam_source``: prepare that read-out (its network, bank or ReCAM step),
    train (or reuse) the decoder on its batch maps, and render full-resolution maps."""
    model, base = prepare_readout(spec, model, dataclasses.replace(opts, method=opts.fcam_source), device,
                                  process_id=process_id, n_procs=n_procs)
    assert base.source is not None
    encoder = HostStages(model)
    fcam = FCAM(spec.dataset.num_classes, config=opts.fcam, progress=opts.progress)
    fitted, path = obtain_fcam(opts, spec.dataset, spec.weights_path(opts), fcam, encoder, base.source,
                               opts.fcam_source, base.key,
                               batch_size=opts.fcam_batch(), crop_size=opts.fcam_crop(),
                               workers=opts.workers(n_procs), train=process_id == 0)
    key = {"method": opts.method, "source": opts.fcam_source, "fcam_sha256": file_sha256(path)}
    return model, HostReadout(opts.method, base.maps, key, render=fcam_render(fitted, encoder))


__all__ = ["prepare_readout"]
