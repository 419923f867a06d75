"""RCM + MAM in EDAM's classifier training (``lpcam_plugin.adapters.edam_pixelsup_train``) on the
stand-in EDAM host: the checkpoint format its ``infer_cls.py`` and our EDAM adapter read, the
losses in use, resume, the ``.cuda()`` redirect, and option errors."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HOSTS, Interrupt, standin_host
from PIL import Image

from lpcam_plugin import PrototypeBank
from lpcam_plugin.adapters import edam
from lpcam_plugin.adapters import edam_pixelsup_train as edam_pss
from lpcam_plugin.adapters.edam import train as edam_train

pytestmark = [pytest.mark.filterwarnings("ignore:no foreground centre passed:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:class\\(es\\) .* have no prototypes:RuntimeWarning")]

HOST = HOSTS / "edam_host"
NAMES = ["2007_000032", "2007_000039", "2007_000063", "2007_000068", "2007_000121"]
LABELS = {"2007_000032": [0, 14], "2007_000039": [6, 14], "2007_000063": [6], "2007_000068": [0, 6],
          "2007_000121": [14]}
#: (first, second, common class): 4 pairs, batches of 2 -> 2 steps per epoch, 2 epochs = 4 steps.
PAIRS = [(0, 1, 14), (2, 3, 6), (3, 0, 0), (4, 1, 14)]
EPOCHS, BATCH = 2, 2
MAX_STEP = EPOCHS * len(PAIRS) // BATCH


@pytest.fixture
def host(monkeypatch):
    yield from standin_host(monkeypatch, HOST, ("infer_cls", "network", "voc12", "tool"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny VOC-like folder (JPEGs, json labels), EDAM's pair list, a plain list and initial weights."""
    tmp = tmp_path_factory.mktemp("edam_pss")
    rng = np.random.default_rng(0)
    root = tmp / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    labels = {}
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        vec = np.zeros(20, np.float32)
        vec[LABELS[name]] = 1
        labels[name] = vec.tolist()
    (root / "cls_labels.json").write_text(json.dumps(labels))
    pairs = tmp / "EDAM_train.txt"
    pairs.write_text("".join(f"/JPEGImages/{NAMES[a]}.jpg /JPEGImages/{NAMES[b]}.jpg {c}\n" for a, b, c in PAIRS))
    plain = tmp / "train.txt"
    plain.write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in NAMES))
    return {"root": root, "pairs": pairs, "list": plain, "tmp": tmp}


def _init_weights(data) -> Path:
    path = data["tmp"] / "init.pth"
    if not path.exists():
        import network.resnet38_EDAM_cls as cls_module

        torch.manual_seed(1)
        model = cls_module.Net()
        with torch.no_grad():
            model.bn7.running_mean.normal_(0, 0.3)
            model.bn7.running_var.uniform_(0.5, 2.0)
        torch.save(model.state_dict(), path)
    return path


def argv(data, session: str, *extra: str) -> list:
    return ["--weights", str(data["tmp"] / "init.pth"), "--voc12_root", str(data["root"]), "--train_list",
            str(data["pairs"]), "--batch_size", str(BATCH), "--max_epoches", str(EPOCHS), "--crop_size", "32",
            "--lr", "0.01", "--num_workers", "0", "--session_name", str(data["tmp"] / session),
            "--lpcam_pss_epoch_steps", "2", "--lpcam_pss_scales", "1.0", "0.5", "--lpcam_pss_embed_dim", "8",
            "--lpcam_pss_device", "cpu", "--lpcam_pss_progress", "no", *extra]


def train(data, session: str, *extra: str):
    _init_weights(data)
    args = edam_pss.build_parser().parse_args(argv(data, session, *extra))
    return edam_pss.train(args)


def _ensure_full(data) -> None:
    """The uninterrupted run the other tests compare with (trained once per module)."""
    if not (data["tmp"] / "full.pss_train.pt").exists():
        train(data, "full")


def _weights(data, session: str) -> dict:
    return torch.load(data["tmp"] / session / "0.pth", weights_only=True)


