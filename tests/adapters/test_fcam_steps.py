"""F-CAM through the host adapters (stand-in hosts): the decoder step of IRN / AMN route "a" (files,
reuse, retraining, resume, DDP), IRN's exact file format read by IRN's unchanged next steps,
one-line errors for bad options, and EDAM / MCTformer ``{class: (H, W)}`` dicts.
(``lpcam check-host --method fcam`` is tested in test_check_host.py.)"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HOSTS, MIOU, spawn_gloo, standin_host, voc_standin

import lpcam_plugin.adapters.amn as amn
import lpcam_plugin.adapters.irn as irn
from lpcam_plugin import FCAM
from lpcam_plugin.adapters.common.fcam import fcam_maps
from lpcam_plugin.adapters.resnet import host as hosts
from lpcam_plugin.adapters.resnet.fcam_step import HostStages, fcam_files, obtain_fcam
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.adapters.resnet.prepare import prepare_readout
from lpcam_plugin.core.formats import load_class_dict
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.training import DecoderTrainer as _Trainer
from lpcam_plugin.methods.readouts import linear_batch_maps

pytestmark = [pytest.mark.filterwarnings("ignore:class \\d+:RuntimeWarning"), pytest.mark.slow]

N_IMAGES, N_TRAIN = 8, 5
FCAM_OPTIONS = ["--lpcam_fcam_epochs", "1", "--lpcam_fcam_batch_size", "4", "--lpcam_fcam_crop_size", "32",
                "--lpcam_fcam_decoder_channels", "8", "4"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tiny convolutions only lose time to thread contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """A stand-in IRN fork whose CAM step is ``lpcam_irn.run(args)``, run end to end with
    ``--lpcam_method fcam`` (source: CAM): train_cam -> F-CAM decoder + maps -> eval_cam ->
    cam_to_ir_label -> make_sem_seg_labels."""
    root = tmp_path_factory.mktemp("irn_fcam")
    ids = voc_standin.image_ids(N_IMAGES)
    labels = voc_standin.make_voc(root / "voc", ids, ids[:N_TRAIN])
    host = voc_standin.make_host(root / "irn", "irn", labels, ids, ids[:N_TRAIN])
    script = voc_standin.irn_fork(host)
    cmd = ["--voc12_root", str(root / "voc"), "--num_workers", "1", "--lpcam_loader_workers", "0",
           "--cam_eval_thres", "0.3",
           "--conf_fg_thres", "0.45", "--conf_bg_thres", "0.25", "--sem_seg_bg_thres", "0.35",
           "--lpcam_progress", "false", "--lpcam_method", "fcam", *FCAM_OPTIONS]
    proc = voc_standin.run_fork(script, host, cmd)
    return {"root": root, "host": host, "voc": root / "voc", "ids": ids, "labels": labels, "proc": proc}


def host_args(fork, **extra) -> argparse.Namespace:
    values = dict(num_workers=0, voc12_root=str(fork["voc"]), train_list="voc12/train_aug.txt",
                  cam_network="net.resnet50_cam", cam_scales=(1.0, 0.5), cam_weights_name="sess/res50_cam.pth",
                  cam_out_dir="result/fcam", lpcam_progress=False, lpcam_method="fcam", lpcam_fcam_epochs=1,
                  lpcam_fcam_batch_size=4, lpcam_fcam_crop_size=32, lpcam_fcam_decoder_channels=[8, 4])
    values.update(extra)
    return argparse.Namespace(**values)


def train_or_reuse(args: argparse.Namespace) -> None:
    """The adapter's F-CAM preparation (decoder trained or reused) without writing any map."""
    prepare_readout(irn.SPEC, None, LPCAMOptions.from_args(args), torch.device("cpu"))


