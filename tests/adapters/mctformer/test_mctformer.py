"""MCTformer-V2 adapter against a tiny stand-in of the host (tests/hosts/mctformer_host)."""
from __future__ import annotations

import argparse
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from conftest import HOSTS, standin_host
from PIL import Image

import lpcam_plugin.methods.lpcam.maps
from lpcam_plugin import PrototypeBank
from lpcam_plugin.adapters import mctformer
from lpcam_plugin.adapters.mctformer.host import preset_of
from lpcam_plugin.core.formats import write_class_dict
from lpcam_plugin.core.threshold import folder_threshold

pytestmark = pytest.mark.filterwarnings("ignore:class \\d+. empty foreground pool:RuntimeWarning")

HOST = HOSTS / "mctformer_host"
NAMES = ["2007_000032", "2007_000039", "2007_000063"]
SIZES = {"2007_000032": (32, 40), "2007_000039": (24, 32), "2007_000063": (32, 32)}
LABELS = {"2007_000032": [0, 14], "2007_000039": [6], "2007_000063": [0, 6]}
D = 32
HOST_MODULES = ("models", "engine", "datasets", "psa", "vision_transformer", "utils")


@pytest.fixture
def host(monkeypatch):
    """The stand-in MCTformer checkout on sys.path; its modules leave sys.modules afterwards."""
    yield from standin_host(monkeypatch, HOST, HOST_MODULES)


@pytest.fixture
def voc(tmp_path):
    """Tiny VOC-like folder: JPEGs, train_aug_id.txt + json labels, GT PNGs."""
    rng = np.random.default_rng(0)
    root, lists = tmp_path / "VOC2012", tmp_path / "voc12"
    for folder in (root / "JPEGImages", root / "gt", lists):
        folder.mkdir(parents=True)
    labels = {}
    for name in NAMES:
        h, w = SIZES[name]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        gt = rng.choice([0] + [c + 1 for c in LABELS[name]], size=(h, w)).astype(np.uint8)
        Image.fromarray(gt).save(root / "gt" / f"{name}.png")
        vec = np.zeros(20, np.float32)
        vec[LABELS[name]] = 1
        labels[name] = vec.tolist()
    (lists / "cls_labels.json").write_text(json.dumps(labels))
    (lists / "train_aug_id.txt").write_text("".join(f"{n}\n" for n in NAMES))
    return root, lists


def _model():
    import models

    torch.manual_seed(0)
    return models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20).eval()


def _loader(root, lists):
    import datasets

    args = Namespace(img_list=str(lists), data_path=str(root), scales=[1.0], data_set="VOC12MS", input_size=224,
                     gen_attention_maps=True)  # what upstream's build_dataset reads
    dataset, _ = datasets.build_dataset(is_train=False, args=args, gen_attn=True)
    return torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)


def _args(lists, out, *, attention_type="fused", out_crf=None):
    return Namespace(model="deit_small_MCTformerV2_patch16_224", img_list=str(lists), patch_size=8,
                     layer_index=mctformer.LAYER_INDEX, nb_classes=20,
                     attention_type=attention_type, patch_attn_refine=True, visualize_cls_attn=True,
                     cam_npy_dir=str(out), out_crf=out_crf, low_alpha=1, high_alpha=12, attention_dir=None)


def _bank(model, seed=0, missing=()):
    """Class prototypes drawn from the stand-in's head-input features; random context."""
    gen = torch.Generator().manual_seed(seed)
    with mctformer.feature_hook(model) as hook, torch.no_grad():
        model(torch.randn(1, 3, 32, 32, generator=gen), return_att=True)
        pool = hook.features[0].reshape(D, -1).T
    protos = {c: pool[torch.randperm(pool.shape[0], generator=gen)[:3]] for c in range(20) if c not in missing}
    context = {c: torch.randn(2, D, generator=gen) for c in range(20) if c not in missing}
    return PrototypeBank(protos, context, num_classes=20, feature_dim=D)


def test_selection_weight_reduction_and_bias(host):
    model = _model()
    weight, bias = mctformer.selection_weight(model)
    torch.testing.assert_close(weight, model.head.weight.detach().sum(dim=(2, 3)))
    torch.testing.assert_close(bias, model.head.bias.detach())
    center, _ = mctformer.selection_weight(model, mode="center")
    torch.testing.assert_close(center, model.head.weight.detach()[:, :, 1, 1])
    f = torch.randn(D)
    with torch.no_grad():
        out = model.head(f.view(1, D, 1, 1).expand(1, D, 5, 5).contiguous())[0, :, 2, 2]
    torch.testing.assert_close(out, weight @ f + bias, rtol=1e-4, atol=1e-4)


