"""ReCAM hyper-parameters and the VOC / COCO presets (docs/design/recam-spec.md, Training and Maps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from lpcam_plugin.core.settings import MethodSettings, is_int

#: The reference's optimisation steps: 4 epochs of VOC train_aug (10,582 images) in batches of 16,
#: and of COCO train2014 (82,081 images) in batches of 6, the last partial batch dropped.
VOC_REFERENCE_STEPS = 4 * (10_582 // 16)
COCO_REFERENCE_STEPS = 4 * (82_081 // 6)
#: Weights a ReCAM read-out or a prototype selection can use (docs/design/recam-spec.md).
WEIGHT_KINDS = ("bce", "sce", "sce*bce")


@dataclass(frozen=True)
class ReCAMConfig(MethodSettings):
    """Every knob of ReCAM; defaults are the VOC preset.

    Attributes:
        loss_weight: lambda, the weight of the softmax cross-entropy (1.0 VOC, 0.1 COCO).
        learning_rate: base learning rate; ``W_sce`` trains at it, the backbone and ``W_bce`` at
            ``backbone_lr_scale`` times it.
        backbone_lr_scale: 0.1 in the reference.
        weight_decay: SGD weight decay (1e-4).
        momentum: SGD momentum. The reference's ``PolyOptimizer`` hands its weight decay to
            SGD's momentum slot, so it really trains with momentum 1e-4 and no weight decay; we
            keep the stated weight decay and use no momentum.
        epochs: fine-tuning epochs over the loader (4).
        poly_power: exponent of the poly schedule ``lr * (1 - step / steps) ** power`` (0.9).
        map_weight: the weight of the maps: ``"sce*bce"`` (VOC, the reference's ``forward2``)
            or ``"bce"`` (COCO, ``forward``).
        selection_weight: the weight ReCAM+LPCAM selects prototypes with (``selection_weight_``):
            ``"bce"``, the best of the three on the package's benchmark, ahead of the spec's
            candidate ``"sce"`` (the numbers are in docs/benchmark.md).
        freeze_batchnorm: keep BatchNorm layers in eval mode while fine-tuning (IRN's backbone
            uses fixed BatchNorm; a short fine-tuning step should not re-estimate statistics).
        seed: seed of the ``W_sce`` initialisation.
        reference_steps: the reference's number of optimisation steps (VOC: 4 epochs x
            (10,582 // 16) = 2,644; COCO: 4 x (82,081 // 6) = 54,720). ``fit`` keeps the
            reference's budget, learning rate x steps, on a loader of another length: it trains at
            ``learning_rate * reference_steps / steps`` (the factor clipped to ``1 / max_lr_scale ...
            max_lr_scale``) and logs it. None trains at ``learning_rate`` as given (an explicit
            ``learning_rate=`` override sets this, unless ``reference_steps`` is given too).
        max_lr_scale: the largest factor the budget rule may apply to ``learning_rate`` (32); a
            budget it cannot reach is a warning naming both budgets.
    """

    METHOD: ClassVar[str] = "ReCAM"
    BUDGETS: ClassVar[Mapping[str, Tuple[str, ...]]] = {"reference_steps": ("learning_rate",)}

    @classmethod
    def presets(cls) -> Mapping[str, "ReCAMConfig"]:
        return PRESETS

    loss_weight: float = 1.0
    learning_rate: float = 5e-4
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.0
    epochs: int = 4
    poly_power: float = 0.9
    map_weight: str = "sce*bce"
    selection_weight: str = "bce"
    freeze_batchnorm: bool = True
    seed: int = 0
    reference_steps: Optional[int] = VOC_REFERENCE_STEPS
    max_lr_scale: float = 32.0

    #: Fields that only change how maps are read out of the fine-tuned network, not the fine-tuning.
    READOUT_FIELDS: ClassVar[Tuple[str, ...]] = ("map_weight", "selection_weight")

    def training_settings(self) -> Dict[str, Any]:
        """:meth:`to_dict` without :attr:`READOUT_FIELDS`: what a fine-tuned network depends on."""
        return {k: v for k, v in self.to_dict().items() if k not in self.READOUT_FIELDS}

    def __post_init__(self) -> None:
        checks = [
            (is_int(self.epochs) and self.epochs >= 1, f"epochs must be an int >= 1, got {self.epochs!r}"),
            (is_int(self.seed), f"seed must be an int, got {self.seed!r}"),
            (self.loss_weight >= 0, f"loss_weight must be >= 0, got {self.loss_weight}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.backbone_lr_scale >= 0, f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.poly_power >= 0, f"poly_power must be >= 0, got {self.poly_power}"),
            (self.map_weight in WEIGHT_KINDS, f"map_weight must be one of {WEIGHT_KINDS}, got {self.map_weight!r}"),
            (self.selection_weight in WEIGHT_KINDS,
             f"selection_weight must be one of {WEIGHT_KINDS}, got {self.selection_weight!r}"),
            (isinstance(self.freeze_batchnorm, bool),
             f"freeze_batchnorm must be a bool, got {self.freeze_batchnorm!r}"),
            (self.reference_steps is None or (is_int(self.reference_steps) and self.reference_steps >= 1),
             f"reference_steps must be None or an int >= 1, got {self.reference_steps!r}"),
            (self.max_lr_scale >= 1, f"max_lr_scale must be >= 1, got {self.max_lr_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)



    def budget_learning_rate(self, steps: int) -> float:
        """The learning rate of a run of ``steps`` steps: ``learning_rate`` scaled to the reference's
        learning rate x steps (clipped to ``max_lr_scale``), or as given without ``reference_steps``."""
        if self.reference_steps is None:
            return self.learning_rate
        factor = min(max(self.reference_steps / steps, 1.0 / self.max_lr_scale), self.max_lr_scale)
        return self.learning_rate * factor


PRESETS: Dict[str, ReCAMConfig] = {
    "voc": ReCAMConfig(),
    "coco": ReCAMConfig(loss_weight=0.1, map_weight="bce", reference_steps=COCO_REFERENCE_STEPS),
}
