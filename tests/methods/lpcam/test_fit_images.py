"""Which images LPCAM clusters: all, a per-class cap, or the reference's COCO ``split_100`` draws."""
import numpy as np
import pytest

from lpcam_plugin.methods.lpcam.fit_images import capped_indices, fit_plan, plan_ids, reference_draws


def _labels(n: int = 200, c: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, c)) < 0.15).astype(np.float32)


def test_capped_selection_caps_every_class():
    labels = _labels()
    keep = capped_indices(labels, 5, seed=0)
    counts = labels[keep].sum(axis=0)
    assert keep == sorted(keep)
    assert (counts >= np.minimum(labels.sum(axis=0), 5)).all()  # every class reaches the cap when it can
    assert all(labels[i].any() for i in keep)
    assert capped_indices(labels, None, seed=0) == list(range(200))


def _split_100_as_the_reference_writes_it(labels: np.ndarray, per_class: int) -> np.ndarray:
    """``step_coco/make_lpcam.py`` ``split_100``: the global seed once, then ``np.random.choice`` per class."""
    np.random.seed(666)
    selected = np.ones((labels.shape[1], per_class))
    for i in range(labels.shape[1]):
        selected[i] = np.random.choice(np.nonzero(labels[:, i])[0], per_class)
    return selected.astype(np.int32)


def test_reference_draws_equal_the_reference_split_100():
    labels = _labels(300, 80, seed=3)
    labels[np.arange(80), np.arange(80)] = 1  # every class held by some image, as on COCO
    state = np.random.get_state()
    try:
        expected = _split_100_as_the_reference_writes_it(labels, 100)
    finally:
        np.random.set_state(state)
    draws = reference_draws(labels, 100)
    assert draws.shape == (80, 100)
    np.testing.assert_array_equal(draws, expected)
    for c in range(80):  # drawn among the holders of the class, with replacement
        assert labels[draws[c], c].all()
    assert any(len(set(row)) < 100 for row in draws.tolist())


def test_reference_plan_feeds_one_class_per_draw_and_keeps_duplicates():
    labels = np.zeros((6, 3), np.float32)
    labels[[0, 1, 2], 0] = 1
    labels[[2, 3], 1] = 1  # class 2 has no image: no draws (the reference would raise)
    entries = fit_plan(labels, "reference", 4, seed=0)
    assert len(entries) == 8
    assert sum(1 for _, classes in entries if classes == (0,)) == 4
    assert sum(1 for _, classes in entries if classes == (1,)) == 4
    assert all(labels[i, classes[0]] for i, classes in entries)
    assert [i for i, _ in entries] == sorted(i for i, _ in entries)
    ids = plan_ids(entries, [f"im{i}" for i in range(6)])
    assert all(":" in name for name in ids)
    assert reference_draws(labels, 4)[2].tolist() == [-1] * 4


def test_all_and_capped_plans_feed_every_class_of_an_image():
    labels = _labels(50, 5)
    entries = fit_plan(labels, "all", None, seed=0)
    assert entries == [(i, None) for i in range(50)]
    assert plan_ids(entries, [str(i) for i in range(50)]) == [str(i) for i in range(50)]
    assert [i for i, _ in fit_plan(labels, "capped", 3, seed=1)] == capped_indices(labels, 3, seed=1)


def test_bad_plans_are_refused_in_one_line():
    with pytest.raises(ValueError, match="fit sampling must be one of"):
        fit_plan(_labels(), "random", 3, seed=0)
    with pytest.raises(ValueError, match="needs images per class"):
        fit_plan(_labels(), "reference", None, seed=0)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        reference_draws(np.zeros(5), 3)
