"""F-CAM: CRF loss against brute force, seeds, decoder masking, frozen encoder, files, resume, errors, DDP."""
import copy

import pytest
import torch
from conftest import Interrupt, StopsInEpoch, corrupted_copy, gloo_group, spawn_gloo
from torch import nn

from lpcam_plugin import ReCAM, cam_map
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.crf import bilateral_filter, crf_loss, dense_grid, pair_count, potts_energy
from lpcam_plugin.methods.fcam.decoder import FCAMDecoder, mask_absent, present_channels
from lpcam_plugin.methods.fcam.estimator import FCAM
from lpcam_plugin.methods.fcam.losses import extended_log_barrier, partial_cross_entropy, present_only, size_loss
from lpcam_plugin.methods.fcam.seeds import (
    IGNORE_INDEX,
    SeedRegions,
    erode,
    otsu_foreground,
    sample_seeds,
    seed_regions,
)

C, D, SIZE = 3, 16, 32
SKIPS = ["conv1", "stage1", "stage2", "stage3"]
FAST = dict(progress=False, epochs=2, decoder_channels=(16, 8), erosion_size=3, learning_rate=0.05)


class TinyNet(nn.Module):
    """IRN-shaped toy classifier: ``conv1`` (stride 2, BatchNorm), ``stage1..4`` (strides 2, 4, 8, 8), GAP, 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.Dropout(0.5), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(12, D, 3, 2, 1), nn.BatchNorm2d(D), nn.ReLU())
        self.stage4 = nn.Sequential(nn.Conv2d(D, D, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(D, C, 1, bias=False)
        self.flatten = nn.Flatten()
        self.unused = nn.Identity()

    def forward(self, x):
        f = self.stage4(self.stage3(self.stage2(self.stage1(self.conv1(x)))))
        return self.flatten(self.classifier(f.mean(dim=(2, 3), keepdim=True)))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)
    labels = (torch.rand(n, C, generator=g) > 0.5).float()
    labels[0] = 0
    labels[0, 1] = 1
    labels[1] = 0  # an image without a present class
    return images, labels


def batches(images, labels, batch_size=4):
    return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def cam_source(model):
    weight = model.classifier.weight[:, :, 0, 0].detach().clone()
    return lambda features, labels: cam_map(features, weight)


def fitted(**overrides):
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    fcam = FCAM(C, **{**FAST, **overrides}).fit(model, batches(images, labels), source=cam_source(model),
                                                 skip_layers=SKIPS)
    return fcam, model, images, labels


# ----------------------------------------------------------------------------- CRF loss


def brute_force_energy(probs, rgb, sigma_rgb, sigma_xy, radius=None):
    """``sum_k S_k^T W (1 - S_k)`` with the N x N kernel built explicitly (float64), optionally windowed."""
    b, k, h, w = probs.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys, xs], dim=-1).reshape(-1, 2).double()
    delta = pos[:, None] - pos[None]
    keep = ~torch.eye(h * w, dtype=torch.bool)
    if radius is not None:
        keep &= (delta.abs() <= radius).all(-1)
    energies = []
    for i in range(b):
        colour = rgb[i].reshape(3, -1).t().double()
        kernel = torch.exp(-((colour[:, None] - colour[None]) ** 2).sum(-1) / (2 * sigma_rgb ** 2)
                           - (delta ** 2).sum(-1) / (2 * sigma_xy ** 2)) * keep
        s = probs[i].reshape(k, -1).double()
        energies.append(sum(s[j] @ kernel @ (1 - s[j]) for j in range(k)))
    return torch.stack(energies), int(keep.sum())


def crf_inputs(seed=0, b=2, k=3, h=5, w=7):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(b, k, h, w, generator=g) * 2, dim=1).requires_grad_(True)
    rgb = torch.rand(b, 3, h, w, generator=g) * 255
    return probs, rgb


@pytest.mark.parametrize("radius", [1, 2])
def test_windowed_crf_energy_and_gradient_match_brute_force(radius):
    probs, rgb = crf_inputs()
    ours = potts_energy(probs, rgb, sigma_rgb=60.0, sigma_xy=2.0, radius=radius)
    grad_ours, = torch.autograd.grad(ours.sum(), probs)
    reference_probs = probs.detach().double().requires_grad_(True)
    reference, pairs = brute_force_energy(reference_probs, rgb, 60.0, 2.0, radius)
    grad_ref, = torch.autograd.grad(reference.sum(), reference_probs)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_ours.double(), grad_ref, rtol=1e-5, atol=1e-6)
    assert pair_count(5, 7, radius) == pairs


def test_window_covering_the_image_is_the_full_dense_kernel():
    probs, rgb = crf_inputs(seed=1, h=4, w=6)
    ours = potts_energy(probs, rgb, sigma_rgb=40.0, sigma_xy=3.0, radius=5)  # >= max(h, w) - 1
    reference, pairs = brute_force_energy(probs.detach().double(), rgb, 40.0, 3.0, radius=None)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)
    assert pair_count(4, 6, 5) == pairs == 24 * 23
    loss = crf_loss(probs, rgb, sigma_rgb=40.0, sigma_xy=3.0, scale=1.0, radius=5)
    torch.testing.assert_close(loss.double(), reference.mean() / pairs, rtol=1e-5, atol=1e-8)
    assert 0 <= float(loss.detach()) <= 1


def test_the_dense_kernel_matches_brute_force_and_reaches_across_the_image():
    probs, rgb = crf_inputs(seed=2, h=6, w=7)
    dense = potts_energy(probs, rgb, sigma_rgb=50.0, sigma_xy=4.0, radius=None)
    grad_dense, = torch.autograd.grad(dense.sum(), probs)
    reference_probs = probs.detach().double().requires_grad_(True)
    reference, pairs = brute_force_energy(reference_probs, rgb, 50.0, 4.0, radius=None)
    grad_ref, = torch.autograd.grad(reference.sum(), reference_probs)
    torch.testing.assert_close(dense.double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_dense.double(), grad_ref, rtol=1e-5, atol=1e-6)
    # a window smaller than the image misses the far pairs the dense kernel keeps
    window = potts_energy(probs, rgb, sigma_rgb=50.0, sigma_xy=4.0, radius=1)
    assert bool((window < dense - 1e-3).all())
    loss = crf_loss(probs, rgb, sigma_rgb=50.0, sigma_xy=4.0, scale=0.5, radius=1, kernel="dense")
    torch.testing.assert_close(loss.double(), reference.mean() / pairs, rtol=1e-5, atol=1e-8)  # no resize: 42 px


def test_the_dense_kernel_runs_on_a_bounded_grid_with_sigma_xy_scaled():
    probs, rgb = crf_inputs(seed=3, h=40, w=20)
    assert dense_grid(40, 20, 200) == (20, 10) and dense_grid(3, 1000, 64) == (1, 64) and dense_grid(4, 4, 64) == (4, 4)
    loss = crf_loss(probs, rgb, sigma_rgb=30.0, sigma_xy=8.0, scale=1.0, radius=1, kernel="dense", dense_pixels=200)
    small_p = torch.nn.functional.interpolate(probs, size=(20, 10), mode="bilinear", align_corners=False)
    small_rgb = torch.nn.functional.interpolate(rgb, size=(20, 10), mode="nearest")
    expected = potts_energy(small_p, small_rgb, sigma_rgb=30.0, sigma_xy=4.0, radius=None).mean() / (200 * 199)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="kernel must be one of"):
        crf_loss(probs, rgb, sigma_rgb=30.0, sigma_xy=8.0, scale=1.0, radius=1, kernel="lattice")
    with pytest.raises(ValueError, match="crf_kernel must be one of"):
        FCAMConfig(crf_kernel="lattice")
    fcam = fitted(crf_kernel="dense", crf_dense_pixels=64)[0]  # F-CAM trains with it
    assert all(h["crf"] > 0 for h in fcam.loss_history_) and fcam.config.crf_kernel == "dense"


def test_crf_is_zero_for_a_hard_constant_labelling_and_filter_is_symmetric():
    _, rgb = crf_inputs(h=6, w=6)
    constant = torch.zeros(2, 3, 6, 6)
    constant[:, 1] = 1
    assert float(potts_energy(constant, rgb, sigma_rgb=15.0, sigma_xy=100.0, radius=2).abs().max()) == 0
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 1, 6, 6, generator=g), torch.rand(1, 1, 6, 6, generator=g)
    wa, _ = bilateral_filter(a, rgb[:1], sigma_rgb=30.0, sigma_xy=2.0, radius=2)
    wb, _ = bilateral_filter(b, rgb[:1], sigma_rgb=30.0, sigma_xy=2.0, radius=2)
    torch.testing.assert_close((b * wa).sum(), (a * wb).sum())  # <b, W a> = <a, W b>


def test_crf_loss_resizes_before_the_window_and_scales_sigma_xy():
    probs, rgb = crf_inputs(h=8, w=8)
    half = crf_loss(probs, rgb, sigma_rgb=30.0, sigma_xy=4.0, scale=0.5, radius=2)
    small_p = torch.nn.functional.interpolate(probs, size=(4, 4), mode="bilinear", align_corners=False)
    small_rgb = torch.nn.functional.interpolate(rgb, size=(4, 4), mode="nearest")
    expected = potts_energy(small_p, small_rgb, sigma_rgb=30.0, sigma_xy=2.0, radius=2).mean() / pair_count(4, 4, 2)
    torch.testing.assert_close(half, expected)


def test_crf_on_each_image_s_present_channels_equals_crf_on_all_channels():
    g = torch.Generator().manual_seed(4)
    present = torch.tensor([[True, True, False, True, False], [True, False, False, False, False],
                            [True, False, True, False, True]])
    probs = torch.softmax(mask_absent(torch.randn(3, 5, 6, 6, generator=g), present), dim=1)
    packed = present_only(probs, present)
    assert packed.shape == (3, 3, 6, 6)
    torch.testing.assert_close(packed[0], probs[0, [0, 1, 3]])
    torch.testing.assert_close(packed[2], probs[2, [0, 2, 4]])
    assert torch.all(packed[1, 0] == 1) and torch.all(packed[1, 1:] == 0)
    _, rgb = crf_inputs(b=3, h=6, w=6)
    options = dict(sigma_rgb=30.0, sigma_xy=3.0, scale=1.0, radius=2)
    torch.testing.assert_close(crf_loss(packed, rgb, **options), crf_loss(probs, rgb, **options))


# ----------------------------------------------------------------------------- seeds


def reference_otsu(values):
    """Otsu by direct search over the 256 uint8 levels: maximise w0 w1 (mu0 - mu1)^2, split at ``> t``."""
    levels = (values.clamp(0, 1) * 255).long()
    best, best_t = -1.0, None
    for t in range(255):
        low, high = levels[levels <= t].double(), levels[levels > t].double()
        if len(low) == 0 or len(high) == 0:
            continue
        score = len(low) * len(high) * (low.mean() - high.mean()) ** 2
        if score > best:
            best, best_t = score, t
    return levels > best_t if best_t is not None else torch.zeros_like(levels, dtype=torch.bool)


def test_otsu_matches_a_direct_search_and_refuses_constant_maps():
    g = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.rand(3, 60, generator=g) * 0.4, torch.rand(3, 40, generator=g) * 0.4 + 0.5], dim=1)
    maps = torch.cat([maps, torch.rand(2, 100, generator=g), torch.full((1, 100), 0.3)])
    ours = otsu_foreground(maps)
    for row in range(len(maps)):
        assert torch.equal(ours[row], reference_otsu(maps[row])), row
    assert ours[:3, 60:].all() and not ours[:3, :60].any()
    assert not ours[-1].any()


def reference_erosion(mask, size):
    h, w = mask.shape
    r = size // 2
    out = torch.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            window = mask[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            out[y, x] = bool(window.all())
    return out


def seed_scene():
    """Class 0 (a 12 x 8 block) and class 1 (an 8 x 8 block, stronger where they overlap) present,
    class 2 absent but bright everywhere."""
    maps = torch.full((1, 3, 16, 16), 0.1)
    maps[0, 0, 2:14, 1:9] = 0.9
    maps[0, 1] = 0.05
    maps[0, 1, 4:12, 7:15] = 0.95
    maps[0, 2] = 1.0
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    return maps, labels


def test_foreground_is_otsu_where_strongest_then_eroded():
    maps, labels = seed_scene()
    regions = seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=1, tie_seed=0)
    assert regions.pairs.tolist() == [[0, 0], [0, 1]]  # the absent class gets no region
    block0 = torch.zeros(16, 16, dtype=torch.bool)
    block0[2:14, 1:9] = True
    block0[4:12, 7:9] = False  # class 1 is stronger there
    block1 = torch.zeros(16, 16, dtype=torch.bool)
    block1[4:12, 7:15] = True
    assert torch.equal(regions.foreground[0], reference_erosion(block0, 3))
    assert torch.equal(regions.foreground[1], reference_erosion(block1, 3))
    unshrunk = seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=0, tie_seed=0)
    assert torch.equal(unshrunk.foreground[0], block0)


def test_an_erosion_that_would_empty_a_region_is_skipped():
    masks = torch.zeros(2, 9, 9, dtype=torch.bool)
    masks[0, 3:5, 3:5] = True  # a 2 x 2 square vanishes under a 3 x 3 erosion
    masks[1, 1:8, 1:8] = True
    out = erode(masks, 3, 2)
    assert torch.equal(out[0], masks[0])
    assert torch.equal(out[1], reference_erosion(reference_erosion(masks[1], 3), 3))


def test_background_is_the_lowest_fraction_of_the_max_over_present_classes():
    maps, labels = seed_scene()
    maps[0, 0, 15, 12:16] = 0.0  # four pixels below every tie: always background
    regions = seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=1, tie_seed=0)
    background = regions.background[0]
    assert int(background.sum()) == int(0.25 * 256)
    top = maps[0, :2].amax(0)
    assert torch.all(top[background] <= 0.1)  # the absent class's bright map is ignored
    assert background[15, 12:16].all()


def test_ties_at_the_background_cut_are_broken_at_random_not_by_position():
    """A ReLU CAM is exactly 0 on much of the image: an order-stable cut would take the top rows."""
    maps, labels = seed_scene()
    tied = maps[0, :2].amax(0) == 0.1
    mean_row = tied.nonzero()[:, 0].float().mean()
    draws = [seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=1,
                          tie_seed=seed).background[0] for seed in range(20)]
    rows = torch.stack([d.nonzero()[:, 0].float().mean() for d in draws])
    assert abs(float(rows.mean()) - float(mean_row)) < 0.5 and float(rows.mean()) > 5  # raster order: 1.5
    cover = torch.stack(draws).float().mean(0)
    assert float(cover[tied].min()) > 0  # every tied pixel can be drawn
    again = seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=1, tie_seed=3)
    assert torch.equal(again.background[0], draws[3]) and not torch.equal(draws[3], draws[4])  # seeded


def test_sampling_counts_labels_dilation_and_absent_classes():
    maps, labels = seed_scene()
    maps = maps.repeat(2, 1, 1, 1)
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the second image has no present class
    regions = seed_regions(maps, labels, bg_fraction=0.25, erosion_size=3, erosion_iterations=1, tie_seed=0)
    g = torch.Generator().manual_seed(0)
    seeds = sample_seeds(regions, fg_samples=1, bg_samples=2, dilation=1, generator=g)
    assert seeds.shape == (2, 16, 16) and seeds.dtype == torch.long
    assert torch.all(seeds[1] == IGNORE_INDEX)
    assert int((seeds[0] == 1).sum()) == 1 and int((seeds[0] == 2).sum()) == 1 and int((seeds[0] == 0).sum()) == 2
    assert not (seeds == 3).any()  # class 2 is absent: never seeded
    assert regions.foreground[0][seeds[0] == 1].all() and regions.foreground[1][seeds[0] == 2].all()
    assert regions.background[0][seeds[0] == 0].all()
    dilated = sample_seeds(regions, fg_samples=1, bg_samples=1, dilation=3, generator=g)
    for label in (1, 2):
        ys, xs = (dilated[0] == label).nonzero(as_tuple=True)
        assert len(ys) == 9 and int(ys.max() - ys.min()) == 2 and int(xs.max() - xs.min()) == 2
    again = sample_seeds(regions, fg_samples=1, bg_samples=2, dilation=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, seeds)
    every = sample_seeds(regions, fg_samples=None, bg_samples=None, dilation=1, generator=g)
    assert int((every[0] == 1).sum()) == int(regions.foreground[0].sum())


def test_pixels_claimed_by_two_labels_are_ignored():
    fg = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    fg[0, 0, :, :4] = True
    fg[1, 0, :, 2:] = True
    bg = torch.zeros(1, 6, 6, dtype=torch.bool)
    bg[0, :2] = True
    regions = SeedRegions(torch.tensor([[0, 0], [0, 2]]), fg[:, 0], bg)
    seeds = sample_seeds(regions, fg_samples=None, bg_samples=None, dilation=1, generator=torch.Generator())
    assert torch.all(seeds[0, :2] == IGNORE_INDEX)  # background and a class
    assert torch.all(seeds[0, 2:, 2:4] == IGNORE_INDEX)  # two classes
    assert torch.all(seeds[0, 2:, :2] == 1) and torch.all(seeds[0, 2:, 4:] == 3)


# ----------------------------------------------------------------------------- decoder and losses


def test_decoder_is_full_resolution_and_absent_classes_get_zero():
    decoder = FCAMDecoder(D, [12, 8], C, (16, 8))
    features, skips = torch.randn(2, D, 4, 4), [torch.randn(2, 12, 8, 8), torch.randn(2, 8, 16, 16)]
    logits = decoder(features, skips, torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, C + 1, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    present = present_channels(labels)
    assert present.tolist() == [[True, True, False, True], [True, False, False, False]]
    probs = torch.softmax(mask_absent(logits, present), dim=1)
    assert torch.all(probs[0, 2] == 0) and torch.all(probs[1, 1:] == 0) and torch.all(probs[1, 0] == 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 32))


def test_partial_ce_is_a_mean_over_images_of_their_seeded_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    seeds = torch.full((2, 4, 4), IGNORE_INDEX)
    seeds[0, 0, 0], seeds[0, 1, 1] = 1, 2
    expected = torch.nn.functional.cross_entropy(logits[0, :, [0, 1], [0, 1]].t(), torch.tensor([1, 2])) / 2
    torch.testing.assert_close(partial_cross_entropy(logits, seeds), expected)  # image 2: no seeds, counts in B
    masked = mask_absent(logits, torch.tensor([[True, True, True], [True, False, True]]))
    assert torch.isfinite(partial_cross_entropy(masked, seeds))


def test_extended_log_barrier_and_size_term():
    t = 2.0
    z = torch.tensor([-10.0, -0.25, 0.0, 3.0])
    out = extended_log_barrier(z, t)
    torch.testing.assert_close(out[0], -torch.log(torch.tensor(10.0)) / t)
    torch.testing.assert_close(out[1], -torch.log(torch.tensor(0.25)) / t)  # the two pieces meet at -1/t^2
    torch.testing.assert_close(out[3], t * 3.0 - torch.log(torch.tensor(0.25)) / t + 1 / t)
    probs = torch.full((1, 3, 2, 2), 1 / 3, requires_grad=True)
    present = torch.tensor([[True, True, False]])
    size = size_loss(probs, present, 1.0)
    torch.testing.assert_close(size, -torch.log(torch.tensor(4 / 3)))
    size.backward()
    assert torch.all(probs.grad[:, :2] < 0) and torch.all(probs.grad[:, 2] == 0)  # bigger present areas lower it


# ----------------------------------------------------------------------------- fitting


def test_fit_keeps_the_encoder_frozen_and_unchanged():
    torch.manual_seed(0)
    model = TinyNet()
    model.train()
    model.stage2.eval()  # mixed flags must come back as they were
    model.stage4[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = {name: m.training for name, m in model.named_modules()}
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    images, labels = make_data()
    fcam = FCAM(C, **FAST).fit(model, batches(images, labels), source=cam_source(model), skip_layers=SKIPS)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires
    assert all(p.grad is None for p in model.parameters())
    assert fcam.n_steps_ == 4 and [h["epoch"] for h in fcam.loss_history_] == [1, 2]
    assert fcam.skip_layers_ == ["stage3", "stage2", "stage1", "conv1"]  # coarse to fine, deeper first on ties
    assert fcam.skip_channels_ == [D, 12, 8, 8] and fcam.feature_dim_ == D
    decoder_params = list(fcam.decoder_.parameters())
    assert decoder_params and not any(p is q for p in decoder_params for q in model.parameters())
    fcam.predict(model, images, labels)
    assert {name: m.training for name, m in model.named_modules()} == flags


def test_predict_is_full_resolution_in_unit_range_and_zero_for_absent_classes():
    fcam, model, images, labels = fitted()
    maps = fcam.predict(model, images, labels)
    assert maps.shape == (8, C, SIZE, SIZE) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert torch.all(maps[labels == 0] == 0)
    assert torch.all(maps.sum(1) <= 1 + 1e-5)
    assert all(h["crf"] > 0 and torch.isfinite(torch.tensor(h["total"])) for h in fcam.loss_history_)


def test_the_decoder_learns_the_seeded_object():
    torch.manual_seed(0)
    model = TinyNet()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, SIZE, SIZE, generator=g) * 0.1 - 1
    images[:, :, 8:24, 8:24] += 2  # a bright square, where the source map fires
    labels = torch.zeros(4, C)
    labels[:, 0] = 1

    def source(features, labels):
        maps = torch.zeros(features.shape[0], C, 4, 4)
        maps[:, 0, 1:3, 1:3] = 1
        return maps

    fcam = FCAM(C, **{**FAST, "epochs": 8, "optimizer": "adam", "learning_rate": 0.01, "fg_samples": None,
                      "bg_samples": None, "bg_fraction": 0.3})
    fcam.fit(model, [(images, labels)], source=source, skip_layers=SKIPS)
    maps = fcam.predict(model, images, labels)[:, 0]
    assert float(maps[:, 9:23, 9:23].mean()) > 0.8
    assert float(torch.cat([maps[:, :6].flatten(), maps[:, 26:].flatten()]).mean()) < 0.2
    assert fcam.loss_history_[-1]["seg"] < fcam.loss_history_[0]["seg"]


def test_a_fitted_recam_is_a_source():
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    data = batches(images, labels)
    recam = ReCAM(C, progress=False, epochs=1).fit(copy.deepcopy(model), data, feature_layer="stage4")
    fcam = FCAM(C, **{**FAST, "epochs": 1}).fit(model, data, source=recam, skip_layers=["stage2"])
    assert fcam.predict(model, images, labels).shape == (8, C, SIZE, SIZE)


def test_save_load_round_trip_and_tampering(tmp_path):
    fcam, model, images, labels = fitted()
    fcam.metadata = {"trained_from": "test", "key": {"source": "CAM"}}
    path = tmp_path / "fcam.npz"
    fcam.save(path)
    loaded = FCAM.load(path)
    assert loaded.metadata == fcam.metadata
    torch.testing.assert_close(loaded.predict(model, images, labels), fcam.predict(model, images, labels))
    assert loaded.config == fcam.config and loaded.loss_history_ == fcam.loss_history_
    assert loaded.skip_layers_ == fcam.skip_layers_ and loaded.skip_channels_ == fcam.skip_channels_
    bad = corrupted_copy(path, tmp_path / "bad.npz")
    with pytest.raises(ValueError):
        FCAM.load(bad)
    recam_file = tmp_path / "recam.npz"
    ReCAM(C, progress=False, epochs=1).fit(TinyNet(), batches(images, labels)).save(recam_file)
    with pytest.raises(ValueError, match="not a 'lpcam_plugin.FCAM' archive|lpcam_plugin.FCAM"):
        FCAM.load(recam_file)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    data, source = batches(images, labels), cam_source(model)
    options = {**FAST, "epochs": 3}
    straight = FCAM(C, **options).fit(model, data, source=source, skip_layers=SKIPS)
    ckpt = tmp_path / "fcam_train.pt"
    with pytest.raises(Interrupt):
        FCAM(C, **options).fit(model, StopsInEpoch(data, 3), source=source, skip_layers=SKIPS, checkpoint=ckpt)
    assert ckpt.exists()
    resumed = FCAM(C, **options).fit(model, data, source=source, skip_layers=SKIPS, checkpoint=ckpt)
    for key, value in straight.decoder_.state_dict().items():
        torch.testing.assert_close(resumed.decoder_.state_dict()[key], value)
    assert resumed.loss_history_ == straight.loss_history_ and resumed.n_steps_ == straight.n_steps_ == 6
    with pytest.raises(ValueError, match="different config"):
        FCAM(C, **{**options, "learning_rate": 0.01}).fit(model, data, source=source, skip_layers=SKIPS,
                                                           checkpoint=ckpt)
    with pytest.raises(ValueError, match="different skip_layers"):
        FCAM(C, **options).fit(model, data, source=source, skip_layers=["stage1"], checkpoint=ckpt)


# ----------------------------------------------------------------------------- errors


def one_line(excinfo):
    assert "\n" not in str(excinfo.value), str(excinfo.value)
    return str(excinfo.value)


def test_bad_inputs_give_one_line_errors():
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    data, source = batches(images, labels), cam_source(model)
    fcam = FCAM(C, **FAST)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, data, source=source, skip_layers=["conv1", "stage9"])
    assert "stage9" in one_line(info) and "stage1" in str(info.value)  # lists the children
    with pytest.raises(ValueError) as info:
        fcam.fit(model, data, source=source, skip_layers=["stage4"])
    assert "also listed" in one_line(info)
    with pytest.raises(TypeError) as info:
        fcam.fit(model, data, source="cam", skip_layers=SKIPS)
    assert "callable" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, data, source=lambda f, y: torch.rand(f.shape[0], C + 1, 4, 4), skip_layers=SKIPS)
    assert "(B, C, h, w)" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, data, source=lambda f, y: torch.rand(f.shape[0], C, 4, 4) * 3, skip_layers=SKIPS)
    assert "[0, 1]" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, [(images[:4], labels[:4, :2])], source=source, skip_layers=SKIPS)
    assert "labels must have shape" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, [(images[:4, :1], labels[:4])], source=source, skip_layers=SKIPS)
    assert "(B, 3, H, W)" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, [], source=source, skip_layers=SKIPS)
    assert "empty" in one_line(info)
    with pytest.raises(ValueError) as info:
        fcam.fit(model, data, source=source, skip_layers=["flatten"])
    assert "(B, D, h, w)" in one_line(info)
    with pytest.raises(RuntimeError) as info:
        fcam.fit(model, data, source=source, skip_layers=["unused"])
    assert "'unused' was not called" in one_line(info)
    with pytest.raises(RuntimeError) as info:
        FCAM(C).predict(model, images, labels)
    assert "not fitted" in one_line(info)
    with pytest.raises(TypeError) as info:
        FCAM(C, learning_rat=1.0)
    assert "unknown F-CAM option" in one_line(info)
    for bad in ({"bg_fraction": 1.5}, {"fg_samples": 0}, {"seed_dilation": 2}, {"optimizer": "lbfgs"},
                {"epochs": 2.5}, {"crf_scale": 0.0}, {"pixel_std": (1.0, 0.0, 1.0)}):
        with pytest.raises(ValueError) as info:
            FCAMConfig(**bad)
        assert next(iter(bad)) in one_line(info)
    with pytest.raises(ValueError) as info:
        FCAM(C, preset="cityscapes")
    assert "unknown preset" in one_line(info)


def test_config_presets_and_dict_round_trip():
    voc, coco = FCAMConfig.preset("voc"), FCAMConfig.preset("coco", crf_radius=3)
    assert voc.epochs == 10 and coco.epochs == 3 and coco.crf_radius == 3
    assert FCAMConfig.from_dict(coco.to_dict()) == coco
    assert FCAM(C, preset="coco").config == FCAMConfig.preset("coco")


# ----------------------------------------------------------------------------- DDP


DETERMINISTIC = {**FAST, "fg_samples": None, "bg_samples": None}


def _ddp_worker(rank, world, port, out):
    with gloo_group(rank, world, port):
        torch.manual_seed(0)
        model = TinyNet()
        images, labels = make_data()
        shard = [(x[rank::world], y[rank::world]) for x, y in batches(images, labels)]
        fcam = FCAM(C, **DETERMINISTIC).fit(model, shard, source=cam_source(model), skip_layers=SKIPS)
        if rank == 0:
            torch.save(fcam.decoder_.state_dict(), out)


def test_ddp_two_processes_equal_one_process(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    single = FCAM(C, **DETERMINISTIC).fit(model, batches(images, labels), source=cam_source(model), skip_layers=SKIPS)
    out = tmp_path / "ddp.pt"
    spawn_gloo(_ddp_worker, str(out))
    result = torch.load(out, weights_only=True)
    for key, value in single.decoder_.state_dict().items():
        torch.testing.assert_close(result[key], value, rtol=1e-4, atol=1e-5)
