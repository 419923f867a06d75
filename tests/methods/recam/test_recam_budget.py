"""ReCAM keeps the reference's learning rate x steps on the user's dataset size: the preset states
the reference's steps, ``fit`` scales the learning rate to the loader's length and logs it, and a
budget it cannot reach is a warning naming both numbers."""
from __future__ import annotations

import logging

import pytest
import torch
from test_recam import C, TinyNet

from lpcam_plugin import ReCAM, ReCAMConfig
from lpcam_plugin.methods.recam.config import COCO_REFERENCE_STEPS, VOC_REFERENCE_STEPS


def _loader(batches: int) -> list:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batches):
        labels = (torch.rand(2, C, generator=g) > 0.5).float()
        labels[:, 0] = 1
        out.append((torch.randn(2, 3, 16, 16, generator=g), labels))
    return out


def _fit(recam: ReCAM, batches: int) -> ReCAM:
    torch.manual_seed(0)
    return recam.fit(TinyNet(), _loader(batches), feature_layer="stage4", head="classifier")


def test_the_presets_state_the_references_steps() -> None:
    assert VOC_REFERENCE_STEPS == 4 * 661 == ReCAMConfig.preset("voc").reference_steps
    assert COCO_REFERENCE_STEPS == 4 * 13_680 == ReCAMConfig.preset("coco").reference_steps


def test_fit_scales_the_learning_rate_to_the_references_budget_and_logs_it(caplog) -> None:
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    config = ReCAMConfig(epochs=2, reference_steps=40)
    fitted = _fit(ReCAM(C, config=config, progress=False), batches=4)  # 8 steps: 5x the preset's rate
    assert fitted.learning_rate_ == pytest.approx(5 * config.learning_rate)
    assert fitted.learning_rate_ * fitted.n_steps_ == pytest.approx(config.learning_rate * 40)
    assert "8 steps (2 epochs) against the reference's 40: learning rate 0.0025" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    given = _fit(ReCAM(C, epochs=2, learning_rate=5 * config.learning_rate, progress=False), batches=4)
    torch.testing.assert_close(given.sce_weight_, fitted.sce_weight_)  # the same run as the rate given by hand


def test_an_explicit_learning_rate_is_used_as_given() -> None:
    recam = ReCAM(C, epochs=1, learning_rate=0.003, progress=False)
    assert recam.config.reference_steps is None
    assert _fit(recam, batches=2).learning_rate_ == 0.003
    scaled = ReCAM(C, epochs=1, learning_rate=0.003, reference_steps=4, progress=False)
    assert _fit(scaled, batches=2).learning_rate_ == pytest.approx(0.006)


def test_a_budget_out_of_reach_is_a_warning_naming_both_numbers(caplog) -> None:
    recam = ReCAM(C, epochs=1, progress=False)  # the VOC preset on 2 steps: 1,322x short, the factor stops at 32
    with caplog.at_level(logging.WARNING, logger="lpcam_plugin"):
        fitted = _fit(recam, batches=2)
    assert fitted.learning_rate_ == pytest.approx(32 * 5e-4)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "(2 steps at 0.016)" in warning[0] and "(2644 steps at 0.0005)" in warning[0]
    assert "\n" not in warning[0]