def check_irn_format(path: Path, label: np.ndarray) -> dict:
    """IRN's exact dict: keys torch int64, cam torch float32 (K, h4, w4), high_res numpy float32 (K, H, W)."""
    d = voc_standin.load_host_dict(path)
    assert list(d) == ["keys", "cam", "high_res"]
    assert isinstance(d["keys"], torch.Tensor) and d["keys"].dtype == torch.int64
    assert d["keys"].tolist() == np.nonzero(label)[0].tolist()
    assert isinstance(d["cam"], torch.Tensor) and d["cam"].dtype == torch.float32
    assert isinstance(d["high_res"], np.ndarray) and d["high_res"].dtype == np.float32
    k, h, w = d["high_res"].shape
    assert k == len(d["keys"]) and tuple(d["cam"].shape) == (k, (h - 1) // 4 + 1, (w - 1) // 4 + 1)
    for maps in (d["cam"].numpy(), d["high_res"]):  # divided by max + 1e-5
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() < 1
    peaks = d["high_res"].reshape(k, -1).max(1)
    np.testing.assert_allclose(peaks[peaks > 0], 1 - 1e-5, atol=1e-4)
    return d


def test_fork_writes_fcam_in_irn_format_and_irn_steps_read_it(fork):
    host, proc = fork["host"], fork["proc"]
    files = fcam_files(str(host / "sess" / "res50_cam.pth.pth"), "cam")
    assert files["fcam"].exists() and not files["training"].exists()
    fcam = FCAM.load(files["fcam"])
    assert fcam.metadata["source"] == "cam" and fcam.n_steps_ == N_IMAGES // 4
    assert fcam.feature_layer_ == "stage4" and fcam.skip_layers_ == ["stage3", "stage2", "stage1", "resnet50.relu"]
    key = fcam.metadata["fit_key"]
    assert key["checkpoint_sha256"] and key["train_list_sha256"] and key["config"]["decoder_channels"] == [8, 4]
    for image_id in fork["ids"]:
        check_irn_format(host / "result" / "cam" / f"{image_id}.npy", fork["labels"][image_id])
    assert MIOU.search(proc.stdout), proc.stdout[-2000:]  # eval_cam scored them
    for image_id in fork["ids"]:
        assert (host / "result" / "ir_label" / f"{image_id}.png").exists()  # cam_to_ir_label read them
    for image_id in fork["ids"][:N_TRAIN]:
        assert (host / "result" / "sem_seg" / f"{image_id}.png").exists()  # make_sem_seg_labels read `cam`


def test_maps_are_the_flip_averaged_decoder_and_a_rerun_reuses_it(fork, caplog):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    with voc_standin.imported_host(host):
        # the fork's run: same options, scales and decoder
        args = host_args(fork, cam_out_dir="result/cam", cam_scales=(1.0, 0.5, 1.5, 2.0))
        assert irn.run(args) == 0  # same producer, every file already written
        args = host_args(fork)
        assert irn.run(args) == N_IMAGES
        assert "reusing the F-CAM decoder" in caplog.text and "training the F-CAM" not in caplog.text
        fcam = FCAM.load(fcam_files(str(host / "sess" / "res50_cam.pth.pth"), "cam")["fcam"])
        model = hosts.load_host_model(irn.SPEC, args, torch.device("cpu"))
        pack = irn.SPEC.dataset.msf(args, (1.0,))[2]
        stack = torch.from_numpy(np.ascontiguousarray(pack["img"]))
        classes = torch.nonzero(pack["label"])[:, 0].tolist()
        labels = torch.zeros(2, 20)
        labels[:, classes] = 1
        maps = fcam.predict(HostStages(model), stack, labels)[:, classes]
        expected = (maps[0] + maps[1].flip(-1)) / 2
        torch.testing.assert_close(fcam_maps(fcam, HostStages(model), stack, classes), expected)
        expected = expected / (expected.amax(dim=(1, 2), keepdim=True) + 1e-5)
        d = check_irn_format(host / "result" / "fcam" / f"{pack['name']}.npy", fork["labels"][pack["name"]])
        np.testing.assert_allclose(d["high_res"], expected.numpy(), atol=1e-5)
        torch.testing.assert_close(d["cam"], hosts.resize(torch.from_numpy(d["high_res"]), tuple(d["cam"].shape[1:])))


def test_changed_options_or_checkpoint_retrain_the_decoder(fork, caplog):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    weights = host / "sess" / "changed.pth"
    shutil.copy(host / "sess" / "res50_cam.pth.pth", weights)
    with voc_standin.imported_host(host):
        args = host_args(fork, cam_weights_name="sess/changed")
        train_or_reuse(args)
        assert "training the F-CAM decoder on cam maps (not trained yet)" in caplog.text
        caplog.clear()
        train_or_reuse(host_args(fork, cam_weights_name="sess/changed", lpcam_fcam_learning_rate=0.02))
        assert "trained with a different config" in caplog.text
        caplog.clear()
        state = torch.load(weights, weights_only=True)
        state["classifier.weight"] = state["classifier.weight"] * 2
        torch.save(state, weights)
        train_or_reuse(args)
        assert "trained with a different checkpoint_sha256" in caplog.text


class Stop(Exception):
    pass


def test_a_stopped_decoder_training_resumes_to_the_uninterrupted_result(fork, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    with voc_standin.imported_host(host):
        results = {}
        for name in ("straight", "stopped"):
            weights = host / "sess" / f"{name}.pth"
            shutil.copy(host / "sess" / "res50_cam.pth.pth", weights)
            args = host_args(fork, cam_weights_name=str(host / "sess" / name), lpcam_fcam_epochs=2)
            if name == "stopped":
                real, calls = _Trainer.step, []

                def dies_in_epoch_two(self, *a, real=real, calls=calls, **k):
                    calls.append(1)
                    if len(calls) == 3:  # the first step of epoch 2 (2 steps per epoch)
                        raise Stop
                    return real(self, *a, **k)

                monkeypatch.setattr(_Trainer, "step", dies_in_epoch_two)
                with pytest.raises(Stop):
                    train_or_reuse(args)
                monkeypatch.setattr(_Trainer, "step", real)
                assert fcam_files(str(weights), "cam")["training"].exists()
                caplog.clear()
            train_or_reuse(args)
            results[name] = FCAM.load(fcam_files(str(weights), "cam")["fcam"])
        assert "resuming from" in caplog.text and "after epoch 1 of 2" in caplog.text
        straight, stopped = results["straight"].decoder_.state_dict(), results["stopped"].decoder_.state_dict()
        for key, value in straight.items():
            torch.testing.assert_close(stopped[key], value, rtol=0, atol=0)


DETERMINISTIC = FCAMConfig(epochs=1, decoder_channels=(8, 4), fg_samples=None, bg_samples=None)


def _decoder(host_dir: str, voc: str, world: int) -> FCAM:
    """The F-CAM step on the CAM source, called as the adapter calls it (batch 4 over all ranks)."""
    args = argparse.Namespace(num_workers=0, voc12_root=voc, train_list="voc12/train_aug.txt",
                              cam_network="net.resnet50_cam", cam_scales=(1.0,), cam_out_dir="unused",
                              cam_weights_name=f"sess/ddp{world}")
    model = hosts.load_host_model(irn.SPEC, args, torch.device("cpu"))
    source = linear_batch_maps(irn.selection_weight(model)[0])
    fcam = FCAM(20, config=DETERMINISTIC, progress=False)
    return obtain_fcam(args, irn.SPEC.dataset, irn.SPEC.weights_path(args), fcam, HostStages(model), source, "cam", {},
                       batch_size=4, crop_size=32, workers=0)[0]


def _ddp_worker(rank, world, port, host_dir, voc):
    import torch.distributed as dist

    sys.path.insert(0, host_dir)
    os.chdir(host_dir)
    torch.set_num_threads(1)
    # as torchrun launches run_sample.py: the adapter initialises the process group from these,
    # trains the decoder in DDP, then rank r writes images r, r + world, ...
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    try:
        args = host_args({"voc": voc}, cam_weights_name="sess/ddprun", cam_out_dir="result/ddp_maps")
        Path(f"result/ddp_written_{rank}.txt").write_text(str(irn.run(args)))
        assert dist.is_initialized() and dist.get_world_size() == world
        _decoder(host_dir, voc, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_with_two_processes_trains_the_decoder_of_one_process(fork):
    host = fork["host"]
    for name in ("ddp1", "ddp2", "ddprun"):
        shutil.copy(host / "sess" / "res50_cam.pth.pth", host / "sess" / f"{name}.pth")
    with voc_standin.imported_host(host):
        single = _decoder(str(host), str(fork["voc"]), 1)
    spawn_gloo(_ddp_worker, str(host), str(fork["voc"]))
    written = [int((host / "result" / f"ddp_written_{rank}.txt").read_text()) for rank in (0, 1)]
    assert written == [N_IMAGES // 2, N_IMAGES // 2]
    for image_id in fork["ids"]:
        check_irn_format(host / "result" / "ddp_maps" / f"{image_id}.npy", fork["labels"][image_id])
    ddp = FCAM.load(fcam_files(str(host / "sess" / "ddp2.pth"), "cam")["fcam"])
    assert ddp.n_steps_ == single.n_steps_ == N_IMAGES // 4
    reference = single.decoder_.state_dict()
    for key, value in ddp.decoder_.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5)


def test_lpcam_source_on_amn_route_a_and_route_b_refuses(fork, caplog):
    caplog.set_level(logging.INFO, logger="lpcam_plugin")
    host = fork["host"]
    with voc_standin.imported_host(host):
        args = host_args(fork, cam_out_dir="result/fcam_lpcam", lpcam_fcam_source="lpcam", cam_scales=(1.0,),
                         lpcam_fit_list="voc12/train.txt", lpcam_num_clusters=2)
        assert amn.run(args, route="a") == N_IMAGES
        assert "training the F-CAM decoder on lpcam maps" in caplog.text
        fcam = FCAM.load(fcam_files(str(host / "sess" / "res50_cam.pth.pth"), "lpcam")["fcam"])
        assert "bank_sha256" in fcam.metadata["fit_key"]["source_key"]
        for image_id in fork["ids"]:
            check_irn_format(host / "result" / "fcam_lpcam" / f"{image_id}.npy", fork["labels"][image_id])
    with pytest.raises(ValueError, match="cannot write --lpcam_method fcam: AMN's own CAM .* F-CAM"):
        amn.run(host_args(fork), route="b")


@pytest.mark.parametrize("extra, message", [
    ({"lpcam_fcam_source": "gradcam"}, "lpcam_fcam_source must be one of"),
    ({"lpcam_fcam_epochs": 0}, "epochs must be an int >= 1"),
    ({"lpcam_fcam_learning_rate": -1.0}, "learning_rate must be > 0"),
    ({"lpcam_fcam_decoder_channels": [0]}, "decoder_channels must be a non-empty tuple"),
    ({"lpcam_fcam_crop_size": 0}, "lpcam_fcam_crop_size must be >= 1"),
])
def test_bad_options_give_one_line_errors(fork, extra, message):
    with pytest.raises(ValueError, match=message) as error:
        irn.run(host_args(fork, **extra))
    assert "\n" not in str(error.value)


def test_scales_without_one_are_refused(fork):
    with voc_standin.imported_host(fork["host"]):
        with pytest.raises(ValueError, match="put 1.0 in cam_scales") as error:
            irn.run(host_args(fork, cam_scales=(0.5,), cam_out_dir="result/half"))
    assert "\n" not in str(error.value)


def test_options_reach_the_parser():
    parser = argparse.ArgumentParser()
    irn.add_arguments(parser)
    args = parser.parse_args(["--lpcam_method", "fcam", "--lpcam_fcam_source", "recam+lpcam", *FCAM_OPTIONS])
    opts = LPCAMOptions.from_args(args)
    assert opts.method == "fcam" and opts.fcam_source == "recam+lpcam"
    assert opts.fcam.epochs == 1 and opts.fcam.decoder_channels == (8, 4)
    assert (opts.fcam_batch_size, opts.fcam_crop_size) == (4, 32)


# ------------------------------------------------------------------ EDAM and MCTformer: {class: (H, W)} dicts

DICT_NAMES = ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
DICT_SIZES = {"2007_000032": (32, 40), "2007_000039": (24, 32), "2007_000063": (32, 32), "2007_000068": (40, 24)}
DICT_LABELS = {"2007_000032": [0, 14], "2007_000039": [6], "2007_000063": [0, 6], "2007_000068": [14]}
TINY = {"epochs": 1, "decoder_channels": (8, 4)}


def _dict_voc(root: Path) -> dict:
    """JPEGs + labels for the stand-in EDAM (PSA-style list, cls_labels.json) and MCTformer (ids) datasets."""
    rng = np.random.default_rng(0)
    from PIL import Image

    (root / "JPEGImages").mkdir(parents=True)
    labels = {}
    for name in DICT_NAMES:
        h, w = DICT_SIZES[name]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        vec = np.zeros(20, np.float32)
        vec[DICT_LABELS[name]] = 1
        labels[name] = vec.tolist()
    (root / "cls_labels.json").write_text(json.dumps(labels))
    (root / "train.txt").write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in DICT_NAMES))
    (root / "train_aug_id.txt").write_text("".join(f"{n}\n" for n in DICT_NAMES))
    return labels


@pytest.fixture
def edam_host(monkeypatch):
    yield from standin_host(monkeypatch, HOSTS / "edam_host", ("infer_cls", "network", "voc12", "tool"))


@pytest.fixture
def mctformer_host(monkeypatch):
    yield from standin_host(monkeypatch, HOSTS / "mctformer_host",
                            ("models", "engine", "datasets", "psa", "vision_transformer", "utils"))


def check_dict(path: Path, name: str, minmax: bool) -> dict:
    d = np.load(path, allow_pickle=True).item()
    assert list(d) == DICT_LABELS[name] and all(type(k) is int for k in d)
    for value in d.values():
        assert value.dtype == np.float32 and value.shape == DICT_SIZES[name]
        assert np.isfinite(value).all() and value.min() >= 0 and value.max() <= 1
        np.testing.assert_allclose(value.max(), 1.0, atol=1e-5)
        if minmax:
            np.testing.assert_allclose(value.min(), 0.0, atol=1e-6)
    return d


class HookBypassingBlock(torch.nn.Module):
    """EDAM's ``ResBlock`` quirk (``de0af41``): ``__call__`` calls ``forward`` directly, so forward hooks never fire."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def __call__(self, x):
        return self.forward(x)


def test_edam_writes_out_cam_dicts_that_eval_reads(edam_host, tmp_path):
    from lpcam_plugin.adapters import edam, edam_fcam

    _dict_voc(tmp_path)
    import network.resnet38_EDAM_cls as cls_module
    import voc12.data
    from tool import imutils

    torch.manual_seed(0)
    model = edam.prepare_model(cls_module.Net(), "cpu")
    for name in ("b2", "b3", "b4"):  # the real blocks ignore forward hooks
        setattr(model, name, HookBypassingBlock(getattr(model, name)))
    fired = []
    model.b2.register_forward_hook(lambda *a: fired.append(1))
    model.forward_as_dict(torch.zeros(1, 3, 16, 16))
    assert fired == []

    def transform(img):
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    train = voc12.data.VOC12ClsDatasetMSF(str(tmp_path / "train.txt"), voc12_root=str(tmp_path), scales=(1.0,),
                                          inter_transform=transform)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fcam = edam_fcam.fit(model, train, source="cam", batch_size=2, crop_size=24, progress=False, **TINY)
    assert fcam.feature_layer_ == "host.bn7" and fcam.skip_layers_ == ["stride8", "stride4", "stride2"]
    assert [type(getattr(model, n)) for n in ("b2", "b3", "b4")] == [HookBypassingBlock] * 3  # blocks put back
    for key, value in model.state_dict().items():  # the host network is left as it was
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    fcam.save(tmp_path / "fcam_edam.npz")
    fcam = FCAM.load(tmp_path / "fcam_edam.npz")
    dataset = voc12.data.VOC12ClsDatasetMSF(str(tmp_path / "train.txt"), voc12_root=str(tmp_path),
                                            scales=(1, 0.5), inter_transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
    assert edam_fcam.run(model, fcam, loader, out_cam=tmp_path / "out_fcam", progress=False) == len(DICT_NAMES)
    for name in DICT_NAMES:
        check_dict(tmp_path / "out_fcam" / f"{name}.npy", name, minmax=False)
    # EDAM's eval rebuilds the 21-channel tensor from these dicts (key + 1): our host-rule loader reads them
    d = load_class_dict(tmp_path / "out_fcam" / f"{DICT_NAMES[0]}.npy", allow_pickle=True)
    assert edam.cam_dict_tensor(d).shape == (21,) + DICT_SIZES[DICT_NAMES[0]]
    with pytest.raises(ValueError, match="source must be 'cam', a PrototypeBank or a callable"):
        edam_fcam.fit(model, train, source="lpcam", batch_size=2, crop_size=24, progress=False, **TINY)
    with pytest.raises(ValueError, match="fewer than one batch"):
        edam_fcam.fit(model, train, batch_size=16, crop_size=24, progress=False, **TINY)


def test_mctformer_folds_tokens_and_writes_cam_npy_dicts(mctformer_host, tmp_path):
    from lpcam_plugin.adapters import mctformer_fcam

    _dict_voc(tmp_path)
    import datasets
    import models

    torch.manual_seed(0)
    model = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20).eval()
    args = argparse.Namespace(img_list=str(tmp_path), data_path=str(tmp_path), scales=[1.0], data_set="VOC12MS",
                              input_size=224, gen_attention_maps=True)  # what upstream's build_dataset reads
    dataset, _ = datasets.build_dataset(is_train=False, args=args, gen_attn=True)
    encoder = mctformer_fcam.MCTformerBackbone(model)
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        features = encoder(x)
        tokens = model.forward_features(x)[1]
    assert features.shape == (2, tokens.shape[-1], 4, 5)  # the head input, (B, D, H/p, W/p)
    torch.testing.assert_close(features, tokens.transpose(1, 2).reshape(2, -1, 4, 5))
    fcam = mctformer_fcam.fit(model, dataset, source="cam", batch_size=2, crop_size=24, progress=False, **TINY)
    assert fcam.feature_layer_ == "features" and fcam.skip_layers_ == ["tokens0"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
    written = mctformer_fcam.run(model, fcam, loader, names=DICT_NAMES, cam_npy_dir=tmp_path / "npy", progress=False)
    assert written == len(DICT_NAMES)
    for name in DICT_NAMES:
        check_dict(tmp_path / "npy" / f"{name}.npy", name, minmax=True)
    with pytest.raises(ValueError, match="skip_blocks must be distinct block indices"):
        mctformer_fcam.MCTformerBackbone(model, [1])

