"""EDAM adapter against a tiny stand-in of the host (tests/hosts/edam_host)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import HOSTS, standin_host
from PIL import Image

from lpcam_plugin import PrototypeBank, lpcam_map, select_prototypes
from lpcam_plugin.adapters import edam
from lpcam_plugin.adapters.common import crf as shared
from lpcam_plugin.core import evaluate as ev
from lpcam_plugin.core.formats import write_class_dict
from lpcam_plugin.core.threshold import folder_threshold

pytestmark = pytest.mark.filterwarnings("ignore:class \\d+. empty foreground pool:RuntimeWarning")

HOST = HOSTS / "edam_host"
NAMES = ["2007_000032", "2007_000039", "2007_000063"]
SIZES = {"2007_000032": (24, 32), "2007_000039": (20, 28), "2007_000063": (24, 24)}
LABELS = {"2007_000032": [0, 14], "2007_000039": [6], "2007_000063": [0, 6]}
D = 32


@pytest.fixture
def host(monkeypatch):
    """The stand-in EDAM checkout on sys.path; its modules are removed from sys.modules afterwards."""
    yield from standin_host(monkeypatch, HOST, ("infer_cls", "network", "voc12", "tool"))


@pytest.fixture
def voc(tmp_path):
    """Tiny VOC-like folder: JPEGs, EDAM list file, json labels, saliency PNGs, GT PNGs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "sal", "gt"):
        (root / sub).mkdir(parents=True)
    labels = {}
    for name in NAMES:
        h, w = SIZES[name]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / "sal" / f"{name}.png")
        gt = rng.choice([0] + [c + 1 for c in LABELS[name]], size=(h, w)).astype(np.uint8)
        gt[0, :3] = 255
        Image.fromarray(gt).save(root / "gt" / f"{name}.png")
        vec = np.zeros(20, np.float32)
        vec[LABELS[name]] = 1
        labels[name] = vec.tolist()
    (root / "cls_labels.json").write_text(json.dumps(labels))
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in NAMES))
    return root, lst


def _net(host_dir):
    import network.resnet38_EDAM_cls as cls_module

    torch.manual_seed(0)
    model = cls_module.Net()
    with torch.no_grad():
        model.bn7.running_mean.normal_(0, 0.3)
        model.bn7.running_var.uniform_(0.5, 2.0)
    return edam.prepare_model(model, "cpu")  # EDAM's train()/eval() return None: no chaining


def _dataset(model, voc):
    import voc12.data
    from tool import imutils

    root, lst = voc

    def transform(img):
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    return voc12.data.VOC12ClsDatasetMSF(str(lst), voc12_root=str(root), scales=(1, 0.5, 1.5, 2.0),
                                         inter_transform=transform)


def _bank(seed=0, missing=(), model=None):
    """Random context prototypes; class prototypes are feature vectors of the stand-in net when
    ``model`` is given (so every class map has positive support), else random."""
    gen = torch.Generator().manual_seed(seed)
    if model is not None:
        with torch.no_grad():
            x = torch.randn(1, 3, 24, 32, generator=gen)
            pool = model.forward_as_dict(x)["conv6"][0].reshape(D, -1).T  # (12, D)
        protos = {c: pool[torch.randperm(pool.shape[0], generator=gen)[:3]] for c in range(20) if c not in missing}
    else:
        protos = {c: torch.randn(3, D, generator=gen) for c in range(20) if c not in missing}
    context = {c: torch.randn(2, D, generator=gen) for c in range(20) if c not in missing}
    return PrototypeBank(protos, context, num_classes=20, feature_dim=D)


def _oracle_maps(model, bank, views, size):
    """EDAM geometry written out: per view raw LPCAM of conv6, upsample, flip back, sum, / max."""
    classes = [c for c in range(20) if bank.has_prototypes(c)]
    total = np.zeros((20,) + tuple(size), np.float32)
    for i, view in enumerate(views):
        x = torch.as_tensor(np.asarray(view)).float()[None]
        with torch.no_grad():
            feats = model.forward_as_dict(x)["conv6"]
        maps = F.interpolate(lpcam_map(feats, bank, classes, normalize=False), size,
                             mode="bilinear", align_corners=False)[0].numpy()
        total[classes] += np.flip(maps, -1) if i % 2 else maps
    with np.errstate(invalid="ignore"):
        return total / total.max(axis=(1, 2), keepdims=True)