def test_feature_sources_agree_on_non_square_images(host):
    model = _model()
    x = torch.randn(1, 3, 32, 40)
    with mctformer.feature_hook(model) as head, mctformer.feature_hook(model, source="tokens", grid=(4, 5)) as tok:
        with torch.no_grad():
            model(x, return_att=True)
            _, patch_tokens, _ = model.forward_features(x)
        assert head.features.shape == (1, D, 4, 5)
        torch.testing.assert_close(tok.features, head.features)
        torch.testing.assert_close(patch_tokens.transpose(1, 2).reshape(1, D, 4, 5), head.features)
    assert not model.head._forward_pre_hooks and not model.blocks[-1]._forward_hooks


def test_hook_is_float32_outside_autocast_and_matches_core(host, monkeypatch):
    model = _model()
    bank = _bank(model, missing=(7,))
    seen = []
    original = lpcam_plugin.methods.lpcam.maps.lpcam_map

    def spy(features, *args, **kwargs):
        out = original(features, *args, **kwargs)
        seen.append((features.dtype, out.dtype))
        return out

    monkeypatch.setattr(lpcam_plugin.methods.lpcam.maps, "lpcam_map", spy)
    x = torch.randn(1, 3, 32, 40)
    with torch.autocast("cpu", dtype=torch.float16):
        _, plain_cams, _ = model(x, return_att=True, attention_type="patchcam")
        with mctformer.patch(model, bank) as handle, mctformer.feature_hook(model) as feats:
            _, cams, _ = model(x, return_att=True, attention_type="patchcam")
            # Half-precision features straight into the hook: LPCAM still sees float32.
            captured = feats.features
            half = captured.half()
            direct = handle.hook(model.head, (half,), torch.zeros(1, 20, 4, 5, dtype=torch.float16))
    assert plain_cams.dtype == torch.float16, "the stand-in must really run under autocast"
    assert seen and all(dtypes == (torch.float32, torch.float32) for dtypes in seen)
    assert cams.dtype == torch.float32 and direct.dtype == torch.float32
    classes = [c for c in range(20) if c != 7]
    expected = original(captured, bank, classes, normalize=False)
    torch.testing.assert_close(cams[:, classes], expected)
    assert not cams[:, 7].any()
    torch.testing.assert_close(direct[:, classes], original(half.float(), bank, classes, normalize=False))
    assert not model.head._forward_hooks and not handle.active
    handle.remove()  # idempotent


def test_patch_validates(host):
    model = _model()
    bank = _bank(model)
    with mctformer.patch(model, bank):
        with pytest.raises(RuntimeError, match="already"):
            mctformer.patch(model, bank)
        with pytest.raises(RuntimeError, match="patch"):
            mctformer.fit(model, [], progress=False)
    other = PrototypeBank({c: torch.randn(2, 8) for c in range(20)}, num_classes=20)
    with pytest.raises(ValueError, match="feature_dim"):
        mctformer.patch(model, other)
    with pytest.raises(ValueError, match="head has 20 classes, the bank has 3"):
        mctformer.patch(model, PrototypeBank({0: torch.randn(2, D)}, num_classes=3))
    v1_like = torch.nn.Module()
    v1_like.head = torch.nn.Linear(D, 20)
    with pytest.raises(TypeError, match="V1"):
        mctformer.patch(v1_like, bank)


