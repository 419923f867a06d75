"""The fitted prototypes: a pickle-free, checksummed, atomically written file format."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from lpcam_plugin.core.archive import read_archive, write_archive
from lpcam_plugin.core.checks import check_classes, check_finite, check_matrix
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.version import __version__
from lpcam_plugin.methods.lpcam.config import LPCAMConfig

FORMAT_NAME = "lpcam_plugin.PrototypeBank"
#: Version 2: a :mod:`lpcam_plugin.core.archive` file; version 1 (a plain ``.npz``) is refused (refit).
FORMAT_VERSION = 2
_EPS = 1e-12


class PrototypeBank:
    """Class and context prototypes of every class, with the settings they were fitted with.

    A bank is read-only once built (its map directions are cached); build a new one to change it.

    Args:
        class_prototypes: ``{c: (P_c, D)}``; a class missing here (or with ``P_c == 0``) has no
            prototypes (its foreground pool was empty when fitting).
        context_prototypes: ``{c: (Q_c, D)}``; ``Q_c`` may be 0.
        num_classes: C; default: one more than the largest class index given.
        feature_dim: D; default: inferred from the prototypes.
        config: the :class:`LPCAMConfig` (or its dict) used to fit.
        class_names: optional C names.
        metadata: free JSON-serialisable facts (checkpoint hash, image list, host...).
        version: package version that fitted the bank (default: this one).
    """

    def __init__(
        self,
        class_prototypes: Mapping[int, torch.Tensor],
        context_prototypes: Optional[Mapping[int, torch.Tensor]] = None,
        *,
        num_classes: Optional[int] = None,
        feature_dim: Optional[int] = None,
        config: Union[LPCAMConfig, Mapping[str, Any], None] = None,
        class_names: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        version: Optional[str] = None,
    ) -> None:
        context_prototypes = context_prototypes or {}
        keys = [int(c) for c in list(class_prototypes) + list(context_prototypes)]
        if num_classes is None:
            if not keys:
                raise ValueError("an empty bank needs num_classes")
            num_classes = max(keys) + 1
        check_classes(sorted(set(keys)), num_classes)
        dims = {int(t.shape[1]) for t in list(class_prototypes.values()) + list(context_prototypes.values())
                if isinstance(t, torch.Tensor) and t.dim() == 2}
        if feature_dim is None:
            if len(dims) != 1:
                raise ValueError(f"cannot infer feature_dim from prototypes of dims {sorted(dims)}; pass feature_dim")
            feature_dim = dims.pop()
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.class_prototypes = {c: self._checked(class_prototypes.get(c), f"class_prototypes[{c}]")
                                 for c in range(self.num_classes)}
        self.context_prototypes = {c: self._checked(context_prototypes.get(c), f"context_prototypes[{c}]")
                                   for c in range(self.num_classes)}
        if isinstance(config, LPCAMConfig):
            config = config.to_dict()
        self.config: Dict[str, Any] = dict(config or {})
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {self.num_classes} classes")
        self.class_names: Optional[List[str]] = None if class_names is None else [str(n) for n in class_names]
        self.metadata: Dict[str, Any] = dict(metadata or {})
        self.version = version or __version__
        self._directions: Dict[int, torch.Tensor] = {}

    def _checked(self, value: Optional[torch.Tensor], name: str) -> torch.Tensor:
        if value is None:
            return torch.zeros(0, self.feature_dim)
        check_matrix(value, name)
        if value.shape[1] != self.feature_dim:
            raise ValueError(f"{name} has D={value.shape[1]}, the bank has feature_dim={self.feature_dim}")
        check_finite(value, name)
        return value.detach().float().cpu().contiguous()

    def class_name(self, c: int) -> str:
        """The name of class ``c`` (its index when the bank has no names)."""
        return self.class_names[c] if self.class_names else str(c)

    def has_prototypes(self, c: int) -> bool:
        """Whether class ``c`` has at least one class prototype."""
        return self.class_prototypes[int(c)].shape[0] > 0

    @property
    def classes_without_prototypes(self) -> List[int]:
        """Classes whose foreground pool was empty at fit time."""
        return [c for c in range(self.num_classes) if not self.has_prototypes(c)]

    def directions(self, classes: Sequence[int]) -> torch.Tensor:
        """``(len(classes), D)`` vectors ``u_c = mean_p p/|p| - mean_q q/|q|`` (the collapsed Eq. 5/6).

        The context term is dropped for classes without context prototypes. Raises
        ``ValueError`` naming any class that has no class prototypes. Vectors are computed once
        per class and cached: treat a bank's prototypes as read-only after construction.
        """
        classes = check_classes(classes, self.num_classes)
        missing = [c for c in classes if not self.has_prototypes(c)]
        if missing:
            names = ", ".join(f"{c} ({self.class_name(c)})" for c in missing)
            raise ValueError(f"class(es) {names} have no class prototypes (empty foreground pool at fit time); "
                             "use fallback='cam' or fit with images of these classes")
        for c in classes:
            if c not in self._directions:
                u = _unit_mean(self.class_prototypes[c])
                if self.context_prototypes[c].shape[0]:
                    u = u - _unit_mean(self.context_prototypes[c])
                self._directions[c] = u
        if not classes:
            return torch.zeros(0, self.feature_dim)
        return torch.stack([self._directions[c] for c in classes])

    def without_context(self) -> "PrototypeBank":
        """A copy with no context prototypes (LPCAM-F, the paper's ablation)."""
        return PrototypeBank(self.class_prototypes, {}, num_classes=self.num_classes, feature_dim=self.feature_dim,
                             config=self.config, class_names=self.class_names,
                             metadata={**self.metadata, "variant": "LPCAM-F"}, version=self.version)

    def _arrays(self) -> Dict[str, np.ndarray]:
        arrays = {}
        for c in range(self.num_classes):
            arrays[f"class_{c}"] = self.class_prototypes[c].numpy()
            arrays[f"context_{c}"] = self.context_prototypes[c].numpy()
        return arrays

    def save(self, path: PathLike) -> None:
        """Write the bank to ``path`` atomically (a checksummed, pickle-free :mod:`~lpcam_plugin.core.archive`)."""
        write_archive(path, FORMAT_NAME, FORMAT_VERSION, self._header(), self._arrays())

    def _header(self) -> Dict[str, Any]:
        return {"num_classes": self.num_classes, "feature_dim": self.feature_dim, "config": self.config,
                "class_names": self.class_names, "metadata": self.metadata, "version": self.version}

    def checksum(self) -> str:
        """sha256 (hex) of the prototypes, config, class names, metadata and version: what a map producer depends on."""
        digest = hashlib.sha256(json.dumps(self._header(), sort_keys=True, default=str).encode("utf-8"))
        for name, array in sorted(self._arrays().items()):
            digest.update(f"|{name}|{array.shape}|".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        expected_feature_dim: Optional[int] = None,
        expected_config: Union[LPCAMConfig, Mapping[str, Any], None] = None,
    ) -> "PrototypeBank":
        """Read a bank written by :meth:`save` (never unpickles).

        Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` for a file
        that is not a bank (e.g. a ``.npy``), another format, a bank of a newer format version or
        of format version 1 (a plain ``.npz`` of earlier releases; refit it), a truncated or
        modified file (checksum over the header and every array), or one that does not match
        ``expected_feature_dim`` / ``expected_config``.
        """
        header, arrays = read_archive(path, FORMAT_NAME, FORMAT_VERSION)
        try:
            num_classes = int(header["num_classes"])
            prototypes = {c: torch.from_numpy(arrays[f"class_{c}"]) for c in range(num_classes)}
            context = {c: torch.from_numpy(arrays[f"context_{c}"]) for c in range(num_classes)}
            bank = cls(prototypes, context, num_classes=num_classes, feature_dim=int(header["feature_dim"]),
                       config=header["config"], class_names=header["class_names"], metadata=header["metadata"],
                       version=header["version"])
        except KeyError as error:
            raise ValueError(f"{path}: prototype bank lacks {error}") from error
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: invalid prototype bank: {error}") from error
        if expected_feature_dim is not None and bank.feature_dim != expected_feature_dim:
            raise ValueError(f"{path}: bank has feature_dim={bank.feature_dim}, expected {expected_feature_dim}")
        if expected_config is not None:
            expected = expected_config.to_dict() if isinstance(expected_config, LPCAMConfig) else dict(expected_config)
            diff = {k: (bank.config.get(k), v) for k, v in expected.items() if bank.config.get(k) != v}
            if diff:
                raise ValueError(f"{path}: bank was fitted with a different config; (bank, expected) = {diff}")
        return bank

    def __repr__(self) -> str:
        counts = [(self.class_prototypes[c].shape[0], self.context_prototypes[c].shape[0])
                  for c in range(self.num_classes)]
        return (f"PrototypeBank(num_classes={self.num_classes}, feature_dim={self.feature_dim}, "
                f"(P, Q) per class={counts})")


def _unit_mean(rows: torch.Tensor) -> torch.Tensor:
    """Mean of the L2-normalised rows of ``rows`` ``(n, D)``; returns ``(D,)``."""
    return (rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(_EPS)).mean(dim=0)