def _eval_oracle(pred_dicts, gts, theta, alpha, beta, crf, sals):
    """EDAM eval.py's counting, written out: returns IoU per class (21,)."""
    tp, p, t = np.zeros(21), np.zeros(21), np.zeros(21)
    for name, d in pred_dicts.items():
        h, w = list(d.values())[0].shape
        tensor = np.zeros((21, h, w), np.float32)
        for key in d:
            tensor[key if crf else key + 1] = d[key]
        if sals is not None:
            sal = np.where(sals[name] <= theta * 100, 1, 0)
            tensor = np.where(tensor < alpha, -2, tensor)
            tensor = np.where(tensor > beta, 2, tensor)
            tensor[0] = sal
        elif not crf:
            tensor[0] = theta
        pred = np.argmax(tensor, 0)
        gt = gts[name]
        cal = gt < 255
        for i in range(21):
            p[i] += np.sum((pred == i) * cal)
            t[i] += np.sum((gt == i) * cal)
            tp[i] += np.sum((gt == i) * (pred == gt) * cal)
    return tp / (t + p - tp + 1e-10), (t + p) > 0


PYDENSECRF = HOSTS / "pydensecrf_standin"


@pytest.fixture
def densecrf(monkeypatch):
    """The pydensecrf stand-in (rejects read-only buffers, like the real Cython module) on sys.path."""
    yield from standin_host(monkeypatch, PYDENSECRF, ("pydensecrf",))


def test_eval_returns_none_and_prepare_model_does_not_chain(host):
    import network.resnet38_EDAM_cls as cls_module

    model = cls_module.Net()
    assert model.eval() is None  # as upstream: Net.train() has no return, so model.eval().to(...) crashes
    model.train()
    assert edam.prepare_model(model, "cpu") is model and not model.training


def test_crf_outputs_get_a_writable_image(host, voc, tmp_path, densecrf):
    """np.asarray(PIL image) is read-only and pydensecrf rejects it; the adapter passes a copy."""
    model = _net(host)
    root, _ = voc
    from PIL import Image as PILImage

    with PILImage.open(root / "JPEGImages" / f"{NAMES[0]}.jpg") as image:
        read_only = np.asarray(image.convert("RGB"))
    assert not read_only.flags.writeable
    cam = {0: np.full(read_only.shape[:2], 0.7, np.float32)}
    crf = shared.crf_dict(cam, read_only, alpha=1, t=3)  # default CRF = pydensecrf (the stand-in)
    assert list(crf) == [0, 1] and crf[1].shape == read_only.shape[:2]
    count = edam.run(model, _bank(model=model), _dataset(model, voc), out_crf=tmp_path / "crf",
                     image_loader=edam.voc_image_loader(root), progress=False)
    assert count == len(NAMES) and len(list((tmp_path / "crf").glob("*.npy"))) == len(NAMES)


def test_selection_weight_sum_rows_and_conv_equivalence(host):
    model = _net(host)
    weight = edam.selection_weight(model)
    full = model.mask_layer.weight.detach()
    assert weight.shape == (20, D)
    torch.testing.assert_close(weight, full[:20].sum(dim=(2, 3)))
    torch.testing.assert_close(edam.selection_weight(full, mode="center"), full[:20, :, 1, 1])
    # For a spatially constant feature the 3x3 conv at an interior pixel equals the summed taps.
    f = torch.randn(D)
    with torch.no_grad():
        out = model.mask_layer(f.view(1, D, 1, 1).expand(1, D, 5, 5).contiguous())[0, :20, 2, 2]
    torch.testing.assert_close(out, weight @ f, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="21, D"):
        edam.selection_weight(full[:20])


