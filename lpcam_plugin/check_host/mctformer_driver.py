"""The MCTformer-V2 driver of ``lpcam check-host``: random model, the adapter's route, the host's ``evaluation.py``.

Runs in the driver subprocess with the fork first on ``sys.path``: builds the host's DeiT-S
MCTformer-V2 with random weights, then

- ``--method lpcam``: fits :mod:`lpcam_plugin.adapters.mctformer` on the host's own dataset, runs
  the unchanged ``engine.generate_attention_maps_ms`` inside ``mctformer.patch`` and has the
  host's ``evaluation.py`` read the dicts (``mctformer.evaluate`` must agree); then runs the
  fork's ``main.py`` with ``examples/mctformer/main.patch`` applied (a copy in the work folder)
  three times: without ``--lpcam-*`` flags (the host's own maps), ``--lpcam-fit`` and
  ``--lpcam-bank``;
- ``--method fcam``: trains an F-CAM decoder (:mod:`lpcam_plugin.adapters.mctformer_fcam`) over
  the head's CAM or a fitted LPCAM bank (``--fcam-source``), writes its dicts, has
  ``evaluation.py`` read them and builds PSA's CRF dicts of one of them with ``crf_dict``.

``--dataset coco``: the same on ``--data-set COCOMS`` (an 80-class model, the layout of
:func:`~lpcam_plugin.check_host.coco_data.write_mctformer_coco_dataset`); ``evaluation.py`` stops at
21 classes, so the dicts are scored by ``mctformer.evaluate(dataset="coco")`` alone.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.environment import module_version
from lpcam_plugin.check_host.host_data import IMAGE_SIZE
from lpcam_plugin.check_host.offline import offline_weights

#: The model ``main.py`` builds (``--model``; the engine branches on ``MCTformerV2`` in it).
MODEL_NAME = "deit_small_MCTformerV2_patch16_224"
#: Tiny F-CAM settings for the check (one epoch on the 64-pixel images).
FCAM_SETTINGS: Dict[str, Any] = dict(batch_size=4, crop_size=IMAGE_SIZE, epochs=1, decoder_channels=(16, 8))
#: K-means clusters on the tiny set.
NUM_CLUSTERS = 4


#: ``main.py``'s dataset options on each dataset: ``(data_set, img_list, nb_classes, data root key)``.
DATASET_ARGS: Dict[str, Tuple[str, str, int, str]] = {"voc": ("VOC12MS", "voc12", 20, "voc12_root"),
                                                      "coco": ("COCOMS", "coco", 80, "mscoco_root")}
#: The COCO label file ``--label-file-path`` names (``coco_data.write_mctformer_coco_dataset``).
COCO_LABEL_FILE = "coco/cls_labels.npy"


def _dataset(config: Dict[str, Any]) -> Tuple[str, str, int, str]:
    data_set, img_list, classes, root_key = DATASET_ARGS[config.get("dataset", "voc")]
    return data_set, img_list, classes, config[root_key]


def host_args(config: Dict[str, Any], patch_size: int, *, out_crf: bool) -> argparse.Namespace:
    """The fields of ``main.py``'s namespace that ``build_dataset`` and ``generate_attention_maps_ms`` read."""
    from lpcam_plugin.adapters import mctformer

    data_set, img_list, classes, root = _dataset(config)
    return argparse.Namespace(model=MODEL_NAME, img_list=img_list, data_path=root, scales=[1.0],
                              patch_size=patch_size, layer_index=mctformer.LAYER_INDEX, nb_classes=classes,
                              attention_type="fused", patch_attn_refine=True, visualize_cls_attn=True,
                              cam_npy_dir="out_npy", out_crf="out_crf" if out_crf else None, low_alpha=1,
                              high_alpha=12, attention_dir=None, data_set=data_set, input_size=IMAGE_SIZE,
                              gen_attention_maps=True, device="cpu", label_file_path=COCO_LABEL_FILE)


def main_py_argv(config: Dict[str, Any], patch_size: int, *extra: str) -> List[str]:
    """``main.py`` arguments of the documented generation command, on CPU and the tiny set."""
    from lpcam_plugin.adapters import mctformer

    data_set, img_list, _, root = _dataset(config)
    labels = ["--label-file-path", COCO_LABEL_FILE] if data_set == "COCOMS" else []
    return ["--model", MODEL_NAME, "--patch-size", str(patch_size), "--data-set", data_set, "--scales", "1.0",
            "--img-list", img_list, "--data-path", root, *labels, "--resume", "mct_random.pth",
            "--gen_attention_maps", "--attention-type", "fused", "--layer-index", str(mctformer.LAYER_INDEX),
            "--patch-attn-refine", "--visualize-cls-attn", "--device", "cpu", "--num_workers", "0", *extra]


