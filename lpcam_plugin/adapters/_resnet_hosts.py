"""Machinery shared by the IRN and AMN adapters (AMN is an IRN fork: same data, CAM step and files).

Both hosts run a ResNet-50 ``CAM`` network over ``voc12.dataloader.VOC12ClassificationDatasetMSF``
items (``img``: one ``(2, 3, h_s, w_s)`` image + flip stack per scale, ``size`` (H, W), 20-d
``label``) and save one pickled dict ``{"keys", "cam", "high_res"}`` per image. This module holds
what does not depend on which of the two files is written:

- the LPCAM command-line options (``add_lpcam_arguments``) and their resolution from an ``args``
  namespace that may lack them (``LPCAMOptions.from_args``);
- fitting: host-way baseline CAMs (or the host's CAM files), single-scale unflipped ``stage4``
  features of the fit list, K-means and selection; the bank is saved with a fingerprint of what
  it was fitted from and reused only on an exact match (``obtain_bank``);
- writing: multi-scale + flip LPCAM maps in the host's geometry, atomic ``.npy`` writes, resume
  (``write_shard``), with a per-directory done log so that files written by LPCAM are never
  mistaken for host CAMs.

The host modules (``voc12.dataloader``, the network module) are imported from the user's fork
at call time; nothing here imports torchvision.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from lpcam_plugin.core.torchrun import init_from_env
from lpcam_plugin.adapters._fcam_step import SOURCES as FCAM_SOURCES
from lpcam_plugin.adapters._fcam_step import HostStages, fcam_maps, obtain_fcam
from lpcam_plugin.adapters._recam_step import obtain_recam, recam_files
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.config import KMEANS_BACKENDS, PRESETS, LPCAMConfig
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.fcam.config import PRESETS as FCAM_PRESETS
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.recam.config import PRESETS as RECAM_PRESETS
from lpcam_plugin.methods.recam.config import ReCAMConfig
from lpcam_plugin.methods.recam.estimator import ReCAM
from lpcam_plugin.core.formats import read_irn_cam
from lpcam_plugin.core.fingerprints import load_matching
from lpcam_plugin.core.hooks import FeatureHook
from lpcam_plugin.core.io import file_sha256
from lpcam_plugin.core.maps import max_normalize

logger = logging.getLogger(__name__)

NUM_CLASSES = 20
VOC_CLASS_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                   "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                   "train", "tvmonitor")
#: Images per class used for fitting when not given: all on VOC, 100 on COCO (lpcam-spec.md, Defaults).
IMAGES_PER_CLASS = {"voc": None, "coco": 100}
DONE_LOG_PREFIX = ".lpcam_done_"
BANK_WAIT_POLL_S = 0.5

# ----------------------------------------------------------------------------------------- options


def str2bool(value: Any) -> bool:
    """argparse type for the ``--lpcam_*`` switches (AMN's ``str2bool`` convention)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


#: What the CAM step can write (``--lpcam_method``).
METHODS = ("lpcam", "cam", "recam", "recam+lpcam", "fcam")
#: ReCAMConfig fields exposed as ``--lpcam_recam_<field>``: (type, help).
_RECAM_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "epochs": (int, "fine-tuning epochs"),
    "learning_rate": (float, "learning rate of W_sce (backbone and W_bce: 0.1 x)"),
    "loss_weight": (float, "lambda, weight of the softmax cross-entropy"),
    "map_weight": (str, "weight of the maps: sce*bce or bce"),
    "selection_weight": (str, "recam+lpcam selection weight: sce, bce or sce*bce"),
}
#: FCAMConfig fields exposed as ``--lpcam_fcam_<field>``: (type, help).
_FCAM_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "epochs": (int, "decoder training epochs"),
    "learning_rate": (float, "decoder learning rate"),
    "bg_fraction": (float, "lowest fraction of the source maps' max that may seed background"),
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


