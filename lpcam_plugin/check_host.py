"""``lpcam check-host``: does the plug-in work in this host fork, with this environment?

``lpcam check-host {irn,amn,edam,mctformer} PATH_TO_FORK [--route R] [--python EXE]`` runs, in a
temporary folder, on CPU and with nothing downloaded:

1. a tiny VOC-style dataset from :mod:`lpcam_plugin.benchmark.synthetic` written in the host's
   layout (``JPEGImages``, ``SegmentationClass`` and ``SegmentationClassAug`` palette PNGs,
   ``ImageSets/Segmentation/train.txt``) and list formats (IRN/AMN ``voc12/*.txt`` plain ids and a
   ``cls_labels.npy`` keyed by the int id; EDAM ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``
   lines; MCTformer ``train_aug_id.txt`` / ``train_id.txt``; EDAM and MCTformer ``cls_labels.npy``
   keyed by the id string);
2. a driver in a subprocess (``--python``, default this interpreter) with the fork first on
   ``sys.path`` and the temporary folder as working directory (the hosts read ``voc12/...``
   relative to it). It builds the host network with random weights (``torch.hub`` /
   ``model_zoo`` downloads return the network's own random state instead), runs the adapter's
   documented route end to end and then the host's own next step on the files written.

It prints a checklist (environment: versions and known incompatibilities with their fixes; each
step ``ok`` / ``FAIL`` with the exception and the line of the fork it came from) and exits 1 when
the plug-in does not work there. The fork itself is never written to.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Routes each host can be checked on; the first one is the default.
ROUTES: Dict[str, Tuple[str, ...]] = {
    "irn": ("run", "patch"),
    "amn": ("b", "a"),
    "edam": ("loop", "infer_cls"),
    "mctformer": ("patch",),
}
#: Images written; IRN/AMN's ``cam_to_ir_label`` divides by ``len(databin) // 20``, so at least 20.
NUM_IMAGES = 20
#: The first images form the fit / evaluation list (``train.txt``); all form ``train_aug``.
NUM_FIT = 10
IMAGE_SIZE = 64
#: VOC class ids given to the synthetic classes (aeroplane, cat, dog, horse, person, sheep).
VOC_CLASSES = (0, 7, 11, 12, 14, 16)
STATUS_MARK = {"ok": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip", "info": "info"}

# Known failures: (regex on "ExceptionType: message", the fix to print).
KNOWN_FIXES: Tuple[Tuple[str, str], ...] = (
    (r"could not convert string|invalid literal for int\(\).*_\d|ValueError: .*'\d{4}_\d{6}'",
     "voc12/dataloader.py load_img_name_list: np.loadtxt(dataset_path, dtype=np.int32) cannot parse ids like "
     "2007_000032 on numpy >= 1.23; use: img_name_list = np.array([int(line.strip().replace('_', '')) for line "
     "in open(dataset_path) if line.strip()], dtype=np.int32)"),
    (r"module 'numpy' has no attribute 'bool'",
     "misc/pyutils.py: np.bool was removed in numpy 1.24; write bool (dtype=bool) instead"),
    (r"has no attribute 'CUBIC'", "Image.CUBIC was removed in Pillow 10: pip install 'pillow<10' "
                                  "(or write Image.BICUBIC in the fork)"),
    (r"No module named 'pyarrow'|pyarrow requires", "pip install pyarrow (EDAM's voc12/data.py imports it at the "
                                                    "top; recent pyarrow wheels need numpy >= 2, pin an older "
                                                    "pyarrow with numpy 1.x)"),
    (r"torchvision::nms does not exist|No module named 'torchvision'|torchvision",
     "install the torchvision release built for this torch (same release line and the same CPU/CUDA "
     "build); the host imports torchvision"),
    (r"No module named 'pydensecrf'", "pip install pydensecrf2 (pydensecrf 1.0rc3 does not build on current Python)"),
    (r"buffer source array is read-only", "pass a writable copy to the CRF: np.copy(img) "
                                          "(np.asarray(PIL.Image) is read-only)"),
    (r"No module named 'chainercv'", "chainercv 0.13 does not install on Python >= 3.11 and chainer needs "
                                     "numpy < 2: score with `lpcam eval --format irn` instead"),
    (r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|no CUDA",
     "no CUDA here: MCTformer needs --device cpu; IRN/AMN/EDAM CAM steps call .cuda() (use the adapter's run())"),
    (r"unexpected keyword argument 'pretrained_cfg'",
     "timm 1.x: build the model with models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20) "
     "instead of timm.create_model"),
    (r"drop_block_rate", "timm 1.x: drop drop_block_rate=None from the create_model call in main.py"),
    (r"No module named 'numpy._core'", ".npy dicts written under numpy 2 do not load under numpy 1.x: write and "
                                       "read them with the same numpy major version"),
    (r"integer division or modulo by zero", "the host's progress print divides by len(databin) // 20: give each "
                                            "worker at least 20 images"),
    (r"'NoneType' object has no attribute '(to|cuda)'", "EDAM's Net.train() returns None: call model.eval() and "
                                                        "model.to(device) separately"),
)


@dataclass
class Item:
    """One checklist line."""

    section: str
    name: str
    status: str
    detail: str = ""
    fix: str = ""


def known_fix(message: str) -> str:
    """The fix of the first :data:`KNOWN_FIXES` pattern found in ``message`` ("" if none)."""
    for pattern, fix in KNOWN_FIXES:
        if re.search(pattern, message):
            return fix
    return ""


# --------------------------------------------------------------------------- dataset


def _palette() -> List[int]:
    """The VOC colour map (bit-interleaved), as the dataset's palette PNGs carry it."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.extend((r, g, b))
    return colours