def _evaluate(rec: Recorder, folder: str, root: str, train: List[str], dataset: str = "voc") -> None:
    """The host's ``evaluation.py`` reads ``folder``; ``mctformer.evaluate`` agrees with it (COCO:
    ``mctformer.evaluate`` alone, on ``mask/train2014/<int id>.png``)."""
    from lpcam_plugin.adapters import mctformer

    if dataset == "coco":
        rec.add("steps", "host evaluation.py do_python_eval", "skip", "its categories stop at 21 (IndexError at 81)",
                "score COCO dicts with lpcam_plugin.adapters.mctformer.evaluate(..., dataset='coco')")
        with rec.step(f"mctformer.evaluate(dataset='coco') reads {folder}") as info:
            written = [n for n in train if (Path(folder) / f"{n}.npy").exists()]
            result = mctformer.evaluate(folder, os.path.join(root, "mask", "train2014"), written, start=30, end=31,
                                        allow_pickle=True, progress=False, dataset="coco", mean="present")
            info["detail"] = (f"mIoU {100 * float(result.miou[0]):.3f} (classes present) at t=0.30 over "
                              f"{len(written)} dicts "
                              f"({len(train) - len(written)} image(s) without labels: no dict, as the engine)")
        return
    with rec.step(f"host evaluation.py do_python_eval reads {folder}") as info:
        evaluation = importlib.import_module("evaluation")
        gt = os.path.join(root, "SegmentationClassAug")
        with contextlib.redirect_stdout(io.StringIO()):
            host = evaluation.do_python_eval(folder, gt, train, 21, "npy", 0.3)
        mine = 100 * float(mctformer.evaluate(folder, gt, train, start=30, end=31, allow_pickle=True,
                                              progress=False).miou[0])
        if abs(host["mIoU"] - mine) > 1e-3:
            raise AssertionError(f"evaluation.py mIoU {host['mIoU']:.4f} != mctformer.evaluate {mine:.4f}")
        info["detail"] = f"mIoU {host['mIoU']:.3f} at t=0.30 (mctformer.evaluate agrees)"


def _run_main_py(rec: Recorder, config: Dict[str, Any], model: Any) -> None:
    """The fork's ``main.py`` with the documented patch: host maps, ``--lpcam-fit``, ``--lpcam-bank``."""
    import numpy as np
    import torch

    from lpcam_plugin.adapters import mctformer

    with rec.step("main.py + examples/mctformer/main.patch (a patched copy in the work folder)") as info:
        text = (Path(config["fork"]) / "main.py").read_text()
        Path("main_lpcam.py").write_text(mctformer.apply_patch(text))
        torch.save({"model": model.state_dict()}, "mct_random.pth")
        info["detail"] = "the patch applies"
    runs = [("main.py without --lpcam-* (the host's own maps)", ["--cam-npy-dir", "out_main_host"], "out_main_host"),
            ("main.py --lpcam-fit --lpcam-bank", ["--lpcam-fit", "--lpcam-bank", "lpcam_main.npz",
                                                  "--lpcam-num-clusters", str(NUM_CLUSTERS)], "lpcam_main.npz"),
            ("main.py --lpcam-bank (LPCAM maps)", ["--lpcam-bank", "lpcam_main.npz", "--cam-npy-dir",
                                                   "out_main_lpcam"], "out_main_lpcam")]
    for name, extra, output in runs:
        with rec.step(name) as info:
            argv = main_py_argv(config, model.patch_embed.patch_size[0], *extra)
            proc = subprocess.run([sys.executable, "main_lpcam.py", *argv],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"exit code {proc.returncode}: {tail[0][:300]}")
            found = sorted(Path(output).glob("*.npy")) if Path(output).is_dir() else [Path(output)]
            if not found or not found[0].exists():
                raise AssertionError(f"{output} was not written")
            if Path(output).is_dir():
                first = np.load(found[0], allow_pickle=True).item()
                info["detail"] = f"{len(found)} dicts, classes {sorted(first)} in the first"
            else:
                info["detail"] = f"{output} written"


def _image_path(config: Dict[str, Any], name: str) -> Path:
    """The image file of ``name`` in the check's layout (VOC ``JPEGImages``, COCO ``train2014``)."""
    if config.get("dataset") == "coco":
        return Path(config["mscoco_root"]) / "train2014" / f"{name}.jpg"
    return Path(config["voc12_root"]) / "JPEGImages" / f"{name}.jpg"