def test_weights_in_the_host_format_run_through_infer_cls_and_our_cam_adapter(host, data, monkeypatch):
    _ensure_full(data)
    import network.resnet38_EDAM_cls as cls_module

    weights = _weights(data, "full")
    plain = cls_module.Net().state_dict()
    assert list(weights) == list(plain)  # model.state_dict(): the host's keys, in order
    assert all(v.device.type == "cpu" and v.shape == plain[k].shape for k, v in weights.items())
    assert sorted(p.name for p in (data["tmp"] / "full").iterdir()) == ["0.pth"]  # step // 1322 = 0
    state = torch.load(str(data["tmp"] / "full") + ".pss_train.pt", weights_only=True)
    assert state["format"] == edam_pss.STATE_FORMAT and state["global_step"] == MAX_STEP
    assert {"projection.weight", "prototypes", "prototype_seen"} <= set(state["pss"])
    assert state["fingerprint"]["config"]["cls_weight"] == 0.0
    assert state["fingerprint"]["config"]["mam_start_epoch"] == 1  # round(0.3 x 4 steps / 2)
    # the stand-in of EDAM's infer_cls.py loads the weights strictly and writes CAM dicts
    monkeypatch.chdir(data["tmp"])
    monkeypatch.setattr(sys, "argv", ["infer_cls.py", "--weights", str(data["tmp"] / "full" / "0.pth"),
                                      "--network", "network.resnet38_EDAM_cls", "--infer_list", str(data["list"]),
                                      "--voc12_root", str(data["root"]), "--out_cam", "host_cam"])
    runpy.run_path(str(HOST / "infer_cls.py"), run_name="__main__")
    assert sorted(p.stem for p in (data["tmp"] / "host_cam").glob("*.npy")) == NAMES
    # this package's EDAM CAM-step adapter (LPCAM) runs on the result unchanged
    net = cls_module.Net()
    net.load_state_dict(weights, strict=True)
    net = edam.prepare_model(net, "cpu")
    import voc12.data
    from tool import imutils

    def transform(img):
        return imutils.HWC_to_CHW(net.normalize(np.asarray(img)))

    dataset = voc12.data.VOC12ClsDatasetMSF(str(data["list"]), voc12_root=str(data["root"]),
                                            scales=(1, 0.5, 1.5, 2.0), inter_transform=transform)
    edam.fit(net, dataset, num_clusters=2, pool_cap=100, progress=False, bank_path=data["tmp"] / "bank.npz")
    bank = PrototypeBank.load(data["tmp"] / "bank.npz")
    assert edam.run(net, bank, dataset, out_cam=data["tmp"] / "lpcam", progress=False) == len(NAMES)
    cam = np.load(data["tmp"] / "lpcam" / f"{NAMES[0]}.npy", allow_pickle=True).item()
    assert sorted(cam) == LABELS[NAMES[0]]


def test_pss_losses_join_edam_loss_and_change_the_classifier(host, data):
    _ensure_full(data)
    history = torch.load(data["tmp"] / "full.pss_train.pt", weights_only=True)["history"]
    assert len(history) == EPOCHS
    assert [h["mam"] > 0 for h in history] == [False, True] and all(h["rcm"] != 0 for h in history)
    for h in history:  # what was back-propagated: EDAM's BCE + rcm (+ mam from pss epoch 1)
        assert h["total"] == pytest.approx(h["edam"] + h["rcm"] + h["mam"], rel=1e-5)
    train(data, "no_extra", "--lpcam_pss_rcm_weight", "0", "--lpcam_pss_mam_weight", "0")
    plain_history = torch.load(data["tmp"] / "no_extra.pss_train.pt", weights_only=True)["history"]
    assert all(h["total"] == pytest.approx(h["edam"]) for h in plain_history)
    full, plain = _weights(data, "full"), _weights(data, "no_extra")
    moved = max(float((full[k] - plain[k]).abs().max()) for k in plain if plain[k].is_floating_point())
    assert moved > 1e-5  # RCM + MAM change the classifier