def write_dataset(work: Path, host: str, num_images: int = NUM_IMAGES, num_fit: int = NUM_FIT,
                  image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str]]:
    """Write the synthetic VOC folder under ``work/VOC2012`` and the host's lists under ``work/voc12``.

    Returns ``(voc12_root, ids)``; ``ids[:num_fit]`` is the train / fit split.
    """
    from PIL import Image

    from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(num_images=num_images, image_size=image_size, seed=0), progress=False)
    if data.labels.shape[1] > len(VOC_CLASSES):
        raise ValueError(f"the synthetic set has {data.labels.shape[1]} classes, only {len(VOC_CLASSES)} are mapped")
    root, lists = work / "VOC2012", work / "voc12"
    for folder in (root / "JPEGImages", root / "SegmentationClass", root / "SegmentationClassAug",
                   root / "ImageSets" / "Segmentation", lists):
        folder.mkdir(parents=True, exist_ok=True)
    lut = np.zeros(256, np.uint8)
    lut[0], lut[255] = 0, 255
    for k, voc in enumerate(VOC_CLASSES[:data.labels.shape[1]]):
        lut[k + 1] = voc + 1
    ids = [f"2007_{i + 1:06d}" for i in range(num_images)]
    labels: Dict[str, np.ndarray] = {}
    palette = _palette()
    for i, name in enumerate(ids):
        Image.fromarray(data.images[i]).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        gt = Image.fromarray(lut[data.masks[i]], mode="P")
        gt.putpalette(palette)
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            gt.save(root / folder / f"{name}.png")
        vector = np.zeros(20, np.float32)
        vector[[VOC_CLASSES[k] for k in np.nonzero(data.labels[i])[0]]] = 1.0
        labels[name] = vector
    train = ids[:num_fit]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in train))

    def write(name: str, lines: Sequence[str]) -> None:
        (lists / name).write_text("".join(f"{line}\n" for line in lines))

    if host in ("irn", "amn"):
        write("train_aug.txt", ids)
        write("train.txt", train)
        keyed: Dict[Any, np.ndarray] = {np.int32(int(n.replace("_", ""))): v for n, v in labels.items()}
    elif host == "edam":
        write("train_aug.txt", [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in ids])
        write("train.txt", [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in train])
        keyed = dict(labels)
    else:
        write("train_aug_id.txt", ids)
        write("train_id.txt", train)
        keyed = dict(labels)
    np.save(lists / "cls_labels.npy", keyed, allow_pickle=True)
    return root, ids


# --------------------------------------------------------------------------- driver (runs in the subprocess)


class _Recorder:
    """Collects checklist items in the driver and appends each as a JSON line to ``path``."""

    def __init__(self, path: Path, fork: Path) -> None:
        self.path = path
        self.fork = fork.resolve()
        self.failed = False

    def add(self, section: str, name: str, status: str, detail: str = "", fix: str = "") -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(asdict(Item(section, name, status, detail, fix))) + "\n")
        self.failed |= status == "fail"

    def where(self, error: BaseException) -> str:
        """``file:line: code`` of the deepest traceback frame inside the fork ("" if none)."""
        location = ""
        for frame in traceback.extract_tb(error.__traceback__):
            try:
                Path(frame.filename).resolve().relative_to(self.fork)
            except ValueError:
                continue
            location = f"{Path(frame.filename).resolve().relative_to(self.fork)}:{frame.lineno}: {frame.line}"
        return location

    @contextlib.contextmanager
    def step(self, name: str, section: str = "steps") -> Iterator[Dict[str, str]]:
        """Run a block as one step: ``ok`` with the ``detail`` it sets, or ``fail`` with the error."""
        info = {"detail": ""}
        try:
            yield info
        except BaseException as error:  # a host may also raise SystemExit
            message = f"{type(error).__name__}: {error}".splitlines()[0][:400]
            location = self.where(error)
            detail = message + (f"  [at {location}]" if location else "")
            self.add(section, name, "fail", detail, known_fix(message + " " + location))
            raise _StepFailed(name) from error
        else:
            self.add(section, name, "ok", info["detail"])


class _StepFailed(Exception):
    """A step failed (already recorded); the steps that depend on it are skipped."""


def _version(module: str) -> Tuple[Optional[str], str]:
    """``(version or None, error text)`` of importing ``module``."""
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # broken builds raise more than ImportError
        return None, f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return str(getattr(imported, "__version__", "installed")), ""


def _fork_has(fork: Path, relative: str, pattern: str) -> str:
    """``relative:line: text`` of the first line of the fork file matching ``pattern`` ("" if none)."""
    path = fork / relative
    if not path.is_file():
        return ""
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if re.search(pattern, line):
            return f"{relative}:{number}: {line.strip()}"
    return ""


def _major_minor(version: str) -> Tuple[int, int]:
    parts = re.findall(r"\d+", version)
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) if parts else (0, 0)