def test_spare_channel_20_stays_out_of_the_softmax(host, voc):
    """Decision: row 20 is not a class; including it in the softmax would change the selection."""
    model = _net(host)
    with torch.no_grad():  # a spare row that co-fires with class 3, as an untrained channel may
        model.mask_layer.weight[20] = 1.5 * model.mask_layer.weight[3]
    weight20 = edam.selection_weight(model)
    spare = model.mask_layer.weight.detach()[20].sum(dim=(1, 2))
    w3 = weight20[3]
    centres = torch.stack([w3 * 20 / w3.dot(w3), w3 * 25 / w3.dot(w3)])  # class-3 logits 20 and 25
    kept20, _ = select_prototypes(centres, centres[:0], weight20, 3)
    with pytest.warns(RuntimeWarning, match="keeping the best"):
        kept21, _ = select_prototypes(centres, centres[:0], torch.cat([weight20, spare[None]]), 3)
    assert kept20.shape[0] == 2 and kept21.shape[0] == 1
    # The adapter ignores row 20: changing it leaves the selection weight and the fitted bank unchanged.
    dataset = _dataset(model, voc)
    kwargs = dict(baseline="cam", num_clusters=2, pool_cap=200, progress=False)
    bank_a = edam.fit(model, dataset, **kwargs).bank_
    with torch.no_grad():
        model.mask_layer.weight[20].mul_(50.0)
    torch.testing.assert_close(edam.selection_weight(model), weight20)
    bank_b = edam.fit(model, dataset, **kwargs).bank_
    for c in range(20):
        torch.testing.assert_close(bank_a.class_prototypes[c], bank_b.class_prototypes[c])
        torch.testing.assert_close(bank_a.context_prototypes[c], bank_b.context_prototypes[c])


def test_backbone_features_are_signed_bn7_output(host):
    model = _net(host)
    x = torch.randn(1, 3, 24, 32)
    feats = edam.backbone_features(model, x)
    with torch.no_grad():
        conv6 = model.forward_as_dict(x)["conv6"]
    assert feats.shape == (1, D, 3, 4)
    torch.testing.assert_close(feats, conv6)
    assert (feats < 0).any(), "bn7 has no ReLU: signed features must reach LPCAM"
    assert not model.bn7._forward_hooks


def test_run_writes_edam_formats_and_matches_core(host, voc, tmp_path):
    model = _net(host)
    bank = _bank(missing=(14,), model=model)
    root, _ = voc
    calls = []

    def fake_crf(image, probs, t, labels):
        calls.append((image.shape, image.dtype, probs.copy(), t, labels))
        return np.asarray(probs, np.float32) * 0.5

    out = {k: tmp_path / k for k in ("cam", "cam_pred", "crf", "crf_pred")}
    count = edam.run(model, bank, _dataset(model, voc), out_cam=out["cam"], out_cam_pred=out["cam_pred"],
                     out_crf=out["crf"], out_crf_pred=out["crf_pred"], sal_path=root / "sal", theta=0.2,
                     alpha=1e-6, beta=0.99999, image_loader=edam.voc_image_loader(root), crf_fn=fake_crf,
                     progress=False)
    assert count == len(NAMES)
    for name in NAMES:
        h, w = SIZES[name]
        cam = np.load(out["cam"] / f"{name}.npy", allow_pickle=True).item()
        assert list(cam) == LABELS[name] and all(type(k) is int for k in cam)
        views = _dataset(model, voc)[NAMES.index(name)][1]
        expected = _oracle_maps(model, bank, views, (h, w))
        for c, m in cam.items():
            assert m.dtype == np.float32 and m.shape == (h, w)
            assert np.isfinite(m).all() and m.min() >= 0
            if c == 14:  # no prototypes: zero map, not NaN
                assert not m.any()
            else:
                assert m.max() == pytest.approx(1.0)
                np.testing.assert_allclose(m, expected[c], rtol=1e-4, atol=1e-5)
        sal = np.array(Image.open(root / "sal" / f"{name}.png"))
        tensor = np.zeros((21, h, w), np.float32)
        for c, m in cam.items():
            tensor[c + 1] = m
        tensor = np.where(tensor < 1e-6, -2, tensor)
        tensor = np.where(tensor > 0.99999, 2, tensor)
        tensor[0] = np.where(sal <= 20, 1, 0)
        pred = np.array(Image.open(out["cam_pred"] / f"{name}.png"))
        assert pred.dtype == np.uint8
        np.testing.assert_array_equal(pred, np.argmax(tensor, 0))
        crf = np.load(out["crf"] / f"{name}.npy", allow_pickle=True).item()
        assert list(crf) == [0] + [c + 1 for c in LABELS[name]]
        assert all(v.shape == (h, w) and v.dtype == np.float32 for v in crf.values())
        crf_pred = np.array(Image.open(out["crf_pred"] / f"{name}.png"))
        np.testing.assert_array_equal(crf_pred, edam.prediction(crf, theta=0.2, alpha=1e-6, beta=0.99999,
                                                                 saliency=sal, crf=True))
    image_shape, dtype, probs, t, labels = calls[0]
    assert image_shape == SIZES[NAMES[0]] + (3,) and dtype == np.uint8 and t == 3 and labels == 3
    np.testing.assert_allclose(probs[0], 1 - probs[1:].max(axis=0), rtol=1e-6)  # bg = (1 - max) ** 1
    assert not model.bn7._forward_hooks


