"""The synthetic benchmark generator and the toy classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lpcam_plugin.benchmark.synthetic import PART_NAMES, SyntheticConfig, generate, images_to_tensor
from lpcam_plugin.benchmark.toynet import TrainConfig, ToyResNet, extract_features, load_checkpoint, predict_logits, save_checkpoint, train_classifier

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
    torch.testing.assert_close(extract_features(loaded, x, batch_size=5, progress=False), extract_features(model, x, progress=False))
    torch.testing.assert_close(loaded.class_weight(), model.classifier.weight[:, :, 0, 0])
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
