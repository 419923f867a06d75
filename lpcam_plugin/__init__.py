"""lpcam_plugin: a family of CAM methods (CAM, LPCAM, ReCAM, F-CAM, pixel-level self-supervision) for WSSS.

The package is organised in rooms whose imports point one way, from the top down:

- :mod:`lpcam_plugin.adapters`: host adapters (IRN, AMN, EDAM, MCTformer), method-agnostic;
- :mod:`lpcam_plugin.benchmark`: the synthetic benchmark, toy networks and ``lpcam demo``;
- :mod:`lpcam_plugin.distributed`: scale-out (torchrun / SLURM) fitting and inference;
- :mod:`lpcam_plugin.methods`: the methods, peers of each other (``cam``, ``lpcam``, ``recam``,
  ``fcam``, ``pixelsup``);
- :mod:`lpcam_plugin.core`: plumbing (checks, hooks, atomic I/O, progress, evaluation).
"""
from lpcam_plugin.core.datasets import coco_class_index, coco_gt_name
from lpcam_plugin.core.evaluate import SweepResult, confusion_matrix, maps_to_prediction, seed_metrics, sweep
from lpcam_plugin.core.formats import read_class_dict, read_irn_cam
from lpcam_plugin.core.hooks import FeatureHook, TokensToMap, tokens_to_map
from lpcam_plugin.core.io import atomic_write, save_npy_atomic
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.threshold import ThresholdChoice, ThresholdHistogram, auto_threshold, choose_threshold
from lpcam_plugin.core.version import __version__
from lpcam_plugin.distributed.api import fit_distributed, fit_prototypes_distributed, infer_distributed
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.config import LPCAMConfig
from lpcam_plugin.methods.lpcam.estimator import LPCAM
from lpcam_plugin.methods.lpcam.fit_images import fit_plan, reference_draws
from lpcam_plugin.methods.lpcam.kmeans import KMeansResult, kmeans
from lpcam_plugin.methods.lpcam.maps import lpcam_map
from lpcam_plugin.methods.lpcam.pools import FeaturePool, position_keys
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head, select_prototypes
from lpcam_plugin.methods.lpcam.split import split_local_features, split_masks
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision
from lpcam_plugin.methods.recam.config import ReCAMConfig
from lpcam_plugin.methods.recam.estimator import ReCAM

__all__ = [
    "__version__",
    "FCAM",
    "FCAMConfig",
    "FeatureHook",
    "FeaturePool",
    "KMeansResult",
    "LPCAM",
    "LPCAMConfig",
    "PixelSelfSupervision",
    "PixelSupConfig",
    "PrototypeBank",
    "ReCAM",
    "ReCAMConfig",
    "SweepResult",
    "ThresholdChoice",
    "ThresholdHistogram",
    "TokensToMap",
    "atomic_write",
    "auto_threshold",
    "cam_map",
    "choose_threshold",
    "coco_class_index",
    "coco_gt_name",
    "confusion_matrix",
    "fit_distributed",
    "fit_plan",
    "fit_prototypes_distributed",
    "infer_distributed",
    "kmeans",
    "lpcam_map",
    "maps_to_prediction",
    "max_normalize",
    "position_keys",
    "read_class_dict",
    "read_irn_cam",
    "reduce_conv_head",
    "reference_draws",
    "save_npy_atomic",
    "seed_metrics",
    "select_prototypes",
    "split_local_features",
    "split_masks",
    "sweep",
    "tokens_to_map",
]
