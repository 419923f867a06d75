"""F-CAM's seed settings chosen on a held-out split with masks (the paper's protocol): one decoder per
candidate, scored by seed-mask mIoU, the best kept and recorded; bad splits are one-line errors."""
from __future__ import annotations

import pytest
import torch
from test_fcam import SKIPS, TinyNet, batches, cam_source, make_data

from lpcam_plugin import FCAM
from lpcam_plugin.methods.fcam.selection import candidate_checkpoint, validation_score

C = 3
OPTIONS = {"progress": False, "epochs": 1, "decoder_channels": (8, 8), "learning_rate": 0.05}
CANDIDATES = [{"bg_fraction": 0.1}, {"bg_fraction": "auto"}, {"bg_fraction": 0.5}]


def _validation(n: int = 4):
    images, labels = make_data(n, seed=5)
    labels[:, 0] = 1
    masks = torch.zeros(n, images.shape[2], images.shape[3], dtype=torch.long)
    masks[:, 4:12, 4:12] = 1  # class 0 in the middle
    masks[:, 0, :] = 255  # an ignored row
    return images, labels, masks


def test_fit_with_validation_keeps_the_best_candidate_and_records_every_score(tmp_path) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data()
    data, source, validation = batches(images, labels), cam_source(model), _validation()
    chosen = FCAM(C, **OPTIONS).fit(model, data, source=source, skip_layers=SKIPS, validation=validation,
                                    candidates=CANDIDATES, checkpoint=tmp_path / "fcam_train.pt")
    scores = [entry["miou"] for entry in chosen.selection_]
    assert [entry["settings"] for entry in chosen.selection_] == CANDIDATES
    assert all(0.0 <= s <= 1.0 for s in scores)
    best = CANDIDATES[scores.index(max(scores))]
    assert chosen.config.bg_fraction == best["bg_fraction"]
    alone = FCAM(C, **{**OPTIONS, **best}).fit(model, data, source=source, skip_layers=SKIPS)
    for key, value in alone.decoder_.state_dict().items():  # the kept decoder is that candidate's own fit
        torch.testing.assert_close(chosen.decoder_.state_dict()[key], value)
    assert validation_score(chosen, model, validation)[0] == pytest.approx(max(scores))
    for index in range(len(CANDIDATES)):  # each candidate trained into its own checkpoint
        assert candidate_checkpoint(tmp_path / "fcam_train.pt", index).is_file()
    chosen.save(tmp_path / "fcam.npz")
    assert FCAM.load(tmp_path / "fcam.npz").selection_ == chosen.selection_


@pytest.mark.parametrize("bad, message", [
    ((torch.zeros(2, 3, 16, 16),), "validation must be a tuple"),
    ((torch.zeros(2, 3, 16, 16), torch.ones(2, C), torch.zeros(2, 16, 16)), "must be an integer tensor"),
    ((torch.zeros(2, 3, 16, 16), torch.ones(2, C), torch.zeros(2, 8, 8, dtype=torch.long)), "(V, H, W) = (2, 16, 16)"),
    ((torch.zeros(2, 3, 16, 16), torch.ones(2, C), torch.full((2, 16, 16), 7)), "validation masks hold [7]"),
    ((torch.zeros(2, 3, 16, 16), torch.ones(1, C), torch.zeros(2, 16, 16, dtype=torch.long)), "validation labels"),
])
def test_a_bad_validation_split_is_a_one_line_error_before_any_training(bad, message) -> None:
    model = TinyNet()
    images, labels = make_data()
    with pytest.raises((TypeError, ValueError)) as info:
        FCAM(C, **OPTIONS).fit(model, batches(images, labels), source=cam_source(model), skip_layers=SKIPS,
                               validation=bad)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_candidates_must_be_dicts_of_settings() -> None:
    model = TinyNet()
    images, labels = make_data()
    for bad in ([], {"bg_fraction": 0.1}, ["auto"]):
        with pytest.raises(TypeError, match="candidates must be"):
            FCAM(C, **OPTIONS).fit(model, batches(images, labels), source=cam_source(model), skip_layers=SKIPS,
                                   validation=_validation(), candidates=bad)