def add_lpcam_arguments(parser: argparse.ArgumentParser, *, preset: str = "voc") -> argparse._ArgumentGroup:
    """Add the ``--lpcam_*`` options shared by the IRN and AMN adapters to ``parser``.

    Method options default to None, meaning "the value of ``--lpcam_preset``" (VOC or COCO
    defaults of the spec); ``preset`` sets the default of ``--lpcam_preset``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    voc, coco = PRESETS["voc"], PRESETS["coco"]
    group = parser.add_argument_group("LPCAM (lpcam_plugin)")
    group.add_argument("--lpcam_preset", default=preset, choices=sorted(PRESETS),
                       help="defaults of the method options below (default: %(default)s)")
    for name, (kind, text) in _CONFIG_OPTIONS.items():
        group.add_argument(f"--lpcam_{name}", type=kind, default=None,
                           help=f"{text} (preset: voc {getattr(voc, name)!r}, coco {getattr(coco, name)!r})")
    group.add_argument("--lpcam_context_window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help=f"context prototype band (preset: voc {voc.context_window}, coco {coco.context_window})")
    group.add_argument("--lpcam_fit_list", default="voc12/train.txt",
                       help="image list whose features are clustered (reference: VOC train, 1464)")
    group.add_argument("--lpcam_images_per_class", type=int, default=None,
                       help="cap on fit images per class (preset: voc all, coco 100)")
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
    """The ``--lpcam_*`` options resolved against the preset; see :func:`add_lpcam_arguments`."""

    config: LPCAMConfig
    preset: str = "voc"
    fit_list: str = "voc12/train.txt"
    images_per_class: Optional[int] = None
    bank: Optional[str] = None
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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LPCAMOptions":
        """Read the options from ``args``; missing attributes (no ``add_arguments``) take defaults."""
        preset = getattr(args, "lpcam_preset", None) or "voc"
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
        method = getattr(args, "lpcam_method", None) or "lpcam"
        if method not in METHODS:
            raise ValueError(f"lpcam_method must be one of {METHODS}, got {method!r}")
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
        return cls(config=config, preset=preset,
                   fit_list=getattr(args, "lpcam_fit_list", None) or "voc12/train.txt",
                   images_per_class=per_class, bank=getattr(args, "lpcam_bank", None),
                   baseline_dir=getattr(args, "lpcam_baseline_dir", None),
                   allow_pickle=bool(getattr(args, "lpcam_allow_pickle", False)),
                   device=getattr(args, "lpcam_device", None) or "auto",
                   loader_workers=getattr(args, "lpcam_loader_workers", None),
                   progress=getattr(args, "lpcam_progress", None), method=method, recam=recam,
                   recam_batch_size=getattr(args, "lpcam_recam_batch_size", None),
                   recam_crop_size=getattr(args, "lpcam_recam_crop_size", None), fcam=fcam,
                   fcam_source=fcam_source, fcam_batch_size=getattr(args, "lpcam_fcam_batch_size", None),
                   fcam_crop_size=getattr(args, "lpcam_fcam_crop_size", None))


# ----------------------------------------------------------------------------------------- host spec


@dataclass(frozen=True)
class HostSpec:
    """What differs between the IRN CAM step and AMN's CAM step (route b).

    Attributes:
        name: ``"irn"`` or ``"amn"``; recorded in the bank and the done log.
        network_arg, weights_arg, out_dir_arg: names of the ``args`` attributes holding the
            network module, the weights name (``+ '.pth'`` is appended, as the hosts do) and
            the output folder.
        selection_weight: ``model -> (W (20, D), bias (20,) or None, description)``.
        host_cams: ``(model, stacks, label, size, name, args) -> (K, H, W)`` the host's own
            max-normalised foreground CAMs of the present classes, computed the host way.
        write: ``(path, keys (K,), strided (K, h4, w4), high_res (K, H, W))`` saves one file.
        high_res_direct: resize each scale straight to (H, W) (AMN) instead of to the
            16-padded size and cropping (IRN).
        bank_arg: ``args`` attribute of an explicit bank path for this host (or None).
        extra_fit_key: ``(args, options) -> dict`` extra facts that must match for bank reuse.
        methods: the ``--lpcam_method`` values this CAM step supports; ``methods_note`` says why
            the others are not.
    """

    name: str
    network_arg: str
    weights_arg: str
    out_dir_arg: str
    selection_weight: Callable[[nn.Module], Tuple[torch.Tensor, Optional[torch.Tensor], str]]
    host_cams: Callable[..., torch.Tensor]
    write: Callable[[Path, torch.Tensor, torch.Tensor, torch.Tensor], None]
    high_res_direct: bool
    bank_arg: str = "lpcam_bank"
    extra_fit_key: Optional[Callable[[argparse.Namespace, LPCAMOptions], Dict[str, Any]]] = None
    methods: Tuple[str, ...] = METHODS
    methods_note: str = ""

    def weights_path(self, args: argparse.Namespace) -> str:
        return getattr(args, self.weights_arg) + ".pth"

    def out_dir(self, args: argparse.Namespace) -> Path:
        return Path(getattr(args, self.out_dir_arg))

    def bank_path(self, args: argparse.Namespace) -> Path:
        explicit = getattr(args, self.bank_arg, None)
        if explicit:
            return Path(explicit)
        return Path(os.path.splitext(self.weights_path(args))[0] + ".lpcam_bank.npz")


# ----------------------------------------------------------------------------------------- model / data


def resolve_device(spec: str, process_id: int = 0) -> torch.device:
    """``"auto"``: ``cuda:<process_id mod #GPUs>`` when CUDA is available, else CPU; ``"cuda"``: the same
    without the CPU fallback; anything else is passed to ``torch.device``."""
    if spec in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", process_id % torch.cuda.device_count())
        if spec == "cuda":
            raise ValueError("lpcam_device='cuda' but CUDA is not available")
        return torch.device("cpu")
    return torch.device(spec)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the host network to ``device`` in inference mode.

    IRN's and AMN's ``Net.train`` never call ``super().train``, so ``model.eval()`` changes
    nothing (hosts.md §1.3); the base-class method really switches every submodule, which turns
    off AMN's classifier dropout (IRN has none). LPCAM's stage-4 features are unaffected.
    """
    nn.Module.train(model, False)
    return model.to(device)


