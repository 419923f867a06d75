"""Host-agnostic inputs of the ``fit`` / ``infer`` commands: model factory, feature function, image list.

* ``--model pkg.module:factory`` names a callable returning an ``nn.Module``; ``--checkpoint``
  is loaded into it with ``torch.load(weights_only=True)``.
* The feature map is captured with a :class:`~lpcam_plugin.core.hooks.FeatureHook` on a dotted module
  name; the classifier weight is a dotted parameter name (4-D conv heads are reduced to (C, D)).
* Images come from a VOC-style folder: an id list, ``<images>/<id><suffix>`` files, and labels
  as a ``(N, C)`` ``.npy`` array aligned with the list, a JSON ``{id: [class, ...]}`` dict, or
  (with ``allow_pickle=True`` only) an IRN-style pickled ``cls_labels.npy`` dict.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lpcam_plugin.core.hooks import FeatureHook, tokens_to_map
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.methods.lpcam.selection import reduce_conv_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_object(spec: str) -> Any:
    """Import ``"pkg.module:attr.sub"`` and return the attribute."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"expected 'package.module:callable', got {spec!r}")
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {exc}") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr_path!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def build_model(spec: str, checkpoint: Optional[PathLike] = None, *, strict: bool = True,
                state_key: Optional[str] = None, kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Call the factory ``spec`` and load ``checkpoint`` (a state dict) into the module.

    Args:
        spec: ``"pkg.module:factory"``; ``factory(**kwargs)`` returns an ``nn.Module``.
        checkpoint: a file saved with ``torch.save(model.state_dict())``, loaded with
            ``weights_only=True``; ``state_key`` picks a nested dict (e.g. ``"model"``).
        strict: passed to ``load_state_dict``.

    Returns:
        The module in eval mode (``nn.Module.train(model, False)``, which also reaches hosts
        whose ``train()`` override forgets ``super()``), on the CPU.
    """
    factory = load_object(spec)
    if not callable(factory):
        raise TypeError(f"{spec!r} is not callable")
    model = factory(**(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec!r} returned {type(model).__name__}, expected a torch.nn.Module")
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state_key is not None:
            state = state[state_key]
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint {checkpoint} holds {type(state).__name__}, expected a state dict")
        model.load_state_dict(state, strict=strict)
    nn.Module.train(model, False)
    return model


def classifier_weight(model: nn.Module, weight_name: str, bias_name: Optional[str] = None, *,
                      conv_mode: str = "sum", rows: Optional[Tuple[int, int]] = None
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The ``(C, D)`` classifier weight (and ``(C,)`` bias) read from dotted parameter names.

    ``(C, D, 1, 1)`` weights are squeezed, larger kernels reduced with
    :func:`~lpcam_plugin.methods.lpcam.selection.reduce_conv_head` (``conv_mode`` "sum" or "center");
    ``rows=(start, stop)`` keeps those class rows (AMN: ``(1, 21)`` drops the background row).
    """
    try:
        weight = model.get_parameter(weight_name).detach()
    except AttributeError as exc:
        raise ValueError(f"the model has no parameter {weight_name!r}") from exc
    bias = None
    if bias_name is not None:
        try:
            bias = model.get_parameter(bias_name).detach()
        except AttributeError as exc:
            raise ValueError(f"the model has no parameter {bias_name!r}") from exc
    if weight.dim() == 4:
        weight, bias = reduce_conv_head(weight, bias, mode=conv_mode)
    elif weight.dim() != 2:
        raise ValueError(f"classifier weight {weight_name!r} must be (C, D) or (C, D, kh, kw), "
                         f"got {tuple(weight.shape)}")
    if rows is not None:
        start, stop = rows
        weight = weight[start:stop]
        bias = None if bias is None else bias[start:stop]
    return weight.float().cpu(), None if bias is None else bias.float().cpu()


class HookedFeatures:
    """A feature function: ``images (B, 3, H, W) -> features (B, D, h, w)`` through a forward hook.

    Runs ``model(images)`` under ``torch.inference_mode()`` and returns what ``layer`` emitted.
    ``num_prefix_tokens`` (ViT tokens) reshapes ``(B, P + N, D)`` tokens onto the patch grid
    ``(H // patch, W // patch)`` when ``patch_size`` is given, else onto a square grid.
    """

    def __init__(self, model: nn.Module, layer: str, *, num_prefix_tokens: Optional[int] = None,
                 patch_size: Optional[int] = None) -> None:
        try:
            self.module = model.get_submodule(layer)
        except AttributeError as exc:
            raise ValueError(f"the model has no submodule {layer!r}") from exc
        self.model = model
        self.layer = layer
        self.num_prefix_tokens = num_prefix_tokens
        self.patch_size = patch_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        transform = None
        if self.num_prefix_tokens is not None:
            grid = None
            if self.patch_size is not None:
                grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
            transform = tokens_to_map(self.num_prefix_tokens, grid)
        with FeatureHook(self.module, reshape_transform=transform) as hook, torch.inference_mode():
            self.model(images)
            features = hook.features
        if features is None:
            raise RuntimeError(f"layer {self.layer!r} was not called during the forward pass")
        if features.dim() != 4:
            raise ValueError(f"layer {self.layer!r} produced {tuple(features.shape)}; expected (B, D, h, w) "
                             "(pass --num-prefix-tokens for token outputs)")
        return features