def _fcam(rec: Recorder, config: Dict[str, Any], model: Any, dataset: Any, loader: Any, bank: Any) -> None:
    """F-CAM over ``config['fcam_source']``: train, write dicts, PSA CRF dicts of the first."""
    import numpy as np
    from PIL import Image

    from lpcam_plugin.adapters import mctformer_fcam

    source = bank if config.get("fcam_source") == "lpcam" else "cam"
    with rec.step(f"mctformer_fcam.fit (F-CAM over {config.get('fcam_source', 'cam')}, one epoch)") as info:
        fcam = mctformer_fcam.fit(model, dataset, source=source, progress=False, **FCAM_SETTINGS)
        fcam.save("fcam_mct.npz")
        info["detail"] = f"skips {fcam.skip_layers_}"
    with rec.step("mctformer_fcam.run (--cam-npy-dir dicts)") as info:
        count = mctformer_fcam.run(model, fcam, loader, names=config["ids"], cam_npy_dir="out_npy", progress=False)
        info["detail"] = f"{count} files"
    if module_version("pydensecrf.densecrf")[0] is not None:
        with rec.step("mctformer_fcam.crf_dict (PSA's _1 / _12 CRF dicts)") as info:
            name = config["ids"][0]
            cams = np.load(Path("out_npy") / f"{name}.npy", allow_pickle=True).item()
            with Image.open(_image_path(config, name)) as image:
                rgb = np.asarray(image.convert("RGB"))
            crf = {alpha: mctformer_fcam.crf_dict(cams, rgb, alpha=alpha, t=10) for alpha in (1, 12)}
            info["detail"] = f"keys {sorted(crf[1])}"


def drive_mctformer(rec: Recorder, route: str, config: Dict[str, Any]) -> None:
    """MCTformer-V2: random model, then LPCAM (hook + engine, patched ``main.py``) or F-CAM, then ``evaluation.py``."""
    import torch

    from lpcam_plugin.adapters import mctformer

    dataset_name = config.get("dataset", "voc")
    _, _, classes, root = _dataset(config)
    ids = config["ids"]
    train = ids[:config["num_fit"]] if dataset_name == "voc" else ids
    with rec.step("import the host (models, datasets, engine)"):
        models = importlib.import_module("models")
        datasets = importlib.import_module("datasets")
        engine = importlib.import_module("engine")
    with rec.step("models.deit_small_MCTformerV2_patch16_224(pretrained=False) with random weights") as info:
        torch.manual_seed(0)
        with offline_weights():
            model = getattr(models, MODEL_NAME)(pretrained=False, num_classes=classes)
        model.eval()
        info["detail"] = f"head {tuple(model.head.weight.shape)}"
    crf = module_version("pydensecrf.densecrf")[0] is not None
    args = host_args(config, model.patch_embed.patch_size[0], out_crf=crf)
    with rec.step("host dataset (build_dataset, gen mode)") as info:
        dataset, _ = datasets.build_dataset(is_train=False, args=args, gen_attn=True)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
        info["detail"] = f"{len(dataset)} images"
    bank = None
    if config.get("method", "lpcam") == "lpcam" or config.get("fcam_source") == "lpcam":
        with rec.step("mctformer.fit (prototypes, host fused CAM baseline)") as info:
            bank = mctformer.fit(model, loader, names=ids, baseline="fused", num_clusters=NUM_CLUSTERS,
                                 progress=False).bank_
            info["detail"] = repr(bank)[:200]
    if config.get("method", "lpcam") == "fcam":
        _fcam(rec, config, model, dataset, loader, bank)
        _evaluate(rec, "out_npy", root, train, dataset_name)
        return
    with rec.step("mctformer.patch + unchanged engine.generate_attention_maps_ms") as info:
        with mctformer.patch(model, bank):
            engine.generate_attention_maps_ms(loader, model, torch.device("cpu"), args)
        info["detail"] = f"{len(list(Path('out_npy').glob('*.npy')))} files" + (", CRF dicts _1 / _12" if crf else "")
    _evaluate(rec, "out_npy", root, train, dataset_name)
    _run_main_py(rec, config, model)
    _evaluate(rec, "out_main_lpcam", root, train, dataset_name)


__all__ = ["FCAM_SETTINGS", "MODEL_NAME", "NUM_CLUSTERS", "drive_mctformer", "host_args", "main_py_argv"]
