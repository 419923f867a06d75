"""The ReCAM estimator: fine-tune a GAP-linear classifier with a softmax head, then read maps out.

Example::

    recam = ReCAM(num_classes=20, preset="voc")
    recam.fit(model, loader, feature_layer="stage4", head="classifier")   # fine-tunes model in place
    with FeatureHook(model.stage4) as hook, torch.no_grad():
        model(images)
        maps = recam(hook.features, labels)    # (B, C, h, w), max-normalised, 0 for absent classes
    recam.save("recam.npz"); recam = ReCAM.load("recam.npz")
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lpcam_plugin.core.archive import read_archive, write_archive
from lpcam_plugin.core.checkpoints import RESTART_HINT, resume_state, save_training_state
from lpcam_plugin.core.checks import check_finite, check_num_classes, check_training_batch, float32_features
from lpcam_plugin.core.divergence import (
    diverged,
    non_finite_losses,
    non_finite_parameters,
    restore_state,
    snapshot_state,
)
from lpcam_plugin.core.identity import data_identity, module_digest
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.maps import max_normalize
from lpcam_plugin.core.modules import LinearHead, forward_until, get_submodule
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.targets import resolve_targets
from lpcam_plugin.core.version import __version__
from lpcam_plugin.methods.cam import cam_map
from lpcam_plugin.methods.recam.config import WEIGHT_KINDS, ReCAMConfig
from lpcam_plugin.methods.recam.losses import recam_losses

logger = logging.getLogger(__name__)

FORMAT_NAME = "lpcam_plugin.ReCAM"
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "lpcam_plugin.ReCAM.training/1"


class _ReCAMStep(nn.Module):
    """One ReCAM loss evaluation: the model up to ``feature_layer``, then :func:`recam_losses`.

    A module of its own so that DistributedDataParallel can wrap model and softmax head together.
    """

    def __init__(self, model: nn.Module, feature_layer: str, head: LinearHead, sce: nn.Linear,
                 loss_weight: float) -> None:
        super().__init__()
        self.model = model
        self.sce = sce
        self.feature_layer = feature_layer
        self.loss_weight = loss_weight
        self._head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = forward_until(self.model, self.model.get_submodule(self.feature_layer), images)
        if features.dim() != 4:
            raise ValueError(f"layer {self.feature_layer!r} produced {tuple(features.shape)}; expected (B, D, h, w)")
        return recam_losses(features, labels, self._head.weight, self.sce.weight, self.loss_weight, self._head.bias)


class ReCAM:
    """Class Re-Activation Maps (Chen et al., CVPR 2022) as a fine-tuning step plus a read-out.

    Args:
        num_classes: C (no background).
        preset: ``"voc"`` or ``"coco"`` defaults (:class:`ReCAMConfig`).
        config: a full :class:`ReCAMConfig` instead of a preset.
        progress: progress bars: None (auto, hidden off a TTY), True or False.
        **overrides: any :class:`ReCAMConfig` field, e.g. ``epochs=2``.

    Fitted attributes:
        head_: the softmax head ``W_sce`` as a bias-free ``nn.Linear(D, C)`` (CPU).
        bce_weight_: ``(C, D)`` the fine-tuned classifier weight ``W_bce``.
        sce_weight_: ``(C, D)`` ``W_sce`` (``head_.weight``).
        map_weight_: ``(C, D)`` the weight of the maps (``config.map_weight``).
        selection_weight_: ``(C, D)`` the weight ReCAM+LPCAM selects prototypes with
            (``config.selection_weight``).
        feature_dim_: D.
        n_steps_: optimisation steps run.
        learning_rate_: the learning rate ``W_sce`` trained at (the budget rule's, see
            :class:`ReCAMConfig`; also ``metadata["learning_rate"]``).
        loss_history_: per epoch ``{"epoch", "cls", "sce", "total"}`` means.
    """

    #: How the adapters fuse an image and its flip: the maps are summed (as IRN's CAM and ReCAM do).
    flip_fusion = "maps"

    def __init__(self, num_classes: int, preset: str = "voc", *, config: Optional[ReCAMConfig] = None,
                 progress: Optional[bool] = None, **overrides: Any) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.config = ReCAMConfig.resolve(preset, config, **overrides)
        self.progress = progress
        self.learning_rate_: Optional[float] = None
        self.head_: Optional[nn.Linear] = None
        self.bce_weight_: Optional[torch.Tensor] = None
        self.bce_bias_: Optional[torch.Tensor] = None
        self.feature_dim_: Optional[int] = None
        self.n_steps_ = 0
        self.loss_history_: List[Dict[str, float]] = []
        self.metadata: Dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, model: nn.Module, loader: Iterable[Sequence[Any]], *, feature_layer: str = "stage4",
            head: str = "classifier", checkpoint: Optional[PathLike] = None, restart: bool = False,
            device: Optional[Union[str, torch.device]] = None) -> "ReCAM":
        """Fine-tune ``model`` in place with the ReCAM loss; set the fitted attributes.

        Under ``torch.distributed`` (initialised process group) the step runs in
        DistributedDataParallel: give each rank its share of every batch (e.g. a
        ``DistributedSampler``); gradients are averaged over ranks, so the loss of equal-sized
        shards equals the single-process loss of the whole batch.

        Args:
            model: the trained classifier; ``model(images)`` must call ``feature_layer``. Its own
                ``train()`` is called (hosts freeze layers there), BatchNorm stays in eval mode
                with ``freeze_batchnorm``; the model is left in eval mode.
            loader: yields ``(images (B, 3, H, W), labels (B, C))`` (further items are ignored);
                ``len(loader)`` must be defined (the poly schedule needs the step count). When the
                loader or its ``sampler`` has ``set_epoch`` (``DistributedSampler``), it is called
                before each epoch, so a resumed run sees the same order as an uninterrupted one.
            feature_layer: dotted name of the module whose output is the unpooled features.
            head: dotted name of the GAP-linear head (``nn.Linear``, 1x1 ``nn.Conv2d`` or a
                ``(C, D)`` parameter).
            checkpoint: a file to save training state to after every epoch, and to resume from
                when it exists. It records the config, classes, layer, head and loader length, and
                the digests (:mod:`lpcam_plugin.core.identity`) of the model's weights before
                ``fit`` and of the data; a checkpoint that differs in any of them is refused with a
                one-line ``ValueError`` naming what differs, before anything is written into the model.
            restart: start over even when ``checkpoint`` exists (it is overwritten after the first epoch).

        A step whose loss is NaN or infinite, or an epoch that leaves a non-finite parameter, stops
        the fit with :class:`~lpcam_plugin.core.divergence.TrainingDiverged` naming the step, before
        any checkpoint is written. On that or any other error the model gets back the parameters and
        buffers it had before ``fit`` (a copy is kept on its device while fitting).
            device: where to train; default the head's device.
        """
        head_ref = LinearHead.resolve(model, head)
        if head_ref.num_classes != self.num_classes:
            raise ValueError(f"head {head!r} has {head_ref.num_classes} rows, expected C={self.num_classes}")
        get_submodule(model, feature_layer)
        device = torch.device(device) if device is not None else head_ref.parameter.device
        model.to(device)
        self._train_mode(model)  # before the optimizer and DDP see which parameters require grad
        sce = self._new_sce_head(head_ref.feature_dim).to(device)
        step_module = _ReCAMStep(model, feature_layer, head_ref, sce, self.config.loss_weight)
        steps_per_epoch = len(loader)  # type: ignore[arg-type]
        if steps_per_epoch < 1:
            raise ValueError("the loader is empty")
        learning_rate = self._budget(self.config.epochs * steps_per_epoch)
        optimizer = self._optimizer(model, head_ref, sce, learning_rate)
        fingerprint = {}  # the digests read every weight (and in-memory data): only a checkpoint needs them
        if checkpoint is not None:
            fingerprint = {"config": self.config.training_settings(), "num_classes": self.num_classes,
                           "feature_layer": feature_layer, "head": head, "steps_per_epoch": steps_per_epoch,
                           "model_weights": module_digest(model), "data": data_identity(loader)}
        state_before = snapshot_state(model)
        kept = ("The model was put back as it was before fit (its parameters and buffers); no checkpoint holds a "
                "non-finite value.")
        try:
            start_epoch, history = 0, []
            state = resume_state(checkpoint, CHECKPOINT_FORMAT, "ReCAM", fingerprint, restart=restart,
                                 hint=RESTART_HINT)
            if state is not None:
                start_epoch, history = _restore_training_state(state, model, sce, optimizer)
                logger.info("ReCAM: resuming from %s after epoch %d of %d", checkpoint, start_epoch, self.config.epochs)
            distributed = dist.is_available() and dist.is_initialized()
            runner: nn.Module = step_module
            if distributed:
                ids = [device.index] if device.type == "cuda" else None
                runner = nn.parallel.DistributedDataParallel(step_module, device_ids=ids, find_unused_parameters=True)
            total_steps = self.config.epochs * steps_per_epoch
            for epoch in range(start_epoch, self.config.epochs):
                _set_epoch(loader, epoch)
                sums = {"cls": 0.0, "sce": 0.0, "total": 0.0}
                batches = progress_bar(loader, progress=self.progress, total=steps_per_epoch,
                                       desc=f"ReCAM epoch {epoch + 1}/{self.config.epochs}")
                for i, batch in enumerate(batches):
                    self._set_learning_rates(optimizer, epoch * steps_per_epoch + i, total_steps)
                    images, labels = check_training_batch(batch, self.num_classes, f"batch {i} of epoch {epoch + 1}")
                    images, labels = images.to(device), labels.to(device)
                    losses = runner(images, labels)
                    values = {key: float(value.detach()) for key, value in losses.items()}
                    problem = non_finite_losses(values)
                    if problem is not None:
                        raise diverged("ReCAM", f"epoch {epoch + 1}, batch {i} (step {epoch * steps_per_epoch + i})",
                                       problem, kept)
                    optimizer.zero_grad(set_to_none=True)
                    losses["total"].backward()
                    optimizer.step()
                    for key in sums:
                        sums[key] += values[key]
                history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}})
                logger.info("ReCAM epoch %d: cls %.4f sce %.4f total %.4f", epoch + 1, history[-1]["cls"],
                            history[-1]["sce"], history[-1]["total"])
                problem = non_finite_parameters([*model.named_parameters(), ("W_sce", sce.weight)])
                if problem is not None:
                    raise diverged("ReCAM", f"the end of epoch {epoch + 1}", problem, kept)
                if checkpoint is not None:
                    _save_training_state(Path(checkpoint), fingerprint, epoch + 1, model, sce, optimizer, history,
                                         write=not distributed or dist.get_rank() == 0)
                    if distributed:
                        dist.barrier()
        except BaseException:  # divergence, a bad batch, an interrupt: the model is as it was before fit
            restore_state(model, state_before)
            nn.Module.train(model, False)
            raise
        nn.Module.train(model, False)
        self.loss_history_ = history
        self.n_steps_ = total_steps
        self.learning_rate_ = learning_rate
        self.metadata = {"feature_layer": feature_layer, "head": head, "learning_rate": learning_rate}
        self._set_fitted(head_ref.weight.detach(), None if head_ref.bias is None else head_ref.bias.detach(),
                         sce.weight.detach())
        return self

    def _new_sce_head(self, dim: int) -> nn.Linear:
        """``W_sce`` with PyTorch's default Linear initialisation (U(-1/sqrt(D), 1/sqrt(D))), seeded."""
        sce = nn.Linear(dim, self.num_classes, bias=False)
        generator = torch.Generator().manual_seed(self.config.seed)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            sce.weight.copy_(torch.rand(self.num_classes, dim, generator=generator) * 2 * bound - bound)
        return sce

    def _budget(self, steps: int) -> float:
        """The learning rate of ``steps`` steps (:meth:`ReCAMConfig.budget_learning_rate`), logged; a
        warning when the run's learning rate x steps is more than 2x off the reference's."""
        config = self.config
        lr = config.budget_learning_rate(steps)
        if config.reference_steps is None:
            logger.info("ReCAM: %d steps at the learning rate given, %.3g", steps, lr)
            return lr
        reference, budget = config.learning_rate * config.reference_steps, lr * steps
        logger.info("ReCAM: %d steps (%d epochs) against the reference's %d: learning rate %.3g (%.3g x %.3g), "
                    "keeping the reference's learning rate x steps %.3g", steps, config.epochs, config.reference_steps,
                    lr, config.learning_rate, lr / config.learning_rate, reference)
        if not 0.5 <= budget / reference <= 2.0:
            logger.warning("ReCAM: learning rate x steps is %.3g (%d steps at %.3g), the reference's %.3g (%d steps "
                           "at %.3g): max_lr_scale %.3g cannot close the gap; change epochs to train about %d steps",
                           budget, steps, lr, reference, config.reference_steps, config.learning_rate,
                           config.max_lr_scale, round(reference / lr))
        return lr

    def _optimizer(self, model: nn.Module, head: LinearHead, sce: nn.Linear, lr: float) -> torch.optim.SGD:
        """SGD with three groups: backbone and ``W_bce`` at ``backbone_lr_scale * lr``, ``W_sce`` at lr."""
        head_ids = {id(head.parameter)} | ({id(head.bias)} if head.bias is not None else set())
        backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        head_params = [p for p in (head.parameter, head.bias) if p is not None]
        scale = self.config.backbone_lr_scale
        groups = [{"params": backbone, "lr": lr * scale, "base_lr": lr * scale},
                  {"params": head_params, "lr": lr * scale, "base_lr": lr * scale},
                  {"params": list(sce.parameters()), "lr": lr, "base_lr": lr}]
        return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=self.config.momentum,
                               weight_decay=self.config.weight_decay)

    def _set_learning_rates(self, optimizer: torch.optim.Optimizer, step: int, total: int) -> None:
        factor = (1.0 - step / total) ** self.config.poly_power
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _train_mode(self, model: nn.Module) -> None:
        """Training mode the host's way (its own ``train()`` override runs), BatchNorm frozen if asked."""
        nn.Module.train(model, True)
        model.train()  # host overrides (IRN freezes conv1 there); may return None, so never chained
        if self.config.freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _set_fitted(self, bce_weight: torch.Tensor, bce_bias: Optional[torch.Tensor], sce_weight: torch.Tensor) -> None:
        bce = bce_weight.reshape(bce_weight.shape[0], -1).float().cpu().clone()
        sce = sce_weight.float().cpu().clone()
        check_finite(bce, "the fine-tuned classifier weight W_bce")
        check_finite(sce, "the softmax head W_sce")
        self.bce_weight_ = bce
        self.bce_bias_ = None if bce_bias is None else bce_bias.float().cpu().clone()
        self.feature_dim_ = int(bce.shape[1])
        self.head_ = nn.Linear(self.feature_dim_, self.num_classes, bias=False)
        with torch.no_grad():
            self.head_.weight.copy_(sce)
        self.head_.requires_grad_(False)

    # ------------------------------------------------------------------ fitted weights
    def _check_fitted(self) -> None:
        if self.head_ is None or self.bce_weight_ is None:
            raise RuntimeError("ReCAM is not fitted: call fit() first or use ReCAM.load()")

    @property
    def sce_weight_(self) -> torch.Tensor:
        """``(C, D)`` the softmax head's weight."""
        self._check_fitted()
        assert self.head_ is not None
        return self.head_.weight.detach()

    def weight(self, kind: str) -> torch.Tensor:
        """``(C, D)`` weight ``"bce"``, ``"sce"`` or ``"sce*bce"`` (elementwise product of the rows)."""
        self._check_fitted()
        assert self.bce_weight_ is not None
        if kind == "bce":
            return self.bce_weight_
        if kind == "sce":
            return self.sce_weight_
        if kind == "sce*bce":
            return self.sce_weight_ * self.bce_weight_
        raise ValueError(f"weight kind must be one of {WEIGHT_KINDS}, got {kind!r}")

    @property
    def map_weight_(self) -> torch.Tensor:
        """``(C, D)`` the weight of the maps (``config.map_weight``)."""
        return self.weight(self.config.map_weight)

    @property
    def selection_weight_(self) -> torch.Tensor:
        """``(C, D)`` the weight ReCAM+LPCAM selects prototypes with (``config.selection_weight``)."""
        return self.weight(self.config.selection_weight)

    # ------------------------------------------------------------------ maps
    def __call__(self, features: torch.Tensor, labels_or_classes: Union[torch.Tensor, Sequence[int]], *,
                 normalize: bool = True) -> torch.Tensor:
        """ReCAM maps ``relu(map_weight_[c] . f)`` of the fine-tuned model's features.

        Args:
            features: ``(B, D, h, w)`` from the fine-tuned model's ``feature_layer``.
            labels_or_classes: ``(B, C)`` multi-hot labels, giving ``(B, C, h, w)`` maps that are
                zero for each image's absent classes; or class indices, giving ``(B, len(classes), h, w)``.
            normalize: divide each map by its max + 1e-5.
        """
        weight = self.map_weight_
        features = float32_features(features)
        classes, mask = resolve_targets(labels_or_classes, self.num_classes, features.shape[0])
        maps = cam_map(features, weight, classes, normalize=False)
        if mask is not None:
            maps = maps * mask.to(maps.device)[:, :, None, None]
        return max_normalize(maps) if normalize else maps

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write the fitted weights and settings to one pickle-free, checksummed file (atomically)."""
        self._check_fitted()
        assert self.bce_weight_ is not None
        arrays = {"bce_weight": self.bce_weight_.numpy(), "sce_weight": self.sce_weight_.numpy()}
        if self.bce_bias_ is not None:
            arrays["bce_bias"] = self.bce_bias_.numpy()
        header = {"num_classes": self.num_classes, "feature_dim": self.feature_dim_, "config": self.config.to_dict(),
                  "n_steps": self.n_steps_, "loss_history": self.loss_history_, "metadata": self.metadata,
                  "version": __version__}
        write_archive(path, FORMAT_NAME, FORMAT_VERSION, header, arrays)

    @classmethod
    def load(cls, path: PathLike, *, progress: Optional[bool] = None) -> "ReCAM":
        """Read a file written by :meth:`save` (never unpickled; checksum and shapes verified)."""
        header, arrays = read_archive(path, FORMAT_NAME, FORMAT_VERSION)
        num_classes, dim = int(header["num_classes"]), int(header["feature_dim"])
        expected = {"bce_weight": (num_classes, dim), "sce_weight": (num_classes, dim)}
        if "bce_bias" in arrays:
            expected["bce_bias"] = (num_classes,)
        for name, shape in expected.items():
            if name not in arrays or tuple(arrays[name].shape) != shape:
                found = None if name not in arrays else tuple(arrays[name].shape)
                raise ValueError(f"{path}: array {name!r} has shape {found}, expected {shape}")
        model = cls(num_classes, config=ReCAMConfig.from_dict(header["config"]), progress=progress)
        model.n_steps_ = int(header.get("n_steps", 0))
        model.loss_history_ = list(header.get("loss_history", []))
        model.metadata = dict(header.get("metadata", {}))
        model.learning_rate_ = model.metadata.get("learning_rate")
        bias = arrays.get("bce_bias")
        model._set_fitted(torch.from_numpy(np.array(arrays["bce_weight"])),
                          None if bias is None else torch.from_numpy(np.array(bias)),
                          torch.from_numpy(np.array(arrays["sce_weight"])))
        return model

    def __repr__(self) -> str:
        state = "unfitted" if self.head_ is None else f"D={self.feature_dim_}, {self.n_steps_} steps"
        return (f"ReCAM(C={self.num_classes}, {state}, map={self.config.map_weight}, "
                f"selection={self.config.selection_weight})")


def _set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader and on its sampler where they have it."""
    for target in (loader, getattr(loader, "sampler", None)):
        if callable(getattr(target, "set_epoch", None)):
            target.set_epoch(epoch)


def _save_training_state(path: Path, fingerprint: Mapping[str, Any], epoch: int, model: nn.Module, sce: nn.Linear,
                         optimizer: torch.optim.Optimizer, history: List[Dict[str, float]], *, write: bool) -> None:
    """Save what resuming needs (on the writing rank only)."""
    if write:
        save_training_state(path, CHECKPOINT_FORMAT, fingerprint, epoch=epoch, model=model.state_dict(),
                            sce=sce.state_dict(), optimizer=optimizer.state_dict(), history=history)


def _restore_training_state(state: Mapping[str, Any], model: nn.Module, sce: nn.Linear,
                            optimizer: torch.optim.Optimizer) -> Tuple[int, List[Dict[str, float]]]:
    """Restore a checkpoint written by :func:`_save_training_state`; return ``(epochs done, history)``."""
    model.load_state_dict(state["model"])
    sce.load_state_dict(state["sce"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])