def read_labels(path: PathLike, ids: Sequence[str], num_classes: Optional[int] = None, *,
                allow_pickle: bool = False) -> np.ndarray:
    """Multi-hot labels ``(N, C)`` float32 aligned with ``ids``.

    Accepted files: ``.npy`` ``(N, C)`` array aligned with the list; ``.json``
    ``{id: [class indices]}`` (needs ``num_classes``); ``.npy`` pickled dict
    ``{id or int(id without "_"): (C,) array}`` (IRN ``cls_labels.npy``) only with ``allow_pickle``.
    """
    path = Path(path)
    if path.suffix == ".json":
        table = json.loads(path.read_text())
        if num_classes is None:
            raise ValueError("JSON labels need --num-classes")
        out = np.zeros((len(ids), num_classes), dtype=np.float32)
        for row, image_id in enumerate(ids):
            if image_id not in table:
                raise ValueError(f"labels file {path} has no entry for id {image_id!r}")
            classes = [int(c) for c in table[image_id]]
            if any(not 0 <= c < num_classes for c in classes):
                raise ValueError(f"id {image_id!r} has class indices {classes} outside [0, {num_classes})")
            out[row, classes] = 1.0
        return out
    if path.suffix != ".npy":
        raise ValueError(f"labels must be a .npy or .json file, got {path}")
    try:
        array = np.load(path, allow_pickle=allow_pickle)
    except ValueError as exc:
        raise ValueError(f"{path} is a pickled object; pass --allow-pickle if you trust it") from exc
    if array.dtype == object:
        table = array.item()
        rows = []
        for image_id in ids:
            key = image_id if image_id in table else _irn_int_id(image_id)
            if key not in table:
                raise ValueError(f"labels file {path} has no entry for id {image_id!r}")
            rows.append(np.asarray(table[key], dtype=np.float32))
        array = np.stack(rows)
    if array.ndim != 2 or array.shape[0] != len(ids):
        raise ValueError(f"labels array {path} must be (N={len(ids)}, C), got {array.shape}")
    if num_classes is not None and array.shape[1] != num_classes:
        raise ValueError(f"labels array {path} has {array.shape[1]} classes, expected {num_classes}")
    return array.astype(np.float32)


def _irn_int_id(image_id: str) -> Any:
    """IRN keys its label dict by the id as an int with the underscore removed."""
    digits = image_id.replace("_", "")
    return int(digits) if digits.isdigit() else image_id


class ImageListDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (id, image (3, H, W) float32 normalised, labels (C,) float32)``.

    Args:
        image_dir: folder of ``<id><suffix>`` image files (read with Pillow, RGB).
        ids: image ids.
        labels: ``(N, C)`` multi-hot array aligned with ``ids``.
        suffix: file name suffix, ``".jpg"`` for VOC/COCO JPEGs.
        mean, std: per-channel normalisation of the [0, 1] RGB image.
        resize: optional ``(H, W)`` every image is resized to (bilinear), so batches stack.
    """

    def __init__(self, image_dir: PathLike, ids: Sequence[str], labels: np.ndarray, *, suffix: str = ".jpg",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 resize: Optional[Tuple[int, int]] = None) -> None:
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} label rows")
        self.image_dir = Path(image_dir)
        self.ids = list(ids)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.suffix = suffix
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tuple[str, torch.Tensor, torch.Tensor]:
        from PIL import Image

        image_id = self.ids[index]
        with Image.open(self.image_dir / f"{image_id}{self.suffix}") as img:
            img = img.convert("RGB")
            if self.resize is not None:
                img = img.resize((self.resize[1], self.resize[0]), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
        image = (torch.from_numpy(array).permute(2, 0, 1) - self.mean) / self.std
        return image_id, image, torch.from_numpy(self.labels[index])


class ArrayImageDataset(torch.utils.data.Dataset):
    """In-memory images: ``dataset[i] -> (id, image (3, H, W) float32 normalised, labels (C,) float32)``.

    Args:
        ids: N image ids.
        images: ``(N, H, W, 3)`` uint8 RGB.
        labels: ``(N, C)`` multi-hot.
        mean, std: per-channel normalisation of the [0, 1] image (the synthetic benchmark
            uses 0.5 / 0.25, see :func:`lpcam_plugin.benchmark.synthetic.images_to_tensor`).
    """

    def __init__(self, ids: Sequence[str], images: np.ndarray, labels: np.ndarray, *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if not len(ids) == len(images) == len(labels):
            raise ValueError(f"{len(ids)} ids, {len(images)} images and {len(labels)} label rows must match")
        self.ids = list(ids)
        self.images = images
        self.labels = np.asarray(labels, dtype=np.float32)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tuple[str, torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1).float() / 255.0
        return self.ids[index], (image - self.mean) / self.std, torch.from_numpy(self.labels[index])


def collate_items(items: List[Tuple[str, torch.Tensor, torch.Tensor]]) -> List[Tuple[str, torch.Tensor, torch.Tensor]]:
    """DataLoader ``collate_fn`` that keeps the items as a list (images may differ in size)."""
    return list(items)


def stack_by_size(items: Sequence[Tuple[str, torch.Tensor, torch.Tensor]]
                  ) -> List[Tuple[List[str], torch.Tensor, torch.Tensor]]:
    """Group items of equal image size into ``(ids, images (B, 3, H, W), labels (B, C))`` batches."""
    groups: Dict[Tuple[int, ...], List[Tuple[str, torch.Tensor, torch.Tensor]]] = {}
    for item in items:
        groups.setdefault(tuple(item[1].shape), []).append(item)
    return [([i for i, _, _ in g], torch.stack([x for _, x, _ in g]), torch.stack([y for _, _, y in g]))
            for g in groups.values()]


FeatureFn = Callable[[torch.Tensor], torch.Tensor]
