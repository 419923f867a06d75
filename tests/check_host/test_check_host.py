"""``lpcam check-host`` against the stand-in IRN host (tests/hosts/irn_host)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import voc_standin

from lpcam_plugin import check_host
from lpcam_plugin.cli import build_parser


def _by_name(items):
    return {item.name: item for item in items}


def _loadtxt_parses() -> bool:
    try:
        np.loadtxt(["2007_000032"], dtype=np.int32)
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_fixed_irn_fork_passes_and_host_step_reads_the_files(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "irn", "irn")
    items, code = check_host.check_host("irn", fork, workdir=tmp_path / "work")
    steps = _by_name(i for i in items if i.section == "steps")
    assert code == 0, check_host.format_checklist("irn", fork, "run", items, code)
    assert steps["files follow the host format"].status == "ok"
    assert steps["host step.cam_to_ir_label.run(args) reads them"].detail.startswith(f"{check_host.NUM_IMAGES} PNGs")
    ids = (tmp_path / "work" / "voc12" / "train_aug.txt").read_text().split()
    assert len(ids) == check_host.NUM_IMAGES and ids[0] == "2007_000001"  # the host's own id format
    assert not any(p.name.endswith(".npy") for p in fork.rglob("*"))  # nothing written into the fork


@pytest.mark.skipif(_loadtxt_parses(), reason="this numpy still parses 2007_000032 with np.loadtxt")
def test_unfixed_loadtxt_line_is_reported_with_the_line_to_change(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "irn", "irn", fix_loadtxt=False)
    items, code = check_host.check_host("irn", fork)
    found = _by_name(items)
    assert code == 1
    env = found["id lists (np.loadtxt)"]
    assert env.status == "fail" and "voc12/dataloader.py:" in env.detail and "np.loadtxt" in env.fix
    step = found["host dataset reads the lists"]
    assert step.status == "fail" and "[at voc12/dataloader.py:" in step.detail and "replace('_', '')" in step.fix
    assert found["remaining steps"].status == "skip"


def test_patch_route_without_cuda_fails_with_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    fork = voc_standin.copy_host(tmp_path / "irn", "irn")
    items, code = check_host.check_host("irn", fork, route="patch")
    step = _by_name(items)["patch() + unchanged step.make_cam.run(args)"]
    assert code == 1 and step.status == "fail"
    assert "zero workers" in step.detail and "irn.run(args)" in step.detail


def test_cli_and_arguments(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["check-host", "amn", str(tmp_path), "--route", "a"])
    assert args.host == "amn" and args.route == "a"
    with pytest.raises(ValueError, match="routes are"):
        check_host.check_host("irn", tmp_path, route="b")
    with pytest.raises(FileNotFoundError):
        check_host.check_host("irn", tmp_path / "missing")
    assert "pillow<10" in check_host.known_fix("AttributeError: module 'PIL.Image' has no attribute 'CUBIC'")
    assert "np.copy" in check_host.known_fix("ValueError: buffer source array is read-only")
    assert check_host.known_fix("something else") == ""


def test_dataset_follows_each_host_layout(tmp_path):
    for host in ("irn", "edam", "mctformer"):
        root, ids = check_host.write_dataset(tmp_path / host, host, num_images=4, num_fit=2, image_size=32)
        labels = np.load(tmp_path / host / "voc12" / "cls_labels.npy", allow_pickle=True).item()
        assert (root / "SegmentationClassAug" / f"{ids[0]}.png").is_file()
        assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == ids[:2]
        if host == "irn":
            assert set(labels) == {np.int32(int(i.replace("_", ""))) for i in ids}
        else:
            assert set(labels) == set(ids)
    assert (tmp_path / "edam" / "voc12" / "train.txt").read_text().splitlines()[0] == \
        f"/JPEGImages/{ids[0]}.jpg /SegmentationClassAug/{ids[0]}.png"
    assert (tmp_path / "mctformer" / "voc12" / "train_aug_id.txt").read_text().split() == ids


def test_method_is_refused_where_the_cam_step_writes_lpcam_only(tmp_path):
    with pytest.raises(ValueError, match="--method recam applies to irn and to amn --route a only"):
        check_host.check_host("amn", tmp_path, route="b", method="recam")


@pytest.mark.slow
def test_recam_lpcam_method_passes_on_the_fixed_irn_fork(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "irn", "irn")
    items, code = check_host.check_host("irn", fork, workdir=tmp_path / "work", method="recam+lpcam")
    assert code == 0, check_host.format_checklist("irn", fork, "run", items, code)
    steps = _by_name(i for i in items if i.section == "steps")
    assert steps["lpcam_irn.run(args) (recam+lpcam instead of step.make_cam.run)"].status == "ok"
    assert (tmp_path / "work" / "sess" / "res50_cam.pth.recam.npz").is_file()  # the ReCAM step ran


@pytest.mark.slow
def test_fcam_method_passes_on_the_fixed_irn_fork(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "irn", "irn")
    items, code = check_host.check_host("irn", fork, workdir=tmp_path / "work", method="fcam", fcam_source="cam")
    assert code == 0, check_host.format_checklist("irn", fork, "run", items, code)
    steps = _by_name(i for i in items if i.section == "steps")
    assert steps["lpcam_irn.run(args) (fcam instead of step.make_cam.run)"].status == "ok"
    assert (tmp_path / "work" / "sess" / "res50_cam.pth.fcam_cam.npz").is_file()  # the decoder step ran
    with pytest.raises(ValueError, match="--fcam-source lpcam applies to --method fcam only"):
        check_host.check_host("irn", fork, method="lpcam", fcam_source="lpcam")


def test_the_host_interpreter_is_given_this_package():
    init = check_host.package_root() / "lpcam_plugin" / "check_host" / "__init__.py"
    assert init.resolve() == Path(check_host.__file__).resolve()
