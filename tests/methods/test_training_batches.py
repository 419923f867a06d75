"""The training methods (ReCAM, F-CAM, RCM + MAM) check their batches like the map paths check theirs:
labels exactly (B, C) and multi-hot, batches as sequences, F-CAM's colour constants on the 0-255 scale,
callable CAM heads non-negative. Each error is one line that names the problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lpcam_plugin import FCAM, FCAMConfig, PixelSelfSupervision, ReCAM, cam_map
from lpcam_plugin.core.checks import check_multi_hot, check_training_batch

C, D = 4, 8


class TinyNet(nn.Module):
    """Strided stem, ``stage1``..``stage4``, GAP and a 1x1 ``classifier``: enough for all three methods."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, D, 3, 2, 1), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(D, D, 3, 1, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(D, D, 3, 2, 1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(D, D, 3, 1, 1), nn.ReLU())
        self.stage4 = nn.Sequential(nn.Conv2d(D, D, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(D, C, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stage4(self.stage3(self.stage2(self.stage1(self.conv1(x)))))
        return self.classifier(f.mean(dim=(2, 3), keepdim=True)).flatten(1)


def _images(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _labels(n: int = 3) -> torch.Tensor:
    labels = torch.zeros(n, C)
    labels[torch.arange(n), torch.arange(n) % C] = 1
    return labels


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


BAD_LABELS = [
    (torch.ones(1, C), "must have shape (B, C) = (3, 4), got (1, 4)"),  # would broadcast over the batch
    (torch.ones(3, C + 1), "must have shape (B, C) = (3, 4), got (3, 5)"),
    (2 * _labels(), "multi-hot image labels (0 or 1), got values [2.0]"),
    (2 * _labels() - 1, "multi-hot image labels (0 or 1), got values [-1.0]"),
    (_labels() * float("nan"), "NaN/Inf"),
]


@pytest.mark.parametrize("labels, expected", BAD_LABELS)
def test_recam_refuses_labels_that_are_not_one_row_of_0_or_1_per_image(labels, expected) -> None:
    recam = ReCAM(C, epochs=1, progress=False)
    with pytest.raises((ValueError, TypeError)) as info:
        recam.fit(TinyNet(), [(_images(), labels)], feature_layer="stage4", head="classifier")
    message = _one_line(info)
    assert expected in message and "batch 0 of epoch 1" in message


@pytest.mark.parametrize("labels, expected", BAD_LABELS)
def test_pixel_self_supervision_refuses_the_same_labels(labels, expected) -> None:
    pss = PixelSelfSupervision(TinyNet(), num_classes=C, embed_dim=6)
    with pytest.raises((ValueError, TypeError)) as info:
        pss(_images(), labels, epoch=0)
    assert expected in _one_line(info)


@pytest.mark.parametrize("batch, expected", [
    ({"img": _images(), "label": _labels()}, "got a dict with keys ['img', 'label']"),
    ((_images(),), "sequences, got tuple"),
    (_images(), "sequences, got Tensor"),
    ((_images()[:, :1], _labels()), "images must have shape (B, 3, H, W)"),
])
def test_batches_must_be_image_label_sequences(batch, expected) -> None:
    recam = ReCAM(C, epochs=1, progress=False)
    with pytest.raises((ValueError, TypeError)) as info:
        recam.fit(TinyNet(), [batch], feature_layer="stage4", head="classifier")
    assert expected in _one_line(info)
    with pytest.raises((ValueError, TypeError)) as info:
        FCAM(C, epochs=1, progress=False).fit(TinyNet(), [batch], source=_cam_source)
    assert expected in _one_line(info)


def test_a_good_batch_passes_unchanged() -> None:
    images, labels = check_training_batch([_images(), _labels().double(), "extra"], C, "batch 0")
    assert images.shape == (3, 3, 16, 16) and labels.dtype == torch.float32 and torch.equal(labels, _labels())
    assert torch.equal(check_multi_hot(_labels().bool(), 3, C), _labels())


def _cam_source(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    weight = torch.ones(C, features.shape[1])
    return cam_map(features, weight) * (labels > 0)[:, :, None, None]


def test_fcam_refuses_colour_constants_on_the_0_1_scale() -> None:
    imagenet_01 = dict(pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
    fcam = FCAM(C, epochs=1, progress=False, decoder_channels=(8,), **imagenet_01)
    with pytest.raises(ValueError) as info:
        fcam.fit(TinyNet(), [(_images(), _labels())], source=_cam_source)
    message = _one_line(info)
    assert "look like 0-1 scale constants" in message and "123.675" in message


def test_fcam_refuses_images_that_were_not_normalised() -> None:
    fcam = FCAM(C, epochs=1, progress=False, decoder_channels=(8,))
    with pytest.raises(ValueError) as info:
        fcam.fit(TinyNet(), [(_images().abs() * 255, _labels())], source=_cam_source)
    assert "far outside 0-255" in _one_line(info)


def test_fcam_takes_any_sequence_of_numbers_as_colour_constants(tmp_path) -> None:
    config = FCAMConfig(pixel_mean=np.array([123.675, 116.28, 103.53]), pixel_std=torch.tensor([58.4, 57.1, 57.4]),
                        decoder_channels=np.array([8]))
    assert config.pixel_mean == (123.675, 116.28, 103.53) and all(type(v) is float for v in config.pixel_std)
    assert config.decoder_channels == (8,) and type(config.decoder_channels[0]) is int
    fcam = FCAM(C, config=config.replace(epochs=1), progress=False)
    fcam.fit(TinyNet(), [(_images(), _labels())], source=_cam_source, skip_layers=["conv1", "stage1"])
    fcam.save(tmp_path / "fcam.npz")  # failed at save with numpy constants before
    assert FCAM.load(tmp_path / "fcam.npz").config == fcam.config
    with pytest.raises(ValueError, match="pixel_mean must be 3 numbers"):
        FCAMConfig(pixel_mean=("r", "g", "b"))


def test_a_callable_cam_head_must_return_non_negative_cams() -> None:
    def signed_head(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bdhw,cd->bchw", features - 1.0, model.classifier.weight.reshape(C, D))

    pss = PixelSelfSupervision(TinyNet(), num_classes=C, embed_dim=6, head=signed_head, feature_dim=D,
                               cls_weight=0.0, mam_start_epoch=0)
    with pytest.raises(ValueError) as info:
        pss(_images(), _labels(), epoch=0)
    assert "must return non-negative CAMs" in _one_line(info)