def test_patch_runs_unchanged_infer_cls_and_matches_run(host, voc, tmp_path, monkeypatch):
    model = _net(host)
    weights = tmp_path / "edam.pth"
    torch.save(model.state_dict(), weights)
    bank = _bank(seed=1, model=model)
    root, lst = voc
    monkeypatch.chdir(tmp_path)
    import network.resnet38_EDAM_cls as cls_module

    original = cls_module.Net.__dict__["forward_cam"]
    argv = ["--weights", str(weights), "--network", "network.resnet38_EDAM_cls", "--infer_list", str(lst),
            "--voc12_root", str(root), "--out_cam", str(tmp_path / "host_cam"),
            "--out_cam_pred", str(tmp_path / "host_pred"), "--sal_path", str(root / "sal"), "--theta", "0.2",
            "--alpha", "0.25", "--beta", "0.95"]
    edam.run_infer_cls(bank, argv, script=HOST / "infer_cls.py")
    assert cls_module.Net.__dict__["forward_cam"] is original
    edam.run(model, bank, _dataset(model, voc), out_cam=tmp_path / "ours", out_cam_pred=tmp_path / "ours_pred",
             sal_path=root / "sal", theta=0.2, alpha=0.25, beta=0.95, progress=False)
    for name in NAMES:
        host_cam = np.load(tmp_path / "host_cam" / f"{name}.npy", allow_pickle=True).item()
        ours = np.load(tmp_path / "ours" / f"{name}.npy", allow_pickle=True).item()
        assert list(host_cam) == list(ours) == LABELS[name]
        for c in ours:
            np.testing.assert_allclose(host_cam[c], ours[c], rtol=1e-4, atol=1e-5)
        host_pred = np.array(Image.open(tmp_path / "host_pred" / f"{name}.png"))
        ours_pred = np.array(Image.open(tmp_path / "ours_pred" / f"{name}.png"))
        assert (host_pred == ours_pred).mean() > 0.99  # float ties at the thresholds aside


def test_patched_forward_cam_contract(host):
    import network.resnet38_EDAM_cls as cls_module

    model = _net(host)
    bank = _bank(missing=(5,))
    x = torch.randn(2, 3, 24, 32)
    host_out = model.forward_cam(x)
    with edam.patch(bank, network="network.resnet38_EDAM_cls") as handle:
        assert handle.active
        with pytest.raises(RuntimeError, match="already patched"):
            edam.patch(bank, network=cls_module.Net)
        with pytest.raises(RuntimeError, match="patched"):
            edam.host_cam(model, [x[:1]], (24, 32))
        out = model.forward_cam(x)
    assert not handle.active
    handle.remove()  # idempotent
    assert out.shape == host_out.shape == (2, 21, 3, 4) and out.dtype == torch.float32
    assert (out >= 0).all() and not out[:, 20].any() and not out[:, 5].any()
    with torch.no_grad():
        feats = model.forward_as_dict(x)["conv6"]
    classes = [c for c in range(20) if c != 5]
    torch.testing.assert_close(out[:, classes], lpcam_map(feats, bank, classes, normalize=False))
    torch.testing.assert_close(model.forward_cam(x), host_out)
    with pytest.raises(ValueError, match="20 classes"):
        edam.patch(PrototypeBank({0: torch.randn(2, D)}, num_classes=3), network=cls_module.Net)


def test_fit_with_host_baseline_saves_bank(host, voc, tmp_path):
    model = _net(host)
    path = tmp_path / "bank.npz"
    est = edam.fit(model, _dataset(model, voc), bank_path=path, num_clusters=2, pool_cap=100, progress=False)
    bank = PrototypeBank.load(path, expected_feature_dim=D)
    assert bank.metadata["host"] == "EDAM" and bank.metadata["baseline"] == "host"
    assert est.n_images_seen_ == len(NAMES)
    present = sorted({c for cs in LABELS.values() for c in cs})
    assert [c for c in range(20) if bank.has_prototypes(c)] == present
    assert not model.bn7._forward_hooks
    # The baseline is EDAM's own CAM: forward_cam over the 8 views, normalised by the max.
    views = _dataset(model, voc)[0][1]
    cam, feats = edam.host_cam(model, views, SIZES[NAMES[0]])
    assert cam.shape == (20,) + SIZES[NAMES[0]] and feats.shape == (D, 3, 4)
    assert float(cam.max()) == pytest.approx(1.0) and float(cam.min()) >= 0