def load_host_model(spec: HostSpec, args: argparse.Namespace, device: torch.device,
                    weights: Optional[Path] = None) -> nn.Module:
    """``getattr(importlib.import_module(args.<network>), 'CAM')()`` with the host's weights (strict),
    or with ``weights`` (e.g. the ReCAM-fine-tuned network)."""
    model = getattr(importlib.import_module(getattr(args, spec.network_arg)), "CAM")()
    state = torch.load(weights if weights is not None else spec.weights_path(args), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state, strict=True)
    return prepare_model(model, device)


def msf_dataset(list_path: str, args: argparse.Namespace, scales: Sequence[float]) -> Any:
    """The host's ``VOC12ClassificationDatasetMSF`` over ``list_path``."""
    dataloader = importlib.import_module("voc12.dataloader")
    return dataloader.VOC12ClassificationDatasetMSF(list_path, voc12_root=args.voc12_root, scales=tuple(scales))


def image_stacks(pack: Dict[str, Any]) -> List[torch.Tensor]:
    """The ``(2, 3, h_s, w_s)`` image + flip stacks of a batch-1 MSF item, one per scale."""
    imgs = pack["img"]
    if isinstance(imgs, torch.Tensor):  # a single scale is not wrapped in a list by the host
        imgs = [imgs]
    return [img[0] for img in imgs]


def pack_size(pack: Dict[str, Any]) -> Tuple[int, int]:
    """The (H, W) of a batch-1 MSF item."""
    return int(pack["size"][0]), int(pack["size"][1])


def strided_size(size: Tuple[int, int], stride: int = 4) -> Tuple[int, int]:
    """IRN's ``get_strided_size``: ``((H - 1) // stride + 1, (W - 1) // stride + 1)``."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def strided_up_size(size: Tuple[int, int], stride: int = 16) -> Tuple[int, int]:
    """IRN's ``get_strided_up_size``: the size rounded up to a multiple of ``stride``."""
    h, w = strided_size(size, stride)
    return h * stride, w * stride


def resize(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners False) resize of ``(K, h, w)`` maps to ``(K, *size)``."""
    return F.interpolate(maps[None], size, mode="bilinear", align_corners=False)[0]


def stage4_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``stage4(stage3(stage2(stage1(x))))`` of the host network: ``(B, D, h, w)``."""
    return model.stage4(model.stage3(model.stage2(model.stage1(x))))


def _scale_one_index(scales: Sequence[float]) -> int:
    for i, s in enumerate(scales):
        if float(s) == 1.0:
            return i
    raise ValueError(f"scales {tuple(scales)} have no 1.0")


# ----------------------------------------------------------------------------------------- done logs


def lpcam_written_ids(out_dir: Path) -> Set[str]:
    """Ids that an LPCAM adapter wrote into ``out_dir`` (any bank): the union of its done logs."""
    ids: Set[str] = set()
    for log in out_dir.glob(DONE_LOG_PREFIX + "*.txt"):
        ids.update(line.strip() for line in log.read_text().splitlines() if line.strip())
    return ids


def _done_log(out_dir: Path, output_key: Dict[str, Any]) -> Path:
    tag = hashlib.sha256(json.dumps(output_key, sort_keys=True).encode()).hexdigest()[:16]
    return out_dir / f"{DONE_LOG_PREFIX}{tag}.txt"


# ----------------------------------------------------------------------------------------- fitting


def _select_fit_indices(label_list: np.ndarray, names: Sequence[str], per_class: Optional[int],
                        seed: int) -> List[int]:
    """All images, or (COCO preset) a seeded random order keeping an image while one of its
    classes has fewer than ``per_class`` images."""
    if per_class is None:
        return list(range(len(names)))
    order = np.random.default_rng(seed).permutation(len(names))
    counts = np.zeros(label_list.shape[1], np.int64)
    keep = []
    for i in order:
        present = np.nonzero(label_list[i])[0]
        if present.size and (counts[present] < per_class).any():
            keep.append(int(i))
            counts[present] += 1
    return sorted(keep)


@dataclass(frozen=True)
class FitSource:
    """What a bank is fitted from besides the images: the network, selection weight and baseline.

    Attributes:
        weights: the network's weights file (the host's, or the ReCAM-fine-tuned one).
        weight, bias: ``(20, D)`` selection weight and optional ``(20,)`` bias; ``description`` names it.
        baseline: ``(model, stacks, label, size, name, args) -> (K, H, W)`` max-normalised maps of
            the present classes that split the local features (the host's CAM, or ReCAM's maps).
        host_files: whether the host's own CAM files may stand in for ``baseline``.
        bank_path: where the bank is saved.
        extra_key: further facts that must match for the bank to be reused.
    """

    weights: Path
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    description: str
    baseline: Callable[..., torch.Tensor]
    host_files: bool
    bank_path: Path
    extra_key: Dict[str, Any]


def _fit_key(spec: HostSpec, args: argparse.Namespace, opts: LPCAMOptions, source: FitSource,
             fit_ids: Sequence[str], baseline_dir: Optional[Path]) -> Dict[str, Any]:
    """Everything the bank depends on; the bank is reused only when this matches exactly."""
    return {
        "host": spec.name,
        "features": "stage4 output, scale 1.0, unflipped",
        "selection_weight": source.description,
        "checkpoint_sha256": file_sha256(source.weights),
        "config": {k: v for k, v in opts.config.to_dict().items() if k != "spill_dir"},
        "fit_list_sha256": hashlib.sha256("\n".join(fit_ids).encode()).hexdigest(),
        "fit_images": len(fit_ids),
        "cam_scales": [float(s) for s in args.cam_scales],
        "baseline_files": None if baseline_dir is None else str(baseline_dir.resolve()),
        **(spec.extra_fit_key(args, opts) if spec.extra_fit_key is not None else {}),
        **source.extra_key,
    }


