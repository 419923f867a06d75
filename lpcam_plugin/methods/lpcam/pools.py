"""Bounded, exactly mergeable feature pools (bottom-k sampling).

Every local feature arrives with a random key in ``[0, 1)``; a pool keeps the ``cap`` features
with the smallest keys. That is a uniform sample without replacement of everything the pool has
seen, its memory never exceeds ``cap`` rows, and, because the keys are a deterministic function
of (seed, image id, class, position) (:func:`position_keys`), the sample does not depend on the
order or the process in which images arrive: the merge of two pools (the bottom-k of their union)
is exactly the pool one process would have built from all the images.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Union

import numpy as np
import torch

ImageId = Union[int, str]

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_INITIAL_ROWS = 1024


def image_id_to_int(image_id: ImageId) -> int:
    """A stable 63-bit integer for an image identifier (ints map to themselves modulo 2**63)."""
    if isinstance(image_id, (int, np.integer)):
        return int(image_id) % (1 << 63)
    if isinstance(image_id, str):
        return int.from_bytes(hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1
    raise TypeError(f"image ids must be int or str, got {type(image_id).__name__}")


def position_keys(seed: int, image_id: ImageId, class_index: int, num_positions: int) -> torch.Tensor:
    """Sampling keys ``(num_positions,)`` float64 in ``[0, 1)`` for one image and class."""
    sequence = np.random.SeedSequence([int(seed) % (1 << 63), image_id_to_int(image_id), int(class_index)])
    return torch.from_numpy(np.random.default_rng(sequence).random(num_positions))


class FeaturePool:
    """A bottom-``cap`` sample of ``(n, D)`` feature rows keyed by float64 keys.

    Args:
        dim: D.
        cap: most rows kept.
        dtype: ``"float32"`` or ``"float16"`` storage.
        spill_path: when given, rows live in a memory-mapped file at this path (created,
            ``cap * D`` entries) instead of RAM.

    Attributes:
        count_seen: rows offered to the pool so far (including merged pools).
    """

    def __init__(self, dim: int, cap: int, *, dtype: str = "float32", spill_path: Optional[str] = None) -> None:
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_TORCH_DTYPES)}, got {dtype!r}")
        self.dim = int(dim)
        self.cap = int(cap)
        self.dtype = dtype
        self.spill_path = spill_path
        self.count_seen = 0
        self._size = 0
        self._keys = torch.empty(0, dtype=torch.float64)
        if spill_path is None:
            self._rows = torch.empty(0, self.dim, dtype=_TORCH_DTYPES[dtype])
        else:
            os.makedirs(os.path.dirname(os.path.abspath(spill_path)), exist_ok=True)
            mapped = np.lib.format.open_memmap(spill_path, mode="w+", dtype=np.dtype(dtype), shape=(self.cap, self.dim))
            self._rows = torch.from_numpy(mapped)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored rows (their capacity, in RAM or on disk)."""
        return self._rows.numel() * self._rows.element_size()

    def _reserve(self, rows: int) -> None:
        if self._rows.shape[0] >= rows:
            return
        grown = min(self.cap, max(rows, 2 * self._rows.shape[0], _INITIAL_ROWS))
        bigger = torch.empty(grown, self.dim, dtype=self._rows.dtype)
        bigger[: self._size] = self._rows[: self._size]
        self._rows = bigger

    def add(self, features: torch.Tensor, keys: torch.Tensor) -> None:
        """Offer rows ``features`` ``(n, D)`` with ``keys`` ``(n,)``; keep the ``cap`` smallest keys overall."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"pool expects (n, {self.dim}) features, got {tuple(features.shape)}")
        if keys.shape != (features.shape[0],):
            raise ValueError(f"keys must have shape ({features.shape[0]},), got {tuple(keys.shape)}")
        self.count_seen += features.shape[0]
        keys = keys.to(torch.float64)
        if self._size == self.cap:
            entering = keys < self._keys[: self._size].max()
            features, keys = features[entering], keys[entering]
        if features.shape[0] == 0:
            return
        features = features.detach().to("cpu", _TORCH_DTYPES[self.dtype])
        size = self._size
        free = self.cap - size
        if features.shape[0] > free:
            all_keys = torch.cat([self._keys[:size], keys])
            kept = torch.zeros(all_keys.shape[0], dtype=torch.bool)
            kept[torch.topk(all_keys, self.cap, largest=False, sorted=False).indices] = True
            evicted_slots = torch.nonzero(~kept[:size]).flatten()
            new_rows = torch.nonzero(kept[size:]).flatten()
            slots = torch.cat([evicted_slots, torch.arange(size, self.cap)])
        else:
            new_rows = torch.arange(features.shape[0])
            slots = torch.arange(size, size + features.shape[0])
        self._reserve(int(slots.max()) + 1)
        if self._keys.shape[0] < self._rows.shape[0]:
            self._keys = torch.cat([self._keys,
                                    torch.empty(self._rows.shape[0] - self._keys.shape[0], dtype=torch.float64)])
        self._rows[slots] = features[new_rows]
        self._keys[slots] = keys[new_rows]
        self._size = max(size, int(slots.max()) + 1)

    def merge(self, other: "FeaturePool") -> None:
        """Fold ``other`` in: the result is the bottom-``cap`` of both pools' rows."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge pools of D={other.dim} into D={self.dim}")
        seen = self.count_seen + other.count_seen
        self.add(other._rows[: len(other)], other._keys[: len(other)])
        self.count_seen = seen

    def sorted_rows(self) -> torch.Tensor:
        """The kept rows ``(m, D)`` ordered by key: the same set gives the same tensor, whatever the arrival order."""
        order = torch.argsort(self._keys[: self._size])
        return self._rows[: self._size][order]

    def sorted_keys(self) -> torch.Tensor:
        """The kept keys ``(m,)`` in ascending order."""
        return torch.sort(self._keys[: self._size]).values
