"""What :meth:`FCAM.fit <lpcam_plugin.methods.fcam.estimator.FCAM.fit>` runs on: the frozen encoder
that captures the classifier's features by hooks, and the decoder's trainer (optimiser, DDP wrapper,
one step, the resumable training state). The estimator (:mod:`lpcam_plugin.methods.fcam.estimator`)
holds the loop over epochs, the maps and the files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from lpcam_plugin.core.checkpoints import save_training_state
from lpcam_plugin.core.hooks import FeatureHook
from lpcam_plugin.core.modules import get_submodule
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.decoder import FCAMDecoder, mask_absent, present_channels
from lpcam_plugin.methods.fcam.losses import fcam_losses

#: ``format`` of the training-state checkpoint written after every epoch (``FCAM.fit(checkpoint=...)``).
CHECKPOINT_FORMAT = "lpcam_plugin.FCAM.training/1"


class FrozenEncoder:
    """The user's classifier run without gradient, capturing ``feature_layer`` and the skip layers by hooks.

    Args:
        model: the classifier; ``model(images)`` must call every named layer.
        feature_layer: dotted name of the deepest features ``(B, D, h, w)``.
        skip_layers: dotted names of the skip features ``(B, D_i, h_i, w_i)``.
    """

    def __init__(self, model: nn.Module, feature_layer: str, skip_layers: Sequence[str]) -> None:
        self.model = model
        self.names = [feature_layer, *skip_layers]
        self.modules = [get_submodule(model, name) for name in self.names]

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``images (B, 3, H, W)`` -> ``(features (B, D, h, w), {skip name: (B, D_i, h_i, w_i)})``, detached."""
        hooks = [FeatureHook(module) for module in self.modules]
        try:
            with torch.no_grad():
                self.model(images)
            captured = [hook.features for hook in hooks]
        finally:
            for hook in hooks:
                hook.remove()
        for name, value in zip(self.names, captured):
            if value is None:
                raise RuntimeError(f"layer {name!r} was not called during the forward pass of "
                                   f"{type(self.model).__name__}")
            if value.dim() != 4:
                raise ValueError(f"layer {name!r} produced {tuple(value.shape)}; F-CAM needs (B, D, h, w) feature maps")
        return captured[0], dict(zip(self.names[1:], captured[1:]))


def freeze(model: nn.Module) -> Dict[nn.Module, bool]:
    """Put every module in eval mode (flags set directly: no host ``train()`` override runs); return the old flags."""
    modes = {module: module.training for module in model.modules()}
    for module in modes:
        module.training = False
    return modes