def check_environment(rec: _Recorder, host: str, fork: Path) -> None:
    """Versions and the known host/environment incompatibilities of hosts.md section 9."""
    import torch

    env = "environment"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module, label in (("PIL", "pillow"), ("timm", "timm"), ("torchvision", "torchvision"),
                          ("pydensecrf.densecrf", "pydensecrf"), ("chainercv", "chainercv"), ("pyarrow", "pyarrow"),
                          ("imageio", "imageio")):
        version, error = _version(module)
        versions[label] = version if version is not None else f"missing ({error})"
    rec.add(env, "versions", "info", ", ".join(f"{k} {v}" for k, v in versions.items()))
    cuda = torch.cuda.device_count()
    rec.add(env, "CUDA devices", "info", str(cuda))
    numpy_version = _major_minor(np.__version__)
    pillow_version = _major_minor(versions["pillow"]) if not versions["pillow"].startswith("missing") else (0, 0)
    if host in ("irn", "amn"):
        line = _fork_has(fork, "voc12/dataloader.py", r"=\s*np\.loadtxt\(.*int32")
        try:
            np.loadtxt(io.StringIO("2007_000032\n"), dtype=np.int32)
            parses = True
        except ValueError:
            parses = False
        if line and not parses:
            rec.add(env, "id lists (np.loadtxt)", "fail", f"numpy {np.__version__} cannot parse '2007_000032' [{line}]",
                    known_fix("could not convert string"))
        else:
            rec.add(env, "id lists (np.loadtxt)", "ok", "the fork parses the ids" if not line else "numpy parses them")
        line = _fork_has(fork, "misc/pyutils.py", r"np\.bool\b")
        if line and numpy_version >= (1, 24):
            rec.add(env, "misc/pyutils.py np.bool", "fail",
                    f"numpy {np.__version__}: run_sample.py fails at start-up [{line}]",
                    known_fix("module 'numpy' has no attribute 'bool'"))
        if versions["pydensecrf"].startswith("missing") and _fork_has(fork, "misc/imutils.py", r"^(import|from) pydensecrf"):
            rec.add(env, "pydensecrf", "fail", "misc/imutils.py imports it at the top (make_cam needs it)",
                    known_fix("No module named 'pydensecrf'"))
        if versions["chainercv"].startswith("missing"):
            rec.add(env, "chainercv", "warn", "the host's eval_cam / eval_amn_cam cannot run",
                    known_fix("No module named 'chainercv'"))
        if cuda == 0:
            rec.add(env, "CUDA", "info", "make_cam / make_amn_cam spawn one worker per GPU: here zero, so patch() "
                                         "refuses; the run(args) route works on CPU")
    if host in ("edam", "mctformer"):
        relative = "voc12/data.py" if host == "edam" else "datasets.py"
        line = _fork_has(fork, relative, r"Image\.CUBIC")
        if line and pillow_version >= (10, 0):
            rec.add(env, "Image.CUBIC", "fail", f"pillow {versions['pillow']} [{line}]", known_fix("has no attribute 'CUBIC'"))
        if versions["torchvision"].startswith("missing"):
            rec.add(env, "torchvision", "fail", f"the host imports it: {versions['torchvision']}",
                    known_fix("torchvision::nms does not exist"))
        if versions["pydensecrf"].startswith("missing"):
            rec.add(env, "pydensecrf", "warn", "CRF outputs (--out_crf / --out-crf) need it",
                    known_fix("No module named 'pydensecrf'"))
    if host == "edam" and _fork_has(fork, "voc12/data.py", r"^import pyarrow") and versions["pyarrow"].startswith("missing"):
        rec.add(env, "pyarrow", "fail", "voc12/data.py imports it", known_fix("No module named 'pyarrow'"))
    if host == "mctformer":
        if versions["timm"].startswith("missing"):
            rec.add(env, "timm", "fail", f"models.py imports timm (pinned 0.4.12): {versions['timm']}",
                    known_fix(versions["timm"]) or "pip install timm")
        elif _major_minor(versions["timm"]) >= (1, 0):
            rec.add(env, "timm 1.x", "warn", "timm.create_model passes pretrained_cfg to the entry point",
                    known_fix("unexpected keyword argument 'pretrained_cfg'") + "; " + known_fix("drop_block_rate"))
        if cuda == 0:
            rec.add(env, "CUDA", "info", "main.py needs --device cpu here")
    if numpy_version >= (2, 0):
        rec.add(env, "numpy 2", "info", known_fix("No module named 'numpy._core'"))


