"""``lpcam check-host`` against the stand-in IRN host (tests/hosts/irn_host)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import voc_standin

from lpcam_plugin import PrototypeBank, check_host
from lpcam_plugin.check_host.routes import resolve
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


# ------------------------------------------------------------------ issue 18 §7: EDAM and MCTformer

def test_the_callers_pythonpath_is_extended_not_replaced(tmp_path, monkeypatch):
    """An environment prepared with PYTHONPATH (e.g. a pure-Python torchvision) is the one checked."""
    from lpcam_plugin.check_host import runner

    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs["env"])
        return runner.subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/opt/tv-pure", "/opt/other"]))
    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    fork = tmp_path / "fork"
    fork.mkdir()
    check_host.check_host("mctformer", fork, workdir=tmp_path / "work")
    entries = seen["PYTHONPATH"].split(os.pathsep)
    assert entries == [str(fork.resolve()), str(check_host.package_root()), "/opt/tv-pure", "/opt/other"]


def _environment_items(tmp_path, monkeypatch, host, route, missing):
    from lpcam_plugin.check_host import environment
    from lpcam_plugin.check_host.checklist import Recorder, read_items

    def probe(module):  # the named modules are missing, the other probed packages installed
        return (None, "ModuleNotFoundError: gone") if module in missing else ("1.0", "")

    monkeypatch.setattr(environment, "module_version", probe)
    rec = Recorder(tmp_path / f"{host}_{route}.jsonl", tmp_path)
    environment.check_environment(rec, host, tmp_path, route)
    return {item.name: item for item in read_items(tmp_path / f"{host}_{route}.jsonl")}


def test_environment_requires_only_what_the_route_imports(tmp_path, monkeypatch):
    missing = ("torchvision", "imageio")
    loop = _environment_items(tmp_path, monkeypatch, "edam", "loop", missing)
    assert not [item for item in loop.values() if item.status == "fail"], loop
    assert loop["torchvision"].status == "info" and "infer_cls.py" in loop["torchvision"].detail
    infer = _environment_items(tmp_path, monkeypatch, "edam", "infer_cls", missing)
    assert infer["torchvision"].status == "fail" and "PYTHONPATH" in infer["torchvision"].fix
    assert infer["imageio"].status == "fail" and "pip install imageio" in infer["imageio"].fix
    mct = _environment_items(tmp_path, monkeypatch, "mctformer", "patch", ("torchvision", "timm"))
    assert mct["torchvision"].status == "fail" and "--no-deps" in mct["timm"].fix


def test_infer_cls_cuda_failure_points_to_the_documented_cpu_edits(tmp_path):
    from lpcam_plugin.check_host.checklist import Recorder, StepFailed, read_items
    from lpcam_plugin.check_host.edam_driver import INFER_CLS_CPU_FIX, INFER_CLS_FIXES

    rec = Recorder(tmp_path / "r.jsonl", tmp_path)
    with pytest.raises(StepFailed):
        with rec.step("edam.run_infer_cls (unchanged infer_cls.py)", fixes=INFER_CLS_FIXES):
            raise AssertionError("Torch not compiled with CUDA enabled")
    item = read_items(tmp_path / "r.jsonl")[0]
    assert item.fix == INFER_CLS_CPU_FIX and "docs/hosts/edam.md" in item.fix and "model_replicas" in item.fix


def test_edam_and_mctformer_methods_can_be_checked():
    from lpcam_plugin.check_host.routes import resolve

    assert resolve("edam", "loop", "fcam", "lpcam") == ("loop", "fcam", "lpcam", "random", "voc")
    assert resolve("mctformer", None, "fcam").method == "fcam"
    assert resolve("edam", "infer_cls", train_cam="pss").train_cam == "pss"
    with pytest.raises(ValueError, match="F-CAM on mctformer decodes cam or lpcam"):
        resolve("mctformer", None, "fcam", "recam")
    with pytest.raises(ValueError, match="--method fcam applies to"):
        resolve("edam", "infer_cls", "fcam")
    with pytest.raises(ValueError, match="--train-cam pss"):
        resolve("mctformer", None, train_cam="pss")
    args = build_parser().parse_args(["check-host", "edam", ".", "--method", "fcam", "--train-cam", "pss"])
    assert (args.method, args.train_cam) == ("fcam", "pss")


def test_mctformer_driver_namespace_has_what_the_engine_and_datasets_read(tmp_path, monkeypatch):
    """The real ``engine.py:161`` reads ``args.model``; the stand-in engine and datasets read what upstream reads."""
    import torch
    from conftest import HOSTS, standin_host

    from lpcam_plugin.check_host.mctformer_driver import host_args

    root, ids = check_host.write_dataset(tmp_path, "mctformer", num_images=3, num_fit=2, image_size=32)
    monkeypatch.chdir(tmp_path)
    gen = standin_host(monkeypatch, HOSTS / "mctformer_host", ("models", "engine", "datasets", "evaluation", "psa"))
    next(gen)
    import datasets
    import engine
    import models

    model = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20).eval()
    args = host_args({"voc12_root": str(root)}, 8, out_crf=False)
    assert "MCTformerV2" in args.model
    dataset, _ = datasets.build_dataset(is_train=False, args=args, gen_attn=True)
    assert dataset[0][0][0].shape[-2:] == (32, 32)  # gen mode: no Resize + CenterCrop
    loader = torch.utils.data.DataLoader(dataset, batch_size=1)
    engine.generate_attention_maps_ms(loader, model, torch.device("cpu"), args)
    assert sorted(p.stem for p in (tmp_path / "out_npy").glob("*.npy")) == ids
    del args.model
    with pytest.raises(AttributeError, match="model"):
        engine.generate_attention_maps_ms(loader, model, torch.device("cpu"), args)
    next(gen, None)


def _steps_ok(items):
    steps = [item for item in items if item.section == "steps"]
    assert steps and all(item.status in ("ok", "skip") for item in steps), \
        [(item.name, item.detail) for item in steps if item.status not in ("ok", "skip")]
    return {item.name: item for item in steps}


@pytest.mark.slow
def test_mctformer_fcam_method_runs_on_the_standin(tmp_path):
    """``--method fcam`` drives mctformer_fcam (the LPCAM route, with main.py + main.patch, ran on the real host)."""
    fork = Path(__file__).resolve().parents[1] / "hosts" / "mctformer_host"
    items, _ = check_host.check_host("mctformer", fork, workdir=tmp_path / "fcam", method="fcam", fcam_source="lpcam")
    steps = _steps_ok(items)
    assert "mctformer_fcam.run (--cam-npy-dir dicts)" in steps and "mctformer.fit" in " ".join(steps)


@pytest.mark.slow
def test_edam_pss_training_runs_on_the_standin(tmp_path):
    """``--train-cam pss`` writes EDAM_train.txt, trains one step with edam_pixelsup_train, then runs the route."""
    fork = Path(__file__).resolve().parents[1] / "hosts" / "edam_host"
    items, _ = check_host.check_host("edam", fork, workdir=tmp_path / "pss", train_cam="pss")
    steps = _steps_ok(items)
    assert "edam_pixelsup_train (RCM + MAM, one step, crop 368)" in steps
    assert "host network with the trained weights; eval mode without chaining" in steps
    assert (tmp_path / "pss" / "voc12" / "EDAM_train.txt").read_text().count(".jpg") == 2


def test_coco_check_runs_the_reference_coco_pipeline_on_the_standin(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "lpcam", "irn_coco")
    items, code = check_host.check_host("irn", fork, workdir=tmp_path / "work", dataset="coco")
    steps = _by_name(i for i in items if i.section == "steps")
    assert code == 0, check_host.format_checklist("irn", fork, "run, coco", items, code)
    assert steps["files follow the host format"].status == "ok"
    assert steps["host step_coco.cam_to_ir_label.run(args) reads them"].detail.startswith("20 PNGs")
    assert "mIoU" in steps["lpcam eval --dataset coco reads them"].detail
    assert "id lists (np.loadtxt)" not in _by_name(items)  # VOC's check does not apply
    work = tmp_path / "work"
    names = sorted(p.stem for p in (work / "result_coco" / "lpcam_mask").glob("*.npy"))
    assert len(names) == 20 and names[0] == "COCO_train2014_000000000009"
    assert np.load(work / "mscoco" / "train_labels.npy").shape == (20, 80)
    assert not any(p.name.endswith(".npy") for p in fork.rglob("*"))  # nothing written into the fork


def test_coco_check_names_the_split_dataset_fix(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "lpcam", "irn_coco", fix_split=False)
    items, code = check_host.check_host("irn", fork, dataset="coco")
    step = _by_name(items)["host step_coco.cam_to_ir_label.run(args) reads them"]
    assert code == 1 and step.status == "fail"
    assert "Index must be of type integer" in step.detail and ".tolist()" in step.fix


def test_coco_check_is_refused_where_no_coco_route_is_checked():
    for host, route in (("irn", "patch"), ("edam", None), ("edam", "infer_cls")):
        with pytest.raises(ValueError, match="--dataset coco is checked on amn --route a, amn --route b, "
                                             "irn --route run, mctformer --route patch"):
            resolve(host, route, dataset="coco")
    with pytest.raises(ValueError, match="--dataset must be one of"):
        resolve("irn", dataset="ade")


def test_amn_coco14_check_runs_both_routes_on_the_standin(tmp_path):
    fork = voc_standin.copy_host(tmp_path / "amn", "amn_coco14")
    items, code = check_host.check_host("amn", fork, route="b", workdir=tmp_path / "work", dataset="coco")
    steps = _by_name(i for i in items if i.section == "steps")
    assert code == 0, check_host.format_checklist("amn", fork, "b, coco", items, code)
    assert steps["host step.cam_to_ir_label_coco.run(args) reads them"].detail.startswith("20 PNGs")
    assert steps["host step.amn_cam_to_ir_label_coco.run(args) reads them"].detail.startswith("20 PNGs")
    assert steps["AMN files follow the host format"].detail.endswith("follow the AMN format")
    assert steps["host step.eval_cam_coco.run (seed mIoU)"].status == "skip"
    assert "coco_seg_anno" in steps["host step.eval_cam_coco.run (seed mIoU)"].fix
    work = tmp_path / "work"
    empty = np.load(work / "result" / "cam_coco" / "000000000142.npy", allow_pickle=True).item()
    assert sorted(empty) == ["keys"] and empty["keys"].numel() == 0  # the branch's file for an unlabelled image
    assert PrototypeBank.load(work / "sess" / "res50_amn_coco.pth.lpcam_bank.npz").num_classes == 80
    assert not any(p.name.endswith(".npy") for p in fork.rglob("*"))



@pytest.mark.parametrize("method", ["lpcam", "fcam"])
def test_mctformer_coco_check_runs_on_the_standin(tmp_path, method):
    fork = Path(__file__).resolve().parents[1] / "hosts" / "mctformer_host"
    items, _ = check_host.check_host("mctformer", fork, workdir=tmp_path / "work", dataset="coco", method=method)
    _steps_ok(items)  # the environment lacks the real host's packages here; every step must pass
    steps = _by_name(i for i in items if i.section == "steps")
    assert steps["host evaluation.py do_python_eval"].status == "skip"
    scored = steps["mctformer.evaluate(dataset='coco') reads out_npy"].detail
    assert "over 19 dicts (1 image(s) without labels" in scored and "(classes present)" in scored
    if method == "lpcam":
        assert PrototypeBank.load(tmp_path / "work" / "lpcam_main.npz").num_classes == 80  # main.py --lpcam-fit
        assert "mctformer.evaluate(dataset='coco') reads out_main_lpcam" in steps