def restore(modes: Mapping[nn.Module, bool]) -> None:
    for module, flag in modes.items():
        module.training = flag


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader and on its sampler where they have it."""
    for target in (loader, getattr(loader, "sampler", None)):
        if callable(getattr(target, "set_epoch", None)):
            target.set_epoch(epoch)


#: The ``rank`` of :func:`epoch_seed`'s stream that every rank shares (the background tie order).
TIE_STREAM = -1


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed-sampling stream of one (epoch, rank): a resumed epoch draws what the uninterrupted one drew."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank



class DecoderTrainer:
    """The decoder, its optimiser and (under torch.distributed) its DDP wrapper, built from the first batch."""

    def __init__(self, config: FCAMConfig, new_decoder: Callable[[int, Sequence[int]], FCAMDecoder],
                 device: torch.device, distributed: bool) -> None:
        """``new_decoder(feature_dim, skip_channels)``: a freshly initialised decoder on the CPU."""
        self.config = config
        self.new_decoder = new_decoder
        self.device = device
        self.distributed = distributed
        self.decoder: Optional[FCAMDecoder] = None
        self.runner: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.skip_layers: List[str] = []
        self.skip_channels: List[int] = []
        self.feature_dim = 0
        mean, std = torch.tensor(self.config.pixel_mean), torch.tensor(self.config.pixel_std)
        self.mean, self.std = mean.to(device)[None, :, None, None], std.to(device)[None, :, None, None]

    def build(self, feature_dim: int, skip_layers: Sequence[str], skip_channels: Sequence[int]) -> None:
        self.feature_dim, self.skip_layers, self.skip_channels = feature_dim, list(skip_layers), list(skip_channels)
        self.decoder = self.new_decoder(feature_dim, skip_channels).to(self.device)
        params = list(self.decoder.parameters())
        if self.config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=self.config.learning_rate, momentum=self.config.momentum,
                                             weight_decay=self.config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.config.learning_rate,
                                              weight_decay=self.config.weight_decay)
        self.runner = self.decoder
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.runner = nn.parallel.DistributedDataParallel(self.decoder, device_ids=ids)

    def step(self, features: torch.Tensor, skips: Mapping[str, torch.Tensor], images: torch.Tensor,
             labels: torch.Tensor, seeds: torch.Tensor, elb_t: float, *, sigma_xy: float) -> Dict[str, float]:
        """One optimisation step with the CRF's spatial width ``sigma_xy`` (pixels); returns the losses as floats."""
        if self.decoder is None:
            given = list(skips)  # coarse to fine; among equal sizes the later-listed (deeper) layer first
            names = [given[i] for i in sorted(range(len(given)), key=lambda i: (_area(skips[given[i]]), -i))]
            self.build(int(features.shape[1]), names, [int(skips[name].shape[1]) for name in names])
        found = [int(features.shape[1])] + [int(skips[name].shape[1]) for name in self.skip_layers]
        if found != [self.feature_dim, *self.skip_channels]:
            raise ValueError(f"layers {self.skip_layers} and the features have {found} channels but the decoder "
                             f"was built for {[self.feature_dim, *self.skip_channels]}")
        assert self.runner is not None and self.optimizer is not None and self.decoder is not None
        self.decoder.train()
        present = present_channels(labels)
        logits = mask_absent(self.runner(features, [skips[name] for name in self.skip_layers], images), present)
        config = self.config
        losses = fcam_losses(logits, present, seeds, images * self.std + self.mean, seg_weight=config.seg_weight,
                             crf_weight=config.crf_weight, size_weight=config.size_weight,
                             sigma_rgb=config.crf_sigma_rgb, sigma_xy=sigma_xy, crf_scale=config.crf_scale,
                             crf_radius=config.crf_radius, elb_t=elb_t, crf_kernel=config.crf_kernel,
                             crf_dense_pixels=config.crf_dense_pixels)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        return {key: float(value.detach()) for key, value in losses.items()}

    def save(self, path: Path, fingerprint: Mapping[str, Any], epoch: int, history: List[Dict[str, float]],
             n_steps: int, *, write: bool) -> None:
        """Atomically save what resuming needs (plain tensors and JSON-able values only)."""
        if not write or self.decoder is None or self.optimizer is None:
            return
        save_training_state(path, CHECKPOINT_FORMAT, fingerprint, epoch=epoch, history=history, n_steps=n_steps,
                            feature_dim=self.feature_dim, skip_layers=self.skip_layers,
                            skip_channels=self.skip_channels, decoder=self.decoder.state_dict(),
                            optimizer=self.optimizer.state_dict())

    def resume(self, state: Mapping[str, Any]) -> Tuple[int, List[Dict[str, float]], int]:
        """Restore a checkpoint written by :meth:`save` (read by
        :func:`~lpcam_plugin.core.checkpoints.resume_state`); return ``(epochs done, history, steps)``."""
        self.build(int(state["feature_dim"]), state["skip_layers"], state["skip_channels"])
        assert self.decoder is not None and self.optimizer is not None
        self.decoder.load_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"]), list(state["history"]), int(state["n_steps"])


def _area(tensor: torch.Tensor) -> int:
    """Spatial size ``h * w`` of a ``(B, D, h, w)`` tensor."""
    return int(tensor.shape[-2]) * int(tensor.shape[-1])