def test_evaluate_follows_eval_py_rule(host, tmp_path, voc):
    root, _ = voc
    rng = np.random.default_rng(3)
    pred_dir, crf_dir = tmp_path / "cams", tmp_path / "crf"
    dicts, crfs, gts, sals = {}, {}, {}, {}
    for name in NAMES:
        h, w = SIZES[name]
        dicts[name] = {c: rng.random((h, w)).astype(np.float32) for c in LABELS[name]}
        crfs[name] = {0: rng.random((h, w)).astype(np.float32),
                      **{c + 1: rng.random((h, w)).astype(np.float32) for c in LABELS[name]}}
        write_class_dict(pred_dir / f"{name}.npy", dicts[name])
        write_class_dict(crf_dir / f"{name}.npy", crfs[name])
        gts[name] = np.array(Image.open(root / "gt" / f"{name}.png"))
        sals[name] = np.array(Image.open(root / "sal" / f"{name}.png"))
    thetas = (0.3, 0.5)
    plain = edam.evaluate(pred_dir, root / "gt", NAMES, thetas=thetas, allow_pickle=True, progress=False)
    core = ev.evaluate_folder(pred_dir, root / "gt", NAMES, fmt="dict", allow_pickle=True, thresholds=thetas,
                              progress=False)
    np.testing.assert_array_equal(plain.confusion, core.confusion)
    for i, theta in enumerate(thetas):
        iou, seen = _eval_oracle(dicts, gts, theta, 0, 1, False, None)
        np.testing.assert_allclose(plain.metrics["iou"][i][seen], iou[seen], atol=1e-9)
    sal = edam.evaluate(pred_dir, root / "gt", NAMES, thetas=thetas, alpha=0.25, beta=0.95, sal_path=root / "sal",
                        allow_pickle=True, progress=False)
    crf = edam.evaluate(crf_dir, root / "gt", NAMES, thetas=0.2, alpha=1e-6, beta=0.99999, crf=True,
                        sal_path=root / "sal", allow_pickle=True, progress=False)
    crf_plain = edam.evaluate(crf_dir, root / "gt", NAMES, thetas=0.2, crf=True, allow_pickle=True, progress=False)
    for result, args, data in ((sal, (0.25, 0.95, False, sals), dicts), (crf, (1e-6, 0.99999, True, sals), crfs),
                               (crf_plain, (0, 1, True, None), crfs)):
        for i, theta in enumerate(result.thresholds):
            iou, seen = _eval_oracle(data, gts, theta, *args)
            np.testing.assert_allclose(result.metrics["iou"][i][seen], iou[seen], atol=1e-9)
    assert not np.array_equal(sal.confusion, plain.confusion)
    # eval.py averages over all 21 labels (absent classes count 0); that is the default here.
    for result, args, data in ((plain, (0, 1, False, None), dicts), (crf, (1e-6, 0.99999, True, sals), crfs)):
        for i, theta in enumerate(result.thresholds):
            iou, seen = _eval_oracle(data, gts, theta, *args)
            assert not seen.all()  # the subset lacks most classes: the two rules differ
            assert result.miou[i] == pytest.approx(iou.mean(), abs=1e-9)
            assert result.at(i)["miou"] == pytest.approx(iou.mean(), abs=1e-9)
            np.testing.assert_allclose(result.metrics["iou"][i], iou, atol=1e-9)
    present = edam.evaluate(pred_dir, root / "gt", NAMES, thetas=thetas, allow_pickle=True, mean="present",
                            progress=False)
    for i, theta in enumerate(thetas):
        iou, seen = _eval_oracle(dicts, gts, theta, 0, 1, False, None)
        assert present.miou[i] == pytest.approx(iou[seen].mean(), abs=1e-9)
    with pytest.raises(ValueError, match="mean must be one of"):
        edam.evaluate(pred_dir, root / "gt", NAMES, thetas=0.5, allow_pickle=True, mean="some")
    with pytest.raises(ValueError, match="allow_pickle"):
        edam.evaluate(pred_dir, root / "gt", NAMES, thetas=0.5)
    # auto_threshold: one theta, chosen from the dicts alone (or matched to a reference CAM's share).
    auto = edam.evaluate(pred_dir, root / "gt", NAMES, auto_threshold=True, allow_pickle=True, progress=False)
    chosen = folder_threshold(pred_dir, NAMES, fmt="dict", allow_pickle=True)
    assert auto.thresholds.tolist() == [chosen.threshold] and chosen.rule == "otsu"
    iou, _ = _eval_oracle(dicts, gts, chosen.threshold, 0, 1, False, None)
    assert auto.miou[0] == pytest.approx(iou.mean(), abs=1e-9)
    squeezed_dir = tmp_path / "squeezed"
    for name in NAMES:
        write_class_dict(squeezed_dir / f"{name}.npy", {c: m ** 0.2 for c, m in dicts[name].items()})
    matched = edam.evaluate(squeezed_dir, root / "gt", NAMES, auto_threshold=True, reference_dir=pred_dir,
                            allow_pickle=True, progress=False)
    share = folder_threshold(squeezed_dir, NAMES, reference_dir=pred_dir, fmt="dict", allow_pickle=True)
    assert share.rule == "share" and matched.thresholds.tolist() == [share.threshold]
    assert share.foreground_share == pytest.approx(chosen.foreground_share, abs=0.01)
    with pytest.raises(ValueError, match="not a saliency or CRF cut"):
        edam.evaluate(pred_dir, root / "gt", NAMES, auto_threshold=True, sal_path=root / "sal", allow_pickle=True)
    with pytest.raises(ValueError, match="only with auto_threshold"):
        edam.evaluate(pred_dir, root / "gt", NAMES, reference_dir=pred_dir, allow_pickle=True)