def test_resume_mid_epoch_equals_the_uninterrupted_run(host, data, monkeypatch):
    _ensure_full(data)
    original = edam_pss.host_logits
    calls = {"n": 0}

    def dies_at_step_three(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return original(*a, **k)

    monkeypatch.setattr(edam_train, "host_logits", dies_at_step_three)
    with pytest.raises(Interrupt):
        train(data, "resumed")
    state = torch.load(data["tmp"] / "resumed.pss_train.pt", weights_only=True)
    assert state["global_step"] == 2 and len(state["history"]) == 1
    monkeypatch.setattr(edam_train, "host_logits", original)
    train(data, "resumed")
    full, resumed = _weights(data, "full"), _weights(data, "resumed")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0)
    a = torch.load(data["tmp"] / "full.pss_train.pt", weights_only=True)
    b = torch.load(data["tmp"] / "resumed.pss_train.pt", weights_only=True)
    for key in a["pss"]:
        torch.testing.assert_close(b["pss"][key], a["pss"][key], rtol=0, atol=0)
    assert b["history"] == a["history"]
    with pytest.raises(ValueError, match="different config") as error:  # changed settings refuse the state
        train(data, "resumed", "--lpcam_pss_temperature", "0.1")
    assert "\n" not in str(error.value)


def test_a_state_trained_from_other_initial_weights_is_refused(host, data):
    """``--weights`` names the same file, but its content changed: the state records the digest of the
    network as loaded, not the path, and is refused before it is loaded."""
    _ensure_full(data)
    path = _init_weights(data)
    original = path.read_bytes()
    weights = torch.load(path, weights_only=True)
    weights["bn7.running_mean"] = weights["bn7.running_mean"] + 0.1
    torch.save(weights, path)
    try:
        with pytest.raises(ValueError, match=r"full.pss_train.pt was written by EDAM RCM\+MAM classifier training "
                                             r"with a different model_weights;"):
            train(data, "full")
    finally:
        path.write_bytes(original)


def test_image_labels_and_the_cuda_redirect():
    label = torch.tensor([[1.0] + [0.0] * 19 + [0.0, 1.0] + [0.0] * 18])  # image 1: class 3; image 2: class 7
    order = [3, 7] + [c for c in range(20) if c not in (3, 7)]
    rebuilt = edam_pss.image_labels(label, [torch.tensor([c]) for c in order])
    assert rebuilt.shape == (2, 20) and rebuilt[0].nonzero().flatten().tolist() == [3]
    assert rebuilt[1].nonzero().flatten().tolist() == [7]
    original = torch.Tensor.cuda
    with edam_pss.cuda_calls_to(torch.device("cpu")):
        assert torch.ones(2).cuda().device.type == "cpu"
    assert torch.Tensor.cuda is original


def test_the_unchanged_host_forward_runs_on_cpu_only_through_the_redirect(host):
    import network.resnet38_EDAM_cls as cls_module

    model = cls_module.Net()
    img, ids = torch.randn(1, 2, 3, 16, 16), [torch.tensor([c]) for c in range(20)]
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
            model(img, ids)  # segment_info.cuda()
    assert edam_pss.host_logits(model, img, ids, torch.device("cpu")).shape == (40,)


@pytest.mark.parametrize("extra, message", [
    (("--lpcam_pss_rcm_form", "log"), "rcm_form must be one of"),
    (("--lpcam_pss_scales", "0.5", "2.0"), "scales must be distinct positive numbers including 1.0"),
    (("--batch_size", "0"), "--batch_size must be an int >= 1"),
    (("--lpcam_pss_epoch_steps", "-1"), "--lpcam_pss_epoch_steps must be >= 1"),
    (("--lpcam_pss_loader_workers", "-2"), "--lpcam_pss_loader_workers must be >= 0"),
])
def test_bad_options_give_one_line_errors(host, data, extra, message):
    args = edam_pss.build_parser().parse_args(argv(data, "bad", *extra))
    with pytest.raises(ValueError) as error:
        edam_pss.TrainOptions.from_args(args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_refuses_several_processes_and_reports_a_missing_host(host, data, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="runs in one process"):
        train(data, "ddp")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.chdir(tmp_path)  # no EDAM checkout here
    for name in ("voc12", "voc12.data"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(HOST), str(tmp_path))])
    with pytest.raises(SystemExit) as error:
        edam_pss.main(argv(data, "nohost"))
    assert "cannot import EDAM's voc12.data" in str(error.value) and "\n" not in str(error.value)
