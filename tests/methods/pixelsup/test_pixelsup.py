"""Pixel self-supervision (RCM + MAM): loss pieces against plain loop references written here,
the lambda schedule, the EMA SupportNet, parameter hygiene, resuming, DDP and input errors."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import gloo_group, spawn_gloo
from torch import nn

from lpcam_plugin.core.modules import LinearHead
from lpcam_plugin.methods.pixelsup.config import PAPER_STEPS, PixelSupConfig, schedule_settings
from lpcam_plugin.methods.pixelsup.losses import (
    fuse_scales,
    mam_loss,
    prototype_sums,
    raw_cams,
    rcm_loss,
    region_labels,
    region_masks,
    resize_normalize,
    update_prototypes,
)
from lpcam_plugin.methods.pixelsup.module import PixelSelfSupervision

C, D, E = 4, 8, 6
KEYS = ("total", "cls", "rcm", "mam")


class TinyNet(nn.Module):
    """Strided stem (BatchNorm), ``stage4``, GAP and a ``classifier`` head: conv 1x1, linear or a (C, D) parameter."""

    def __init__(self, head: str = "conv") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, D, 3, stride=2, padding=1), nn.BatchNorm2d(D), nn.ReLU())
        self.stage4 = nn.Sequential(nn.Conv2d(D, D, 3, padding=1), nn.ReLU())
        self.head_kind = head
        if head == "conv":
            self.classifier = nn.Conv2d(D, C, 1, bias=False)
        elif head == "linear":
            self.classifier = nn.Linear(D, C)
        elif head == "param":
            self.classifier = nn.Parameter(torch.randn(C, D) * 0.3)
        else:
            self.classifier = nn.Conv2d(D, C, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.stage4(self.stem(x)).mean(dim=(2, 3))
        if self.head_kind == "linear":
            return self.classifier(pooled)
        if self.head_kind == "param":
            return pooled @ self.classifier.t()
        return self.classifier(pooled[:, :, None, None]).flatten(1)


def make_data(n=4, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = (torch.rand(n, C, generator=g) > 0.5).float()
    labels[0] = 0
    labels[0, 1] = 1
    labels[-1] = 0
    labels[-1, 3] = 1  # class 3 only in the second half of the batch (the second rank's shard)
    labels[:-1, 3] = 0
    return images, labels


def make_pss(model, **overrides):
    return PixelSelfSupervision(model, num_classes=C, embed_dim=E, **overrides)


def train_steps(model, pss, optimizer, steps, start=0, n=4):
    """Run ``steps`` host-loop steps (epoch = step index) and return the loss values."""
    record = []
    for step in range(start, start + steps):
        images, labels = make_data(n=n, seed=step)
        losses = pss(images, labels, epoch=step)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        pss.update_support()
        record.append(torch.stack([losses[k].detach() for k in KEYS]))
    return torch.stack(record)


# ----------------------------------------------------------------------------- loss pieces


def test_region_masks_follow_the_argmax_over_present_classes_and_the_threshold():
    g = torch.Generator().manual_seed(1)
    cams = torch.rand(3, C, 5, 6, generator=g)
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.float32)
    masks = region_masks(cams, labels, 0.4)
    expected = torch.zeros(3, C + 1, 5, 6)
    for b in range(3):
        for y in range(5):
            for x in range(6):
                best, winner = -1.0, None
                for k in range(C):
                    if labels[b, k] > 0 and cams[b, k, y, x] > best:
                        best, winner = float(cams[b, k, y, x]), k
                expected[b, 0 if winner is None or best <= 0.4 else winner + 1, y, x] = 1
    torch.testing.assert_close(masks, expected)
    assert masks[0, 2].sum() == 0 and masks[0, 4].sum() == 0          # absent classes: empty
    assert torch.equal(masks[1, 0], torch.ones(5, 6))                  # no label: all background
    assert torch.equal(masks.sum(dim=1), torch.ones(3, 5, 6))          # each pixel in one mask
    assert torch.equal(region_labels(cams, labels, 0.4), masks.argmax(dim=1))


def test_multiscale_maps_are_resized_then_max_normalised_and_fused_by_sum():
    g = torch.Generator().manual_seed(2)
    small, large = torch.rand(2, C, 3, 3, generator=g), torch.rand(2, C, 12, 12, generator=g)
    maps = torch.stack([resize_normalize(small, (6, 6)), resize_normalize(large, (6, 6))])
    for m in maps:
        torch.testing.assert_close(m.amax(dim=(-2, -1)), torch.full((2, C), 1 / (1 + 1e-5)))
    fused = fuse_scales(maps)
    summed = maps[0] + maps[1]
    torch.testing.assert_close(fused, summed / (summed.amax(dim=(-2, -1), keepdim=True) + 1e-5))
    feats, weight = torch.randn(2, D, 3, 3, generator=g), torch.randn(C, D, generator=g)
    torch.testing.assert_close(raw_cams(feats, weight), F.relu(F.conv2d(feats, weight[:, :, None, None])))


def test_prototypes_sum_over_the_batch_and_the_memory_keeps_the_latest_non_empty_one():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, E, 4, 4, generator=g)
    index = torch.randint(0, 3, (2, 4, 4), generator=g)               # classes 0..2 only: 3, 4 empty
    masks = F.one_hot(index, C + 1).permute(0, 3, 1, 2).float()
    sums, counts = prototype_sums(feats, masks)
    ref_sums, ref_counts = torch.zeros(C + 1, E), torch.zeros(C + 1)
    for b in range(2):
        for y in range(4):
            for x in range(4):
                ref_sums[index[b, y, x]] += feats[b, :, y, x]
                ref_counts[index[b, y, x]] += 1
    torch.testing.assert_close(sums, ref_sums)
    torch.testing.assert_close(counts, ref_counts)

    old = F.normalize(torch.randn(C + 1, E, generator=g), dim=1)
    old[4] = 0
    seen = torch.tensor([True, True, False, True, False])
    kept_old, kept_seen = old.clone(), seen.clone()
    memory, new_seen = update_prototypes(old, seen, sums, counts)
    assert torch.equal(old, kept_old) and torch.equal(seen, kept_seen)  # pure
    for k in range(C + 1):
        if ref_counts[k] > 0:
            torch.testing.assert_close(memory[k], ref_sums[k] / ref_sums[k].norm())
        else:
            assert torch.equal(memory[k], old[k])
    torch.testing.assert_close(memory[:3].norm(dim=1), torch.ones(3))
    assert new_seen.tolist() == [True, True, True, True, False]


def reference_rcm(features, targets, prototypes, seen, temperature, form):
    """Eq. 4-5 pixel by pixel: softmax over the filled prototypes, -q or -log q, mean over pixels."""
    b, _, h, w = features.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                feat = features[i, :, y, x] / features[i, :, y, x].norm()
                sims = {k: math.exp(float(feat @ (prototypes[k] / prototypes[k].norm())) / temperature)
                        for k in range(prototypes.shape[0]) if seen[k]}
                q = sims[int(targets[i, y, x])] / sum(sims.values())
                total += -q if form == "paper" else -math.log(q)
    return total / (b * h * w)


@pytest.mark.parametrize("form", ["paper", "infonce"])
def test_rcm_loss_matches_a_plain_reference(form):
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(2, E, 3, 4, generator=g, requires_grad=True)
    protos = F.normalize(torch.randn(C + 1, E, generator=g), dim=1)
    seen = torch.tensor([True, True, False, True, True])
    targets = torch.tensor([0, 1, 3, 4])[torch.randint(0, 4, (2, 3, 4), generator=g)]
    loss = rcm_loss(feats, targets, protos, seen, 0.5, form)
    assert loss.item() == pytest.approx(reference_rcm(feats.detach(), targets, protos, seen, 0.5, form), rel=1e-5)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no prototype"):
        rcm_loss(feats, torch.full_like(targets, 2), protos, seen, 0.5, form)


def reference_mam(cams_f, cams_g, labels):
    """Eq. 6-8 with loops: xi_ij = 2 - cos, target = mean_j xi_ij A_j^G, sum_k sum_i mean |.|, mean over images."""
    s, b, c = cams_f.shape[:3]
    total = 0.0
    for i_img in range(b):
        for k in range(c):
            if labels[i_img, k] <= 0:
                continue
            for i in range(s):
                a_f = cams_f[i, i_img, k].reshape(-1)
                target = torch.zeros_like(a_f)
                for j in range(s):
                    a_g = cams_g[j, i_img, k].reshape(-1)
                    xi = 2 - float(a_f @ a_g) / (float(a_f.norm()) * float(a_g.norm()))
                    target += xi * a_g / s
                total += float((target - a_f).abs().mean())
    return total / b


def test_mam_loss_matches_a_plain_reference_and_only_f_gets_gradients():
    g = torch.Generator().manual_seed(5)
    cams_f = torch.rand(3, 2, C, 4, 5, generator=g, requires_grad=True)
    cams_g = torch.rand(3, 2, C, 4, 5, generator=g, requires_grad=True)
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float32)
    loss = mam_loss(cams_f, cams_g, labels)
    assert loss.item() == pytest.approx(reference_mam(cams_f.detach(), cams_g.detach(), labels), rel=1e-5)
    loss.backward()
    assert cams_g.grad is None                                          # the target is a constant
    assert cams_f.grad[:, 0, 1].abs().sum() == 0 and cams_f.grad[:, 0, 0].abs().sum() > 0


def test_sum_reduction_is_eq5_and_eq8_as_written_a_sum_over_each_images_pixels():
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(2, E, 3, 4, generator=g)
    protos = F.normalize(torch.randn(C + 1, E, generator=g), dim=1)
    seen = torch.ones(C + 1, dtype=torch.bool)
    targets = torch.randint(0, C + 1, (2, 3, 4), generator=g)
    for form in ("paper", "infonce"):
        summed = rcm_loss(feats, targets, protos, seen, 0.5, form, "sum")
        per_image = reference_rcm(feats, targets, protos, seen, 0.5, form) * 2 * 3 * 4 / 2  # sum over pixels / B
        assert summed.item() == pytest.approx(per_image, rel=1e-5)
    cams_f, cams_g = torch.rand(3, 2, C, 4, 5, generator=g), torch.rand(3, 2, C, 4, 5, generator=g)
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float32)
    l1_sums = reference_mam(cams_f, cams_g, labels) * 4 * 5  # Eq. 8: ||.||_1 sums the 4 x 5 pixels
    assert mam_loss(cams_f, cams_g, labels, "sum").item() == pytest.approx(l1_sums, rel=1e-5)
    with pytest.raises(ValueError, match="reduction must be"):
        mam_loss(cams_f, cams_g, labels, "max")
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        PixelSupConfig(loss_reduction="max")


# ----------------------------------------------------------------------------- config, schedule


def test_config_presets_replace_and_dict_round_trip():
    voc = PixelSupConfig.preset("voc")
    assert (voc.scales, voc.ema_momentum, voc.embed_dim, voc.threshold, voc.temperature) == ((0.5, 1.0, 2.0), 0.997,
                                                                                             256, 0.20, 0.5)
    assert voc.loss_weights(0) == (1.0, 1.0, 0.0) and voc.loss_weights(5) == (1.0, 1.0, 0.0)
    assert voc.loss_weights(6) == (1.0, 1.0, 1.0) and voc.rcm_form == "paper"
    changed = PixelSupConfig.preset("coco", rcm_form="infonce", scales=[1, 2])
    assert changed.scales == (1.0, 2.0)
    assert PixelSupConfig.from_dict(changed.to_dict()) == changed


def test_schedule_settings_keep_the_papers_fractions_of_training():
    assert schedule_settings(PAPER_STEPS, 20) == {"ema_momentum": 0.997, "mam_start_epoch": 6}
    short = schedule_settings(PAPER_STEPS // 4, 5)  # IRN's 5 epochs of train_aug
    assert short["mam_start_epoch"] == 2  # 1.5 rounds half up
    # the weight left on G's initialisation at the end of the run is the paper's
    assert short["ema_momentum"] ** (PAPER_STEPS // 4) == pytest.approx(0.997 ** PAPER_STEPS, rel=0.02)
    with pytest.raises(ValueError, match="total_steps"):
        schedule_settings(0, 5)


@pytest.mark.parametrize("head, embed", [("conv", E), ("linear", E), ("param", 2 * D)])
def test_an_in_path_projection_feeds_the_cams_and_keeps_the_host_head_equal_to_the_product(head, embed):
    torch.manual_seed(0)
    model = TinyNet(head)
    original = LinearHead.resolve(model, "classifier").parameter.detach().clone().reshape(C, D)
    pss = PixelSelfSupervision(model, num_classes=C, embed_dim=embed, projection="in_path")
    factor, projection = pss.head_factor, pss.projection
    assert factor.shape == (C, embed) and projection.bias is None
    product = factor.detach() @ projection.weight.detach().reshape(embed, D)
    host = LinearHead.resolve(model, "classifier").parameter.detach().reshape(C, D)
    torch.testing.assert_close(host, product)
    if embed >= D:  # the in-path head starts where the host's head was
        torch.testing.assert_close(product, original, atol=1e-5, rtol=1e-4)
    images, labels = make_data()
    logits, embedding, cams = pss._main([images], 0, True)
    features = model.stage4(model.stem(images))
    torch.testing.assert_close(cams[0], torch.relu(torch.einsum("cd,bdhw->bchw", product, features)))
    assert embedding.shape == (4, embed) + features.shape[-2:]
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.1)
    train_steps(model, pss, optimizer, 2)
    trained = pss.head_factor.detach() @ pss.projection.weight.detach().reshape(embed, D)
    assert not torch.allclose(trained, product)  # both factors learn
    torch.testing.assert_close(LinearHead.resolve(model, "classifier").parameter.detach().reshape(C, D), trained)
    assert "head_factor" in dict(pss.support.named_buffers())  # G's EMA copy
    with pytest.raises(ValueError, match="projection must be one of"):
        PixelSupConfig(projection="middle")


def test_an_in_path_projection_needs_a_gap_linear_head():
    with pytest.raises(ValueError, match="in_path.*GAP-linear head"):
        PixelSelfSupervision(TinyNet(), num_classes=C, embed_dim=E, projection="in_path", cls_weight=0.0,
                             head=lambda model, features: torch.relu(model.classifier(features)))


def test_mam_joins_the_total_from_mam_start_epoch():
    torch.manual_seed(0)
    model = TinyNet()
    pss = make_pss(model, mam_start_epoch=2, mam_weight=0.5, rcm_weight=2.0)
    images, labels = make_data()
    for epoch in (0, 1):
        losses = pss(images, labels, epoch=epoch)
        assert losses["mam"].item() == 0.0
        torch.testing.assert_close(losses["total"], losses["cls"] + 2.0 * losses["rcm"])
    losses = pss(images, labels, epoch=2)
    assert losses["mam"].item() > 0
    torch.testing.assert_close(losses["total"], losses["cls"] + 2.0 * losses["rcm"] + 0.5 * losses["mam"])
    # the classification loss is the host's own: multilabel soft margin of its logits at scale 1
    torch.testing.assert_close(losses["cls"], F.multilabel_soft_margin_loss(model(images), labels))


# ----------------------------------------------------------------------------- SupportNet, parameters


def test_parameters_are_the_projection_only_and_the_support_never_gets_grad():
    torch.manual_seed(0)
    model = TinyNet()
    pss = make_pss(model, mam_start_epoch=0)
    params = list(pss.parameters())
    assert [id(p) for p in params] == [id(p) for p in pss.projection.parameters()]
    assert not {id(p) for p in params} & {id(p) for p in model.parameters()}
    assert len(list(pss.support.parameters())) == 0
    keys = pss.state_dict().keys()
    assert {"prototypes", "prototype_seen", "projection.weight", "support.model.stage4.0.weight",
            "support.model.classifier.weight", "support.projection.weight"} <= set(keys)
    assert not any(k.startswith(("model.", "_main")) for k in keys)     # F belongs to the host
    optimizer = torch.optim.SGD(list(model.parameters()) + params, lr=0.1)
    train_steps(model, pss, optimizer, 1)
    assert all(not t.requires_grad and t.grad is None for t in pss.support.buffers())
    assert pss.projection.weight.grad is not None and model.stage4[0].weight.grad is not None


def test_update_support_is_the_exact_ema_of_f():
    torch.manual_seed(0)
    model = TinyNet()
    model.train()
    pss = make_pss(model, ema_momentum=0.9)
    assert torch.equal(pss.support.model.stage4[0].weight, model.stage4[0].weight)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.5)
    images, labels = make_data()
    losses = pss(images, labels, epoch=0)
    optimizer.zero_grad()
    losses["total"].backward()
    optimizer.step()
    before = {k: v.clone() for k, v in pss.support.state_dict().items()}
    main = {**{f"model.{k}": v for k, v in model.state_dict().items()},
            **{f"projection.{k}": v for k, v in pss.projection.state_dict().items()}}
    pss.update_support()
    after = pss.support.state_dict()
    assert set(after) == set(main)
    for name, value in after.items():
        if value.is_floating_point():
            expected = (0.9 * before[name].double() + 0.1 * main[name].double()).float()
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
            assert not torch.equal(value, before[name]) or torch.equal(before[name], main[name])
        else:
            assert torch.equal(value, main[name])
    assert pss.support.model.stem[1].training is False                 # G stays in eval mode
    pss.train()
    assert pss.support.model.training is False and pss.projection.training


@pytest.mark.parametrize("head", ["linear", "param"])
def test_other_head_kinds_train(head):
    torch.manual_seed(0)
    model = TinyNet(head)
    pss = make_pss(model, mam_start_epoch=1)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.1)
    record = train_steps(model, pss, optimizer, 2)
    assert torch.isfinite(record).all()
    images, labels = make_data()
    plain = F.multilabel_soft_margin_loss(model(images), labels)
    torch.testing.assert_close(pss(images, labels, epoch=0)["cls"], plain)


def test_state_dict_round_trip_resumes_identically():
    def fresh(seed):
        torch.manual_seed(seed)
        model = TinyNet()
        pss = make_pss(model, mam_start_epoch=1, rcm_form="infonce", seed=seed)
        optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.1, momentum=0.9)
        return model, pss, optimizer

    model_a, pss_a, optimizer_a = fresh(0)
    straight = train_steps(model_a, pss_a, optimizer_a, 4)

    model, pss, optimizer = fresh(0)
    first = train_steps(model, pss, optimizer, 2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "pss": pss.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model_b, pss_b, optimizer_b = fresh(1)                              # different starting weights
    model_b.load_state_dict(state["model"])
    pss_b.load_state_dict(state["pss"])
    optimizer_b.load_state_dict(state["optimizer"])
    resumed = train_steps(model_b, pss_b, optimizer_b, 2, start=2)
    assert torch.equal(torch.cat([first, resumed]), straight)
    for name, value in pss_a.state_dict().items():
        assert torch.equal(pss_b.state_dict()[name], value), name
    for name, value in model_a.state_dict().items():
        assert torch.equal(model_b.state_dict()[name], value), name


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank, world, port, start, out, projection):
    import torch.distributed as dist

    with gloo_group(rank, world, port):
        model = TinyNet()
        model.load_state_dict(start)
        model.eval()  # BatchNorm on running statistics: no per-shard batch statistics
        pss = make_pss(model, mam_start_epoch=1, projection=projection)
        optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.1)
        record = []
        for step in range(2):
            images, labels = make_data(seed=step)
            share = images.shape[0] // world
            shard = slice(rank * share, (rank + 1) * share)
            losses = pss(images[shard], labels[shard], epoch=step)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            pss.update_support()
            values = torch.stack([losses[k].detach() for k in KEYS])
            dist.all_reduce(values)
            record.append(values / world)
        torch.save({"losses": torch.stack(record), "pss": pss.state_dict(), "model": model.state_dict()},
                   f"{out}.{rank}")


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["side", "in_path"])
def test_ddp_two_processes_equal_one_process(tmp_path, projection):
    torch.manual_seed(0)
    model = TinyNet()
    start = copy.deepcopy(model.state_dict())
    model.eval()
    pss = make_pss(model, mam_start_epoch=1, projection=projection)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=0.1)
    single = train_steps(model, pss, optimizer, 2)
    out = tmp_path / "ddp.pt"
    spawn_gloo(_ddp_worker, start, str(out), projection)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    assert pss.prototype_seen[4]                                        # class 3 was only on rank 1
    for result in ranks:
        torch.testing.assert_close(result["losses"], single, rtol=1e-4, atol=1e-5)
        for name, value in pss.state_dict().items():
            torch.testing.assert_close(result["pss"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(result["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    for name in ("prototypes", "support.model.stage4.0.weight"):
        assert torch.equal(ranks[0]["pss"][name], ranks[1]["pss"][name]), name


# ----------------------------------------------------------------------------- errors


def _bad_calls():
    images, labels = make_data()

    def call(*args, **kwargs):
        return lambda: make_pss(TinyNet())(*args, **kwargs)

    return [
        (TypeError, lambda: PixelSelfSupervision("model", num_classes=C)),
        (ValueError, lambda: make_pss(TinyNet(), feature_layer="stage9")),
        (ValueError, lambda: make_pss(TinyNet(), head="nothing")),
        (ValueError, lambda: make_pss(TinyNet("conv3x3"))),
        (ValueError, lambda: PixelSelfSupervision(TinyNet(), num_classes=C + 1)),
        (ValueError, lambda: make_pss(TinyNet(), preset="cityscapes")),
        (TypeError, lambda: make_pss(TinyNet(), mam_start=3)),
        (ValueError, lambda: make_pss(TinyNet(), rcm_form="log")),
        (ValueError, lambda: make_pss(TinyNet(), scales=(0.5, 2.0))),
        (ValueError, lambda: make_pss(TinyNet(), threshold=1.5)),
        (ValueError, lambda: make_pss(TinyNet(), ema_momentum=1.0)),
        (ValueError, lambda: make_pss(TinyNet(), temperature=0.0)),
        (ValueError, lambda: make_pss(TinyNet(), mam_start_epoch=-1)),
        (TypeError, call(images.numpy(), labels, epoch=0)),
        (TypeError, call(images.long(), labels, epoch=0)),
        (ValueError, call(images[0], labels, epoch=0)),
        (ValueError, call(images, labels[:, :2], epoch=0)),
        (ValueError, call(images, labels * float("nan"), epoch=0)),
        (ValueError, call(images, labels, epoch=-1)),
        (ValueError, call(images, labels, epoch=1.5)),
        (ValueError, lambda: make_pss(TinyNet("linear"), feature_layer="classifier")(images, labels, epoch=0)),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_inputs_give_one_line_errors(index):
    kind, bad = _bad_calls()[index]
    with pytest.raises(kind) as info:
        bad()
    message = str(info.value)
    assert message and "\n" not in message, message


# ----------------------------------------------------------------------------- callable CAM head


def linear_cam_head(model, features):
    """The GAP-linear head's CAMs as a callable: ``relu(W f)``."""
    return raw_cams(features, model.classifier.weight.reshape(C, D))


