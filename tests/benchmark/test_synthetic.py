"""The synthetic benchmark generator and the toy classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lpcam_plugin.benchmark.synthetic import PART_NAMES, SyntheticConfig, generate, images_to_tensor
from lpcam_plugin.benchmark.toynet import ToyBottleneckNet, ToyResNet
from lpcam_plugin.benchmark.training import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    extract_features,
    load_checkpoint,
    load_or_train,
    predict_logits,
    save_checkpoint,
    train_classifier,
)

SMALL = SyntheticConfig(num_images=12, image_size=32, seed=5)


def test_generator_is_deterministic_and_seed_dependent() -> None:
    a, b = generate(SMALL, progress=False), generate(SMALL, progress=False)
    for name in ("images", "masks", "parts", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.ids == b.ids and a.class_names == b.class_names and a.context == b.context
    c = generate(SyntheticConfig(num_images=12, image_size=32, seed=6), progress=False)
    assert not np.array_equal(a.images, c.images)
    assert SMALL.fingerprint() == SyntheticConfig(num_images=12, image_size=32, seed=5).fingerprint()
    assert SMALL.fingerprint() != SyntheticConfig(num_images=12, image_size=32, seed=6).fingerprint()


def test_generator_outputs_are_consistent() -> None:
    data = generate(SyntheticConfig(num_images=40, image_size=48, seed=1), progress=False)
    n, size, c_total = 40, 48, data.config.num_classes
    assert data.images.shape == (n, size, size, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (n, size, size) and data.labels.shape == (n, c_total)
    assert len(set(data.ids)) == n and len(data) == n
    # every labelled pixel belongs to a part and vice versa; parts use the documented ids
    np.testing.assert_array_equal(data.masks > 0, data.parts > 0)
    assert set(np.unique(data.parts)) <= set(range(len(PART_NAMES)))
    for i in range(n):
        present = set(np.unique(data.masks[i]).tolist()) - {0}
        labelled = {int(c) + 1 for c in np.flatnonzero(data.labels[i])}
        assert present <= labelled  # a fully occluded object keeps its image label
        assert 1 <= data.labels[i].sum() <= 3
    # one context background per group, attached to the first class of each group
    assert sorted(data.context) == [g * data.config.group_size for g in range(data.config.num_groups)]
    # heads are the small part, bodies the large one (the design the benchmark relies on)
    heads, bodies = (data.parts == 1).sum(), (data.parts == 2).sum()
    assert 0 < heads < bodies


def test_context_background_cooccurs_with_its_class() -> None:
    """With context_prob=1 an image led by a context class shows the same background texture colour."""
    config = SyntheticConfig(num_images=60, image_size=32, seed=2, context_prob=1.0, noise_std=0.0,
                             object_count_probs=(1.0,))
    data = generate(config, progress=False)
    means = {}
    for i in range(len(data)):
        c = int(np.flatnonzero(data.labels[i])[0])
        if c in data.context:
            background = data.images[i][data.masks[i] == 0].astype(float).mean(axis=0)
            means.setdefault(c, []).append(background)
    assert means
    for values in means.values():
        values = np.array(values)
        assert values.std(axis=0).max() < 25  # same texture family (only jitter), unlike random backgrounds


@pytest.mark.parametrize("kwargs", [{"num_images": 0}, {"image_size": 8}, {"context_prob": 1.5},
                                    {"object_count_probs": (0.5, 0.2)}, {"object_scale": (0.5, 0.3)}])
def test_config_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_toynet_trains_and_checkpoint_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    data = generate(SyntheticConfig(num_images=16, image_size=32, seed=0), progress=False)
    x, y = images_to_tensor(data.images), torch.from_numpy(data.labels)
    model = ToyResNet(data.config.num_classes, widths=(8, 16, 16))
    assert model.stride == 8 and model.features(x[:2]).shape == (2, 16, 4, 4)
    before = torch.nn.MultiLabelSoftMarginLoss()(predict_logits(model, x), y)
    stats = train_classifier(model, x, y, TrainConfig(epochs=6, batch_size=8, lr=1e-2), progress=False)
    assert stats["loss"] < float(before)
    assert not model.training
    path = tmp_path / "toy.pt"
    save_checkpoint(path, model, {"note": "test"})
    loaded, meta = load_checkpoint(path)
    assert meta == {"note": "test"}
    torch.testing.assert_close(predict_logits(loaded, x), predict_logits(model, x))
    torch.testing.assert_close(extract_features(loaded, x, batch_size=5, progress=False),
                               extract_features(model, x, progress=False))
    torch.testing.assert_close(loaded.class_weight(), model.classifier.weight[:, :, 0, 0])
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_bottleneck_net_is_shaped_like_resnet50_stage4_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    data = generate(SyntheticConfig(num_images=16, image_size=48, seed=0), progress=False)
    x, y = images_to_tensor(data.images), torch.from_numpy(data.labels)
    model = ToyBottleneckNet(data.config.num_classes, widths=(8, 16, 16), mid_width=16, feature_dim=128)
    assert model.stride == 16 and model.feature_dim == 128
    assert ToyBottleneckNet(6).feature_dim == 1024 and ToyBottleneckNet(6).stride == 16  # the benchmark's defaults
    block = model.stage4[0]
    assert (block.conv1.out_channels, block.conv3.in_channels, block.conv3.out_channels) == (16, 16, 128)
    stats = train_classifier(model, x, y, TrainConfig(epochs=3, batch_size=8, lr=1e-2), progress=False)
    assert np.isfinite(stats["loss"]) and not model.training
    features = extract_features(model, x, progress=False)
    assert features.shape == (16, 128, 3, 3) and features.min() >= 0 and (features == 0).any()  # post-ReLU
    # the feature layer and the head are reachable by dotted name (for hooks), and the head is the (C, D) weight
    captured = []
    handle = model.get_submodule(model.FEATURE_LAYER).register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        logits = model(x[:4])
    handle.remove()
    torch.testing.assert_close(captured[0], model.features(x[:4]))
    head = model.get_submodule(model.HEAD)
    assert head.bias is None and tuple(head.weight.shape) == (6, 128, 1, 1)
    torch.testing.assert_close(logits, captured[0].mean(dim=(2, 3)) @ model.class_weight().T)

    path = tmp_path / "bottleneck.pt"
    save_checkpoint(path, model, {"note": "b"})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["network"] == "ToyBottleneckNet"
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, ToyBottleneckNet) and meta == {"note": "b"}
    assert loaded.architecture() == model.architecture()
    torch.testing.assert_close(predict_logits(loaded, x), predict_logits(model, x))
    # a checkpoint of the earlier format (no network name) is a ToyResNet
    small = ToyResNet(6, widths=(8, 16, 16))
    save_checkpoint(path, small)
    payload = torch.load(path, weights_only=True)
    del payload["network"]
    torch.save(payload, path)
    assert isinstance(load_checkpoint(path)[0], ToyResNet)
    with pytest.raises(ValueError, match="feature_dim"):
        ToyBottleneckNet(6, mid_width=64, feature_dim=128)


def test_load_or_train_reuses_a_checkpoint_only_for_the_same_key(tmp_path) -> None:
    calls = []

    def train():
        calls.append(1)
        return ToyBottleneckNet(2, widths=(4,), strides=(16,), mid_width=4, feature_dim=16), {"loss": 1.0}

    path = tmp_path / "cache" / "net.pt"
    first, stats, cached = load_or_train(path, {"k": 1}, train, {"class_names": ["a", "b"]})
    assert (stats, cached, len(calls)) == ({"loss": 1.0}, False, 1)
    again, stats, cached = load_or_train(path, {"k": 1}, train)
    assert (stats, cached, len(calls)) == ({"loss": 1.0}, True, 1) and not again.training
    torch.testing.assert_close(again.class_weight(), first.class_weight())
    assert load_checkpoint(path)[1]["class_names"] == ["a", "b"]
    _, _, cached = load_or_train(path, {"k": 2}, train)
    assert not cached and len(calls) == 2
    path.write_bytes(b"not a checkpoint")
    _, _, cached = load_or_train(path, {"k": 2}, train)
    assert not cached and len(calls) == 3
