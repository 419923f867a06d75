"""LPCAM hyper-parameters and the VOC / COCO presets of the spec (docs/design/lpcam-spec.md, Defaults)."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.settings import MethodSettings

KMEANS_BACKENDS = ("torch", "sklearn", "faiss")
STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class LPCAMConfig(MethodSettings):
    """Every knob of LPCAM; defaults are the VOC preset.

    Attributes:
        num_clusters: K, centres per pool (12 on VOC, 20 on COCO).
        split_threshold: tau_split on the max-normalised baseline CAM; positions with
            ``cam > tau`` go to the foreground pool, ``cam < tau`` to the context pool.
        class_threshold: tau_class; foreground centres with ``p > tau_class`` become class
            prototypes.
        context_window: (low, high); context centres with ``low < p < high`` become context
            prototypes.
        pool_cap: most local features kept per pool (per class, foreground and context each).
            Collection memory is ``2 * C * pool_cap * D * itemsize`` at most.
        storage_dtype: dtype of the pooled features (``"float32"`` or ``"float16"``).
        spill_dir: when set, pools live in memory-mapped files in this directory.
        kmeans_backend: ``"torch"`` (built in), ``"sklearn"`` or ``"faiss"``.
        kmeans_max_iter, kmeans_tol, kmeans_n_init: K-means iteration cap, tolerance on the
            objective, and number of seeded restarts.
        use_bias: add the classifier bias to the selection logits (the reference uses none).
        seed: seed of the pool sampling keys and of K-means.
    """

    METHOD: ClassVar[str] = "LPCAM"

    @classmethod
    def presets(cls) -> Mapping[str, "LPCAMConfig"]:
        return PRESETS

    num_clusters: int = 12
    split_threshold: float = 0.1
    class_threshold: float = 0.9
    context_window: Tuple[float, float] = (0.05, 0.9)
    pool_cap: int = 10_000
    storage_dtype: str = "float32"
    spill_dir: Optional[str] = None
    kmeans_backend: str = "torch"
    kmeans_max_iter: int = 100
    kmeans_tol: float = 1e-4
    kmeans_n_init: int = 1
    use_bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_types()
        low, high = self.context_window
        checks = [
            (self.num_clusters >= 1, f"num_clusters must be >= 1, got {self.num_clusters}"),
            (0.0 <= self.split_threshold <= 1.0, f"split_threshold must be in [0, 1], got {self.split_threshold}"),
            (0.0 <= self.class_threshold <= 1.0, f"class_threshold must be in [0, 1], got {self.class_threshold}"),
            (0.0 <= low < high <= 1.0, f"context_window must satisfy 0 <= low < high <= 1, got {self.context_window}"),
            (self.pool_cap >= 1, f"pool_cap must be >= 1, got {self.pool_cap}"),
            (self.storage_dtype in STORAGE_DTYPES,
             f"storage_dtype must be one of {STORAGE_DTYPES}, got {self.storage_dtype!r}"),
            (self.kmeans_backend in KMEANS_BACKENDS,
             f"kmeans_backend must be one of {KMEANS_BACKENDS}, got {self.kmeans_backend!r}"),
            (self.kmeans_max_iter >= 1, f"kmeans_max_iter must be >= 1, got {self.kmeans_max_iter}"),
            (self.kmeans_tol >= 0, f"kmeans_tol must be >= 0, got {self.kmeans_tol}"),
            (self.kmeans_n_init >= 1, f"kmeans_n_init must be >= 1, got {self.kmeans_n_init}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _check_types(self) -> None:
        """Raise ``TypeError`` naming a field of the wrong type; store ints as ``int`` and reals as ``float``."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            object.__setattr__(self, name, int(value))
        for name in _REAL_FIELDS:
            object.__setattr__(self, name, _real(getattr(self, name), name))
        window = self.context_window
        if isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or len(window) != 2:
            raise TypeError(f"context_window must be a pair (low, high), got {window!r}")
        object.__setattr__(self, "context_window", (_real(window[0], "context_window[0]"),
                                                    _real(window[1], "context_window[1]")))
        if not isinstance(self.use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias must be a bool, got {self.use_bias!r} ({type(self.use_bias).__name__})")
        object.__setattr__(self, "use_bias", bool(self.use_bias))
        for name in ("storage_dtype", "kmeans_backend"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {getattr(self, name)!r}")
        if self.spill_dir is not None:
            if not isinstance(self.spill_dir, (str, os.PathLike)):
                raise TypeError(f"spill_dir must be a path or None, got {self.spill_dir!r}")
            object.__setattr__(self, "spill_dir", os.fspath(self.spill_dir))



_INT_FIELDS = ("num_clusters", "pool_cap", "kmeans_max_iter", "kmeans_n_init", "seed")
_REAL_FIELDS = ("split_threshold", "class_threshold", "kmeans_tol")


def _real(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless it is a real number (not a bool), ``ValueError`` if NaN."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


PRESETS: Dict[str, LPCAMConfig] = {
    "voc": LPCAMConfig(),
    "coco": LPCAMConfig(num_clusters=20, split_threshold=0.25, context_window=(0.0, 0.5)),
}