def test_unchanged_engine_writes_lpcam_files(host, voc, tmp_path, monkeypatch):
    import engine
    import psa.tool.imutils

    root, lists = voc
    model = _model()
    bank = _bank(model, seed=1)
    crf_calls = []

    def fake_crf(img, probs, t=10, scale_factor=1, labels=21):
        crf_calls.append((img.shape, img.dtype, probs.shape, labels))
        return np.asarray(probs, np.float32)

    monkeypatch.setattr(psa.tool.imutils, "crf_inference", fake_crf)
    seen = []
    original = lpcam_plugin.methods.lpcam.maps.lpcam_map

    def spy(features, *args, **kwargs):
        seen.append((features.dtype, torch.is_autocast_enabled("cpu")))
        return original(features, *args, **kwargs)

    monkeypatch.setattr(lpcam_plugin.methods.lpcam.maps, "lpcam_map", spy)
    device = torch.device("cpu")
    engine.generate_attention_maps_ms(_loader(root, lists), model, device, _args(lists, tmp_path / "plain"))
    with mctformer.patch(model, bank):
        engine.generate_attention_maps_ms(_loader(root, lists), model, device,
                                          _args(lists, tmp_path / "lpcam", out_crf=str(tmp_path / "crf")))
    assert not model.head._forward_hooks
    assert len(seen) == len(NAMES) * 2  # one call per view (image + flip), inside the host's autocast
    assert all(dtype == torch.float32 and autocast for dtype, autocast in seen)
    loader = list(_loader(root, lists))
    for index, name in enumerate(NAMES):
        h, w = SIZES[name]
        cam = np.load(tmp_path / "lpcam" / f"{name}.npy", allow_pickle=True).item()
        plain = np.load(tmp_path / "plain" / f"{name}.npy", allow_pickle=True).item()
        assert list(cam) == LABELS[name] and all(type(k) is int for k in cam)
        for _, m in cam.items():
            assert m.dtype == np.float32 and m.shape == (h, w)
            assert m.min() >= 0 and m.max() <= 1 and np.isfinite(m).all()
        assert any(not np.allclose(cam[c], plain[c], atol=1e-3) for c in cam), "LPCAM must replace PatchCAM"
        # Same maps as our engine-equivalent host_cam with the patch on (fp32 there, fp16 in the engine).
        views, target = loader[index]
        with mctformer.patch(model, bank):
            expected, _ = mctformer.host_cam(model, views, target)
        for c in cam:
            np.testing.assert_allclose(cam[c], expected[c].numpy(), atol=2e-2)
        for alpha in (1, 12):
            crf = np.load(tmp_path / f"crf_{alpha}" / f"{name}.npy", allow_pickle=True).item()
            assert list(crf) == [0] + [c + 1 for c in LABELS[name]]
            assert all(v.shape == (h, w) for v in crf.values())
            bg = np.power(1 - np.max(np.stack(list(cam.values())), axis=0), alpha)
            np.testing.assert_allclose(crf[0], bg, rtol=1e-5, atol=1e-6)
    assert crf_calls[0][1] == np.uint8 and crf_calls[0][0] == SIZES[NAMES[0]] + (3,)
    # The host's evaluation.py reads the dicts: through lpcam_plugin.evaluate.
    result = mctformer.evaluate(tmp_path / "lpcam", root / "gt", NAMES, end=40, allow_pickle=True, progress=False)
    assert result.thresholds[0] == 0.0 and result.thresholds[-1] == pytest.approx(0.39)