def _try_load_bank(path: Path, key: Dict[str, Any]) -> Tuple[Optional[PrototypeBank], str]:
    """The bank at ``path`` if it was fitted with exactly ``key``; else None and the reason."""
    return load_matching(path, PrototypeBank.load, key, made="fitted", missing="no bank file yet",
                         unreadable="unreadable bank")


def _baseline_from_file(path: Path, valid_cat: torch.Tensor, opts: LPCAMOptions) -> Optional[torch.Tensor]:
    keys, high_res = read_irn_cam(path, allow_pickle=opts.allow_pickle)
    if keys.tolist() != valid_cat.tolist():
        logger.warning("%s: keys %s do not match the image label %s; computing the baseline CAM instead",
                       path, keys.tolist(), valid_cat.tolist())
        return None
    return torch.from_numpy(np.ascontiguousarray(high_res))


@dataclass
class FitPlan:
    """What a fit uses: the host dataset over the fit list (scales = ``cam_scales``, plus 1.0 at the
    end when missing), the selected indices and ids, the selection weight and the fingerprint."""

    dataset: Any
    scales: Tuple[float, ...]
    indices: List[int]
    fit_ids: List[str]
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    baseline_dir: Optional[Path]
    key: Dict[str, Any]


def plan_fit(spec: HostSpec, args: argparse.Namespace, opts: LPCAMOptions, source: FitSource) -> FitPlan:
    """Build the fit dataset, pick the fit images and compute the bank fingerprint (no forward pass)."""
    scales = tuple(float(s) for s in args.cam_scales)
    if 1.0 not in scales:
        scales = scales + (1.0,)
    dataset = msf_dataset(opts.fit_list, args, scales)
    dataloader = importlib.import_module("voc12.dataloader")
    names = [dataloader.decode_int_filename(n) for n in dataset.img_name_list]
    indices = _select_fit_indices(np.asarray(dataset.label_list), names, opts.images_per_class, opts.config.seed)
    fit_ids = [names[i] for i in indices]
    baseline_dir = _baseline_dir(spec, args, opts) if source.host_files else None
    key = _fit_key(spec, args, opts, source, fit_ids, baseline_dir if opts.allow_pickle else None)
    return FitPlan(dataset, scales, indices, fit_ids, source.weight, source.bias, baseline_dir, key)


def fit_bank(spec: HostSpec, model: nn.Module, args: argparse.Namespace, opts: LPCAMOptions,
             device: torch.device, source: FitSource, *, n_procs: int = 1) -> PrototypeBank:
    """Reuse the saved bank if its fingerprint matches; else collect, fit, save and return it.

    Per fit image: the baseline is ``source.baseline`` (the host's own CAM, also read from its
    file in the baseline folder when allowed and present; or ReCAM's maps), computed the host
    way (multi-scale + flip), and the features are the scale-1.0, unflipped ``stage4`` output
    (captured by a hook during the host's forward), as in the LPCAM reference.
    """
    plan = plan_fit(spec, args, opts, source)
    path = source.bank_path
    bank, reason = _try_load_bank(path, plan.key)
    if bank is not None:
        logger.info("reusing the LPCAM bank %s (same checkpoint, config and fit list)", path)
        return bank
    logger.info("fitting the LPCAM bank %s: %s; %d images of %s", path, reason, len(plan.fit_ids), opts.fit_list)
    baseline_dir = plan.baseline_dir
    written = lpcam_written_ids(baseline_dir) if baseline_dir is not None else set()
    estimator = LPCAM(NUM_CLASSES, config=opts.config, class_names=VOC_CLASS_NAMES, progress=opts.progress)
    loader = DataLoader(Subset(plan.dataset, plan.indices), shuffle=False,
                        num_workers=_loader_workers(args, opts, n_procs), pin_memory=False)
    one = _scale_one_index(plan.scales)
    n_host_scales = len(args.cam_scales)
    n_files = 0
    with torch.no_grad(), FeatureHook(model.stage4, keep_all=True) as hook:
        for pack in progress_bar(loader, progress=opts.progress, desc="LPCAM features", total=len(loader),
                                 position=0 if n_procs > 1 else None):
            name, label = pack["name"][0], pack["label"][0]
            valid_cat = torch.nonzero(label)[:, 0]
            stacks = [s.to(device) for s in image_stacks(pack)]
            hook.clear()
            cams = None
            file = None if baseline_dir is None else baseline_dir / f"{name}.npy"
            if file is not None and opts.allow_pickle and file.exists() and name not in written:
                cams = _baseline_from_file(file, valid_cat, opts)
                n_files += cams is not None
            if cams is None:
                cams = source.baseline(model, stacks[:n_host_scales], label, pack_size(pack), name, args)
            if len(hook.history) <= one:
                stage4_features(model, stacks[one])
                features = hook.features[0]
            else:
                features = hook.history[one][0]
            full = torch.zeros((NUM_CLASSES,) + tuple(cams.shape[1:]))
            full[valid_cat] = cams.float().cpu()
            estimator.partial_fit([features], label[None].float(), cams=[full], ids=[name])
    if n_files:
        logger.info("baseline CAMs: %d of %d read from the host's files in %s", n_files, len(plan.fit_ids),
                    baseline_dir)
    elif baseline_dir is not None and not opts.allow_pickle and any(baseline_dir.glob("*.npy")):
        logger.info("host CAM files in %s are not read (pass --lpcam_allow_pickle True to use them); "
                    "the baseline CAMs were computed the host way", baseline_dir)
    weight, bias = plan.weight.to(device), None if plan.bias is None else plan.bias.to(device)
    estimator.fit_prototypes(weight, bias, metadata={"fit_key": plan.key, "fit_list": opts.fit_list,
                                                     "baseline_from_files": n_files})
    estimator.bank_.save(path)
    logger.info("saved the LPCAM bank %s: %r", path, estimator.bank_)
    return estimator.bank_