class PairInputNet(TinyNet):
    """A forward that needs a second argument (as EDAM's ``forward(img, label_idx)``)."""

    def forward(self, x, ids):  # noqa: D401 - the second argument is required
        assert ids == [0, 1]
        return super().forward(x)


def test_callable_cam_head_gives_the_linear_head_losses_without_cls():
    torch.manual_seed(0)
    model = TinyNet()
    twin = copy.deepcopy(model)
    linear = make_pss(model, cls_weight=0.0, mam_start_epoch=0)
    head = make_pss(twin, head=linear_cam_head, feature_dim=D, cls_weight=0.0, mam_start_epoch=0)
    images, labels = make_data()
    a, b = linear(images, labels, epoch=0), head(images, labels, epoch=0)
    assert float(b["cls"]) == 0.0 and float(a["cls"].detach()) > 0  # no logits: the host adds its own loss
    for key in ("rcm", "mam", "total"):
        torch.testing.assert_close(b[key], a[key])
    b["total"].backward()
    assert twin.classifier.weight.grad is not None  # MAM reaches the head through F's CAMs
    torch.testing.assert_close(head.prototypes, linear.prototypes)


def test_callable_head_reads_d_from_the_layer_and_passes_forward_args():
    model = PairInputNet()
    pss = PixelSelfSupervision(model, feature_layer="stem.1", head=linear_cam_head, num_classes=C, embed_dim=E,
                               cls_weight=0.0, forward_args=([0, 1],))  # stem.1 is a BatchNorm2d(D)
    assert pss.projection.in_channels == D
    images, labels = make_data()
    losses = pss(images, labels, epoch=0)
    assert torch.isfinite(losses["total"]) and float(losses["rcm"].detach()) != 0


@pytest.mark.parametrize("kwargs, message", [
    ({"head": linear_cam_head, "feature_dim": D}, "a callable head gives no GAP-linear logits: set cls_weight=0"),
    ({"head": linear_cam_head, "cls_weight": 0.0}, "cannot read the channels of layer 'stage4'"),
    ({"feature_dim": D + 1}, "feature_dim=9 but the head 'classifier' takes D=8"),
    ({"head": lambda m, f: linear_cam_head(m, f)[:, :2], "feature_dim": D, "cls_weight": 0.0},
     "the CAM head returned 2 channels, expected num_classes=4"),
    ({"head": lambda m, f: f.mean(1), "feature_dim": D, "cls_weight": 0.0}, "expected (B, C, h, w)"),
])
def test_callable_head_errors_are_one_line(kwargs, message):
    with pytest.raises(ValueError) as info:
        make_pss(TinyNet(), **kwargs)(*make_data(), epoch=0)
    assert message in str(info.value) and "\n" not in str(info.value)
