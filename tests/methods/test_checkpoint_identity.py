"""A training checkpoint knows what produced it: ReCAM and F-CAM refuse one written from other
weights, data or (F-CAM) source with a one-line error naming the file and what differs, before
anything is written into the model; ``restart=True`` starts over; only a real checkpoint of the
method gets the advice to start over."""
from __future__ import annotations

import pytest
import torch
from test_training_batches import C, TinyNet, _images

from lpcam_plugin import FCAM, ReCAM, cam_map
from lpcam_plugin.core.checkpoints import load_training_state, save_training_state

FAST_FCAM = {"epochs": 1, "decoder_channels": (8, 8), "fg_samples": 2, "bg_samples": 2, "erosion_size": 1,
             "crf_weight": 0.0}


def _data(seed: int = 1, batches: int = 2) -> list:
    generator = torch.Generator().manual_seed(seed)
    images = _images(4 * batches)
    labels = (torch.rand(4 * batches, C, generator=generator) > 0.5).float()
    labels[:, 0] = 1
    return [(images[i:i + 4], labels[i:i + 4]) for i in range(0, 4 * batches, 4)]


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def _net(seed: int) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def _state(model: torch.nn.Module) -> dict:
    return {name: value.clone() for name, value in model.state_dict().items()}


def _recam_fit(model, data, checkpoint, **kwargs) -> ReCAM:
    return ReCAM(C, epochs=1, progress=False).fit(model, data, feature_layer="stage4", head="classifier",
                                                  checkpoint=checkpoint, **kwargs)


def test_recam_refuses_a_checkpoint_of_another_model_before_touching_the_model(tmp_path) -> None:
    checkpoint = tmp_path / "recam_train.pt"
    _recam_fit(_net(0), _data(), checkpoint)
    other = _net(1)  # same architecture, other weights: the README's fixed checkpoint name, a new classifier
    before = _state(other)
    with pytest.raises(ValueError) as info:
        _recam_fit(other, _data(), checkpoint)
    message = _one_line(info)
    assert str(checkpoint) in message and "different model_weights" in message and "restart=True" in message
    assert all(torch.equal(before[name], value) for name, value in other.state_dict().items())


def test_recam_refuses_a_checkpoint_of_another_architecture_without_a_partial_load(tmp_path) -> None:
    checkpoint = tmp_path / "recam_train.pt"
    _recam_fit(_net(0), _data(), checkpoint)
    wider = _net(0)
    wider.stage1 = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 5, 1, 2), torch.nn.ReLU())  # stage1 of another shape
    before = _state(wider)
    with pytest.raises(ValueError, match="different model_weights"):
        _recam_fit(wider, _data(), checkpoint)
    assert all(torch.equal(before[name], value) for name, value in wider.state_dict().items())


def test_recam_refuses_other_data_and_restart_starts_over(tmp_path) -> None:
    checkpoint = tmp_path / "recam_train.pt"
    _recam_fit(_net(0), _data(seed=1), checkpoint)
    with pytest.raises(ValueError) as info:
        _recam_fit(_net(0), _data(seed=2), checkpoint)  # same length and shapes, other labels
    assert "different data" in _one_line(info) and "model_weights" not in _one_line(info)
    restarted = _recam_fit(_net(0), _data(seed=2), checkpoint, restart=True)
    fresh = ReCAM(C, epochs=1, progress=False).fit(_net(0), _data(seed=2), feature_layer="stage4",
                                                   head="classifier")
    torch.testing.assert_close(restarted.sce_weight_, fresh.sce_weight_)
    _recam_fit(_net(0), _data(seed=2), checkpoint)  # the overwritten checkpoint now matches: resumed, no error


def _cam_source(model: TinyNet):
    """CAM of ``model``'s head, closed over a copy of its weight: ``(B, D, h, w), (B, C) -> (B, C, h, w)``."""
    weight = model.classifier.weight[:, :, 0, 0].detach().clone()
    return lambda features, labels: cam_map(features, weight) * (labels > 0)[:, :, None, None]


def _fcam_fit(model, data, source, checkpoint, **kwargs) -> FCAM:
    return FCAM(C, progress=False, **FAST_FCAM).fit(model, data, source=source, skip_layers=["stage1"],
                                                    checkpoint=checkpoint, **kwargs)


def test_fcam_refuses_a_checkpoint_of_another_source_model_or_data(tmp_path) -> None:
    checkpoint = tmp_path / "fcam_train.pt"
    model = _net(0)
    _fcam_fit(model, _data(), _cam_source(model), checkpoint)
    other = _net(1)
    with pytest.raises(ValueError) as info:
        _fcam_fit(model, _data(), _cam_source(other), checkpoint)  # the same encoder, maps of another head
    assert _one_line(info).endswith("different source; pass restart=True to start over (the file is then "
                                    "overwritten), or another checkpoint path")
    with pytest.raises(ValueError, match="different model_weights;"):
        _fcam_fit(other, _data(), _cam_source(model), checkpoint)
    with pytest.raises(ValueError, match="different data;"):
        _fcam_fit(model, _data(seed=3), _cam_source(model), checkpoint)
    resumed = _fcam_fit(model, _data(), _cam_source(model), checkpoint)  # same inputs: resumed (all epochs done)
    assert resumed.n_steps_ == 2
    assert _fcam_fit(model, _data(seed=3), _cam_source(model), checkpoint, restart=True).n_steps_ == 2


def test_only_a_real_checkpoint_of_the_method_gets_the_advice_to_start_over(tmp_path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(ValueError) as info:
        _recam_fit(_net(0), _data(), folder)
    assert "is a directory" in _one_line(info) and "restart" not in _one_line(info)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError) as info:
        _recam_fit(_net(0), _data(), text)
    assert "not a ReCAM training checkpoint" in _one_line(info)
    assert "delete" not in _one_line(info) and "restart" not in _one_line(info)
    fcam_file = tmp_path / "fcam_train.pt"
    save_training_state(fcam_file, "lpcam_plugin.FCAM.training/1", {"config": {}})
    with pytest.raises(ValueError) as info:
        _recam_fit(_net(0), _data(), fcam_file)
    assert "format 'lpcam_plugin.FCAM.training/1'" in _one_line(info) and "restart" not in _one_line(info)
    with pytest.raises(ValueError) as info:
        load_training_state(fcam_file, "lpcam_plugin.FCAM.training/1", "F-CAM", {"config": {"epochs": 1}})
    assert _one_line(info).endswith("different config; delete it to start over, or pass another checkpoint path")
