"""The ``--lpcam_*`` options of the IRN-family CAM step and :class:`LPCAMOptions`, the one carrier
they are resolved into.

The entry points (``irn.run``, ``amn.run``, the patched workers) call
:meth:`LPCAMOptions.from_args` once on the host's ``args``; everything below them takes that
object. It holds the method options resolved against ``--lpcam_preset`` and the host values the
step reads (paths, scales, batch and crop sizes, workers), under the host's own attribute names.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from lpcam_plugin.adapters.common.methods import supported
from lpcam_plugin.adapters.common.options import str2bool
from lpcam_plugin.methods import readouts
from lpcam_plugin.methods.fcam.config import AUTO as FCAM_AUTO
from lpcam_plugin.methods.fcam.config import PRESETS as FCAM_PRESETS
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.lpcam.config import KMEANS_BACKENDS, PRESETS, LPCAMConfig
from lpcam_plugin.methods.lpcam.fit_images import FIT_SAMPLINGS
from lpcam_plugin.methods.recam.config import PRESETS as RECAM_PRESETS
from lpcam_plugin.methods.recam.config import ReCAMConfig

#: The registry read-outs the CAM step writes (``--lpcam_method``): every one but LPCAM-F (class
#: prototypes only), which no host step writes.
METHODS = supported(name for name in readouts.names() if name != "lpcam-f")
#: ``--lpcam_fcam_source`` values: the read-outs F-CAM may decode (:func:`readouts.fcam_sources`).
FCAM_SOURCES = readouts.fcam_sources()
#: Images per class used for fitting when not given: all on VOC, 100 on COCO
#: (docs/design/lpcam-spec.md, Defaults).
IMAGES_PER_CLASS = {"voc": None, "coco": 100}
#: How fit images are drawn when not given: every image of the fit list on VOC; the reference's
#: ``split_100`` draws on COCO (:mod:`lpcam_plugin.methods.lpcam.fit_images`). A cap given on
#: VOC draws ``"capped"``.
FIT_SAMPLING = {"voc": "all", "coco": "reference"}
#: ``args`` attributes of IRN's / AMN's ``run_sample.py`` carried by :class:`LPCAMOptions` (same
#: names; None when the namespace lacks them). ``cam_batch_size`` / ``cam_crop_size`` default to
#: the hosts' 16 / 512.
HOST_ARGS = ("voc12_root", "train_list", "cam_scales", "num_workers", "cam_network", "cam_weights_name", "cam_out_dir",
             "amn_network", "amn_weights_name", "amn_cam_out_dir", "ir_label_out_dir", "mscoco_root", "lpcam_out_dir",
             "coco14_root")

#: ReCAMConfig fields exposed as ``--lpcam_recam_<field>``: (type, help).
_RECAM_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "epochs": (int, "fine-tuning epochs"),
    "learning_rate": (float, "learning rate of W_sce (backbone and W_bce: 0.1 x)"),
    "loss_weight": (float, "lambda, weight of the softmax cross-entropy"),
    "map_weight": (str, "weight of the maps: sce*bce or bce"),
    "selection_weight": (str, "recam+lpcam selection weight: sce, bce or sce*bce"),
}
def _auto_or(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``"auto"`` (the setting derived from the data) or a ``kind`` value."""

    def parse(text: str) -> Any:
        return FCAM_AUTO if text == FCAM_AUTO else kind(text)

    parse.__name__ = f"auto or {kind.__name__}"
    return parse


#: FCAMConfig fields exposed as ``--lpcam_fcam_<field>``: (type, help).
_FCAM_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "epochs": (int, "decoder training epochs"),
    "learning_rate": (float, "decoder learning rate"),
    "bg_fraction": (_auto_or(float), "auto (below each image's Otsu threshold) or the lowest fraction of the "
                                     "source maps' max that may seed background"),
    "erosion_size": (_auto_or(int), "auto (the source's stride) or an odd erosion side in pixels"),
    "seed": (int, "seed of the decoder's initialisation, seed sampling and crops"),
}
#: LPCAMConfig fields exposed as ``--lpcam_<field>``: (type, help).
_CONFIG_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "num_clusters": (int, "K, centres per pool"),
    "split_threshold": (float, "tau_split on the max-normalised baseline CAM"),
    "class_threshold": (float, "tau_class for class prototypes"),
    "pool_cap": (int, "max local features kept per pool"),
    "kmeans_backend": (str, f"one of {KMEANS_BACKENDS}"),
    "kmeans_max_iter": (int, "K-means iteration cap"),
    "use_bias": (str2bool, "add the head bias to the selection logits"),
    "seed": (int, "seed of pool sampling and K-means"),
    "spill_dir": (str, "keep the pools in memory-mapped files in this folder"),
}


