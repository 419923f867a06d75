"""ReCAM: loss pieces against plain references written here, fitting, resume, files, DDP."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import Interrupt, StopsInEpoch, corrupted_copy, gloo_group, spawn_gloo
from torch import nn

import lpcam_plugin
from lpcam_plugin import ReCAM, ReCAMConfig, cam_map
from lpcam_plugin.methods.recam.losses import class_features, normalized_cams, recam_losses, softmax_ce_loss

C, D = 4, 8


class TinyNet(nn.Module):
    """A GAP + 1x1-conv classifier with BatchNorm, shaped like the hosts' (``stage4``, ``classifier``)."""

    def __init__(self, num_classes: int = C, dim: int = D, head: str = "conv") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU())
        self.stage4 = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU())
        if head == "conv":
            self.classifier = nn.Conv2d(dim, num_classes, 1, bias=False)
        elif head == "linear":
            self.classifier = nn.Linear(dim, num_classes)
        else:
            self.classifier = nn.Conv2d(dim, num_classes, 3, padding=1, bias=False)

    def forward(self, x):
        pooled = self.stage4(self.stem(x)).mean(dim=(2, 3))
        if isinstance(self.classifier, nn.Linear):
            return self.classifier(pooled)
        return self.classifier(pooled[:, :, None, None]).flatten(1)


def make_data(n=8, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = (torch.rand(n, C, generator=g) > 0.5).float()
    labels[0] = 0
    labels[0, 1] = 1
    return images, labels


def batches(images, labels, batch_size=4):
    return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]


# ----------------------------------------------------------------------------- loss pieces


def test_class_features_bmm_equals_the_reference_broadcast():
    g = torch.Generator().manual_seed(1)
    feats, cams = torch.randn(3, D, 5, 6, generator=g), torch.rand(3, C, 5, 6, generator=g)
    broadcast = (cams.unsqueeze(2) * feats.unsqueeze(1)).reshape(3, C, D, -1).mean(-1)  # the reference's B x C x D x hw
    torch.testing.assert_close(class_features(feats, cams), broadcast, rtol=1e-5, atol=1e-6)


def test_normalized_cams_are_relu_over_max_and_keep_the_graph():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, D, 4, 4, generator=g, requires_grad=True)
    weight = torch.randn(C, D, generator=g)
    cams = normalized_cams(feats, weight)
    expected = F.relu(F.conv2d(feats, weight[:, :, None, None]))
    expected = expected / (F.adaptive_max_pool2d(expected, (1, 1)) + 1e-5)
    torch.testing.assert_close(cams, expected)
    cams.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def reference_sce(class_feats, labels, sce_weight):
    """The reference's Class_Predictor: per image, CE (mean) over its positives; summed; / B."""
    loss = 0.0
    for b in range(class_feats.shape[0]):
        positives = torch.nonzero(labels[b])[:, 0]
        if positives.numel() == 0:
            continue
        loss = loss + F.cross_entropy(class_feats[b, positives] @ sce_weight.t(), positives)
    return loss / class_feats.shape[0]


def test_softmax_ce_matches_the_reference_loop_and_ignores_negatives():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(5, C, D, generator=g)
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.float)
    weight = torch.randn(C, D, generator=g)
    ours = softmax_ce_loss(feats, labels, weight)
    torch.testing.assert_close(ours, reference_sce(feats, labels, weight))
    changed = feats.clone()
    changed[labels == 0] = 100.0  # class features of negative classes never enter the loss
    torch.testing.assert_close(softmax_ce_loss(changed, labels, weight), ours)


def test_softmax_ce_is_scaled_by_the_batch_size():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(2, C, D, generator=g)
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float)
    weight = torch.randn(C, D, generator=g)
    once = softmax_ce_loss(feats, labels, weight)
    torch.testing.assert_close(softmax_ce_loss(feats.repeat(3, 1, 1), labels.repeat(3, 1), weight), once)
    with_empty = softmax_ce_loss(torch.cat([feats, feats[:1]]), torch.cat([labels, torch.zeros(1, C)]), weight)
    torch.testing.assert_close(with_empty, once * 2 / 3)  # an image without positives adds 0 but counts in B


def test_total_loss_is_cls_plus_weighted_sce_and_reaches_the_backbone():
    g = torch.Generator().manual_seed(5)
    feats = torch.rand(3, D, 4, 4, generator=g, requires_grad=True)
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float)
    bce, sce = torch.randn(C, D, generator=g), torch.randn(C, D, generator=g)
    losses = recam_losses(feats, labels, bce, sce, loss_weight=0.1)
    cls = F.multilabel_soft_margin_loss(feats.mean(dim=(2, 3)) @ bce.t(), labels)
    torch.testing.assert_close(losses["cls"], cls)
    torch.testing.assert_close(losses["total"], cls + 0.1 * losses["sce"])
    grad_sce, = torch.autograd.grad(losses["sce"], feats)
    assert grad_sce.abs().sum() > 0  # the maps are not detached


# ----------------------------------------------------------------------------- fitting and maps


def fitted(tmp_path=None, **overrides):
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    recam = ReCAM(C, progress=False, epochs=2, learning_rate=0.05, **overrides)
    recam.fit(model, batches(images, labels), feature_layer="stage4", head="classifier")
    return recam, model, images, labels