def test_fit_uses_host_cam_as_baseline(host, voc, tmp_path):
    import engine

    root, lists = voc
    model = _model()
    engine.generate_attention_maps_ms(_loader(root, lists), model, torch.device("cpu"), _args(lists, tmp_path / "host"))
    loader = list(_loader(root, lists))
    for index, name in enumerate(NAMES):  # host_cam reproduces the engine's fused, refined CAM
        written = np.load(tmp_path / "host" / f"{name}.npy", allow_pickle=True).item()
        ours, feats = mctformer.host_cam(model, *loader[index])
        assert feats.shape == (D,) + tuple(s // 8 for s in SIZES[name])
        for c in range(20):
            if c in written:
                np.testing.assert_allclose(ours[c].numpy(), written[c], atol=2e-2)
            else:
                assert not ours[c].any()
    kwargs = dict(names=NAMES, num_clusters=2, pool_cap=100, progress=False)
    est = mctformer.fit(model, loader, bank_path=tmp_path / "bank.npz", **kwargs)
    bank = PrototypeBank.load(tmp_path / "bank.npz", expected_feature_dim=D)
    assert bank.metadata["baseline"] == "fused" and est.n_images_seen_ == len(NAMES)
    present = sorted({c for cs in LABELS.values() for c in cs})
    assert [c for c in range(20) if bank.has_prototypes(c)] == present
    from_dir = mctformer.fit(model, loader, cam_dir=tmp_path / "host", allow_pickle=True, **kwargs).bank_
    assert [c for c in range(20) if from_dir.has_prototypes(c)] == present
    with pytest.raises(ValueError, match="allow_pickle"):
        mctformer.fit(model, loader, cam_dir=tmp_path / "host", **kwargs)
    assert not model.head._forward_pre_hooks and not model.head._forward_hooks


def test_bias_enters_the_selection_only_with_use_bias(host, voc):
    """Decision: head.bias is ignored by default (as the reference); use_bias=True adds it to the logits."""
    root, lists = voc
    model = _model()
    loader = list(_loader(root, lists))
    kwargs = dict(baseline="cam", num_clusters=2, pool_cap=100, class_threshold=0.5, progress=False)
    base = mctformer.fit(model, loader, **kwargs).bank_
    with torch.no_grad():
        model.head.bias[6] = 50.0  # a huge bias makes every centre "class 6"
    changed = mctformer.fit(model, loader, **kwargs).bank_
    changed_bias = mctformer.fit(model, loader, use_bias=True, **kwargs).bank_
    for c in (0, 6, 14):
        torch.testing.assert_close(base.class_prototypes[c], changed.class_prototypes[c])
        torch.testing.assert_close(base.context_prototypes[c], changed.context_prototypes[c])
    assert changed.class_prototypes[6].shape[0] == 1  # tiny random head: only the fallback centre
    assert changed_bias.class_prototypes[6].shape[0] == 2  # with the bias every centre has p ~ 1


def test_evaluate_follows_evaluation_py_curve(host, tmp_path):
    rng = np.random.default_rng(5)
    pred_dir, gt_dir = tmp_path / "npy", tmp_path / "gt"
    gt_dir.mkdir()
    dicts, gts = {}, {}
    for name in NAMES:
        h, w = SIZES[name]
        dicts[name] = {c: rng.random((h, w)).astype(np.float32) for c in LABELS[name]}
        write_class_dict(pred_dir / f"{name}.npy", dicts[name])
        gts[name] = rng.choice([0] + [c + 1 for c in LABELS[name]], size=(h, w)).astype(np.uint8)
        Image.fromarray(gts[name]).save(gt_dir / f"{name}.png")
    result = mctformer.evaluate(pred_dir, gt_dir, NAMES, start=0, end=60, allow_pickle=True, progress=False)
    present = sorted({0} | {c + 1 for cs in LABELS.values() for c in cs})

    def oracle_miou(t, classes=slice(None)):  # evaluation.py: tensor[c+1] = map, tensor[0] = t, argmax, IoU
        tp, p, g = np.zeros(21), np.zeros(21), np.zeros(21)
        for name, d in dicts.items():
            tensor = np.zeros((21,) + SIZES[name], np.float32)
            for c, m in d.items():
                tensor[c + 1] = m
            tensor[0] = t
            pred, gt = np.argmax(tensor, 0), gts[name]
            for i in range(21):
                p[i] += np.sum(pred == i)
                g[i] += np.sum(gt == i)
                tp[i] += np.sum((gt == i) & (pred == i))
        return float(np.mean((tp / (g + p - tp + 1e-10))[classes]))

    # evaluation.py takes np.mean over all 21 IoUs (absent classes count 0): the default rule.
    in_present = mctformer.evaluate(pred_dir, gt_dir, NAMES, start=0, end=60, allow_pickle=True, mean="present",
                                    progress=False)
    for i in (0, 17, 33, 59):
        assert result.miou[i] == pytest.approx(oracle_miou(result.thresholds[i]), abs=1e-9)
        assert result.at(i)["miou"] == pytest.approx(result.miou[i])
        assert in_present.miou[i] == pytest.approx(oracle_miou(result.thresholds[i], present), abs=1e-9)
        assert in_present.miou[i] > result.miou[i]
    auto = mctformer.evaluate(pred_dir, gt_dir, NAMES, auto_threshold=True, allow_pickle=True, progress=False)
    chosen = folder_threshold(pred_dir, NAMES, fmt="dict", allow_pickle=True)
    assert auto.thresholds.tolist() == [chosen.threshold]
    assert auto.miou[0] == pytest.approx(oracle_miou(chosen.threshold), abs=1e-9)
    with pytest.raises(ValueError, match="only with auto_threshold"):
        mctformer.evaluate(pred_dir, gt_dir, NAMES, reference_dir=pred_dir, allow_pickle=True)
    best_t, best_m = mctformer.host_best(result)
    walk, top = 0.0, -1.0
    for t in [i / 100 for i in range(60)]:
        m = oracle_miou(t)
        if m > top:
            walk, top = t, m
        else:
            break
    assert best_t == pytest.approx(walk) and best_m == pytest.approx(top, abs=1e-9)


# ------------------------------------------------------------------ main.py edit (examples/mctformer/main.patch)

ROOT = HOST.parents[2]


def _patched_main(tmp_path):
    """The stand-in ``main.py`` with ``examples/mctformer/main.patch`` applied, imported from ``tmp_path``."""
    import importlib.util

    patch_text = (ROOT / "examples" / "mctformer" / "main.patch").read_text()
    assert patch_text == mctformer.MAIN_PATCH  # the package applies the file users apply
    path = tmp_path / "main_lpcam.py"
    path.write_text(mctformer.apply_patch((HOST / "main.py").read_text(), patch_text))
    spec = importlib.util.spec_from_file_location("main_lpcam", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main_argv(root, lists, *extra):
    return ["--model", "deit_small_MCTformerV2_patch16_224", "--data-set", "VOC12MS", "--scales", "1.0",
            "--img-list", str(lists), "--data-path", str(root), "--resume", "mct.pth", "--gen_attention_maps",
            "--patch-size", "8", "--layer-index", "3", "--patch-attn-refine", "--visualize-cls-attn",
            "--device", "cpu", "--num_workers", "0", *extra]


def test_patched_main_keeps_the_host_generation_without_lpcam_flags(host, voc, tmp_path, monkeypatch):
    root, lists = voc
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _model().state_dict()}, "mct.pth")
    main = _patched_main(tmp_path)
    parser = argparse.ArgumentParser(parents=[main.get_args_parser()])
    args = parser.parse_args(_main_argv(root, lists, "--cam-npy-dir", "host_npy"))
    assert args.lpcam_bank is None and not args.lpcam_fit
    main.main(args)  # the documented edit before this fix: PrototypeBank.load(None) -> TypeError
    assert sorted(p.stem for p in (tmp_path / "host_npy").glob("*.npy")) == NAMES
    main.main(parser.parse_args(_main_argv(root, lists, "--lpcam-fit", "--lpcam-bank", "bank.npz",
                                           "--lpcam-num-clusters", "2")))
    assert PrototypeBank.load("bank.npz").feature_dim == D
    main.main(parser.parse_args(_main_argv(root, lists, "--lpcam-bank", "bank.npz", "--cam-npy-dir", "lpcam_npy")))
    assert sorted(p.stem for p in (tmp_path / "lpcam_npy").glob("*.npy")) == NAMES
    with pytest.raises(ValueError, match="--lpcam-fit needs --lpcam-bank"):
        main.main(parser.parse_args(_main_argv(root, lists, "--lpcam-fit")))


