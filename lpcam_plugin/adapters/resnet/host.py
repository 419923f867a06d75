"""What an IRN-family CAM step is (:class:`HostSpec`), its network, its dataset and its geometry.

The hosts' modules (``voc12.dataloader``, the network module) are imported from the user's fork
at call time; nothing here imports torchvision.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.adapters.resnet.datasets import VOC, HostDataset
from lpcam_plugin.adapters.resnet.options import METHODS, HostValues, LPCAMOptions


@dataclass(frozen=True)
class HostSpec:
    """What differs between the IRN CAM step and AMN's CAM step (route b).

    Attributes:
        name: ``"irn"``, ``"irn-coco"`` or ``"amn"``; recorded in the bank and the done log.
        network_arg, weights_arg, out_dir_arg: names of the attributes (of the host's ``args``,
            carried under the same names by :class:`~.options.LPCAMOptions`) holding the network
            module, the weights name (the dataset's ``weights_suffix`` is appended, as the hosts
            do) and the output folder.
        selection_weight: ``model -> (W (20, D), bias (20,) or None, description)``.
        host_cams: ``(model, stacks, label, size, name, options) -> (K, H, W)`` the host's own
            max-normalised foreground CAMs of the present classes, computed the host way.
        write: ``(path, keys (K,), strided (K, h4, w4), high_res (K, H, W))`` saves one file.
        high_res_direct: resize each scale straight to (H, W) (AMN) instead of to the
            16-padded size and cropping (IRN).
        bank_field: the :class:`~.options.LPCAMOptions` field of an explicit bank path for this
            host (``bank`` = ``--lpcam_bank``, ``amn_bank`` = ``--lpcam_amn_bank``).
        extra_fit_key: ``options -> dict`` extra facts that must match for bank reuse.
        methods: the ``--lpcam_method`` values (registry names) this CAM step supports;
            ``methods_note`` says why the others are not.
        dataset: what the step reads (:data:`~.datasets.VOC`, :data:`~.datasets.COCO`, :data:`~.datasets.COCO14`).
        model_kwargs: the keyword arguments the host passes to this network's ``CAM`` / ``Net``
            (COCO: ``n_classes=80`` in the reference's pipeline, ``coco=True`` in AMN's stage 1).
        baseline_dir_arg: the attribute holding the folder of the host's own CAM files (the
            default baseline of the LPCAM fit), when it is not ``out_dir_arg``.
    """

    name: str
    network_arg: str
    weights_arg: str
    out_dir_arg: str
    selection_weight: Callable[[nn.Module], Tuple[torch.Tensor, Optional[torch.Tensor], str]]
    host_cams: Callable[..., torch.Tensor]
    write: Callable[[Path, torch.Tensor, torch.Tensor, torch.Tensor], None]
    high_res_direct: bool
    bank_field: str = "bank"
    extra_fit_key: Optional[Callable[[LPCAMOptions], Dict[str, Any]]] = None
    methods: Tuple[str, ...] = METHODS
    methods_note: str = ""
    dataset: HostDataset = VOC
    baseline_dir_arg: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)

    def weights_path(self, host: HostValues) -> str:
        """The host's trained weights file (``<weights name>.pth`` on VOC, the name itself on COCO)."""
        return self.dataset.weights(getattr(host, self.weights_arg))

    def out_dir(self, host: HostValues) -> Path:
        """The folder the CAM step writes into."""
        return Path(getattr(host, self.out_dir_arg))

    def bank_path(self, opts: LPCAMOptions) -> Path:
        """The explicit bank file, else ``<weights name>.lpcam_bank.npz`` next to the weights."""
        explicit = getattr(opts, self.bank_field, None)
        if explicit:
            return Path(explicit)
        return Path(os.path.splitext(self.weights_path(opts))[0] + ".lpcam_bank.npz")


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the host network to ``device`` in inference mode.

    IRN's and AMN's ``Net.train`` never call ``super().train``, so ``model.eval()`` changes
    nothing (docs/design/hosts.md §1.3); the base-class method really switches every submodule,
    which turns off AMN's classifier dropout (IRN has none). LPCAM's stage-4 features are unaffected.
    """
    nn.Module.train(model, False)
    return model.to(device)


def load_host_model(spec: HostSpec, host: HostValues, device: torch.device,
                    weights: Optional[Path] = None) -> nn.Module:
    """``getattr(importlib.import_module(<network>), 'CAM')(**spec.model_kwargs)`` with the host's
    weights (strict), or with ``weights`` (e.g. the ReCAM-fine-tuned network)."""
    model = importlib.import_module(getattr(host, spec.network_arg)).CAM(**spec.model_kwargs)
    state = torch.load(weights if weights is not None else spec.weights_path(host), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state, strict=True)
    return prepare_model(model, device)


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
    """``stage4(stage3(stage2(stage1(x))))`` of the host network: ``(B, 3, H, W) -> (B, D, h, w)``."""
    return model.stage4(model.stage3(model.stage2(model.stage1(x))))


def scale_one_index(scales: Sequence[float]) -> int:
    """The position of scale 1.0 in ``scales``; ``ValueError`` when there is none."""
    for i, s in enumerate(scales):
        if float(s) == 1.0:
            return i
    raise ValueError(f"scales {tuple(scales)} have no 1.0")


__all__ = ["HostSpec", "image_stacks", "load_host_model",
           "pack_size", "prepare_model", "resize", "scale_one_index", "stage4_features", "strided_size",
           "strided_up_size"]
