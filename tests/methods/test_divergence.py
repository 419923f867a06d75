"""Divergence is caught at the step it happens: ReCAM, F-CAM and RCM + MAM stop with a one-line
``TrainingDiverged`` naming the step, write nothing non-finite, and leave the user's state as it was."""
from __future__ import annotations

import pytest
import torch
from test_training_batches import C, TinyNet, _cam_source, _images

from lpcam_plugin import FCAM, PixelSelfSupervision, ReCAM
from lpcam_plugin.core.divergence import TrainingDiverged


def _data(batches: int = 3) -> list:
    generator = torch.Generator().manual_seed(1)
    return [(_images(4), (torch.rand(4, C, generator=generator) > 0.5).float()) for _ in range(batches)]


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def _state(model: torch.nn.Module) -> dict:
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_recam_stops_at_the_first_non_finite_loss_and_puts_the_model_back() -> None:
    torch.manual_seed(0)
    model = TinyNet()
    before = _state(model)
    with pytest.raises(TrainingDiverged) as info:
        ReCAM(C, epochs=3, progress=False, learning_rate=1e6).fit(model, _data(), feature_layer="stage4",
                                                                  head="classifier")
    message = _one_line(info)
    assert "ReCAM diverged at epoch 1, batch 2 (step 2): the losses are total = nan" in message
    assert "learning rate too high" in message and "put back as it was before fit" in message
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not model.training


class BlowsUpInEpochTwo:
    """A loader whose second epoch holds finite images so large that the forward overflows."""

    def __init__(self) -> None:
        self.data, self.epoch = _data(), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        for images, labels in self.data:
            yield (images * 1e36 if self.epoch == 1 else images), labels


def _floats(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [t for item in value.values() for t in _floats(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _floats(item)]
    return []


def test_recam_writes_no_non_finite_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "recam_train.pt"
    model = TinyNet()
    before = _state(model)
    with pytest.raises(TrainingDiverged) as info:
        ReCAM(C, epochs=3, progress=False).fit(model, BlowsUpInEpochTwo(), feature_layer="stage4",
                                               head="classifier", checkpoint=checkpoint)
    assert "ReCAM diverged at epoch 2, batch " in _one_line(info)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # epoch 1's, never epoch 2's
    assert all(bool(torch.isfinite(t).all()) for t in _floats(state))
    assert all(torch.equal(before[name], model.state_dict()[name]) for name in before)


def test_fcam_stops_and_keeps_no_decoder() -> None:
    torch.manual_seed(0)
    model = TinyNet()
    before = _state(model)
    fcam = FCAM(C, epochs=2, progress=False, learning_rate=1e6, decoder_channels=(8,))
    with pytest.raises(TrainingDiverged) as info:
        fcam.fit(model, _data(), source=_cam_source)
    assert "F-CAM diverged at epoch 1, batch 2: the losses are total = nan" in _one_line(info)
    assert fcam.decoder_ is None
    assert all(torch.equal(before[name], model.state_dict()[name]) for name in before)


def test_rcm_mam_batch_with_non_finite_values_changes_no_state() -> None:
    torch.manual_seed(0)
    pss = PixelSelfSupervision(TinyNet(), num_classes=C, embed_dim=6, mam_start_epoch=0)
    images, labels = _data(1)[0]
    pss(images, labels, epoch=0)  # one good batch fills the memory
    memory, seen = pss.prototypes.clone(), pss.prototype_seen.clone()
    support = _state(pss.support)
    with torch.no_grad():
        pss.projection.weight.fill_(float("inf"))  # what an exploding step would leave
    with pytest.raises(TrainingDiverged) as info:
        pss(images, labels, epoch=1)
    assert "RCM + MAM diverged at epoch 1" in _one_line(info)
    assert torch.equal(pss.prototypes, memory) and torch.equal(pss.prototype_seen, seen)
    with pytest.raises(TrainingDiverged) as info:
        pss.update_support()
    assert "parameter" in _one_line(info) and "SupportNet was not changed" in str(info.value)
    assert all(torch.equal(support[name], value) for name, value in pss.support.state_dict().items())


def test_nan_images_are_refused_before_any_step() -> None:
    images, labels = _data(1)[0]
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="batch 0 of epoch 1: images contains 1 NaN/Inf value"):
        ReCAM(C, epochs=1, progress=False).fit(TinyNet(), [(images, labels)], feature_layer="stage4",
                                               head="classifier")
    pss = PixelSelfSupervision(TinyNet(), num_classes=C, embed_dim=6)
    with pytest.raises(ValueError, match="images contains 1 NaN/Inf"):
        pss(images, labels, epoch=0)
