"""The identity of what a training run starts from, recorded in its checkpoint and compared on resume.

Three digests (hex sha256), each as much as can be seen cheaply without running the data:

* :func:`module_digest` — a module's parameters and buffers: names, dtypes, shapes and values;
* :func:`data_identity` — a loader's length and batch size, its dataset's length, and a digest of
  the dataset's listing where it has one: ``fingerprint()``, a ``TensorDataset``'s tensors, a
  ``Subset``'s indices, a list of batches, or list attributes such as ``img_name_list`` or ``samples``
  (not the loader's or the dataset's class: a wrapper around the same data is the same data);
* :func:`value_digest` — any value: tensors and arrays by content, modules by their state, fitted
  estimators by their attributes, functions by their code, defaults and what they close over.

Two runs that start from the same weights, listing and source get the same digests on any device.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
from typing import Any, Dict, Optional, Set

import numpy as np
import torch
from torch import nn

#: Attributes a dataset may list its items in (IRN/AMN's ``img_name_list``, torchvision's ``samples``...).
LISTING_ATTRIBUTES = ("img_name_list", "image_names", "img_names", "img_list", "samples", "imgs", "files",
                      "image_paths", "paths", "ids", "names", "images", "labels", "data", "targets")
#: Attributes of an object that say how it reports, not what it computes; left out of its digest.
PRESENTATION_ATTRIBUTES = frozenset({"progress", "metadata", "training"})
#: How deep :func:`value_digest` follows containers, attributes and closures.
MAX_DEPTH = 6


def module_digest(module: nn.Module) -> str:
    """Hex sha256 of ``module.state_dict()``: every name, dtype, shape and value (read on the CPU)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        _feed_tensor(digest, tensor)
    return digest.hexdigest()


def value_digest(value: Any) -> str:
    """Hex sha256 of ``value`` as far as it can be seen: see the module docstring."""
    digest = hashlib.sha256()
    _feed(digest, value, set(), 0)
    return digest.hexdigest()


def data_identity(loader: Any) -> Dict[str, Any]:
    """JSON-able identity of a loader: ``{"batches", "batch_size", "items", "listing_sha256"}`` (None
    where the loader does not say). The listing digest comes from the dataset (or, without one,
    from the loader itself); see the module docstring."""
    dataset = getattr(loader, "dataset", None)
    listed = dataset if dataset is not None else loader
    listing = _listing(listed)
    return {
        "batches": len(loader) if hasattr(loader, "__len__") else None,
        "batch_size": getattr(loader, "batch_size", None),
        "items": len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None,
        "listing_sha256": None if listing is None else value_digest(listing),
    }


def _listing(dataset: Any) -> Optional[Any]:
    """What ``dataset`` lists its items by, or None when it shows nothing cheap."""
    fingerprint = getattr(dataset, "fingerprint", None)
    if callable(fingerprint):
        return fingerprint()
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return dataset.tensors
    if isinstance(dataset, torch.utils.data.Subset):
        return list(dataset.indices), _listing(dataset.dataset)
    if isinstance(dataset, (list, tuple)):
        return [dataset]
    found = [getattr(dataset, name) for name in LISTING_ATTRIBUTES
             if isinstance(getattr(dataset, name, None), (list, tuple, np.ndarray, torch.Tensor))]
    return found or None


def _feed_tensor(digest: Any, tensor: torch.Tensor) -> None:
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{data.dtype}{tuple(tensor.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def _feed(digest: Any, value: Any, seen: Set[int], depth: int) -> None:
    """Add ``value`` to ``digest``: containers, attributes and closures followed to :data:`MAX_DEPTH`."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
        return
    if isinstance(value, torch.Tensor):
        _feed_tensor(digest, value)
        return
    if isinstance(value, np.ndarray):
        digest.update(f"ndarray{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes() if value.dtype != object else repr(value.tolist()).encode())
        return
    if isinstance(value, np.generic):
        digest.update(repr(value.item()).encode())
        return
    if depth >= MAX_DEPTH or id(value) in seen:
        digest.update(f"<{type(value).__qualname__}>".encode())
        return
    seen.add(id(value))
    digest.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())
    for part in _parts(value):
        _feed(digest, part, seen, depth + 1)


def _parts(value: Any) -> list:
    """The values that make up ``value``, in a fixed order."""
    if isinstance(value, nn.Module):
        return list(value.state_dict().items())
    if isinstance(value, dict):
        return sorted(value.items(), key=lambda item: repr(item[0]))
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, functools.partial):
        return [value.func, value.args, value.keywords]
    if isinstance(value, types.MethodType):
        return [value.__func__, value.__self__]
    if isinstance(value, types.FunctionType):
        return _function_parts(value)
    if isinstance(value, types.CodeType):
        return [value.co_code, value.co_consts, value.co_names]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType)):
        return [getattr(value, "__qualname__", getattr(value, "__name__", ""))]
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return sorted((k, v) for k, v in attributes.items() if k not in PRESENTATION_ATTRIBUTES)
    return []


def _function_parts(function: types.FunctionType) -> list:
    """A function's name, code, defaults, closure and the data-like globals its code names."""
    cells = [_cell_value(cell) for cell in function.__closure__ or ()]
    globals_used = [(name, function.__globals__[name]) for name in function.__code__.co_names
                    if isinstance(function.__globals__.get(name), (torch.Tensor, np.ndarray, nn.Module))]
    return [function.__module__, function.__qualname__, function.__code__, function.__defaults__,
            function.__kwdefaults__, cells, globals_used]


def _cell_value(cell: Any) -> Any:
    """A closure cell's value; a marker for a variable not assigned yet."""
    try:
        return cell.cell_contents
    except ValueError:
        return "<empty cell>"


__all__ = ["LISTING_ATTRIBUTES", "module_digest", "value_digest", "data_identity"]