def test_fit_fine_tunes_in_place_and_exposes_the_weights():
    torch.manual_seed(0)
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    images, labels = make_data()
    recam = ReCAM(C, progress=False, epochs=2, learning_rate=0.05)
    recam.fit(model, batches(images, labels))
    after = model.state_dict()
    assert not torch.equal(before["stage4.0.weight"], after["stage4.0.weight"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    # frozen BatchNorm: running statistics untouched; the model is left in eval mode
    assert torch.equal(before["stem.1.running_mean"], after["stem.1.running_mean"])
    assert not model.training
    torch.testing.assert_close(recam.bce_weight_, after["classifier.weight"][:, :, 0, 0])
    assert isinstance(recam.head_, nn.Linear) and tuple(recam.head_.weight.shape) == (C, D)
    torch.testing.assert_close(recam.map_weight_, recam.sce_weight_ * recam.bce_weight_)
    torch.testing.assert_close(recam.selection_weight_, recam.weight(recam.config.selection_weight))
    assert recam.n_steps_ == 4 and [h["epoch"] for h in recam.loss_history_] == [1, 2]


def test_maps_follow_the_preset_weight_and_mask_absent_classes():
    recam, model, images, labels = fitted()
    feats = model.stage4(model.stem(images)).detach()
    maps = recam(feats, labels)
    assert maps.shape == (len(images), C, 8, 8)
    assert torch.all(maps[labels == 0] == 0)
    expected = cam_map(feats, recam.sce_weight_ * recam.bce_weight_, [2, 0])
    torch.testing.assert_close(recam(feats, [2, 0]), expected)
    coco = ReCAM(C, preset="coco")
    assert coco.config.loss_weight == 0.1 and coco.config.map_weight == "bce"


def test_linear_head_with_bias_is_accepted_and_3x3_head_is_refused():
    torch.manual_seed(0)
    images, labels = make_data()
    model = TinyNet(head="linear")
    recam = ReCAM(C, progress=False, epochs=1).fit(model, batches(images, labels))
    assert recam.bce_bias_ is not None and recam.bce_bias_.shape == (C,)
    with pytest.raises(ValueError, match="3x3 convolution"):
        ReCAM(C, epochs=1).fit(TinyNet(head="3x3"), batches(images, labels))
    with pytest.raises(ValueError, match="no submodule 'stage9'"):
        ReCAM(C, epochs=1).fit(TinyNet(), batches(images, labels), feature_layer="stage9")
    with pytest.raises(ValueError, match="expected C=5"):
        ReCAM(5, epochs=1).fit(TinyNet(), batches(images, labels))


def test_unfitted_and_bad_config_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        ReCAM(C)(torch.zeros(1, D, 2, 2), [0])
    with pytest.raises(ValueError, match="epochs"):
        ReCAMConfig(epochs=2.5)
    with pytest.raises(TypeError, match="unknown ReCAM option"):
        ReCAM(C, learning_rat=1.0)
    with pytest.raises(ValueError, match="map_weight"):
        ReCAM(C, map_weight="softmax")


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    images, labels = make_data()
    data = batches(images, labels)
    torch.manual_seed(0)
    straight_model = TinyNet()
    start = copy.deepcopy(straight_model.state_dict())
    straight = ReCAM(C, progress=False, epochs=3, learning_rate=0.05).fit(straight_model, data)

    model = TinyNet()
    model.load_state_dict(start)
    ckpt = tmp_path / "recam_train.pt"
    with pytest.raises(Interrupt):
        ReCAM(C, progress=False, epochs=3, learning_rate=0.05).fit(model, StopsInEpoch(data, 3), checkpoint=ckpt)
    assert ckpt.exists()
    fresh = TinyNet()
    fresh.load_state_dict(start)  # a new process: the model as the host saved it, state from the checkpoint
    resumed = ReCAM(C, progress=False, epochs=3, learning_rate=0.05).fit(fresh, data, checkpoint=ckpt)
    torch.testing.assert_close(resumed.bce_weight_, straight.bce_weight_)
    torch.testing.assert_close(resumed.sce_weight_, straight.sce_weight_)
    assert [h["epoch"] for h in resumed.loss_history_] == [1, 2, 3]
    with pytest.raises(ValueError, match="different config"):
        ReCAM(C, progress=False, epochs=3, learning_rate=0.01).fit(TinyNet(), data, checkpoint=ckpt)


def test_save_load_round_trip_and_tampering(tmp_path):
    recam, model, images, labels = fitted()
    path = tmp_path / "recam.npz"
    recam.save(path)
    loaded = ReCAM.load(path)
    feats = model.stage4(model.stem(images)).detach()
    torch.testing.assert_close(loaded(feats, labels), recam(feats, labels))
    assert loaded.config == recam.config and loaded.loss_history_ == recam.loss_history_
    bad = corrupted_copy(path, tmp_path / "bad.npz")
    with pytest.raises(ValueError):
        ReCAM.load(bad)
    with pytest.raises(ValueError):
        lpcam_plugin.PrototypeBank.load(path)  # another format's file is named as such


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank, world, port, start, out):
    with gloo_group(rank, world, port):
        images, labels = make_data()
        shard = [(x[rank::world], y[rank::world]) for x, y in batches(images, labels)]
        model = TinyNet()
        model.load_state_dict(start)
        recam = ReCAM(C, progress=False, epochs=2, learning_rate=0.05).fit(model, shard)
        if rank == 0:
            torch.save({"bce": recam.bce_weight_, "sce": recam.sce_weight_}, out)


def test_ddp_two_processes_equal_one_process(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    start = copy.deepcopy(model.state_dict())
    images, labels = make_data()
    single = ReCAM(C, progress=False, epochs=2, learning_rate=0.05).fit(model, batches(images, labels))
    out = tmp_path / "ddp.pt"
    spawn_gloo(_ddp_worker, start, str(out))
    result = torch.load(out, weights_only=True)
    torch.testing.assert_close(result["bce"], single.bce_weight_, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result["sce"], single.sce_weight_, rtol=1e-4, atol=1e-5)