@contextlib.contextmanager
def offline_weights() -> Iterator[None]:
    """Answer ``torch.hub`` / ``model_zoo`` downloads with the calling network's own random state.

    IRN's ``resnet50(pretrained=True)`` builds the network, downloads the ImageNet state, pops
    ``fc.*`` and loads it; here the "download" returns the state of the network being built
    (found in the caller's locals), so nothing is fetched and the weights stay random.
    """
    import torch
    import torch.utils.model_zoo
    from torch import nn

    class _State(dict):  # the hosts pop keys the random state may lack (IRN: fc.weight, fc.bias)
        def pop(self, key: Any, *default: Any) -> Any:
            return super().pop(key, None)

    def load(url: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        caller = sys._getframe(1)
        module = next((v for v in caller.f_locals.values() if isinstance(v, nn.Module)), None)
        if module is None:
            raise RuntimeError(f"check-host: download of {url} blocked and no network to take random weights from")
        logger.info("check-host: %s not downloaded; random weights", url)
        return _State({k: v.clone() for k, v in module.state_dict().items()})

    saved = (torch.hub.load_state_dict_from_url, torch.utils.model_zoo.load_url)
    torch.hub.load_state_dict_from_url = load
    torch.utils.model_zoo.load_url = load
    try:
        yield
    finally:
        torch.hub.load_state_dict_from_url, torch.utils.model_zoo.load_url = saved


def _resnet_args(config: Dict[str, Any]) -> argparse.Namespace:
    """The namespace IRN's / AMN's ``run_sample.py`` builds (their names and defaults), CPU settings."""
    from lpcam_plugin.adapters import amn

    args = amn.add_arguments(argparse.ArgumentParser()).parse_args([])
    values = dict(num_workers=1, voc12_root=config["voc12_root"], train_list="voc12/train_aug.txt",
                  infer_list="voc12/train.txt", chainer_eval_set="train", cam_network="net.resnet50_cam",
                  amn_network="net.resnet50_amn", cam_scales=(1.0, 0.5, 1.5, 2.0), cam_eval_thres=0.15,
                  conf_fg_thres=0.30, conf_bg_thres=0.05, cam_weights_name="sess/res50_cam.pth",
                  amn_weights_name="sess/res50_amn.pth", cam_out_dir="result/cam", ir_label_out_dir="result/ir_label",
                  amn_cam_out_dir="result/amn_cam", amn_ir_label_out_dir="result/amn_ir_label",
                  lpcam_device="cpu", lpcam_loader_workers=0, lpcam_progress=False, lpcam_num_clusters=4,
                  lpcam_method=config.get("method", "lpcam"), lpcam_recam_epochs=1, lpcam_recam_batch_size=4,
                  lpcam_recam_crop_size=64, lpcam_fcam_source=config.get("fcam_source", "cam"),
                  lpcam_fcam_epochs=1, lpcam_fcam_batch_size=4, lpcam_fcam_crop_size=64,
                  lpcam_fcam_decoder_channels=[16, 8])
    for key, value in values.items():
        setattr(args, key, value)
    for folder in ("sess", args.cam_out_dir, args.ir_label_out_dir, args.amn_cam_out_dir, args.amn_ir_label_out_dir):
        os.makedirs(folder, exist_ok=True)
    return args


def _save_random_weights(network: str, path: str, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    with offline_weights():
        model = getattr(importlib.import_module(network), "CAM")()
    torch.save(model.state_dict(), path)


def _check_resnet_files(folder: str, ids: Sequence[str], labels: Dict[str, np.ndarray], voc12_root: str,
                        background: bool) -> str:
    """Check every file against the IRN (``background=False``) or AMN contract; return a summary."""
    import torch
    from PIL import Image

    for name in ids:
        data = np.load(os.path.join(folder, f"{name}.npy"), allow_pickle=True).item()
        with Image.open(os.path.join(voc12_root, "JPEGImages", f"{name}.jpg")) as image:
            w, h = image.size
        keys = np.nonzero(labels[name])[0]
        k = len(keys) + int(background)
        problems = []
        if sorted(data) != ["cam", "high_res", "keys"]:
            problems.append(f"keys {sorted(data)}")
        elif not (isinstance(data["keys"], torch.Tensor) and data["keys"].dtype == torch.int64
                  and data["keys"].tolist() == keys.tolist()):
            problems.append(f"'keys' {data['keys']!r}, expected int64 tensor {keys.tolist()}")
        elif not (isinstance(data["cam"], torch.Tensor) and tuple(data["cam"].shape) == (k, (h - 1) // 4 + 1, (w - 1) // 4 + 1)):
            problems.append(f"'cam' {type(data['cam']).__name__} {tuple(np.shape(data['cam']))}")
        elif not (isinstance(data["high_res"], np.ndarray) and data["high_res"].shape == (k, h, w)
                  and data["high_res"].dtype == np.float32 and np.isfinite(data["high_res"]).all()):
            problems.append(f"'high_res' {type(data['high_res']).__name__} {np.shape(data['high_res'])}")
        if problems:
            raise AssertionError(f"{folder}/{name}.npy: " + "; ".join(problems))
    return f"{len(ids)} files in {folder} follow the {'AMN' if background else 'IRN'} format"


def _pngs(folder: str, ids: Sequence[str]) -> str:
    missing = [n for n in ids if not os.path.isfile(os.path.join(folder, f"{n}.png"))]
    if missing:
        raise AssertionError(f"{len(missing)} of {len(ids)} PNGs missing in {folder}, e.g. {missing[0]}.png")
    return f"{len(ids)} PNGs in {folder}"


def _chainer_eval(rec: _Recorder, module: str, args: argparse.Namespace) -> None:
    """The host's chainercv evaluation step, or a skip line when chainercv is not importable."""
    version, error = _version("chainercv")
    if version is None:
        rec.add("steps", f"host {module}.run (seed mIoU)", "skip", error, known_fix("No module named 'chainercv'"))
        return
    with rec.step(f"host {module}.run (seed mIoU)") as info:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            importlib.import_module(module).run(args)
        info["detail"] = buffer.getvalue().strip().splitlines()[-1][:200] if buffer.getvalue().strip() else ""


def _host_reads_files(rec: _Recorder, args: argparse.Namespace, ids: Sequence[str], labels: Dict[str, np.ndarray],
                      cam_dir: str, ir_step: str, ir_dir: str, eval_step: str, *, background: bool) -> None:
    """Check the CAM files in ``cam_dir`` against the host format, then run the host's own
    ``step.<ir_step>`` on them (PNGs expected in ``ir_dir``) and its chainercv ``step.<eval_step>``."""
    with rec.step("files follow the host format") as info:
        info["detail"] = _check_resnet_files(cam_dir, ids, labels, args.voc12_root, background=background)
    with rec.step(f"host step.{ir_step}.run(args) reads them") as info:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(f"step.{ir_step}").run(args)
        info["detail"] = _pngs(ir_dir, ids)
    _chainer_eval(rec, f"step.{eval_step}", args)


def drive_resnet(rec: _Recorder, host: str, route: str, config: Dict[str, Any]) -> None:
    """IRN / AMN: random weights, the adapter's route, the host's ``cam_to_ir_label`` (and eval)."""
    from lpcam_plugin.adapters import amn, irn

    args = _resnet_args(config)
    ids = config["ids"]
    labels = {n: np.asarray(v, np.float32) for n, v in config["labels"].items()}
    with rec.step("import the host (net, voc12.dataloader, step)"):
        importlib.import_module(args.cam_network)
        importlib.import_module("step.make_cam")
        importlib.import_module("step.cam_to_ir_label")
    if config.get("train_cam") == "pss":
        _train_cam_pss(rec, args)
    else:
        with rec.step("host network with random weights (no download)") as info:
            _save_random_weights(args.cam_network, args.cam_weights_name + ".pth", 0)
            info["detail"] = f"{args.cam_network}.CAM -> {args.cam_weights_name}.pth"
    with rec.step("host dataset reads the lists") as info:
        dataset = importlib.import_module("voc12.dataloader").VOC12ClassificationDatasetMSF(
            args.train_list, voc12_root=args.voc12_root, scales=args.cam_scales)
        info["detail"] = f"{len(dataset)} images of {args.train_list}; item keys {sorted(dataset[0])}"
    stage1 = host == "irn" or route in ("a", "b")
    if stage1:
        with offline_weights():
            if route == "patch":
                _patched_make_cam(rec, "step.make_cam", irn.patch, args)
            else:
                with rec.step(f"lpcam_irn.run(args) ({args.lpcam_method} instead of step.make_cam.run)" if host == "irn"
                              else f'lpcam_amn.run(args, route="a") ({args.lpcam_method})') as info:
                    written = irn.run(args) if host == "irn" else amn.run(args, route="a")
                    info["detail"] = f"{written} files written"
        _host_reads_files(rec, args, ids, labels, args.cam_out_dir, "cam_to_ir_label", args.ir_label_out_dir,
                          "eval_cam", background=False)
    if host == "amn" and route == "b":
        with rec.step("AMN network with random weights (no download)") as info:
            _save_random_weights(args.amn_network, args.amn_weights_name + ".pth", 1)
            info["detail"] = f"{args.amn_network}.CAM -> {args.amn_weights_name}.pth"
        with offline_weights(), rec.step('lpcam_amn.run(args, route="b") (LPCAM instead of make_amn_cam)') as info:
            info["detail"] = f"{amn.run(args, route='b')} files written"
        _host_reads_files(rec, args, ids, labels, args.amn_cam_out_dir, "amn_cam_to_ir_label",
                          args.amn_ir_label_out_dir, "eval_amn_cam", background=True)


#: ``--train-cam pss``: the tiny training schedule (IRN's run_sample names; 20 images, 5 steps per epoch).
PSS_TRAIN_SETTINGS = dict(cam_batch_size=4, cam_num_epoches=2, cam_learning_rate=0.01, cam_weight_decay=1e-4,
                          lpcam_pss_crop_size=64, lpcam_pss_device="cpu", lpcam_pss_progress=False,
                          lpcam_pss_loader_workers=0)


def _train_cam_pss(rec: _Recorder, args: argparse.Namespace) -> None:
    """``--train-cam pss``: the adapter's ``patch()`` + the unchanged ``step.train_cam.run(args)`` trains
    the host's ``Net`` with RCM + MAM (ImageNet weights replaced by random ones); the host's ``CAM``
    then loads the weights file strictly."""
    import torch

    from lpcam_plugin.adapters import pixelsup_train

    for key, value in PSS_TRAIN_SETTINGS.items():
        setattr(args, key, value)
    with offline_weights(), rec.step("pixelsup_train.patch() + unchanged step.train_cam.run(args)") as info:
        pixelsup_train.patch()
        try:
            importlib.import_module("step.train_cam").run(args)
        finally:
            pixelsup_train.unpatch()
        history = torch.load(args.cam_weights_name + ".pss_train.pt", weights_only=True)["history"]
        info["detail"] = "; ".join(f"epoch {i + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in h.items())
                                   for i, h in enumerate(history))
    with offline_weights(), rec.step("host CAM loads the trained weights (strict)") as info:
        model = getattr(importlib.import_module(args.cam_network), "CAM")()
        model.load_state_dict(torch.load(args.cam_weights_name + ".pth", weights_only=True), strict=True)
        info["detail"] = f"{args.cam_network}.CAM <- {args.cam_weights_name}.pth"


def _patched_make_cam(rec: _Recorder, module: str, patch: Callable[[], None], args: argparse.Namespace) -> None:
    """The patch route: ``patch()`` then the unchanged host step (needs CUDA)."""
    with rec.step("patch() + unchanged step.make_cam.run(args)") as info:
        patch()
        importlib.import_module(module).run(args)
        info["detail"] = f"{len(list(Path(args.cam_out_dir).glob('*.npy')))} files written by the spawned workers"


def _edam_dataset(model: Any, list_path: str, voc12_root: str) -> Any:
    data = importlib.import_module("voc12.data")
    imutils = importlib.import_module("tool.imutils")

    def transform(img: Any) -> np.ndarray:
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    return data.VOC12ClsDatasetMSF(list_path, voc12_root=voc12_root, scales=(1, 0.5, 1.5, 2.0), inter_transform=transform)


def drive_edam(rec: _Recorder, route: str, config: Dict[str, Any]) -> None:
    """EDAM: random ``Net``, fit + ``edam.run`` (route "loop") or the unchanged ``infer_cls.py``, then ``eval.py``."""
    import torch

    from lpcam_plugin.adapters import edam

    root, train = config["voc12_root"], config["ids"][:config["num_fit"]]
    with rec.step("import the host (network, voc12.data, tool.imutils)"):
        net_module = importlib.import_module(edam.DEFAULT_NETWORK)
        importlib.import_module("voc12.data")
    with rec.step("host network with random weights; eval mode without chaining") as info:
        torch.manual_seed(0)
        with offline_weights():
            model = net_module.Net()
        torch.save(model.state_dict(), "edam_random.pth")
        edam.prepare_model(model, "cpu")
        info["detail"] = f"Net.train() returns {type(model.train(False)).__name__}"
    with rec.step("host dataset reads the lists") as info:
        fit_set = _edam_dataset(model, "voc12/train.txt", root)
        info["detail"] = f"{len(fit_set)} images, {len(fit_set[0][1])} views each"
    with rec.step("edam.fit (prototypes, host CAM baseline)") as info:
        bank = edam.fit(model, fit_set, baseline="host", num_clusters=4, progress=False).bank_
        info["detail"] = repr(bank)[:200]
    crf = _version("pydensecrf.densecrf")[0] is not None
    if route == "loop":
        with rec.step("edam.run (out_cam" + (", out_crf" if crf else "") + ")") as info:
            count = edam.run(model, bank, _edam_dataset(model, "voc12/train_aug.txt", root), out_cam="out_cam",
                             out_crf="out_crf" if crf else None, image_loader=edam.voc_image_loader(root),
                             progress=False)
            info["detail"] = f"{count} images"
    else:
        argv = ["--weights", "edam_random.pth", "--network", edam.DEFAULT_NETWORK, "--infer_list", "voc12/train_aug.txt",
                "--voc12_root", root, "--out_cam", "out_cam"] + (["--out_crf", "out_crf"] if crf else [])
        with rec.step("edam.run_infer_cls (unchanged infer_cls.py)") as info:
            edam.run_infer_cls(bank, argv, script=Path(config["fork"]) / "infer_cls.py")
            info["detail"] = f"{len(list(Path('out_cam').glob('*.npy')))} files"
    if not crf:
        rec.add("steps", "CRF dicts", "skip", "pydensecrf not importable", known_fix("No module named 'pydensecrf'"))
    with rec.step("host eval.py do_python_eval reads the dicts") as info:
        evaluation = importlib.import_module("eval")
        gt = os.path.join(root, "SegmentationClass")
        with contextlib.redirect_stdout(io.StringIO()):
            host = evaluation.do_python_eval("out_cam", gt, train, 21, "npy", 0.5)
        ours = edam.evaluate("out_cam", gt, train, thetas=0.5, allow_pickle=True, progress=False)
        mine = 100 * float(ours.miou[0])
        if abs(host["mIoU"] - mine) > 1e-3:
            raise AssertionError(f"eval.py mIoU {host['mIoU']:.4f} != edam.evaluate {mine:.4f}")
        info["detail"] = f"mIoU {host['mIoU']:.3f} (edam.evaluate agrees)"
        if crf:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluation.do_python_eval("out_crf", gt, train, 21, "npy", 0.5, crf=True)
            info["detail"] += "; CRF dicts read"


def drive_mctformer(rec: _Recorder, route: str, config: Dict[str, Any]) -> None:
    """MCTformer-V2: random model, fit, hook around the unchanged engine, then ``evaluation.py``."""
    import torch

    from lpcam_plugin.adapters import mctformer

    root, ids, train = config["voc12_root"], config["ids"], config["ids"][:config["num_fit"]]
    with rec.step("import the host (models, datasets, engine)"):
        models = importlib.import_module("models")
        datasets = importlib.import_module("datasets")
        engine = importlib.import_module("engine")
    with rec.step("models.deit_small_MCTformerV2_patch16_224(pretrained=False) with random weights") as info:
        torch.manual_seed(0)
        with offline_weights():
            model = models.deit_small_MCTformerV2_patch16_224(pretrained=False, num_classes=20)
        model.eval()
        info["detail"] = f"head {tuple(model.head.weight.shape)}"
    args = argparse.Namespace(img_list="voc12", data_path=root, scales=[1.0], patch_size=model.patch_embed.patch_size[0],
                              layer_index=mctformer.LAYER_INDEX, nb_classes=20, attention_type="fused",
                              patch_attn_refine=True, visualize_cls_attn=True, cam_npy_dir="out_npy",
                              out_crf="out_crf" if _version("pydensecrf.densecrf")[0] else None, low_alpha=1,
                              high_alpha=12, attention_dir=None, data_set="VOC12MS", input_size=IMAGE_SIZE,
                              gen_attention_maps=True, device="cpu")
    with rec.step("host dataset (build_dataset, gen mode)") as info:
        dataset, _ = datasets.build_dataset(is_train=False, args=args, gen_attn=True)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
        info["detail"] = f"{len(dataset)} images"
    with rec.step("mctformer.fit (prototypes, host fused CAM baseline)") as info:
        bank = mctformer.fit(model, loader, names=ids, baseline="fused", num_clusters=4, progress=False).bank_
        info["detail"] = repr(bank)[:200]
    with rec.step("mctformer.patch + unchanged engine.generate_attention_maps_ms") as info:
        with mctformer.patch(model, bank):
            engine.generate_attention_maps_ms(loader, model, torch.device("cpu"), args)
        info["detail"] = f"{len(list(Path('out_npy').glob('*.npy')))} files"
    with rec.step("host evaluation.py do_python_eval reads the dicts") as info:
        evaluation = importlib.import_module("evaluation")
        gt = os.path.join(root, "SegmentationClassAug")
        with contextlib.redirect_stdout(io.StringIO()):
            host = evaluation.do_python_eval("out_npy", gt, train, 21, "npy", 0.3)
        mine = 100 * float(mctformer.evaluate("out_npy", gt, train, start=30, end=31, allow_pickle=True,
                                              progress=False).miou[0])
        if abs(host["mIoU"] - mine) > 1e-3:
            raise AssertionError(f"evaluation.py mIoU {host['mIoU']:.4f} != mctformer.evaluate {mine:.4f}")
        info["detail"] = f"mIoU {host['mIoU']:.3f} at t=0.30 (mctformer.evaluate agrees)"


def run_driver(config_path: Path) -> int:
    """Subprocess entry: environment checks and the host's route; items go to ``config['results']``."""
    config = json.loads(config_path.read_text())
    fork = Path(config["fork"])
    rec = _Recorder(Path(config["results"]), fork)
    host, route = config["host"], config["route"]
    logging.basicConfig(level=logging.WARNING)
    check_environment(rec, host, fork)
    drivers: Dict[str, Callable[[], None]] = {
        "irn": lambda: drive_resnet(rec, "irn", route, config),
        "amn": lambda: drive_resnet(rec, "amn", route, config),
        "edam": lambda: drive_edam(rec, route, config),
        "mctformer": lambda: drive_mctformer(rec, route, config),
    }
    try:
        drivers[host]()
    except _StepFailed as failed:
        rec.add("steps", "remaining steps", "skip", f"not run: they need '{failed}'")
    return 1 if rec.failed else 0


# --------------------------------------------------------------------------- parent side


def package_root() -> Path:
    """The folder holding the ``lpcam_plugin`` package, put on the host interpreter's ``PYTHONPATH``
    (``--python`` may name an environment where the plug-in is not installed)."""
    return Path(__file__).resolve().parent.parent


def check_host(host: str, fork: Path, *, route: Optional[str] = None, python: Optional[str] = None,
               workdir: Optional[Path] = None, timeout: float = 1800.0, method: str = "lpcam", fcam_source: str = "cam",
               train_cam: str = "random") -> Tuple[List[Item], int]:
    """Run the check; return the checklist items and the exit code (0: the plug-in works there).

    ``method``: what the IRN / AMN stage-1 step writes (``--lpcam_method``: ``lpcam``, ``cam``,
    ``recam`` — one epoch of the ReCAM step on the tiny set —, ``recam+lpcam`` or ``fcam`` — one
    epoch of the F-CAM decoder over ``fcam_source``'s maps, then its full-resolution maps); the other
    hosts and AMN's route "b" write LPCAM only. ``train_cam``: the stage-1 weights are random
    (``"random"``) or trained on the tiny set by the RCM+MAM ``train_cam`` adapter (``"pss"``).
    """
    if host not in ROUTES:
        raise ValueError(f"host must be one of {sorted(ROUTES)}, got {host!r}")
    route = route or ROUTES[host][0]
    if route not in ROUTES[host]:
        raise ValueError(f"{host} routes are {ROUTES[host]}, got {route!r}")
    if method != "lpcam" and not (host == "irn" or (host == "amn" and route == "a")):
        raise ValueError(f"--method {method} applies to irn and to amn --route a only (the other CAM steps write LPCAM)")
    if fcam_source != "cam" and method != "fcam":
        raise ValueError(f"--fcam-source {fcam_source} applies to --method fcam only")
    if train_cam not in ("random", "pss") or (train_cam == "pss" and not (host == "irn" or (host == "amn" and route == "a"))):
        raise ValueError(f"--train-cam {train_cam}: 'pss' trains the stage-1 network of irn / amn --route a; "
                         "otherwise use 'random'")
    fork = Path(fork).resolve()
    if not fork.is_dir():
        raise FileNotFoundError(f"{fork}: no such fork folder")
    with contextlib.ExitStack() as stack:
        work = workdir if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lpcam_check_")))
        work.mkdir(parents=True, exist_ok=True)
        root, ids = write_dataset(work, host)
        labels = np.load(work / "voc12" / "cls_labels.npy", allow_pickle=True).item()
        config = {"host": host, "route": route, "method": method, "fcam_source": fcam_source, "train_cam": train_cam,
                  "fork": str(fork), "voc12_root": str(root), "ids": ids,
                  "num_fit": NUM_FIT, "results": str(work / "results.jsonl"),
                  "labels": {n: labels[np.int32(int(n.replace("_", ""))) if host in ("irn", "amn") else n].tolist()
                             for n in ids}}
        (work / "check_config.json").write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fork), str(package_root())]), "CUDA_VISIBLE_DEVICES":
               os.environ.get("CUDA_VISIBLE_DEVICES", ""), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        proc = subprocess.run([python or sys.executable, "-m", "lpcam_plugin.check_host", "--driver",
                               str(work / "check_config.json")], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        items = []
        results = work / "results.jsonl"
        if results.exists():
            items = [Item(**json.loads(line)) for line in results.read_text().splitlines() if line.strip()]
        if proc.returncode not in (0, 1) or not items:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            items.append(Item("steps", "driver", "fail", f"exit code {proc.returncode}: {tail[0][:400]}",
                              known_fix(tail[0])))
    code = 1 if any(item.status == "fail" for item in items) else 0
    return items, code


def format_checklist(host: str, fork: Path, route: str, items: Sequence[Item], code: int) -> str:
    """The checklist as printed by ``lpcam check-host``."""
    lines = [f"lpcam check-host {host} {fork} (route {route})"]
    section = None
    for item in items:
        if item.section != section:
            section = item.section
            lines.append(f"{section}:")
        lines.append(f"  [{STATUS_MARK.get(item.status, item.status)}] {item.name}" + (f": {item.detail}" if item.detail else ""))
        if item.fix:
            lines.append(f"         fix: {item.fix}")
    lines.append("result: the plug-in works in this fork and environment" if code == 0 else
                 "result: FAILED (fix the lines marked FAIL and run check-host again)")
    return "\n".join(lines)


def _run_cli(args: argparse.Namespace) -> int:
    route = args.route or ROUTES[args.host][0]
    try:
        items, code = check_host(args.host, args.fork, route=route, python=args.python, workdir=args.keep,
                                 timeout=args.timeout, method=args.method, fcam_source=args.fcam_source,
                                 train_cam=args.train_cam)
    except (ValueError, FileNotFoundError, subprocess.TimeoutExpired) as error:
        logger.error("check-host: %s", error)
        return 2
    sys.stdout.write(format_checklist(args.host, args.fork, f"{route}, method {args.method}", items, code) + "\n")
    return code


def register_cli(subparsers: Any) -> None:
    """Add ``lpcam check-host`` to the ``lpcam`` command line."""
    parser = subparsers.add_parser(
        "check-host", help="check that the plug-in works in a host fork (tiny synthetic data, CPU, offline)",
        description="Run the adapter's documented route end to end in a host fork on a tiny synthetic VOC set "
                    "(random weights, CPU, nothing downloaded), then the host's own next step on the files; "
                    "print a checklist and exit 1 if the plug-in does not work there.")
    parser.add_argument("host", choices=sorted(ROUTES))
    parser.add_argument("fork", type=Path, help="the host checkout (its root, where run_sample.py / main.py is)")
    parser.add_argument("--route", default=None,
                        help="; ".join(f"{h}: {', '.join(r)} (default {r[0]})" for h, r in ROUTES.items()))
    parser.add_argument("--python", default=None, help="interpreter of the host's environment (default: this one)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the check is stopped")
    parser.add_argument("--method", default="lpcam", choices=("lpcam", "cam", "recam", "recam+lpcam", "fcam"),
                        help="irn / amn --route a: what the CAM step writes (default: %(default)s)")
    parser.add_argument("--fcam-source", dest="fcam_source", default="cam", choices=("cam", "lpcam", "recam", "recam+lpcam"),
                        help="--method fcam: the read-out whose maps train the F-CAM decoder (default: %(default)s)")
    parser.add_argument("--train-cam", dest="train_cam", default="random", choices=("random", "pss"),
                        help="irn / amn stage 1: random weights, or train them with the RCM+MAM train_cam "
                             "adapter (pixelsup_train.patch() + the unchanged step) (default: %(default)s)")
    parser.set_defaults(func=_run_cli)


__all__ = ["Item", "KNOWN_FIXES", "ROUTES", "check_host", "format_checklist", "known_fix", "register_cli",
           "write_dataset"]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--driver":
    sys.exit(run_driver(Path(sys.argv[2])))