def add_lpcam_arguments(parser: argparse.ArgumentParser, *, preset: Optional[str] = None) -> argparse._ArgumentGroup:
    """Add the ``--lpcam_*`` options shared by the IRN and AMN adapters to ``parser``.

    Method options default to None, meaning "the value of ``--lpcam_preset``" (VOC or COCO
    defaults of the spec); ``preset`` sets the default of ``--lpcam_preset`` (None: the dataset
    the host reads, COCO for ``run_sample_coco.py``'s arguments, else VOC).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    voc, coco = PRESETS["voc"], PRESETS["coco"]
    group = parser.add_argument_group("LPCAM (lpcam_plugin)")
    group.add_argument("--lpcam_preset", default=preset, choices=sorted(PRESETS),
                       help="defaults of the method options below (default: the dataset the host reads: coco with "
                            "--mscoco_root, else voc)")
    for name, (kind, text) in _CONFIG_OPTIONS.items():
        group.add_argument(f"--lpcam_{name}", type=kind, default=None,
                           help=f"{text} (preset: voc {getattr(voc, name)!r}, coco {getattr(coco, name)!r})")
    group.add_argument("--lpcam_context_window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help=f"context prototype band (preset: voc {voc.context_window}, coco {coco.context_window})")
    group.add_argument("--lpcam_fit_list", default=None,
                       help="image list whose features are clustered (default: VOC train, voc12/train.txt, as the "
                            "reference; on AMN's coco14 the train list; the reference's COCO pipeline has no lists)")
    group.add_argument("--lpcam_images_per_class", type=int, default=None,
                       help="fit images per class (preset: voc all, coco 100)")
    group.add_argument("--lpcam_fit_sampling", default=None, choices=FIT_SAMPLINGS,
                       help="how fit images are drawn: all, capped (a seeded cap per class, each image feeding all "
                            "its classes) or reference (the LPCAM reference's COCO split_100: per class, draws with "
                            "replacement, seed 666) (preset: voc all, or capped with a cap; coco reference)")
    group.add_argument("--lpcam_bank", default=None,
                       help="prototype bank file (default: next to the CAM weights, *.lpcam_bank.npz)")
    group.add_argument("--lpcam_baseline_dir", default=None,
                       help="folder of the host's own CAM files used as baseline when they exist "
                            "(default: the host's CAM output folder); needs --lpcam_allow_pickle")
    group.add_argument("--lpcam_allow_pickle", type=str2bool, default=False,
                       help="allow reading the host's pickled CAM files as baseline")
    group.add_argument("--lpcam_device", default="auto",
                       help="'auto' (CUDA when available, one GPU per worker), 'cpu', 'cuda', 'cuda:1' ...")
    group.add_argument("--lpcam_loader_workers", type=int, default=None,
                       help="DataLoader workers per process (default: the host's num_workers // #processes)")
    group.add_argument("--lpcam_progress", type=str2bool, default=None,
                       help="progress bars (default: only on a terminal)")
    group.add_argument("--lpcam_method", default="lpcam", choices=METHODS,
                       help="maps to write: lpcam, cam, recam (ReCAM step, then its maps), recam+lpcam "
                            "(LPCAM on the ReCAM backbone, split by ReCAM maps) or fcam (F-CAM decoder trained "
                            "on --lpcam_fcam_source maps, full resolution) (default: %(default)s)")
    recam_voc, recam_coco = RECAM_PRESETS["voc"], RECAM_PRESETS["coco"]
    for name, (kind, text) in _RECAM_OPTIONS.items():
        group.add_argument(f"--lpcam_recam_{name}", type=kind, default=None,
                           help=f"ReCAM step: {text} (preset: voc {getattr(recam_voc, name)!r}, "
                                f"coco {getattr(recam_coco, name)!r})")
    group.add_argument("--lpcam_recam_batch_size", type=int, default=None,
                       help="ReCAM step: batch size over all processes (default: the host's cam_batch_size, 16)")
    group.add_argument("--lpcam_recam_crop_size", type=int, default=None,
                       help="ReCAM step: random crop size (default: the host's cam_crop_size, 512)")
    group.add_argument("--lpcam_auto_threshold", type=str2bool, default=False,
                       help="after writing the maps, choose the background threshold without masks (the host CAM's "
                            "Otsu share; docs/evaluation.md), write it to <out dir>/lpcam_threshold.json and set "
                            "args.cam_eval_thres to it (run(args) and torchrun only; default: %(default)s)")
    group.add_argument("--lpcam_fcam_source", default="cam", choices=FCAM_SOURCES,
                       help="F-CAM: the read-out whose maps seed the decoder (default: %(default)s)")
    fcam_voc, fcam_coco = FCAM_PRESETS["voc"], FCAM_PRESETS["coco"]
    for name, (kind, text) in _FCAM_OPTIONS.items():
        group.add_argument(f"--lpcam_fcam_{name}", type=kind, default=None,
                           help=f"F-CAM: {text} (preset: voc {getattr(fcam_voc, name)!r}, "
                                f"coco {getattr(fcam_coco, name)!r})")
    group.add_argument("--lpcam_fcam_decoder_channels", type=int, nargs="+", default=None, metavar="C",
                       help=f"F-CAM: decoder block widths, deepest first (preset: {list(fcam_voc.decoder_channels)})")
    group.add_argument("--lpcam_fcam_batch_size", type=int, default=None,
                       help="F-CAM: batch size over all processes (default: the host's cam_batch_size, 16)")
    group.add_argument("--lpcam_fcam_crop_size", type=int, default=None,
                       help="F-CAM: random crop size (default: the host's cam_crop_size, 512)")
    return group


@dataclass(frozen=True)
class LPCAMOptions:
    """The ``--lpcam_*`` options resolved against the preset (see :func:`add_lpcam_arguments`) and
    the host values of :data:`HOST_ARGS`, under the host's attribute names.

    ``bank`` is ``--lpcam_bank`` (IRN, AMN route a); ``amn_bank`` is AMN's ``--lpcam_amn_bank``
    (route b). ``cam_batch_size`` / ``cam_crop_size`` are the host's, the defaults of the ReCAM
    and F-CAM steps' own sizes (:meth:`recam_batch` ...).
    """

    config: LPCAMConfig
    preset: str = "voc"
    fit_list: Optional[str] = None
    images_per_class: Optional[int] = None
    fit_sampling: str = "all"
    bank: Optional[str] = None
    amn_bank: Optional[str] = None
    baseline_dir: Optional[str] = None
    allow_pickle: bool = False
    device: str = "auto"
    loader_workers: Optional[int] = None
    progress: Optional[bool] = None
    method: str = "lpcam"
    recam: ReCAMConfig = ReCAMConfig()
    recam_batch_size: Optional[int] = None
    recam_crop_size: Optional[int] = None
    fcam: FCAMConfig = FCAMConfig()
    fcam_source: str = "cam"
    fcam_batch_size: Optional[int] = None
    fcam_crop_size: Optional[int] = None
    auto_threshold: bool = False
    voc12_root: Optional[str] = None
    train_list: Optional[str] = None
    cam_scales: Optional[Tuple[float, ...]] = None
    num_workers: Optional[int] = None
    cam_network: Optional[str] = None
    cam_weights_name: Optional[str] = None
    cam_out_dir: Optional[str] = None
    cam_batch_size: int = 16
    cam_crop_size: int = 512
    amn_network: Optional[str] = None
    amn_weights_name: Optional[str] = None
    amn_cam_out_dir: Optional[str] = None
    ir_label_out_dir: Optional[str] = None
    mscoco_root: Optional[str] = None
    lpcam_out_dir: Optional[str] = None
    coco14_root: Optional[str] = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, dataset: str = "voc") -> "LPCAMOptions":
        """Read the options from ``args``; missing attributes (no ``add_arguments``) take defaults.

        ``dataset``: the dataset the host reads (``"voc"`` / ``"coco"``), the preset unless
        ``--lpcam_preset`` names one.
        """
        preset = getattr(args, "lpcam_preset", None) or dataset
        overrides = {name: getattr(args, f"lpcam_{name}") for name in _CONFIG_OPTIONS
                     if getattr(args, f"lpcam_{name}", None) is not None}
        window = getattr(args, "lpcam_context_window", None)
        if window is not None:
            overrides["context_window"] = tuple(window)
        config = LPCAMConfig.preset(preset, **overrides)
        per_class = getattr(args, "lpcam_images_per_class", None)
        if per_class is None:
            per_class = IMAGES_PER_CLASS.get(preset)
        if per_class is not None and per_class < 1:
            raise ValueError(f"lpcam_images_per_class must be >= 1, got {per_class}")
        sampling = getattr(args, "lpcam_fit_sampling", None)
        if sampling is None:  # the preset's, capped when a cap is given on VOC
            sampling = FIT_SAMPLING[preset]
            if sampling == "all" and getattr(args, "lpcam_images_per_class", None) is not None:
                sampling = "capped"
        if sampling not in FIT_SAMPLINGS:
            raise ValueError(f"lpcam_fit_sampling must be one of {FIT_SAMPLINGS}, got {sampling!r}")
        if sampling != "all" and per_class is None:
            raise ValueError(f"lpcam_fit_sampling {sampling!r} needs lpcam_images_per_class")
        method = getattr(args, "lpcam_method", None) or "lpcam"
        check_method(method)
        recam = ReCAMConfig.preset(preset, **{name: getattr(args, f"lpcam_recam_{name}") for name in _RECAM_OPTIONS
                                              if getattr(args, f"lpcam_recam_{name}", None) is not None})
        fcam_source = getattr(args, "lpcam_fcam_source", None) or "cam"
        if fcam_source not in FCAM_SOURCES:
            raise ValueError(f"lpcam_fcam_source must be one of {FCAM_SOURCES}, got {fcam_source!r}")
        fcam_overrides = {name: getattr(args, f"lpcam_fcam_{name}") for name in _FCAM_OPTIONS
                          if getattr(args, f"lpcam_fcam_{name}", None) is not None}
        if getattr(args, "lpcam_fcam_decoder_channels", None) is not None:
            fcam_overrides["decoder_channels"] = tuple(args.lpcam_fcam_decoder_channels)
        fcam = FCAMConfig.preset(preset, **fcam_overrides)
        for name in ("fcam_batch_size", "fcam_crop_size"):
            value = getattr(args, f"lpcam_{name}", None)
            if value is not None and value < 1:
                raise ValueError(f"lpcam_{name} must be >= 1, got {value}")
        scales = getattr(args, "cam_scales", None)
        host = {name: getattr(args, name, None) for name in HOST_ARGS}
        host["cam_scales"] = None if scales is None else tuple(scales)
        return cls(config=config, preset=preset,
                   fit_list=getattr(args, "lpcam_fit_list", None),
                   images_per_class=per_class, fit_sampling=sampling, bank=getattr(args, "lpcam_bank", None),
                   amn_bank=getattr(args, "lpcam_amn_bank", None),
                   baseline_dir=getattr(args, "lpcam_baseline_dir", None),
                   allow_pickle=bool(getattr(args, "lpcam_allow_pickle", False)),
                   device=getattr(args, "lpcam_device", None) or "auto",
                   loader_workers=getattr(args, "lpcam_loader_workers", None),
                   progress=getattr(args, "lpcam_progress", None), method=method, recam=recam,
                   recam_batch_size=getattr(args, "lpcam_recam_batch_size", None),
                   recam_crop_size=getattr(args, "lpcam_recam_crop_size", None), fcam=fcam,
                   fcam_source=fcam_source, fcam_batch_size=getattr(args, "lpcam_fcam_batch_size", None),
                   fcam_crop_size=getattr(args, "lpcam_fcam_crop_size", None),
                   auto_threshold=bool(getattr(args, "lpcam_auto_threshold", False)),
                   cam_batch_size=getattr(args, "cam_batch_size", 16),
                   cam_crop_size=getattr(args, "cam_crop_size", 512),
                   **host)

    def workers(self, n_procs: int = 1) -> int:
        """DataLoader workers per process: ``--lpcam_loader_workers``, else the hosts' rule
        ``num_workers // #processes`` (in spawned workers each loader worker is a fresh interpreter)."""
        if self.loader_workers is not None:
            return max(self.loader_workers, 0)
        return max(int(self.num_workers or 0) // max(n_procs, 1), 0)

    def recam_batch(self) -> int:
        """The ReCAM step's batch over all processes: ``--lpcam_recam_batch_size``, else ``cam_batch_size``."""
        return self.recam_batch_size or int(self.cam_batch_size)

    def recam_crop(self) -> int:
        """The ReCAM step's crop: ``--lpcam_recam_crop_size``, else ``cam_crop_size``."""
        return self.recam_crop_size or int(self.cam_crop_size)

    def fcam_batch(self) -> int:
        """The F-CAM decoder's batch over all processes: ``--lpcam_fcam_batch_size``, else ``cam_batch_size``."""
        return self.fcam_batch_size or int(self.cam_batch_size)

    def fcam_crop(self) -> int:
        """The F-CAM decoder's crop: ``--lpcam_fcam_crop_size``, else ``cam_crop_size``."""
        return self.fcam_crop_size or int(self.cam_crop_size)

    def scales(self) -> Sequence[float]:
        """``cam_scales`` (required from here on)."""
        if self.cam_scales is None:
            raise ValueError("args.cam_scales is missing: pass the host's run_sample.py arguments")
        return self.cam_scales


#: What the host helpers read host values from by attribute name: the resolved
#: :class:`LPCAMOptions` (what the adapter passes) or the host's own ``args`` namespace.
HostValues = Union[LPCAMOptions, argparse.Namespace]


def check_method(method: str) -> None:
    """``ValueError`` unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"lpcam_method must be one of {METHODS}, got {method!r}")


__all__ = ["FCAM_SOURCES", "FIT_SAMPLING", "HOST_ARGS", "HostValues", "IMAGES_PER_CLASS", "LPCAMOptions", "METHODS",
           "add_lpcam_arguments", "check_method"]
