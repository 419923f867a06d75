"""The LPCAM estimator: stream features in (``partial_fit``), fit prototypes, produce maps."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from lpcam_plugin.core.checks import (
    check_classes,
    check_feature_dim,
    check_finite,
    check_matrix,
    check_ndim,
    check_num_classes,
    check_tensor,
)
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.lpcam.bank import PrototypeBank
from lpcam_plugin.methods.lpcam.config import LPCAMConfig
from lpcam_plugin.methods.lpcam.kmeans import kmeans
from lpcam_plugin.methods.lpcam.maps import lpcam_map
from lpcam_plugin.methods.lpcam.pools import FeaturePool, ImageId, position_keys
from lpcam_plugin.methods.lpcam.selection import select_with_fallback_info
from lpcam_plugin.methods.lpcam.split import split_masks

logger = logging.getLogger(__name__)

FeatureBatch = Union[torch.Tensor, Sequence[torch.Tensor]]


class LPCAM:
    """Local-prototype CAM, fitted on a dataset's local features and then applied to images.

    Example::

        model = LPCAM(num_classes=20, preset="voc")
        for features, labels in batches:              # (B, D, h, w), (B, C) multi-hot
            model.partial_fit(features, labels, weight=W)
        model.fit_prototypes(W)                       # W: (C, D) classifier weight
        maps = model(features, labels)                # (B, C, h, w), zero for absent classes

    Args:
        num_classes: C (no background).
        preset: ``"voc"`` or ``"coco"`` defaults of the spec.
        config: a full :class:`LPCAMConfig` instead of a preset.
        class_names: optional C names, stored in the bank.
        progress: progress bars: None (auto, hidden off a TTY), True or False.
        **overrides: any :class:`LPCAMConfig` field, e.g. ``num_clusters=8``.

    Fitted attributes:
        feature_dim_: D, set by the first :meth:`partial_fit`.
        n_images_seen_: images offered to :meth:`partial_fit`.
        foreground_pools_, context_pools_: ``{class: FeaturePool}`` bounded samples.
        bank_: the :class:`PrototypeBank`, set by :meth:`fit_prototypes`.
        best_centre_fallbacks_: ``{class: p}`` for classes where no foreground centre passed
            ``class_threshold`` and the best one (probability ``p``) was kept.
        weight_: the ``(C, D)`` selection weight used by :meth:`fit_prototypes`.
    """

    def __init__(
        self,
        num_classes: int,
        preset: str = "voc",
        *,
        config: Optional[LPCAMConfig] = None,
        class_names: Optional[Sequence[str]] = None,
        progress: Optional[bool] = None,
        **overrides: Any,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.config = LPCAMConfig.resolve(preset, config, **overrides)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.class_names = None if class_names is None else list(class_names)
        self.progress = progress
        self.feature_dim_: Optional[int] = None
        self.n_images_seen_ = 0
        self.foreground_pools_: Dict[int, FeaturePool] = {}
        self.context_pools_: Dict[int, FeaturePool] = {}
        self.bank_: Optional[PrototypeBank] = None
        self.weight_: Optional[torch.Tensor] = None
        self._spill_path: Optional[str] = None
        self.best_centre_fallbacks_: Dict[int, float] = {}

    # ------------------------------------------------------------------ collection
    def partial_fit(
        self,
        features: FeatureBatch,
        labels: torch.Tensor,
        *,
        cams: Optional[FeatureBatch] = None,
        weight: Optional[torch.Tensor] = None,
        ids: Optional[Sequence[ImageId]] = None,
    ) -> "LPCAM":
        """Split a batch's local features into the per-class pools (Stage 1).

        Args:
            features: ``(B, D, h, w)``, or a sequence of B ``(D, h_i, w_i)`` maps.
            labels: ``(B, C)`` multi-hot image labels.
            cams: the host's baseline CAMs, max-normalised to [0, 1]: ``(B, C, H, W)`` or B maps
                ``(C, H_i, W_i)`` (any size; resized to the feature grid with nearest). Channels of
                absent classes are ignored.
            weight: ``(C, D)`` classifier weight; used when ``cams`` is None to compute the
                single-scale baseline CAM ``relu(W_c . F)`` / max (a documented fallback; the
                reference uses the host's multi-scale CAM).
            ids: per-image identifiers (int or str). Pool sampling keys derive from
                (seed, id, class, position), so the same images give the same pools in any order
                and in any split over processes. Default: a running image index.
        """
        feature_list = _as_map_list(features, "features", 3, "(D, h, w)")
        batch = len(feature_list)
        labels = self._check_labels(labels, batch)
        if cams is None:
            if weight is None:
                raise ValueError("partial_fit needs either the host's cams or the classifier weight to compute them")
            weight = self.check_weight(weight)
            cam_list = [cam_map(f[None], weight)[0] for f in feature_list]
        else:
            cam_list = _as_map_list(cams, "cams", 3, "(C, H, W)")
            if len(cam_list) != batch:
                raise ValueError(f"got {len(cam_list)} cams for {batch} feature maps")
        if ids is None:
            ids = range(self.n_images_seen_, self.n_images_seen_ + batch)
        elif len(ids) != batch:
            raise ValueError(f"got {len(ids)} ids for {batch} feature maps")
        for image_id, feats, cam, label in zip(ids, feature_list, cam_list, labels):
            self._collect_image(image_id, feats, cam, label)
        self.n_images_seen_ += batch
        return self

    def _check_labels(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor (B, C), got {type(labels).__name__}")
        if labels.dim() != 2 or tuple(labels.shape) != (batch, self.num_classes):
            raise ValueError(f"labels must have shape (B, C) = ({batch}, {self.num_classes}), "
                             f"got {tuple(labels.shape)}")
        return labels.detach().cpu() > 0

    def _collect_image(self, image_id: ImageId, feats: torch.Tensor, cam: torch.Tensor, label: torch.Tensor) -> None:
        dim, h, w = feats.shape
        if self.feature_dim_ is None:
            self.feature_dim_ = dim
        check_feature_dim(dim, self.feature_dim_, "features seen before")
        check_finite(feats, f"features of image {image_id!r}")
        if cam.shape[0] != self.num_classes:
            raise ValueError(f"cams of image {image_id!r} have {cam.shape[0]} channels, expected C={self.num_classes}")
        flat = feats.detach().reshape(dim, h * w).T
        for c in torch.nonzero(label).flatten().tolist():
            fg_mask, bg_mask = split_masks(cam[c], (h, w), self.config.split_threshold)
            keys = position_keys(self.config.seed, image_id, c, h * w)
            fg_mask, bg_mask = fg_mask.flatten().cpu(), bg_mask.flatten().cpu()
            self._pool(self.foreground_pools_, c, "fg").add(flat[fg_mask.to(flat.device)], keys[fg_mask])
            self._pool(self.context_pools_, c, "ctx").add(flat[bg_mask.to(flat.device)], keys[bg_mask])

    def _pool(self, pools: Dict[int, FeaturePool], c: int, kind: str) -> FeaturePool:
        if c not in pools:
            path = self.pool_spill_path(kind, c)
            assert self.feature_dim_ is not None
            pools[c] = FeaturePool(self.feature_dim_, self.config.pool_cap, dtype=self.config.storage_dtype,
                                   spill_path=path)
        return pools[c]

    def pool_spill_path(self, kind: str, c: int) -> Optional[str]:
        """File backing pool ``kind`` of class ``c`` under ``config.spill_dir`` (None without it).

        Each estimator spills into its own new folder ``<spill_dir>/lpcam-pools-*``, so several
        processes can share one ``spill_dir``.
        """
        if self.config.spill_dir is None:
            return None
        if self._spill_path is None:
            os.makedirs(self.config.spill_dir, exist_ok=True)
            self._spill_path = tempfile.mkdtemp(prefix="lpcam-pools-", dir=self.config.spill_dir)
        return os.path.join(self._spill_path, f"pool_{kind}_{c}.npy")

    def merge_pools(self, other: "LPCAM") -> "LPCAM":
        """Fold another estimator's pools into this one (exact when both used ``ids``)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge pools of {other.num_classes} classes into {self.num_classes}")
        for mine, theirs, kind in ((self.foreground_pools_, other.foreground_pools_, "fg"),
                                   (self.context_pools_, other.context_pools_, "ctx")):
            for c, pool in theirs.items():
                if self.feature_dim_ is None:
                    self.feature_dim_ = pool.dim
                self._pool(mine, c, kind).merge(pool)
        self.n_images_seen_ += other.n_images_seen_
        return self

    # ------------------------------------------------------------------ fitting
    def fit_class_prototypes(self, c: int, weight: torch.Tensor,
                             bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """K-means on class ``c``'s two pools and prototype selection (Stages 2-3) for that class.

        K-means runs on ``weight.device``. Returns ``(class_prototypes (P, D), context_prototypes
        (Q, D))``; both are empty when the class's foreground pool is empty (:meth:`set_bank`
        warns once about all such classes).
        """
        fg_centres = self._cluster(self.foreground_pools_.get(c), c, "foreground", weight.device)
        bg_centres = self._cluster(self.context_pools_.get(c), c, "context", weight.device)
        if fg_centres.shape[0] == 0:
            return fg_centres, fg_centres
        prototypes, context, fallback_p = select_with_fallback_info(
            fg_centres, bg_centres, weight, c, class_threshold=self.config.class_threshold,
            context_window=self.config.context_window, bias=bias if self.config.use_bias else None)
        if fallback_p is None:
            self.best_centre_fallbacks_.pop(c, None)
        else:
            self.best_centre_fallbacks_[c] = fallback_p
        return prototypes, context

    def _cluster(self, pool: Optional[FeaturePool], c: int, kind: str, device: torch.device) -> torch.Tensor:
        dim = self.feature_dim_ or 0
        if pool is None or len(pool) == 0:
            return torch.zeros(0, dim, device=device)
        x = pool.sorted_rows().to(device).float()
        k = self.config.num_clusters
        if len(pool) < k:
            warnings.warn(f"class {c}: {kind} pool has {len(pool)} features < K={k}; using K={len(pool)}",
                          RuntimeWarning, stacklevel=3)
            k = len(pool)
        result = kmeans(x, k, seed=self.config.seed + c, max_iter=self.config.kmeans_max_iter,
                        tol=self.config.kmeans_tol, n_init=self.config.kmeans_n_init,
                        backend=self.config.kmeans_backend)
        return result.centers

    def fit_prototypes(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       *, metadata: Optional[Dict[str, Any]] = None) -> "LPCAM":
        """Run K-means and selection for every class; sets ``bank_`` and ``weight_``.

        Args:
            weight: ``(C, D)`` selection weight (reduce conv heads with ``reduce_conv_head``).
            bias: optional ``(C,)``; used only when ``config.use_bias``.
            metadata: extra JSON facts stored in the bank.
        """
        weight = self.check_weight(weight)
        prototypes, context = {}, {}
        for c in progress_bar(range(self.num_classes), progress=self.progress, desc="LPCAM prototypes"):
            prototypes[c], context[c] = self.fit_class_prototypes(c, weight, bias)
        return self.set_bank(prototypes, context, weight, metadata=metadata)

    def set_bank(self, prototypes: Dict[int, torch.Tensor], context: Dict[int, torch.Tensor],
                 weight: torch.Tensor, *, metadata: Optional[Dict[str, Any]] = None) -> "LPCAM":
        """Store fitted per-class prototypes as ``bank_`` (used by :meth:`fit_prototypes` and distributed fitting)."""
        info = {"n_images": self.n_images_seen_,
                "foreground_pool_sizes": {c: len(p) for c, p in sorted(self.foreground_pools_.items())},
                "context_pool_sizes": {c: len(p) for c, p in sorted(self.context_pools_.items())}}
        self.bank_ = PrototypeBank(prototypes, context, num_classes=self.num_classes, feature_dim=weight.shape[1],
                                   config=self.config, class_names=self.class_names,
                                   metadata={**info, **(metadata or {})})
        self.weight_ = weight.detach()
        if self.best_centre_fallbacks_:
            detail = ", ".join(f"{c} (p={p:.3f})" for c, p in sorted(self.best_centre_fallbacks_.items()))
            warnings.warn(f"no foreground centre passed class_threshold={self.config.class_threshold} for "
                          f"class(es) {detail}; kept the best centre of each", RuntimeWarning, stacklevel=3)
        missing = self.bank_.classes_without_prototypes
        if missing:
            warnings.warn(f"class(es) {missing} have no prototypes: their foreground pools are empty (no image of "
                          "these classes had a baseline CAM above split_threshold); their maps raise, or fall back "
                          "to CAM with fallback='cam'", RuntimeWarning, stacklevel=3)
        return self

    def check_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Validate a ``(C, D)`` selection weight against this estimator; return it."""
        weight = check_matrix(weight, "weight")
        if weight.shape[0] != self.num_classes:
            raise ValueError(f"weight has {weight.shape[0]} rows, expected C={self.num_classes} (no background row)")
        if self.feature_dim_ is not None:
            check_feature_dim(self.feature_dim_, weight.shape[1])
        check_finite(weight, "weight")
        return weight

    def fit(self, batches: Iterable[Tuple[Any, ...]], weight: torch.Tensor,
            bias: Optional[torch.Tensor] = None) -> "LPCAM":
        """``partial_fit`` over ``batches`` of ``(features, labels)`` or ``(features, labels, cams)``,
        then :meth:`fit_prototypes`."""
        for batch in progress_bar(batches, progress=self.progress, desc="LPCAM features"):
            features, labels, *rest = batch
            self.partial_fit(features, labels, cams=rest[0] if rest else None, weight=weight)
        return self.fit_prototypes(weight, bias)

    @classmethod
    def from_bank(cls, bank: PrototypeBank, *, progress: Optional[bool] = None) -> "LPCAM":
        """An estimator ready to produce maps from a saved bank."""
        config = LPCAMConfig.from_dict(bank.config) if bank.config else LPCAMConfig()
        model = cls(bank.num_classes, config=config, class_names=bank.class_names, progress=progress)
        model.bank_ = bank
        model.feature_dim_ = bank.feature_dim
        return model

    # ------------------------------------------------------------------ maps
    def __call__(
        self,
        features: torch.Tensor,
        labels_or_classes: Union[torch.Tensor, Sequence[int]],
        *,
        normalize: bool = True,
        fallback: str = "error",
        weight: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """LPCAM maps for ``features`` ``(B, D, h, w)``.

        Args:
            labels_or_classes: ``(B, C)`` multi-hot labels, giving ``(B, C, h, w)`` maps that are
                zero for each image's absent classes; or a sequence of class indices, giving
                ``(B, len(classes), h, w)``.
            normalize: divide each map by its max + 1e-5.
            fallback: for classes without prototypes, ``"error"`` raises ``ValueError``;
                ``"cam"`` returns the plain CAM of ``weight`` (or ``weight_``) for them.
        """
        if self.bank_ is None:
            raise RuntimeError("LPCAM is not fitted: call fit_prototypes() first or use LPCAM.from_bank()")
        if fallback not in ("error", "cam"):
            raise ValueError(f"fallback must be 'error' or 'cam', got {fallback!r}")
        check_tensor(features, "features")
        check_ndim(features, "features", 4, "(B, D, h, w)")
        mask = None
        if isinstance(labels_or_classes, torch.Tensor) and labels_or_classes.dim() == 2:
            mask = self._check_labels(labels_or_classes, features.shape[0]).to(features.device)
            classes: List[int] = list(range(self.num_classes))
            if fallback == "error":
                classes_needed = sorted(set(torch.nonzero(mask)[:, 1].tolist()))
            else:
                classes_needed = classes
        else:
            classes = check_classes(labels_or_classes, self.num_classes)
            classes_needed = classes
        with_prototypes = [c for c in classes_needed if self.bank_.has_prototypes(c)]
        without = [c for c in classes_needed if not self.bank_.has_prototypes(c)]
        if without and fallback == "error":
            self.bank_.directions(without)  # raises, naming the classes
        b, _, h, w = features.shape
        maps = torch.zeros(b, len(classes), h, w, device=features.device)
        position = {c: i for i, c in enumerate(classes)}
        if with_prototypes:
            index = torch.tensor([position[c] for c in with_prototypes], device=features.device)
            maps[:, index] = lpcam_map(features, self.bank_, with_prototypes, normalize=False)
        if without:
            fallback_weight = weight if weight is not None else self.weight_
            if fallback_weight is None:
                raise ValueError(f"fallback='cam' for classes {without} needs the classifier weight (weight=...)")
            fallback_weight = self.check_weight(fallback_weight)
            index = torch.tensor([position[c] for c in without], device=features.device)
            maps[:, index] = cam_map(features, fallback_weight, without, normalize=False)
        if mask is not None:
            maps = maps * mask[:, :, None, None]
        return max_normalize(maps) if normalize else maps


def _as_map_list(value: FeatureBatch, name: str, ndim: int, layout: str) -> List[torch.Tensor]:
    """A batch tensor ``(B, ...)`` or a sequence of per-image tensors, as a list of per-image tensors."""
    if isinstance(value, torch.Tensor):
        check_tensor(value, name)
        check_ndim(value, name, ndim + 1, f"(B, {layout[1:]}")
        return list(value.unbind(0))
    items = list(value)
    for i, item in enumerate(items):
        check_tensor(item, f"{name}[{i}]")
        check_ndim(item, f"{name}[{i}]", ndim, layout)
    return items