def test_the_patch_refuses_a_main_py_it_was_not_written_for():
    with pytest.raises(ValueError, match="patch hunk 1: its context occurs 0 times"):
        mctformer.apply_patch("print('not MCTformer')\n")


def test_crf_dict_is_public_where_the_dict_hosts_need_it():
    from lpcam_plugin.adapters import edam, edam_fcam, mctformer_fcam
    from lpcam_plugin.adapters.common import crf

    for module in (mctformer, mctformer_fcam, edam, edam_fcam):
        assert module.crf_dict is crf.crf_dict and "crf_dict" in module.__all__


def test_standin_dataset_reads_what_upstream_reads(host, voc):
    """Upstream's build_dataset reads data_set, input_size and gen_attention_maps; without the last its
    eval transform resizes and centre-crops to input_size (the maps would not match the image)."""
    import datasets

    root, lists = voc
    base = dict(img_list=str(lists), data_path=str(root), scales=[1.0], data_set="VOC12MS", input_size=224)
    with pytest.raises(AttributeError, match="gen_attention_maps"):
        datasets.build_dataset(is_train=False, args=Namespace(**base), gen_attn=True)
    cropped, _ = datasets.build_dataset(is_train=False, args=Namespace(**base, gen_attention_maps=False), gen_attn=True)
    assert cropped[0][0][0].shape == (3, 224, 224)
    kept, _ = datasets.build_dataset(is_train=False, args=Namespace(**base, gen_attention_maps=True), gen_attn=True)
    assert kept[0][0][0].shape == (3,) + SIZES[NAMES[0]]


def test_the_class_count_and_presets_follow_the_head(host):
    import models

    coco = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=80).eval()
    assert mctformer.num_classes(coco) == 80 and mctformer.num_classes(_model()) == 20
    assert mctformer.selection_weight(coco)[0].shape == (80, D)
    with mctformer.feature_hook(coco, source="tokens") as hook, torch.no_grad():
        coco(torch.randn(1, 3, 32, 32), return_att=True)  # 80 class tokens dropped before the fold
        assert tuple(hook.features[0].shape) == (D, 4, 4)
    with pytest.raises(ValueError, match="head has 80 classes, the bank has 20"):
        mctformer.patch(coco, _bank(_model()))
    odd = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=21)
    with pytest.raises(ValueError, match="20 or 80 outputs"):
        mctformer.num_classes(odd)
    assert preset_of(coco) == "coco" and preset_of(_model()) == "voc" and preset_of(coco, "voc") == "voc"