def test_bad_inputs_and_optional_crf(host, voc, tmp_path):
    model = _net(host)
    bank = _bank()
    with pytest.raises(ValueError, match="nothing to write"):
        edam.run(model, bank, [], progress=False)
    with pytest.raises(ValueError, match="image_loader"):
        edam.run(model, bank, [], out_crf=tmp_path / "crf", progress=False)
    cam = {0: np.ones((4, 5), np.float32)}
    with pytest.raises(ValueError, match="saliency map"):
        edam.prediction(cam, theta=0.2, saliency=np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        shared.crf_dict(cam, np.zeros((4, 5, 3), np.float32), alpha=1, t=3)
    image = np.zeros((4, 5, 3), np.uint8)
    try:
        import pydensecrf.densecrf  # noqa: F401
        available = True
    except Exception:
        available = False
    if available:
        result = shared.crf_dict(cam, image, alpha=1, t=3)
        assert list(result) == [0, 1] and result[1].shape == (4, 5)
    else:
        with pytest.raises(ImportError, match="pip install pydensecrf"):
            shared.crf_dict(cam, image, alpha=1, t=3)


def test_pair_list_has_edams_format_and_shared_classes(tmp_path):
    """voc12/EDAM_train.txt is not in every checkout: write_pair_list makes one that the host's pair reader parses."""
    ids = ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
    labels = {name: np.zeros(20, np.float32) for name in ids}
    for name, classes in zip(ids, ([0, 14], [14], [0], [6])):
        labels[name][classes] = 1
    np.save(tmp_path / "cls_labels.npy", labels, allow_pickle=True)
    lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in ids]
    (tmp_path / "train_aug.txt").write_text("".join(lines))
    count = edam.write_pair_list(tmp_path / "EDAM_train.txt", tmp_path / "train_aug.txt", tmp_path / "cls_labels.npy",
                                 epochs=5)
    lines = (tmp_path / "EDAM_train.txt").read_text().splitlines()
    assert count == len(lines) == 10
    for line in lines:  # parsed as voc12/data.py's load_img_name_pair_list does
        first, second, common = line.split(" ")[0][-15:-4], line.split(" ")[1][-15:-4], int(line.split(" ")[2])
        assert first != second and labels[first][common] == 1 and labels[second][common] == 1
        assert "2007_000068" not in (first, second)  # class 6 has no partner
    np.save(tmp_path / "one.npy", {n: np.eye(20, dtype=np.float32)[i] for i, n in enumerate(ids)}, allow_pickle=True)
    with pytest.raises(ValueError, match="no two images share a class"):
        edam.write_pair_list(tmp_path / "x.txt", tmp_path / "train_aug.txt", tmp_path / "one.npy")
