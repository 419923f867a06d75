"""Pixel-level self-supervision (RCM + MAM) hyper-parameters and the VOC / COCO presets
(docs/design/pixelsup-spec.md; Yoon et al., Sections 3-4.2)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Tuple

from lpcam_plugin.core.settings import MethodSettings, is_int

#: The two readings of the RCM loss (Eq. 5): as printed (negative softmax probability, no log)
#: and the usual InfoNCE form (negative log-probability).
RCM_FORMS = ("paper", "infonce")
#: How RCM and MAM reduce over the pixels of the feature map: the mean (ours) or the sum that Eq. 5
#: and Eq. 8 write (the sum is the mean times the pixels per map, h x w).
LOSS_REDUCTIONS = ("mean", "sum")
#: Where the RCM projection sits: beside the CAM head (ours) or in its path, the paper's "additional
#: intermediate 1x1 convolution" whose output both RCM and the CAMs read.
PROJECTIONS = ("side", "in_path")
#: The paper's schedule: 20 epochs of VOC train_aug (10,582 images) in batches of 16, EMA 0.997, MAM
#: from epoch 6.
PAPER_STEPS = 20 * math.ceil(10582 / 16)
PAPER_EMA_MOMENTUM = 0.997
PAPER_MAM_FRACTION = 6 / 20


def schedule_settings(total_steps: int, epochs: float) -> Dict[str, Any]:
    """The two settings tied to the paper's schedule, for a run of ``total_steps`` optimiser steps over
    ``epochs`` epochs: ``ema_momentum = 0.997 ** (13,240 / total_steps)`` (the SupportNet keeps the
    same weight on its initialisation at the end of the run as in the paper: its horizon is the same
    fraction of training), rounded to 4 decimals, and ``mam_start_epoch = floor(0.3 epochs + 0.5)``
    (the paper's epoch 6 of 20). On the paper's schedule they are the preset's 0.997 and 6.
    """
    if total_steps < 1 or epochs <= 0:
        raise ValueError(f"need total_steps >= 1 and epochs > 0, got {total_steps} and {epochs}")
    return {"ema_momentum": round(PAPER_EMA_MOMENTUM ** (PAPER_STEPS / total_steps), 4),
            "mam_start_epoch": math.floor(PAPER_MAM_FRACTION * epochs + 0.5)}


@dataclass(frozen=True)
class PixelSupConfig(MethodSettings):
    """Every knob of RCM + MAM; defaults are the VOC preset (the paper's values unless noted).

    Attributes:
        scales: input scales through MainNet F and SupportNet G; must contain 1.0, the scale
            whose feature-map size every map is resized to (paper: 0.5, 1.0, 2.0).
        ema_momentum: alpha of ``theta_G <- alpha theta_G + (1 - alpha) theta_F`` (paper: 0.997).
        embed_dim: output channels of the 1x1 projection giving the RCM embedding X (paper: 256).
        projection: ``"side"`` (ours: the projection is a branch beside the host's head, which keeps
            reading the features) or ``"in_path"`` (the paper: the CAMs and logits read the projected
            features through a ``(C, embed_dim)`` head factor; the host's head is kept equal to the
            product, so the host reads the same CAMs; the projection then has no bias).
        threshold: a pixel joins a present class's region mask when that class wins the argmax
            of G's fused multi-scale CAMs and its score exceeds this (paper: 0.20).
        temperature: T of the RCM softmax over the prototypes (paper: 0.5).
        rcm_form: ``"paper"`` (Eq. 5 as printed, ``-p``) or ``"infonce"`` (``-log p``). The printed
            form is the default: it was ahead on every seed of the benchmark's comparison of the
            two (``toyresnet+pss``; the numbers are in docs/benchmark.md).
        loss_reduction: ``"mean"`` over the pixels of the feature map (ours: lambda_2 and lambda_3
            act on the scale of L_cls at any resolution) or ``"sum"`` (Eq. 5 and Eq. 8 as written:
            h x w times the mean, 576 on the paper's 24 x 24 maps).
        cls_weight: lambda_1 (paper: 1).
        rcm_weight: lambda_2 (paper: 1).
        mam_weight: lambda_3 once MAM is on (paper: 1).
        mam_start_epoch: first epoch (0-based, as the host's loop counts) with lambda_3 on; before
            it lambda_3 = 0 (paper: epoch 6 of 20).
        seed: seed of the projection's initialisation (ours).
    """

    METHOD: ClassVar[str] = "pixel self-supervision"

    @classmethod
    def presets(cls) -> Mapping[str, "PixelSupConfig"]:
        return PRESETS

    scales: Tuple[float, ...] = (0.5, 1.0, 2.0)
    ema_momentum: float = 0.997
    embed_dim: int = 256
    projection: str = "side"
    threshold: float = 0.20
    temperature: float = 0.5
    rcm_form: str = "paper"
    loss_reduction: str = "mean"
    cls_weight: float = 1.0
    rcm_weight: float = 1.0
    mam_weight: float = 1.0
    mam_start_epoch: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        weights = {"cls_weight": self.cls_weight, "rcm_weight": self.rcm_weight, "mam_weight": self.mam_weight}
        checks = [
            (all(math.isfinite(s) and s > 0 for s in self.scales) and 1.0 in self.scales
             and len(set(self.scales)) == len(self.scales),
             f"scales must be distinct positive numbers including 1.0, got {self.scales}"),
            (0.0 <= self.ema_momentum < 1.0, f"ema_momentum must be in [0, 1), got {self.ema_momentum}"),
            (is_int(self.embed_dim) and self.embed_dim >= 1, f"embed_dim must be an int >= 1, got {self.embed_dim!r}"),
            (0.0 <= self.threshold < 1.0,
             f"threshold must be in [0, 1) (maps are max-normalised), got {self.threshold}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.projection in PROJECTIONS, f"projection must be one of {PROJECTIONS}, got {self.projection!r}"),
            (self.rcm_form in RCM_FORMS, f"rcm_form must be one of {RCM_FORMS}, got {self.rcm_form!r}"),
            (self.loss_reduction in LOSS_REDUCTIONS,
             f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}"),
            (all(w >= 0 for w in weights.values()), f"loss weights must be >= 0, got {weights}"),
            (is_int(self.mam_start_epoch) and self.mam_start_epoch >= 0,
             f"mam_start_epoch must be an int >= 0, got {self.mam_start_epoch!r}"),
            (is_int(self.seed), f"seed must be an int, got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def loss_weights(self, epoch: int) -> Tuple[float, float, float]:
        """``(lambda_1, lambda_2, lambda_3)`` at ``epoch`` (0-based): lambda_3 is 0 before ``mam_start_epoch``."""
        if not is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        mam = self.mam_weight if epoch >= self.mam_start_epoch else 0.0
        return (self.cls_weight, self.rcm_weight, mam)




PRESETS: Dict[str, PixelSupConfig] = {
    "voc": PixelSupConfig(),
    # The paper reports VOC only; COCO takes the same values until a measurement says otherwise.
    "coco": PixelSupConfig(),
}
