"""``lpcam demo``: the synthetic WSSS benchmark that judges the CAM family on the same data and seeds.

Per seed the data set is generated once (:mod:`lpcam_plugin.benchmark.synthetic`); per
(network, seed) :func:`~lpcam_plugin.benchmark.run.run_seed` trains the classifier
(:mod:`lpcam_plugin.benchmark.training`; a cached checkpoint is reused when data, schedule and
architecture match), extracts its features, lets every row of
:data:`~lpcam_plugin.benchmark.readouts.READOUTS` compute maps ``(N, C, h, w)`` for the training
images, and sweeps the background threshold (:func:`lpcam_plugin.core.evaluate.sweep`). Results
are averaged over seeds per network (:mod:`lpcam_plugin.benchmark.report`) and drawn
(:mod:`lpcam_plugin.benchmark.figures`). What a run is: :mod:`lpcam_plugin.benchmark.config`;
the command: :mod:`lpcam_plugin.cli.demo`. This module ties them together (:func:`run_demo`).

Output folder::

    report.md                       per network: FP, FN, mIoU, precision, recall at each method's best t
                                    (mean ± std over seeds), targets, diagnostics, per-seed rows, wall times,
                                    and the figures below embedded
    results.json                    every number in report.md plus the mIoU curves per seed
    threshold_curve_<network>.png   mIoU vs background threshold, one line per method, mean ± std over seeds
    overlays_<network>.png          first seed: image | each method's map; GT | each method's seed mask
    <network>/seed<N>/classifier.pt checkpoint (torch.load(weights_only=True))
    <network>/seed<N>/prototypes.npz the LPCAM prototype bank (PrototypeBank.load)
    <network>/seed<N>/maps.npz      every read-out's maps at feature resolution, float16, (N, C, h, w)
    <network>/seed<N>/export/       first network, first seed: LPCAM as EDAM/MCTformer {class: map} .npy
                                    dicts, GT PNGs and train.txt, so that ``lpcam eval`` reproduces that row
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from lpcam_plugin.benchmark.config import (
    BOTTLENECK,
    BOTTLENECK_PSS,
    NETWORK_PRESETS,
    TOYRESNET,
    TOYRESNET_PSS,
    DemoConfig,
    NetworkConfig,
    SeedResult,
    pixelsup_overrides,
    pixelsup_pairs,
)
from lpcam_plugin.benchmark.figures import write_figures
from lpcam_plugin.benchmark.readouts import select_readouts
from lpcam_plugin.benchmark.report import render_report, reproduce_note, summarize, write_results
from lpcam_plugin.benchmark.run import run_seed
from lpcam_plugin.benchmark.synthetic import SyntheticDataset, generate
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.progress import progress_bar

logger = logging.getLogger(__name__)


def run_demo(config: DemoConfig, out: Path, *, progress: Optional[bool] = None, figures: bool = True,
             command: str = "lpcam demo") -> Dict[str, Dict[str, Any]]:
    """Run every (network, seed), write ``report.md``, ``results.json`` and (with ``figures``) the PNGs.

    Returns ``{network name: summarize(...)}``.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    select_readouts(config.methods)  # fail on unknown names before any training
    results: Dict[str, List[SeedResult]] = {n.name: [] for n in config.networks}
    shown: Dict[str, Tuple[SyntheticDataset, Dict[str, torch.Tensor]]] = {}
    for k, seed in enumerate(progress_bar(config.seeds, progress=progress, desc="seeds", total=len(config.seeds))):
        data = generate(dataclasses.replace(config.data, seed=seed), progress=progress)
        for j, network in enumerate(config.networks):
            result, maps = run_seed(network, data, config, out, progress=progress,
                                    export=config.export_host_files and k == 0 and j == 0)
            logger.info("%s seed %d: %s (%.0f s)", network.name, seed,
                        ", ".join(f"{m} mIoU {100 * s.best['miou']:.1f}" for m, s in result.sweeps.items()),
                        result.seconds["total"])
            results[network.name].append(result)
            if network.name not in shown:
                shown[network.name] = (data, maps)
    summaries = {name: summarize(rs, config.curve_window) for name, rs in results.items()}
    if figures:
        write_figures(out, config, results, shown)
    seconds = time.perf_counter() - start
    report = (render_report(summaries, results, config, command, seconds, figures)
              + reproduce_note(config, summaries, out))
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text(report)
    write_results(out / "results.json", config, seconds, summaries, results)
    return summaries


__all__ = ["BOTTLENECK", "BOTTLENECK_PSS", "NETWORK_PRESETS", "TOYRESNET", "TOYRESNET_PSS", "DemoConfig",
           "NetworkConfig", "SeedResult", "pixelsup_overrides", "pixelsup_pairs", "render_report", "run_demo",
           "run_seed", "summarize"]
