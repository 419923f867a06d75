"""Seed-mask metrics, the one-pass threshold sweep, host-format readers and ``lpcam eval``."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core import formats


def test_confusion_matrix_hand_computed_with_ignore() -> None:
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 0], [2, 0, 2, 1]])
    expected = np.array(
        [
            [1, 1, 0],  # gt 0: one right, one predicted as 1
            [1, 2, 0],  # gt 1: one missed (pred 0), two right
            [1, 0, 1],  # gt 2: one missed, one right; the 255 pixel is skipped
        ]
    )
    conf = ev.confusion_matrix(pred, gt, num_classes=3)
    np.testing.assert_array_equal(conf, expected)
    assert conf.dtype == np.int64 and conf.sum() == 7


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="num_classes counts the background"):
        ev.confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 3), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        ev.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), num_classes=3)
    with pytest.raises(TypeError, match="integer"):
        ev.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), num_classes=3)


def test_seed_metrics_hand_computed_and_absent_class() -> None:
    # 4 labels; label 3 is absent from gt and prediction -> NaN and excluded from the means.
    conf = np.array(
        [
            [6, 2, 0, 0],
            [1, 3, 0, 0],
            [0, 0, 0, 0],  # class 2 absent from gt but predicted once below
            [0, 0, 0, 0],
        ]
    )
    conf[0, 2] = 1  # one background pixel predicted as class 2
    m = ev.seed_metrics(conf)
    # class 0: TP 6, FN 3, FP 1 ; class 1: TP 3, FN 1, FP 2 ; class 2: TP 0, FN 0, FP 1
    np.testing.assert_allclose(m["iou"][:3], [6 / 10, 3 / 6, 0.0])
    np.testing.assert_allclose(m["fp"][:3], [1 / 10, 2 / 6, 1.0])
    np.testing.assert_allclose(m["fn"][:3], [3 / 10, 1 / 6, 0.0])
    np.testing.assert_allclose(m["precision"][:3], [6 / 7, 3 / 5, 0.0])
    np.testing.assert_allclose(m["recall"][:2], [6 / 9, 3 / 4])
    assert np.isnan(m["recall"][2])  # no gt pixels
    assert all(np.isnan(m[k][3]) for k in ev.PER_CLASS_METRICS)
    assert m["miou"] == pytest.approx((0.6 + 0.5 + 0.0) / 3)
    assert m["mrecall"] == pytest.approx((6 / 9 + 3 / 4) / 2)
    # per class, IoU + FP + FN = 1 where defined
    total = m["iou"] + m["fp"] + m["fn"]
    np.testing.assert_allclose(total[:3], 1.0)


def test_seed_metrics_empty_is_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ev.seed_metrics(np.zeros((3, 3), dtype=np.int64))
    assert np.isnan(m["miou"])


def test_maps_to_prediction_ties_go_to_background_and_keys_map() -> None:
    maps = np.array([[[0.3, 0.8], [0.1, 0.5]], [[0.6, 0.2], [0.1, 0.5]]])
    pred = ev.maps_to_prediction(maps, keys=[4, 7], threshold=0.5)
    # (0,0): 0.6 from key 7 -> 8 ; (0,1): 0.8 key 4 -> 5 ; (1,0): below -> 0 ; (1,1): tie with t -> 0
    np.testing.assert_array_equal(pred, [[8, 5], [0, 0]])
    assert ev.maps_to_prediction(np.zeros((0, 2, 2)), [], 0.1).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="keys"):
        ev.maps_to_prediction(maps, keys=[1], threshold=0.5)


def _random_dataset(rng: np.random.Generator, num_images: int, num_fg: int):
    items = []
    for _ in range(num_images):
        h, w = rng.integers(3, 9, size=2)
        k = int(rng.integers(0, 3))
        keys = np.sort(rng.choice(num_fg, size=k, replace=False))
        maps = rng.random((k, h, w)).round(2)  # rounding creates exact ties with the thresholds
        gt = rng.integers(0, num_fg + 1, size=(h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        items.append((keys, maps, gt))
    return items


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_equals_per_threshold_evaluation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = _random_dataset(rng, 12, num_fg=4)
    thresholds = [0.5, 0.0, 0.25, 0.3, 0.99, 0.3]  # unsorted with a duplicate
    result = ev.sweep(((k, m) for k, m, _ in items), (g for *_, g in items), thresholds, num_classes=5)
    np.testing.assert_array_equal(result.thresholds, [0.0, 0.25, 0.3, 0.5, 0.99])
    assert result.num_images == 12
    for index, t in enumerate(result.thresholds):
        conf = sum(ev.confusion_matrix(ev.maps_to_prediction(m, k, t), g, 5) for k, m, g in items)
        np.testing.assert_array_equal(result.confusion[index], conf)
        expected = ev.seed_metrics(conf)
        assert result.miou[index] == pytest.approx(expected["miou"], nan_ok=True)
        np.testing.assert_allclose(result.metrics["recall"][index], expected["recall"])
    best = int(np.nanargmax(result.miou))
    assert result.best_threshold == result.thresholds[best]
    assert result.best["miou"] == pytest.approx(result.miou.max())
    assert result.curve_drop(0.1) >= 0.0
    json.dumps(result.to_dict())


def test_sweep_validates_lengths_and_values() -> None:
    gt = np.zeros((2, 2), dtype=np.int64)
    maps = [([0], np.ones((1, 2, 2)))]
    with pytest.raises(ValueError, match="more entries"):
        ev.sweep(maps, [gt, gt], [0.1], num_classes=3)
    with pytest.raises(ValueError, match="fewer entries"):
        ev.sweep(maps * 2, [gt], [0.1], num_classes=3)
    with pytest.raises(ValueError, match="NaN"):
        ev.sweep([([0], np.full((1, 2, 2), np.nan))], [gt], [0.1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        ev.sweep([([2], np.ones((1, 2, 2)))], [gt], [0.1], num_classes=3)


def test_curve_drop_measures_flatness() -> None:
    result = ev.SweepResult(
        thresholds=np.array([0.1, 0.2, 0.3, 0.4, 0.5]),
        confusion=np.zeros((5, 2, 2), dtype=np.int64),
        metrics={"miou": np.array([0.1, 0.5, 0.6, 0.55, 0.0])},
    )
    assert result.best_threshold == pytest.approx(0.3)
    assert result.curve_drop(0.1) == pytest.approx(0.1)  # 0.6 - 0.5 (0.2 is within 0.1)
    assert result.curve_drop(0.2) == pytest.approx(0.6)


def _write_host_files(tmp_path):
    rng = np.random.default_rng(3)
    cams, gts, ids = tmp_path / "cams", tmp_path / "gt", []
    cams.mkdir()
    gts.mkdir()
    items = []
    for index in range(4):
        image_id = f"2007_{index:06d}"
        keys = np.sort(rng.choice(20, size=2, replace=False))
        maps = rng.random((2, 5, 6)).astype(np.float32)
        gt = rng.integers(0, 21, size=(5, 6)).astype(np.uint8)
        gt[0, 0] = 255
        Image.fromarray(gt, mode="L").convert("P").save(gts / f"{image_id}.png")
        items.append((keys, maps, gt.astype(np.int64)))
        ids.append(image_id)
    return cams, gts, ids, items


def test_readers_irn_amn_and_dict(tmp_path) -> None:
    keys = np.array([3, 11])
    maps = np.random.default_rng(0).random((2, 4, 5)).astype(np.float32)
    irn = {"keys": torch.from_numpy(keys), "cam": torch.from_numpy(maps[:, :2, :2]), "high_res": maps}
    amn = dict(irn, high_res=np.concatenate([np.zeros((1, 4, 5), np.float32), maps]))
    np.save(tmp_path / "irn.npy", irn)
    np.save(tmp_path / "amn.npy", amn)
    np.save(tmp_path / "dict.npy", {11: maps[1], 3: maps[0]})
    for name, fmt in [("irn", "irn"), ("amn", "irn"), ("dict", "dict"), ("irn", "auto"), ("dict", "auto")]:
        k, m = formats.read_cam_file(tmp_path / f"{name}.npy", fmt, allow_pickle=True)
        np.testing.assert_array_equal(k, keys)
        np.testing.assert_array_equal(m, maps)
    with pytest.raises(ValueError, match="allow_pickle"):
        formats.read_irn_cam(tmp_path / "irn.npy")
    with pytest.raises(ValueError, match="not an IRN"):
        formats.read_irn_cam(tmp_path / "dict.npy", allow_pickle=True)


def test_read_id_list_accepts_edam_lines(tmp_path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("2007_000032\n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n\n")
    assert formats.read_id_list(path) == ["2007_000032", "2007_000039"]


def test_eval_cli_matches_sweep(tmp_path, capsys) -> None:
    from lpcam_plugin.cli import main

    cams, gts, ids, items = _write_host_files(tmp_path)
    for image_id, (keys, maps, _) in zip(ids, items):
        np.save(cams / f"{image_id}.npy", {int(k): m for k, m in zip(keys, maps)})
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "res.json"
    argv = ["eval", "--cams", str(cams), "--gt", str(gts), "--list", str(tmp_path / "list.txt"),
            "--thresholds", "0:0.5:0.1", "0.75", "--json", str(out), "--no-progress"]
    assert main(argv + ["--allow-pickle"]) == 0
    data = json.loads(out.read_text())
    expected = ev.sweep(((k, m) for k, m, _ in items), (g for *_, g in items), [0, 0.1, 0.2, 0.3, 0.4, 0.75], 21)
    assert data["thresholds"] == pytest.approx(expected.thresholds.tolist())
    assert data["curves"]["miou"] == pytest.approx(expected.miou.tolist())
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("lpcam eval: error: ") and "--allow-pickle" in error and error.count("\n") == 1


def test_eval_cli_reads_native_npz_maps_without_pickle(tmp_path, capsys) -> None:
    from lpcam_plugin.cli import main

    cams, gts, ids, items = _write_host_files(tmp_path)
    for image_id, (keys, maps, _) in zip(ids, items):
        np.savez(cams / f"{image_id}.npz", keys=np.asarray(keys, np.int64), high_res=np.asarray(maps, np.float32))
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "res.json"
    argv = ["eval", "--cams", str(cams), "--gt", str(gts), "--list", str(tmp_path / "list.txt"), "--format", "npz",
            "--thresholds", "0:0.5:0.1", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    expected = ev.sweep(((k, m) for k, m, _ in items), (g for *_, g in items), [0, 0.1, 0.2, 0.3, 0.4], 21)
    assert json.loads(out.read_text())["curves"]["miou"] == pytest.approx(expected.miou.tolist())
    np.savez(cams / f"{ids[0]}.npz", keys=np.zeros(1, np.int64))
    capsys.readouterr()
    assert main(argv) == 2
    assert "not an LPCAM map file" in capsys.readouterr().err


def test_eval_cli_auto_threshold_with_and_without_masks(tmp_path, capsys) -> None:
    from lpcam_plugin.cli import main
    from lpcam_plugin.core.threshold import auto_threshold

    cams, gts, ids, items = _write_host_files(tmp_path)
    reference = tmp_path / "reference"
    reference.mkdir()
    for image_id, (keys, maps, _) in zip(ids, items):
        maps = np.asarray(maps, np.float32) / np.max(maps, axis=(1, 2), keepdims=True)
        np.savez(cams / f"{image_id}.npz", keys=np.asarray(keys, np.int64), high_res=maps ** 0.2)
        np.savez(reference / f"{image_id}.npz", keys=np.asarray(keys, np.int64), high_res=maps)
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "res.json"
    base = ["eval", "--cams", str(cams), "--list", str(tmp_path / "list.txt"), "--format", "npz",
            "--json", str(out), "--no-progress", "--auto-threshold"]
    pairs = [(np.asarray(k, np.int64), np.asarray(m, np.float32) / np.max(m, axis=(1, 2), keepdims=True))
             for k, m, _ in items]
    assert main(base) == 0  # no masks: t only
    alone = json.loads(out.read_text())["automatic"]
    assert alone["rule"] == "otsu" and "miou" not in alone
    assert alone["threshold"] == pytest.approx(auto_threshold(((k, m ** 0.2) for k, m in pairs), num_classes=20))
    assert main(base + ["--reference", str(reference), "--gt", str(gts)]) == 0
    data = json.loads(out.read_text())
    shared = auto_threshold(((k, m ** 0.2) for k, m in pairs), num_classes=20,
                            reference=iter(pairs))
    assert data["automatic"]["rule"] == "share" and data["automatic"]["threshold"] == pytest.approx(shared)
    at_t = ev.sweep(((k, m ** 0.2) for k, m in pairs), (g for *_, g in items), [shared], 21)
    assert data["automatic"]["miou"] == pytest.approx(at_t.best["miou"])
    assert "automatic threshold" in capsys.readouterr().out
    assert main(base[:-1] + ["--reference", str(reference), "--gt", str(gts)]) == 2
    assert "--reference is read only with --auto-threshold" in capsys.readouterr().err
    assert main(base[:-1]) == 2
    assert "--gt is needed" in capsys.readouterr().err
