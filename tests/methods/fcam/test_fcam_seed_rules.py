"""F-CAM's settings from the data (the presets' ``"auto"`` and budget rules): the erosion is the source's
stride in image pixels, the background candidates follow each image's own foreground share (below the
Otsu threshold of the max over its present classes, eroded) instead of a fixed fraction tuned on CUB, the
CRF's reach is the paper's relative to the image side, and the seeds per step keep the preset's seed
budget (epochs x images) on a dataset of another size."""
from __future__ import annotations

import pytest
import torch
from test_fcam import SKIPS, TinyNet, batches, cam_source, make_data, reference_erosion

from lpcam_plugin import FCAM, FCAMConfig
from lpcam_plugin.methods.fcam import training
from lpcam_plugin.methods.fcam.config import VOC_REFERENCE_IMAGE_STEPS, odd_stride
from lpcam_plugin.methods.fcam.seeds import seed_regions


@pytest.mark.parametrize("image, source, expected", [(80, 10, 9), (512, 32, 17), (224, 7, 33), (16, 16, 1),
                                                     (224, 28, 9), (96, 12, 9), (100, 50, 3)])
def test_auto_erosion_is_the_sources_stride_as_an_odd_size(image, source, expected) -> None:
    assert odd_stride(image, source) == expected


def _scene(share_rows: int, side: int = 20) -> torch.Tensor:
    """One present class whose map is 0.9 on the top ``share_rows`` rows and 0.05 elsewhere."""
    maps = torch.full((1, 2, side, side), 0.05)
    maps[0, 0, :share_rows] = 0.9
    maps[0, 1] = 1.0  # an absent class, bright everywhere: ignored
    return maps


@pytest.mark.parametrize("share_rows", [4, 10, 16])
def test_auto_background_follows_the_sources_own_foreground_share(share_rows) -> None:
    labels = torch.tensor([[1.0, 0.0]])
    regions = seed_regions(_scene(share_rows), labels, bg_fraction=None, erosion_size=3, erosion_iterations=1,
                           tie_seed=0)
    low = torch.zeros(20, 20, dtype=torch.bool)
    low[share_rows:] = True
    assert torch.equal(regions.background[0], reference_erosion(low, 3))  # the low part, eroded by one
    expected = (20 - share_rows - 1) / 20  # the row next to the object is eroded away
    assert float(regions.background[0].float().mean()) == pytest.approx(expected)
    fixed = seed_regions(_scene(share_rows), labels, bg_fraction=0.1, erosion_size=3, erosion_iterations=1,
                         tie_seed=0)
    assert float(fixed.background[0].float().mean()) == pytest.approx(0.1)  # a constant, whatever the data


def test_an_image_whose_maps_separate_nothing_gets_no_background() -> None:
    maps = torch.full((1, 2, 8, 8), 0.3)
    regions = seed_regions(maps, torch.tensor([[1.0, 0.0]]), bg_fraction=None, erosion_size=3,
                           erosion_iterations=1, tie_seed=0)
    assert not regions.background.any()


def test_fit_derives_the_seed_settings_from_the_first_batch_and_records_them(tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="lpcam_plugin")
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    fcam = FCAM(3, progress=False, epochs=1, decoder_channels=(16, 8))
    assert fcam.config.bg_fraction == "auto" and fcam.config.erosion_size == "auto"
    fcam.fit(model, batches(images, labels), source=cam_source(model), skip_layers=SKIPS)
    side = images.shape[-1]
    source_side = model.stage4(model.stage3(model.stage2(model.stage1(model.conv1(images[:1]))))).shape[-1]
    factor = round(VOC_REFERENCE_IMAGE_STEPS / (1 * images.shape[0]))
    assert fcam.seed_settings_ == {"erosion_size": odd_stride(side, source_side), "bg_fraction": None,
                                   "source_stride": side / source_side, "crf_sigma_xy": 100 * side / 224,
                                   "images_per_epoch": images.shape[0], "sample_factor": factor,
                                   "fg_samples": factor, "bg_samples": factor}
    assert f"erosion {odd_stride(side, source_side)} px (the source's stride, {side} / {source_side} px)" in caplog.text
    fcam.save(tmp_path / "fcam.npz")
    assert FCAM.load(tmp_path / "fcam.npz").seed_settings_ == fcam.seed_settings_


