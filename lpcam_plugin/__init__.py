"""lpcam_plugin: LPCAM (Chen & Sun, CVPR 2023) as a drop-in CAM step for WSSS codebases.

The core is backbone-agnostic: capture features with :class:`FeatureHook`, stream them into
:class:`LPCAM` with ``partial_fit``, fit prototypes, and compute maps. Host adapters live in
:mod:`lpcam_plugin.adapters`.
"""
__version__ = "0.1.0"

from .bank import PrototypeBank
from .config import LPCAMConfig
from .distributed import fit_distributed, fit_prototypes_distributed, infer_distributed
from .estimator import LPCAM
from .evaluate import (SweepResult, confusion_matrix, maps_to_prediction, read_class_dict, read_irn_cam,
                       seed_metrics, sweep)
from .hooks import FeatureHook, TokensToMap, tokens_to_map
from .io import atomic_write, save_npy_atomic
from .kmeans import KMeansResult, kmeans
from .maps import cam_map, lpcam_map, max_normalize
from .pools import FeaturePool, position_keys
from .selection import reduce_conv_head, select_prototypes
from .split import split_local_features, split_masks

__all__ = [
    "__version__",
    "FeatureHook",
    "FeaturePool",
    "KMeansResult",
    "LPCAM",
    "LPCAMConfig",
    "PrototypeBank",
    "SweepResult",
    "TokensToMap",
    "atomic_write",
    "cam_map",
    "confusion_matrix",
    "fit_distributed",
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
    "save_npy_atomic",
    "seed_metrics",
    "select_prototypes",
    "split_local_features",
    "split_masks",
    "sweep",
    "tokens_to_map",
]
