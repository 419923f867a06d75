"""COCO's layout as the hosts' COCO pipelines write it: category ids -> class indices 0..79 in ascending
id order, ground truth ``<int image id>.png``, 81 labels; and ``lpcam eval --dataset coco`` on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lpcam_plugin.cli import main
from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core.datasets import (
    COCO_CATEGORY_IDS,
    COCO_CLASS_NAMES,
    DATASETS,
    coco_class_index,
    coco_gt_name,
)


def test_coco_category_ids_map_to_80_indices_in_ascending_order() -> None:
    missing = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # the ids COCO 2014 never uses
    assert list(COCO_CATEGORY_IDS) == [i for i in range(1, 91) if i not in missing]
    assert [coco_class_index(i) for i in (1, 11, 13, 90)] == [0, 10, 11, 79]
    assert (COCO_CLASS_NAMES[coco_class_index(1)], COCO_CLASS_NAMES[coco_class_index(90)]) == ("person", "toothbrush")
    assert COCO_CLASS_NAMES[coco_class_index(67)] == "dining table" and len(set(COCO_CLASS_NAMES)) == 80
    for bad in (0, 12, 91, "x"):
        with pytest.raises(ValueError, match="is not one of COCO's 80 category ids"):
            coco_class_index(bad)
    assert DATASETS["coco"].num_classes == 81 and DATASETS["voc"].num_classes == 21


def test_coco_ground_truth_is_named_by_the_integer_image_id() -> None:
    assert coco_gt_name("COCO_train2014_000000000009") == "9"
    assert coco_gt_name("COCO_val2014_000000581929") == "581929"
    assert coco_gt_name("42") == "42"
    with pytest.raises(ValueError, match="is not a COCO image id"):
        coco_gt_name("2007_000032a")


def _coco_files(tmp_path):
    """Three COCO images: CAM npz files by COCO name, GT PNGs by integer id (values up to 80)."""
    rng = np.random.default_rng(0)
    cams, gts = tmp_path / "cams", tmp_path / "mask"
    cams.mkdir()
    gts.mkdir()
    items, ids = [], []
    for number, keys in ((9, [0, 79]), (25, [44]), (581929, [0, 12, 79])):
        image_id = f"COCO_train2014_{number:012d}"
        maps = rng.random((len(keys), 6, 7)).astype(np.float32)
        gt = np.zeros((6, 7), np.int64)
        gt[:3] = keys[0] + 1
        gt[3:, :2] = keys[-1] + 1
        np.savez(cams / f"{image_id}.npz", keys=np.asarray(keys, np.int64), high_res=maps)
        Image.fromarray(gt.astype(np.uint8), mode="L").save(gts / f"{number}.png")
        ids.append(image_id)
        items.append((np.asarray(keys), maps, gt))
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    return cams, gts, ids, items


def test_eval_cli_on_coco_reads_integer_named_gt_and_scores_81_labels_with_class_names(tmp_path, capsys) -> None:
    cams, gts, ids, items = _coco_files(tmp_path)
    out = tmp_path / "res.json"
    argv = ["eval", "--cams", str(cams), "--gt", str(gts), "--list", str(tmp_path / "list.txt"), "--format", "npz",
            "--thresholds", "0:0.5:0.1", "--json", str(out), "--no-progress"]
    assert main(argv + ["--dataset", "coco"]) == 0
    printed = capsys.readouterr().out
    expected = ev.sweep(((k, m) for k, m, _ in items), (g for *_, g in items), [0, 0.1, 0.2, 0.3, 0.4], 81)
    data = json.loads(out.read_text())
    assert data["curves"]["miou"] == pytest.approx(expected.miou.tolist(), nan_ok=True)
    assert len(expected.best["iou"]) == 81
    assert "      toothbrush" in printed and "          person" in printed and "class 79" not in printed
    assert main(argv) == 2  # as VOC: COCO_train2014_000000000009.png is looked for, and named
    assert "COCO_train2014_000000000009.png" in capsys.readouterr().err
    (gts / "25.png").unlink()
    assert main(argv + ["--dataset", "coco"]) == 2
    error = capsys.readouterr().err
    assert "1 ground-truth PNG(s) missing" in error and "25.png" in error and error.count("\n") == 1