def test_seed_settings_accept_auto_or_numbers_only() -> None:
    assert FCAMConfig(bg_fraction=0.4, erosion_size=5).bg_fraction == 0.4
    for bad in ({"bg_fraction": "otsu"}, {"bg_fraction": 1.0}, {"erosion_size": 4}, {"erosion_size": "stride"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FCAMConfig(**bad)


def _fit_settings(loader, **overrides):
    """The ``seed_settings_`` of a one-epoch fit on ``loader`` (default: the VOC preset)."""
    torch.manual_seed(0)
    model = TinyNet()
    fcam = FCAM(3, progress=False, **{"epochs": 1, "decoder_channels": (8,), **overrides})
    return fcam.fit(model, loader, source=cam_source(model), skip_layers=SKIPS).seed_settings_


@pytest.mark.parametrize("image_steps, factor", [(10_582 * 10, 1), (10_582 * 20, 1), (1_000, 106), (105_820 // 3, 3)])
def test_the_seed_budget_is_the_presets_image_steps_never_fewer_seeds_than_given(image_steps, factor) -> None:
    assert FCAMConfig().sample_factor(image_steps) == factor
    assert FCAMConfig(reference_image_steps=None).sample_factor(image_steps) == 1
    assert FCAMConfig.preset("coco").sample_factor(3 * 82_081) == 1


def test_fit_samples_the_budgets_seeds_per_step_counting_the_datasets_images(caplog) -> None:
    caplog.set_level("INFO", logger="lpcam_plugin")
    images, labels = make_data(n=10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)
    settings = _fit_settings(loader, epochs=2, reference_image_steps=200)
    assert settings["images_per_epoch"] == 10  # the dataset's 10, not 3 batches x 4
    assert (settings["sample_factor"], settings["fg_samples"], settings["bg_samples"]) == (10, 10, 10)
    assert "2 epochs x 10 images = 20 image-steps against the preset's 200" in caplog.text
    given = _fit_settings(batches(images, labels), fg_samples=3)  # counts given: used as given
    assert (given["sample_factor"], given["fg_samples"], given["bg_samples"]) == (1, 3, 1)
    assert _fit_settings(batches(images, labels), reference_image_steps=36)["images_per_epoch"] == 12  # 3 x 4
    every = _fit_settings(batches(images, labels), fg_samples=None, bg_samples=None, reference_image_steps=36)
    assert (every["sample_factor"], every["fg_samples"], every["bg_samples"]) == (3, None, None)


def test_a_loader_without_length_keeps_the_configured_counts_with_a_warning(caplog) -> None:
    images, labels = make_data()
    settings = _fit_settings(iter(batches(images, labels)))
    assert (settings["images_per_epoch"], settings["fg_samples"], settings["bg_samples"]) == (None, 1, 1)
    assert "the loader has no length, so the seed budget cannot be kept" in caplog.text


def test_the_crf_reach_is_the_papers_relative_to_the_image_and_reaches_the_loss(monkeypatch) -> None:
    seen = []
    original = training.fcam_losses

    def spy(*args, **kwargs):
        seen.append(kwargs["sigma_xy"])
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "fcam_losses", spy)
    images, labels = make_data()
    side = images.shape[-1]
    assert _fit_settings(batches(images, labels))["crf_sigma_xy"] == pytest.approx(100 * side / 224)
    assert seen and all(value == pytest.approx(100 * side / 224) for value in seen)
    seen.clear()
    assert _fit_settings(batches(images, labels), crf_sigma_xy=7.0)["crf_sigma_xy"] == 7.0
    assert set(seen) == {7.0}
    with pytest.raises(ValueError, match="crf_sigma_xy must be > 0 or 'auto'"):
        FCAMConfig(crf_sigma_xy="wide")
