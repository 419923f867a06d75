"""``PixelSelfSupervision``: RCM + MAM as a module the host's own training loop calls.

Example::

    pss = PixelSelfSupervision(model, feature_layer="stage4", head="classifier", num_classes=20)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.01)
    for epoch in range(epochs):
        for images, labels in loader:
            losses = pss(images, labels, epoch=epoch)     # {"total", "cls", "rcm", "mam"}
            optimizer.zero_grad(); losses["total"].backward(); optimizer.step()
            pss.update_support()                          # EMA step of the SupportNet G
    torch.save({"model": model.state_dict(), "pss": pss.state_dict()}, "ckpt.pt")

The host keeps its model (MainNet F), its optimizer, data, schedule and F's train/eval mode.
``pss`` owns F's extra 1x1 projection (its only trainable parameters), the SupportNet G (an EMA
copy of F and of the projection whose parameters are held as buffers: saved in ``state_dict``,
never yielded by ``parameters()``, never given gradients) and the prototype memory.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.checks import check_finite, check_multi_hot, check_ndim, check_num_classes, check_tensor
from lpcam_plugin.core.divergence import diverged, non_finite_losses, non_finite_parameters
from lpcam_plugin.core.modules import LinearHead, forward_until, get_submodule
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig
from lpcam_plugin.methods.pixelsup.losses import (
    fuse_scales,
    mam_loss,
    masks_from_labels,
    prototype_sums,
    raw_cams,
    rcm_loss,
    region_labels,
    resize_normalize,
    scaled_images,
    update_prototypes,
)

logger = logging.getLogger(__name__)

#: A CAM function ``cam_head(model, features) -> (B, C, h, w)`` non-negative CAMs, for heads that
#: are not GAP-linear (EDAM: ``|L2-normalise_channels(mask_layer(bn7))|``, channels 0..C-1).
CamHead = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class _Branch(nn.Module):
    """One network of the pair (F or G) with its projection, run over the scales of a batch.

    One forward covers every use of F's parameters in a step, so DistributedDataParallel can
    wrap it whole.
    """

    def __init__(self, model: nn.Module, feature_layer: str, head: Union[str, CamHead], projection: nn.Conv2d,
                 forward_args: Tuple[Any, ...] = (), head_factor: Optional[nn.Parameter] = None) -> None:
        super().__init__()
        self.model = model
        self.projection = projection
        self.feature_layer = feature_layer
        self.head = head
        self.forward_args = forward_args
        self.head_factor = head_factor  # (C, E) with an in-path projection: the head reads X = P f

    def head_weight(self) -> torch.Tensor:
        """The ``(C, D)`` weight the CAMs and logits use: the host head's, or ``head_factor @ P`` in path."""
        if self.head_factor is not None:
            return self.head_factor @ self.projection.weight.reshape(self.projection.out_channels, -1)
        weight = functools.reduce(getattr, self.head.split("."), self.model)
        weight = weight.weight if isinstance(weight, nn.Module) else weight
        return weight.reshape(weight.shape[0], weight.shape[1])

    def forward(self, inputs: Sequence[torch.Tensor], base: int, with_cams: bool
                ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Run every scaled batch through the model up to ``feature_layer``.

        Args:
            inputs: the scaled images, each ``(B, 3, H_s, W_s)``.
            base: index of the scale-1.0 batch in ``inputs``.
            with_cams: also return the raw CAMs of every scale.

        Returns:
            ``(logits (B, C), embedding (B, E, h, w), cams)``: the GAP-linear logits and the
            projected features of the base scale, and ``relu(W f)`` ``(B, C, h_s, w_s)`` per
            scale (empty when not ``with_cams``). With a callable head the CAMs are
            ``head(model, f)`` and the logits are None.
        """
        layer = self.model.get_submodule(self.feature_layer)
        if callable(self.head):
            return self._forward_cam_head(layer, inputs, base, with_cams)
        target = functools.reduce(getattr, self.head.split("."), self.model)
        bias = target.bias if isinstance(target, nn.Module) else None
        weight = self.head_weight()
        cams: List[torch.Tensor] = []
        logits = embedding = None
        for index, images in enumerate(inputs):
            features = forward_until(self.model, layer, images, *self.forward_args)
            if features.dim() != 4 or features.shape[1] != weight.shape[1]:
                raise ValueError(f"layer {self.feature_layer!r} produced {tuple(features.shape)}; expected "
                                 f"(B, D, h, w) with D={weight.shape[1]} as the head {self.head!r} takes")
            if with_cams:
                cams.append(raw_cams(features, weight))
            if index == base:
                logits = features.mean(dim=(2, 3)) @ weight.t().to(features.dtype)
                if bias is not None:
                    logits = logits + bias
                embedding = self.projection(features)
        assert logits is not None and embedding is not None
        return logits, embedding, cams

    def _forward_cam_head(self, layer: nn.Module, inputs: Sequence[torch.Tensor], base: int, with_cams: bool
                          ) -> Tuple[None, torch.Tensor, List[torch.Tensor]]:
        """:meth:`forward` with a callable head: CAMs from ``head(model, features)``, no logits."""
        dim = self.projection.in_channels
        cams: List[torch.Tensor] = []
        embedding = None
        for index, images in enumerate(inputs):
            features = forward_until(self.model, layer, images, *self.forward_args)
            if features.dim() != 4 or features.shape[1] != dim:
                raise ValueError(f"layer {self.feature_layer!r} produced {tuple(features.shape)}; expected "
                                 f"(B, D, h, w) with D={dim} (feature_dim)")
            if with_cams:
                maps = self.head(self.model, features)
                if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[0] != features.shape[0]:
                    shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
                    raise ValueError(f"the CAM head returned {shape}; expected (B, C, h, w) non-negative CAMs")
                lowest = float(maps.detach().min())
                if lowest < 0:
                    raise ValueError(f"the CAM head returned negative values (min {lowest:.4g}); it must return "
                                     "non-negative CAMs (e.g. relu(W f)): max-normalising signed maps would rank the "
                                     "most negative activation highest")
                cams.append(maps)
            if index == base:
                embedding = self.projection(features)
        assert embedding is not None
        return None, embedding, cams


class PixelSelfSupervision(nn.Module):
    """Pixel-level self-supervision (Yoon et al.): RCM + MAM losses for the host's classifier.

    Args:
        model: the host's classifier, MainNet F (a bare module; a DistributedDataParallel or
            DataParallel wrapper is unwrapped); ``model(images)`` must call ``feature_layer``.
            Deep-copied once into the SupportNet G.
        feature_layer: dotted name of the module whose output is the unpooled features ``(B, D, h, w)``.
        head: dotted name of the GAP-linear head (``nn.Linear``, 1x1 ``nn.Conv2d`` or a ``(C, D)`` parameter),
            or a callable ``cam_head(model, features) -> (B, C, h, w)`` non-negative CAMs for a
            head that is not GAP-linear (called with F's model for F's CAMs, with G's copy for
            G's). A callable head gives no logits: ``cls_weight`` must be 0, ``losses["cls"]``
            is 0, and the host adds its own classification loss to ``losses["total"]``.
        num_classes: C (no background).
        feature_dim: D, the channels of ``feature_layer``'s output (the projection's input); read
            from the head when it is GAP-linear, else from the layer's ``num_features`` /
            ``out_channels`` (BatchNorm, convolution); pass it for any other layer.
        forward_args: extra positional arguments of ``model(images, *forward_args)`` for a
            forward that needs more than the images (EDAM: its ``label_idx``); the forward stops
            at ``feature_layer``, so they only have to carry it that far.
        preset: ``"voc"`` or ``"coco"`` defaults (:class:`PixelSupConfig`).
        config: a full :class:`PixelSupConfig` instead of a preset.
        **overrides: any :class:`PixelSupConfig` field, e.g. ``mam_start_epoch=6``.

    Attributes:
        config: the :class:`PixelSupConfig`.
        projection: F's 1x1 convolution D -> ``embed_dim`` (the RCM embedding X^F); trainable.
        head_factor: ``(C, embed_dim)`` with ``projection="in_path"`` (the CAMs and logits use
            ``head_factor @ P``, which is also written into the host's head), else None; trainable.
        support: G, a :class:`_Branch` holding the model copy and projection copy, parameters as buffers.
        prototypes: ``(C + 1, embed_dim)`` buffer, the L2-normalised prototype memory (row 0 background).
        prototype_seen: ``(C + 1,)`` bool buffer, rows ever filled.

    Under ``torch.distributed`` (initialised process group) F's part of each step runs in
    DistributedDataParallel (gradients of F and the projection averaged over ranks; do not
    wrap the model yourself), the prototype sums and counts are all-reduced, and G's copies of
    F's buffers are broadcast from rank 0 after each EMA step, so G and the memory are
    identical on every rank. Give each rank an equal share of every batch.

    The projection, G and the memory are created on the head's device; move them with the model
    (``pss.to(device)``). G's parameters are buffers, so its forward must read its weights as
    attributes (true of standard layers; not of ``torch.nn.utils.parametrize``).
    """

    def __init__(self, model: nn.Module, *, feature_layer: str = "stage4", head: Union[str, CamHead] = "classifier",
                 num_classes: int = 20, preset: str = "voc", config: Optional[PixelSupConfig] = None,
                 feature_dim: Optional[int] = None, forward_args: Sequence[Any] = (), **overrides: Any) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        self.num_classes = check_num_classes(num_classes)
        self.config = PixelSupConfig.resolve(preset, config, **overrides)
        self.feature_layer = feature_layer
        self.head = head
        layer = get_submodule(model, feature_layer)
        forward_args = tuple(forward_args)
        if callable(head) and self.config.projection == "in_path":
            raise ValueError("projection='in_path' needs a GAP-linear head to factor (a callable CAM head has none); "
                             "use projection='side'")
        if callable(head):
            if self.config.cls_weight != 0:
                raise ValueError(f"a callable head gives no GAP-linear logits: set cls_weight=0 (got "
                                 f"{self.config.cls_weight}) and add the host's classification loss to losses['total']")
            dim = feature_dim if feature_dim is not None else _layer_channels(layer)
            if dim is None:
                raise ValueError(f"cannot read the channels of layer {feature_layer!r} "
                                 f"({type(layer).__name__}): pass feature_dim=")
            parameter = next(iter(model.parameters()), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
        else:
            head_ref = LinearHead.resolve(model, head)
            if head_ref.num_classes != num_classes:
                raise ValueError(f"head {head!r} has {head_ref.num_classes} rows, expected num_classes={num_classes}")
            dim, device = head_ref.feature_dim, head_ref.parameter.device
            if feature_dim is not None and feature_dim != dim:
                raise ValueError(f"feature_dim={feature_dim} but the head {head!r} takes D={dim}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"feature_dim must be a positive int, got {dim!r}")
        in_path = self.config.projection == "in_path"
        self.projection = self._new_projection(dim, bias=not in_path).to(device)
        self.head_factor = self._new_head_factor(model) if in_path else None
        try:
            support_model = copy.deepcopy(model)
        except Exception as exc:  # a module holding something deepcopy cannot copy
            raise TypeError(f"cannot copy the model for the SupportNet ({type(exc).__name__}: {exc})") from None
        support = _Branch(support_model, feature_layer, head, copy.deepcopy(self.projection), forward_args,
                          copy.deepcopy(self.head_factor))
        _parameters_to_buffers(support)
        self.support = support.train(False)
        embed = self.config.embed_dim
        self.register_buffer("prototypes", torch.zeros(num_classes + 1, embed, device=device))
        self.register_buffer("prototype_seen", torch.zeros(num_classes + 1, dtype=torch.bool, device=device))
        # F and its projection in one module, kept out of this module's tree (the host owns F).
        self.__dict__["_main"] = _Branch(model, feature_layer, head, self.projection, forward_args, self.head_factor)
        self._sync_host_head()
        self.__dict__["_ddp"] = None
        self.__dict__["_mam_on"] = False
        logger.info("pixel self-supervision: F=%s, layer %r, head %r (C=%d, D=%d), scales %s, embed %d (%s the "
                    "head's path), rcm %s, losses' pixel %s", type(model).__name__, feature_layer,
                    getattr(head, "__name__", head), num_classes, dim, self.config.scales, embed,
                    "in" if in_path else "beside", self.config.rcm_form, self.config.loss_reduction)

    @property
    def model(self) -> nn.Module:
        """MainNet F, the host's model (not a submodule of this one)."""
        return self._main.model

    def _new_projection(self, dim: int, bias: bool = True) -> nn.Conv2d:
        """The D -> ``embed_dim`` 1x1 convolution, PyTorch's default init bounds (U(+-1/sqrt(D))), seeded."""
        embed = self.config.embed_dim
        projection = nn.Conv2d(dim, embed, 1, bias=bias)
        generator = torch.Generator().manual_seed(self.config.seed)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            projection.weight.copy_((torch.rand(embed, dim, 1, 1, generator=generator) * 2 - 1) * bound)
            if projection.bias is not None:
                projection.bias.copy_((torch.rand(embed, generator=generator) * 2 - 1) * bound)
        return projection

    def _new_head_factor(self, model: nn.Module) -> nn.Parameter:
        """``(C, E)`` H with ``H P`` the least-squares fit of the host head's ``(C, D)`` weight (exact when
        E >= D): the in-path head starts where the host's head is."""
        assert isinstance(self.head, str)
        host = LinearHead.resolve(model, self.head).parameter.detach()
        weight = host.reshape(host.shape[0], host.shape[1]).float()
        projection = self.projection.weight.detach().reshape(self.config.embed_dim, -1).float()
        return nn.Parameter((weight @ torch.linalg.pinv(projection)).to(host.dtype))

    @torch.no_grad()
    def _sync_host_head(self) -> None:
        """With an in-path projection, write ``head_factor @ P`` into the host's head, so that the
        host's own CAM step (and its checkpoint) reads the CAMs this module trains."""
        if self.head_factor is None:
            return
        assert isinstance(self.head, str)
        host = LinearHead.resolve(self._main.model, self.head).parameter
        host.copy_(self._main.head_weight().reshape(host.shape).to(host.dtype))

    def train(self, mode: bool = True) -> "PixelSelfSupervision":
        """Set the projection's mode; G always stays in eval mode (F's mode is the host's)."""
        super().train(mode)
        self.support.train(False)
        return self

    # ------------------------------------------------------------------ one step
    def forward(self, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> Dict[str, torch.Tensor]:
        """The losses of one batch; updates the prototype memory with it once they are finite (a batch
        with a non-finite loss or memory raises
        :class:`~lpcam_plugin.core.divergence.TrainingDiverged` and changes no state).

        Args:
            images: ``(B, 3, H, W)`` floating, finite, as the host feeds its model.
            labels: ``(B, C)`` multi-hot, every value 0 or 1.
            epoch: the host's 0-based epoch (MAM is on from ``config.mam_start_epoch``).

        Returns:
            ``{"total", "cls", "rcm", "mam"}`` scalars; ``total = l1 cls + l2 rcm + l3 mam`` is
            what to back-propagate. ``mam`` is 0 (not computed) while l3 = 0.
        """
        labels = self._check_inputs(images, labels)
        w_cls, w_rcm, w_mam = self.config.loss_weights(epoch)
        mam_on = w_mam > 0
        if mam_on and not self._mam_on:
            logger.info("pixel self-supervision: MAM on from epoch %d (lambda_3 = %g)", epoch, w_mam)
        self.__dict__["_mam_on"] = mam_on
        scales = self.config.scales
        base = scales.index(1.0)
        inputs = scaled_images(images, scales)
        f_inputs = inputs if mam_on else (inputs[base],)
        logits, embedding, f_cams = self._runner()(f_inputs, base if mam_on else 0, mam_on)
        size = (int(embedding.shape[-2]), int(embedding.shape[-1]))
        with torch.no_grad():
            g_embedding, g_raw = self.support(inputs, base, True)[1:]
            if g_raw[0].shape[1] != self.num_classes:
                raise ValueError(f"the CAM head returned {g_raw[0].shape[1]} channels, expected num_classes="
                                 f"{self.num_classes}")
            g_cams = torch.stack([resize_normalize(c, size) for c in g_raw])
            targets = region_labels(fuse_scales(g_cams), labels, self.config.threshold)
            sums, counts = prototype_sums(g_embedding, masks_from_labels(targets, self.num_classes, g_embedding.dtype))
            if _distributed():
                dist.all_reduce(sums)
                dist.all_reduce(counts)
            memory, seen = update_prototypes(self.prototypes, self.prototype_seen, sums, counts)
        rcm = rcm_loss(embedding, targets, memory, seen, self.config.temperature, self.config.rcm_form,
                       self.config.loss_reduction)
        if logits is None:  # a callable head: the host adds its own classification loss
            cls = torch.zeros((), dtype=rcm.dtype, device=rcm.device)
        else:
            cls = F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))
        if mam_on:
            mam = mam_loss(torch.stack([resize_normalize(c, size) for c in f_cams]), g_cams, labels,
                           self.config.loss_reduction)
            total = w_cls * cls + w_rcm * rcm + w_mam * mam
        else:
            mam = torch.zeros((), dtype=cls.dtype, device=cls.device)
            total = w_cls * cls + w_rcm * rcm
        losses = {"total": total, "cls": cls, "rcm": rcm, "mam": mam}
        problem = non_finite_losses(losses) or non_finite_parameters([("prototype memory", memory)])
        if problem is not None:
            raise diverged("RCM + MAM", f"epoch {epoch}", problem,
                           "The prototype memory and the SupportNet were not changed by this batch.")
        with torch.no_grad():
            self.prototypes.copy_(memory)
            self.prototype_seen.copy_(seen)
        return losses

    def _check_inputs(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Validate a batch; return the labels as a float tensor on the images' device."""
        check_ndim(check_tensor(images, "images"), "images", 4, "(B, 3, H, W)")
        check_finite(images, "images")
        return check_multi_hot(labels, images.shape[0], self.num_classes).to(images.device)

    def _runner(self) -> nn.Module:
        """F's branch, wrapped in DistributedDataParallel (once) when a process group is initialised."""
        if self._ddp is None and _distributed():
            device = self.projection.weight.device
            ids = [device.index] if device.type == "cuda" else None
            self.__dict__["_ddp"] = nn.parallel.DistributedDataParallel(self._main, device_ids=ids,
                                                                        find_unused_parameters=True)
        return self._ddp if self._ddp is not None else self._main

    # ------------------------------------------------------------------ SupportNet
    @torch.no_grad()
    def update_support(self) -> None:
        """The EMA step ``theta_G <- a theta_G + (1 - a) theta_F`` (a = ``ema_momentum``), after the optimizer step.

        A non-finite parameter of F raises :class:`~lpcam_plugin.core.divergence.TrainingDiverged`
        before G changes.

        Covers F's parameters, the projection (and the in-path head factor) and F's floating buffers
        (BatchNorm statistics); integer buffers are copied. With an in-path projection it then writes
        ``head_factor @ P`` into the host's head.
        """
        problem = non_finite_parameters(self._main.named_parameters())
        if problem is not None:
            raise diverged("RCM + MAM", "the SupportNet's EMA step", problem,
                           "The SupportNet was not changed; the prototype memory holds the last finite batch's.")
        momentum = self.config.ema_momentum
        mirror = dict(self.support.named_buffers())
        for name, tensor in self._main.named_parameters():
            mirror[name].mul_(momentum).add_(tensor.detach(), alpha=1.0 - momentum)
        synced = []
        for name, tensor in self._main.named_buffers():
            target = mirror[name]
            if target.is_floating_point():
                target.mul_(momentum).add_(tensor, alpha=1.0 - momentum)
                synced.append(target)
            else:
                target.copy_(tensor)
        if synced and _distributed():
            flat = torch.cat([t.reshape(-1) for t in synced])
            dist.broadcast(flat, src=0)
            offset = 0
            for target in synced:
                target.copy_(flat[offset:offset + target.numel()].view_as(target))
                offset += target.numel()
        self._sync_host_head()

    def extra_repr(self) -> str:
        return (f"C={self.num_classes}, layer={self.feature_layer!r}, head={self.head!r}, scales={self.config.scales}, "
                f"projection={self.config.projection}, rcm={self.config.rcm_form}, "
                f"reduction={self.config.loss_reduction}, "
                f"mam from epoch {self.config.mam_start_epoch}")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _layer_channels(layer: nn.Module) -> Optional[int]:
    """The output channels of a BatchNorm / convolution layer, else None."""
    for name in ("num_features", "out_channels"):
        value = getattr(layer, name, None)
        if isinstance(value, int):
            return value
    return None


def _parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` (recursively) into a buffer of the same name, in place.

    The module computes as before (layers read ``self.weight`` either way) and ``state_dict``
    keeps the same keys, but ``parameters()`` yields nothing and nothing gets a gradient. A
    parameter shared by several submodules becomes one shared buffer.
    """
    shared: Dict[int, torch.Tensor] = {}
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            del sub._parameters[name]
            if param is None:
                sub.register_buffer(name, None)
            else:
                sub.register_buffer(name, shared.setdefault(id(param), param.detach()))