def _loader_workers(args: argparse.Namespace, opts: LPCAMOptions, n_procs: int = 1) -> int:
    """DataLoader workers per process: ``--lpcam_loader_workers``, else the hosts' rule
    ``num_workers // #processes`` (in spawned workers each loader worker is a fresh interpreter)."""
    if opts.loader_workers is not None:
        return max(opts.loader_workers, 0)
    return max(int(getattr(args, "num_workers", 0) or 0) // max(n_procs, 1), 0)


def _baseline_dir(spec: HostSpec, args: argparse.Namespace, opts: LPCAMOptions) -> Optional[Path]:
    folder = opts.baseline_dir if opts.baseline_dir is not None else getattr(args, spec.out_dir_arg, None)
    return None if folder is None else Path(folder)


def obtain_bank(spec: HostSpec, model: nn.Module, args: argparse.Namespace, opts: LPCAMOptions,
                device: torch.device, source: FitSource, process_id: int, n_procs: int) -> PrototypeBank:
    """The bank for this run. Worker 0 fits (or reuses) it; other workers wait until a bank whose
    fingerprint matches theirs is saved (torch's ``spawn`` stops them if worker 0 fails)."""
    if process_id == 0:
        return fit_bank(spec, model, args, opts, device, source, n_procs=n_procs)
    key = plan_fit(spec, args, opts, source).key
    path = source.bank_path
    logged = False
    while True:
        bank, reason = _try_load_bank(path, key)
        if bank is not None:
            return bank
        if not logged:
            logger.info("worker %d: waiting for worker 0 to fit the LPCAM bank %s (%s)", process_id, path, reason)
            logged = True
        time.sleep(BANK_WAIT_POLL_S)


# ----------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Readout:
    """What the CAM step writes, whatever the method: one scale's image + flip features -> maps.

    Attributes:
        method: one of :data:`METHODS`.
        maps: ``(features (2, D, h, w), classes) -> (K, h, w)`` unnormalised maps of the image,
            its flip folded in the way the method's reference does.
        key: what produced the maps (method, checkpoint, bank or ReCAM file hashes); files are
            skipped on resume only when written with the same key.
        source: ``(features (B, D, h, w), labels (B, 20)) -> (B, 20, h, w)`` the same read-out on
            a batch of single images, each map max-normalised to [0, 1], absent classes 0: what
            F-CAM decodes (None where the read-out has no batch form).
        render: ``(stacks, classes, (H, W)) -> (strided (K, h4, w4), high_res (K, H, W))`` the
            whole image's maps when they are not :func:`host_maps` of ``maps`` (F-CAM).
    """

    method: str
    maps: Callable[[torch.Tensor, List[int]], torch.Tensor]
    key: Dict[str, Any]
    source: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    render: Optional[Callable[[Sequence[torch.Tensor], List[int], Tuple[int, int]],
                              Tuple[torch.Tensor, torch.Tensor]]] = None


def linear_readout(weight: torch.Tensor) -> Callable[[torch.Tensor, List[int]], torch.Tensor]:
    """CAM / ReCAM: ``relu(W_c . f)`` of the image and of its flip (flipped back), summed, as
    IRN's ``CAM.forward`` and ReCAM's ``forward2`` do. ``weight``: ``(20, D)``."""
    def maps(features: torch.Tensor, classes: List[int]) -> torch.Tensor:
        both = cam_map(features, weight.to(features.device), classes, normalize=False)
        return both[0] + both[1].flip(-1)
    return maps


def linear_source(weight: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch form of :func:`linear_readout`: ``relu(W_c . f)`` divided by its max + 1e-5, absent classes 0."""
    def source(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        maps = cam_map(features, weight.to(features.device), normalize=True)
        return maps * (labels > 0).to(maps)[:, :, None, None]
    return source


def lpcam_source(estimator: LPCAM, fallback_weight: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Batch form of :func:`lpcam_readout` (per image, no flip): ReLU'd, divided by its max +
    1e-5, absent classes 0; classes without prototypes fall back to the CAM of ``fallback_weight``."""
    def source(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        maps = estimator(features, labels.float(), normalize=False, fallback="cam",
                         weight=fallback_weight.to(features.device))
        return max_normalize(maps.float().clamp(min=0))
    return source


def fcam_render(fcam: FCAM, encoder: nn.Module
                ) -> Callable[[Sequence[torch.Tensor], List[int], Tuple[int, int]], Tuple[torch.Tensor, torch.Tensor]]:
    """F-CAM in the host's geometry: ``(stacks, classes, (H, W)) -> (strided (K, h4, w4), high_res (K, H, W))``.

    The decoder runs on the scale-1.0 image + flip stack (the one of size (H, W)); the two maps
    are averaged (flip flipped back) and divided by their max + 1e-5 -> ``high_res``; the strided
    map is ``high_res`` resized bilinearly to ``((H-1)//4+1, (W-1)//4+1)``. float32 on CPU.
    """
    def render(stacks: Sequence[torch.Tensor], classes: List[int],
               size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        h4, w4 = strided_size(size)
        if not classes:
            return torch.zeros(0, h4, w4), torch.zeros(0, *size)
        full = [s for s in stacks if tuple(s.shape[-2:]) == tuple(size)]
        if not full:
            raise ValueError(f"F-CAM decodes the scale-1.0 image, but no image + flip stack has the image size "
                             f"{tuple(size)}: put 1.0 in cam_scales")
        high = max_normalize(fcam_maps(fcam, encoder, full[0], classes)).cpu()
        return resize(high, (h4, w4)), high
    return render


def lpcam_readout(estimator: LPCAM, fallback_weight: torch.Tensor) -> Callable[[torch.Tensor, List[int]], torch.Tensor]:
    """LPCAM: the image's and its flip's features summed before the similarity (as the LPCAM
    reference does); classes without prototypes fall back to the CAM of ``fallback_weight``."""
    def maps(features: torch.Tensor, classes: List[int]) -> torch.Tensor:
        fused = features[0:1] + features[1:2].flip(-1)
        return estimator(fused, classes, normalize=False, fallback="cam",
                         weight=fallback_weight.to(features.device))[0]
    return maps


def host_maps(model: nn.Module, readout: Readout, stacks: Sequence[torch.Tensor], classes: List[int],
              size: Tuple[int, int], *, high_res_direct: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale + flip maps of one image in the host's geometry.

    Per scale the ``stage4`` features of the image + flip stack go through ``readout.maps``;
    each scale's ``(K, h_s, w_s)`` map is resized to the strided size ``((H-1)//4+1, (W-1)//4+1)``
    and to (H, W) (IRN: via the 16-padded size and a crop; AMN: directly), summed over scales
    and divided by its max + 1e-5.

    Returns:
        ``(strided (K, h4, w4), high_res (K, H, W))`` float32 on CPU.
    """
    h4, w4 = strided_size(size)
    strided = torch.zeros(len(classes), h4, w4)
    high = torch.zeros(len(classes), *size)
    if not classes:
        return strided, high
    up = strided_up_size(size)
    for x in stacks:
        maps = readout.maps(stage4_features(model, x), classes).float().cpu()
        strided += resize(maps, (h4, w4))
        high += resize(maps, size) if high_res_direct else resize(maps, up)[:, :size[0], :size[1]]
    return max_normalize(strided), max_normalize(high)


def write_shard(spec: HostSpec, model: nn.Module, readout: Readout, subset: Any, args: argparse.Namespace,
                opts: LPCAMOptions, device: torch.device, *, process_id: int = 0, n_procs: int = 1) -> int:
    """Write the maps of every image of ``subset`` (a host MSF dataset or a Subset of it).

    Images whose file exists and is recorded in the done log of this read-out's key are
    skipped; every file is written atomically and then appended to the done log. Returns the
    number written.
    """
    out_dir = spec.out_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    output_key = {"host": spec.name, **readout.key, "cam_scales": [float(s) for s in args.cam_scales]}
    log_path = _done_log(out_dir, output_key)
    done = set(log_path.read_text().split()) if log_path.exists() else set()
    loader = DataLoader(subset, shuffle=False, num_workers=_loader_workers(args, opts, n_procs), pin_memory=False)
    written = skipped = 0
    with torch.no_grad(), open(log_path, "a") as log:
        for pack in progress_bar(loader, progress=opts.progress, desc=f"{readout.method} {spec.name} [{process_id}]",
                                 total=len(loader), position=process_id if n_procs > 1 else None):
            name = pack["name"][0]
            target = out_dir / f"{name}.npy"
            if name in done and target.exists():
                skipped += 1
                continue
            valid_cat = torch.nonzero(pack["label"][0])[:, 0]
            stacks = [s.to(device) for s in image_stacks(pack)]
            if readout.render is not None:
                strided, high = readout.render(stacks, valid_cat.tolist(), pack_size(pack))
            else:
                strided, high = host_maps(model, readout, stacks, valid_cat.tolist(), pack_size(pack),
                                          high_res_direct=spec.high_res_direct)
            spec.write(target, valid_cat, strided, high)
            log.write(name + "\n")
            log.flush()
            written += 1
    logger.info("worker %d: wrote %d %s files to %s, skipped %d already written", process_id, written,
                readout.method, out_dir, skipped)
    return written


# ----------------------------------------------------------------------------------------- entry points


def _check_method(spec: HostSpec, opts: LPCAMOptions) -> None:
    if opts.method not in METHODS:
        raise ValueError(f"lpcam_method must be one of {METHODS}, got {opts.method!r}")
    if opts.method not in spec.methods:
        raise ValueError(f"the {spec.name} CAM step cannot write --lpcam_method {opts.method}: {spec.methods_note}")


def _recam(spec: HostSpec, args: argparse.Namespace, opts: LPCAMOptions, device: torch.device, process_id: int,
           n_procs: int) -> Tuple[ReCAM, Path]:
    """The ReCAM step of this run (trained by process 0, reused when its files match)."""
    recam = ReCAM(NUM_CLASSES, config=opts.recam, progress=opts.progress)
    batch_size = opts.recam_batch_size or int(getattr(args, "cam_batch_size", 16))
    crop_size = opts.recam_crop_size or int(getattr(args, "cam_crop_size", 512))
    return obtain_recam(args, spec.weights_path(args), recam, device, batch_size=batch_size, crop_size=crop_size,
                        workers=_loader_workers(args, opts, n_procs), train=process_id == 0)


def _host_fit_source(spec: HostSpec, model: nn.Module, args: argparse.Namespace) -> FitSource:
    weight, bias, description = spec.selection_weight(model)
    return FitSource(weights=Path(spec.weights_path(args)), weight=weight, bias=bias, description=description,
                     baseline=spec.host_cams, host_files=True, bank_path=spec.bank_path(args), extra_key={})


def _recam_fit_source(spec: HostSpec, args: argparse.Namespace, opts: LPCAMOptions, recam: ReCAM,
                      weights: Path) -> FitSource:
    """LPCAM on the ReCAM backbone: split by ReCAM's maps (computed the host way), selection by
    ``recam.selection_weight_``; the bank goes next to the fine-tuned weights."""
    readout = Readout("recam", linear_readout(recam.map_weight_), {})

    def baseline(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
                 name: str, host_args: argparse.Namespace) -> torch.Tensor:
        classes = torch.nonzero(label)[:, 0].tolist()
        return host_maps(model, readout, stacks, classes, size, high_res_direct=spec.high_res_direct)[1]

    bank_path = Path(opts.bank) if opts.bank else weights.with_suffix(".lpcam_bank.npz")
    return FitSource(weights=weights, weight=recam.selection_weight_, bias=None,
                     description=f"ReCAM selection weight ({recam.config.selection_weight})", baseline=baseline,
                     host_files=False, bank_path=bank_path,
                     extra_key={"split": f"ReCAM maps ({recam.config.map_weight})"})


def prepare_readout(spec: HostSpec, model: Optional[nn.Module], args: argparse.Namespace, opts: LPCAMOptions,
                    device: torch.device, *, process_id: int = 0, n_procs: int = 1) -> Tuple[nn.Module, Readout]:
    """The network to run and the read-out to write for ``opts.method``.

    ``model``: the host's network already built by the host step (patched workers), or None to
    load it here. ReCAM methods first run (or reuse) the ReCAM step and load the fine-tuned
    weights into the network.
    """
    _check_method(spec, opts)
    if opts.method == "fcam":
        return _fcam_readout(spec, model, args, opts, device, process_id=process_id, n_procs=n_procs)
    weights = Path(spec.weights_path(args))
    recam = None
    if opts.method in ("recam", "recam+lpcam"):
        recam, weights = _recam(spec, args, opts, device, process_id, n_procs)
    if model is None:
        model = load_host_model(spec, args, device, weights)
    else:
        if recam is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        model = prepare_model(model, device)
    if opts.method == "cam":
        weight = spec.selection_weight(model)[0]
        return model, Readout("cam", linear_readout(weight), {"method": "cam", "checkpoint_sha256": file_sha256(weights)},
                              source=linear_source(weight))
    if opts.method == "recam":
        assert recam is not None
        key = {"method": "recam", "recam_sha256": file_sha256(recam_files(spec.weights_path(args))["recam"])}
        return model, Readout("recam", linear_readout(recam.map_weight_), key, source=linear_source(recam.map_weight_))
    source = (_host_fit_source(spec, model, args) if recam is None
              else _recam_fit_source(spec, args, opts, recam, weights))
    bank = obtain_bank(spec, model, args, opts, device, source, process_id, n_procs)
    missing = bank.classes_without_prototypes
    if missing and process_id == 0:
        logger.warning("classes %s have no prototypes; their maps fall back to the plain CAM", missing)
    fallback = source.weight if recam is None else recam.map_weight_
    estimator = LPCAM.from_bank(bank, progress=False)
    key = {"method": opts.method, "bank_sha256": file_sha256(source.bank_path)}
    return model, Readout(opts.method, lpcam_readout(estimator, fallback), key,
                          source=lpcam_source(estimator, fallback))


def _fcam_readout(spec: HostSpec, model: Optional[nn.Module], args: argparse.Namespace, opts: LPCAMOptions,
                  device: torch.device, *, process_id: int = 0, n_procs: int = 1) -> Tuple[nn.Module, Readout]:
    """F-CAM over ``opts.fcam_source``: prepare that read-out (its network, bank or ReCAM step),
    train (or reuse) the decoder on its batch maps, and render full-resolution maps."""
    model, base = prepare_readout(spec, model, args, dataclasses.replace(opts, method=opts.fcam_source), device,
                                  process_id=process_id, n_procs=n_procs)
    assert base.source is not None
    encoder = HostStages(model)
    fcam = FCAM(NUM_CLASSES, config=opts.fcam, progress=opts.progress)
    batch_size = opts.fcam_batch_size or int(getattr(args, "cam_batch_size", 16))
    crop_size = opts.fcam_crop_size or int(getattr(args, "cam_crop_size", 512))
    fitted, path = obtain_fcam(args, spec.weights_path(args), fcam, encoder, base.source, opts.fcam_source, base.key,
                               batch_size=batch_size, crop_size=crop_size,
                               workers=_loader_workers(args, opts, n_procs), train=process_id == 0)
    key = {"method": "fcam", "source": opts.fcam_source, "fcam_sha256": file_sha256(path)}
    return model, Readout("fcam", base.maps, key, render=fcam_render(fitted, encoder))


def run_in_process(spec: HostSpec, args: argparse.Namespace, method: Optional[str] = None) -> int:
    """Write the maps of ``method`` (default ``args.lpcam_method``, else LPCAM) for every image of
    ``args.train_list`` in this process (fitting or training what the method needs first).

    Under ``torchrun`` (an initialised process group) rank r writes images r, r + world, ...
    after the shared preparation (the ReCAM step and the F-CAM decoder train in DDP)."""
    opts = LPCAMOptions.from_args(args)
    if method is not None:
        opts = dataclasses.replace(opts, method=method)
    # under torchrun each rank takes its own GPU (LOCAL_RANK); a single process takes the first
    device = resolve_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))
    init_from_env(device=device, min_world_size=2)
    model, readout = prepare_readout(spec, None, args, opts, device)
    dataset = msf_dataset(args.train_list, args, args.cam_scales)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return write_shard(spec, model, readout, Subset(dataset, list(range(rank, len(dataset), world))), args, opts,
                           device, process_id=rank, n_procs=world)
    return write_shard(spec, model, readout, dataset, args, opts, device)


def work(spec: HostSpec, process_id: int, model: nn.Module, dataset: Sequence[Any], args: argparse.Namespace) -> None:
    """Body of the patched host ``_work(process_id, model, dataset, args)`` (``dataset``: the
    host's list of per-worker Subsets)."""
    _configure_worker_logging()
    opts = LPCAMOptions.from_args(args)
    device = resolve_device(opts.device, process_id)
    n_procs = len(dataset)
    model, readout = prepare_readout(spec, model, args, opts, device, process_id=process_id, n_procs=n_procs)
    write_shard(spec, model, readout, dataset[process_id], args, opts, device, process_id=process_id, n_procs=n_procs)


def _configure_worker_logging() -> None:
    """Spawned workers start with unconfigured logging; show this package's INFO lines there."""
    package_logger = logging.getLogger("lpcam_plugin")
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [lpcam pid %(process)d] %(levelname)s %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)


def require_spawn_devices(step_module: str, alternative: str) -> None:
    """Raise when the unchanged host step would spawn no worker on this machine.

    IRN's ``make_cam.run`` and AMN's ``make_amn_cam.run`` start ``torch.cuda.device_count()``
    workers: without a visible CUDA device that is 0, so a patched step writes nothing and
    raises nothing (hosts.md section 9). ``patch()`` calls this so the failure shows when it is made.
    """
    if torch.cuda.device_count() == 0:
        raise RuntimeError(f"patch(): no CUDA device is visible, so {step_module}.run(args) would spawn zero "
                           f"workers and write nothing; call {alternative} instead of {step_module}.run(args)")


def patch_attribute(module_name: str, attribute: str, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """Replace ``module.attribute`` by ``replacement`` (idempotent); return the original.

    The original is kept on the module as ``_lpcam_original_<attribute>`` for :func:`unpatch_attribute`.
    """
    module = importlib.import_module(module_name)
    current = getattr(module, attribute)
    if current is replacement:
        return getattr(module, f"_lpcam_original_{attribute}")
    setattr(module, f"_lpcam_original_{attribute}", current)
    setattr(module, attribute, replacement)
    logger.info("%s.%s is replaced by %s.%s", module_name, attribute, replacement.__module__,
                replacement.__qualname__)
    return current


def unpatch_attribute(module_name: str, attribute: str) -> None:
    """Undo :func:`patch_attribute` (no-op when not patched)."""
    module = importlib.import_module(module_name)
    original = getattr(module, f"_lpcam_original_{attribute}", None)
    if original is not None:
        setattr(module, attribute, original)
        delattr(module, f"_lpcam_original_{attribute}")


__all__ = [
    "METHODS", "FitPlan", "FitSource", "HostSpec", "LPCAMOptions", "Readout", "add_lpcam_arguments", "fit_bank",
    "fcam_render", "host_maps", "lpcam_readout", "lpcam_source", "linear_readout", "linear_source", "prepare_readout",
    "lpcam_written_ids", "obtain_bank", "patch_attribute", "require_spawn_devices", "resolve_device", "run_in_process",
    "unpatch_attribute", "work", "write_shard",
]
