"""A tiny VOC-style dataset and host checkouts for the IRN / AMN adapter tests.

``make_voc`` writes ``JPEGImages/<id>.jpg`` (coloured squares on noise, one per present class),
``SegmentationClass/<id>.png`` (palette PNG: class + 1 inside each square, 255 on a 1-px ring,
0 elsewhere) and ``ImageSets/Segmentation/train.txt``. ``make_host`` copies the stand-in host
(``irn_host``, or ``irn_host`` overlaid with ``amn_host``) and writes its ``voc12`` lists and
``cls_labels.npy`` (``{int32 id without underscore: float32 (20,)}``, as IRN's file), and gives
the copy's ``voc12/dataloader.py`` the documented fix of its ``np.loadtxt`` line (``LOADTXT_FIX``)
unless ``fix_loadtxt=False``.
``make_fork`` edits ``run_sample.py`` the way a user's fork does; ``imported_host`` imports a
stand-in host in-process.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image

HOSTS = Path(__file__).resolve().parent
CLASSES = (0, 7, 14)  # aeroplane, cat, person
COLOURS = {0: (220, 40, 40), 7: (40, 200, 40), 14: (40, 40, 220)}


def make_voc(root: Path, ids: Sequence[str], eval_ids: Sequence[str], seed: int = 0) -> Dict[str, np.ndarray]:
    """Write the images, ground truth and split; return ``{id: (20,) float32 label}``."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    labels = {}
    for n, image_id in enumerate(ids):
        h, w = int(rng.integers(40, 64)), int(rng.integers(40, 64))
        img = rng.integers(0, 80, size=(h, w, 3)).astype(np.uint8)
        gt = np.zeros((h, w), np.uint8)
        present = [CLASSES[n % 3]] + ([CLASSES[(n + 1) % 3]] if n % 2 else [])
        label = np.zeros(20, np.float32)
        for c in present:
            size = int(rng.integers(12, 22))
            top, left = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
            img[top:top + size, left:left + size] = COLOURS[c]
            gt[top:top + size, left:left + size] = 255
            gt[top + 1:top + size - 1, left + 1:left + size - 1] = c + 1
            label[c] = 1.0
        labels[image_id] = label
        Image.fromarray(img).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        png = Image.fromarray(gt, mode="P")
        png.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
        png.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in eval_ids))
    return labels


#: IRN's id-list line (``voc12/dataloader.py``) and the fix examples/irn/README.md documents.
LOADTXT_LINE = "    img_name_list = np.loadtxt(dataset_path, dtype=np.int32)\n"
LOADTXT_FIX = ("    img_name_list = np.array([int(line.strip().replace('_', '')) for line in open(dataset_path) "
               "if line.strip()], dtype=np.int32)\n")


#: The COCO pipeline's ``split_dataset`` line (``misc/torchutils.py``) and the fix docs/hosts/irn.md documents.
SPLIT_LINE = "    return [Subset(dataset, np.arange(i, len(dataset), n_splits)) for i in range(n_splits)]\n"
SPLIT_FIX = "    return [Subset(dataset, np.arange(i, len(dataset), n_splits).tolist()) for i in range(n_splits)]\n"


#: The AMN stand-in network's class count and the coco14 branch's.
AMN_CLASSES_LINE, AMN_COCO14_CLASSES_LINE = "N_CLASSES = 20\n", "N_CLASSES = 80\n"


def copy_host(dest: Path, host: str, *, fix_loadtxt: bool = True, fix_split: bool = True) -> Path:
    """Copy the stand-in ``host`` ("irn"; "amn" = irn_host overlaid with amn_host; "irn_coco" =
    irn_host overlaid with irn_coco_host, the reference's COCO pipeline; "amn_coco14" = the AMN
    stand-in overlaid with amn_coco14_host, AMN's coco14 branch) to ``dest``.

    ``fix_split``: on "irn_coco", give ``split_dataset`` the documented ``.tolist()`` fix."""
    ignore = shutil.ignore_patterns("README.md", "__pycache__")
    shutil.copytree(HOSTS / "irn_host", dest, ignore=ignore)
    overlays = {"amn": ("amn",), "irn_coco": ("irn_coco",), "amn_coco14": ("amn", "amn_coco14")}.get(host, ())
    for overlay in overlays:
        shutil.copytree(HOSTS / f"{overlay}_host", dest, ignore=ignore, dirs_exist_ok=True)
    if host == "amn_coco14":  # the coco14 branch's AMN network: the VOC one with 80 classes hard-coded
        network = dest / "net" / "resnet50_amn.py"
        text = network.read_text()
        if text.count(AMN_CLASSES_LINE) != 1:
            raise AssertionError("the AMN stand-in's class-count line changed")
        network.write_text(text.replace(AMN_CLASSES_LINE, AMN_COCO14_CLASSES_LINE))
    if host == "irn_coco" and fix_split:
        torchutils = dest / "misc" / "torchutils.py"
        text = torchutils.read_text()
        if text.count(SPLIT_LINE) != 1:
            raise AssertionError("the stand-in's split_dataset line changed")
        torchutils.write_text(text.replace(SPLIT_LINE, SPLIT_FIX))
    if fix_loadtxt:
        loader = dest / "voc12" / "dataloader.py"
        text = loader.read_text()
        if text.count(LOADTXT_LINE) != 1:
            raise AssertionError("the stand-in's np.loadtxt line changed")
        loader.write_text(text.replace(LOADTXT_LINE, LOADTXT_FIX))
    return dest


def make_host(dest: Path, host: str, labels: Dict[str, np.ndarray], train_aug: Sequence[str],
              train: Sequence[str], *, fix_loadtxt: bool = True) -> Path:
    """Copy the stand-in ``host`` ("irn" or "amn") to ``dest`` and write its voc12 files."""
    copy_host(dest, host, fix_loadtxt=fix_loadtxt)
    np.save(dest / "voc12" / "cls_labels.npy",
            {np.int32(int(i.replace("_", ""))): v for i, v in labels.items()}, allow_pickle=True)
    (dest / "voc12" / "train_aug.txt").write_text("".join(f"{i}\n" for i in train_aug))
    (dest / "voc12" / "train.txt").write_text("".join(f"{i}\n" for i in train))
    return dest


#: Lines for a forked run_sample.py that pretend ``n`` GPUs: the stand-ins' CAM steps spawn
#: ``torch.cuda.device_count()`` workers (as upstream) whose replaced ``_work`` runs on the CPU.
def fake_gpus(n: int) -> str:
    return f"    import torch\n    torch.cuda.device_count = lambda: {n}  # test: fake GPUs, workers run on CPU\n"


def image_ids(n: int) -> List[str]:
    return [f"2007_{i:06d}" for i in range(1, n + 1)]


def make_fork(host_dir: Path, edits: Dict[str, str], name: str = "run_sample_lpcam.py") -> Path:
    """Write a forked ``run_sample.py``: each key line (exact, with indentation) is replaced by its
    value; every key must occur exactly once. Returns the new script."""
    text = (host_dir / "run_sample.py").read_text()
    for old, new in edits.items():
        if text.count(old + "\n") != 1:
            raise AssertionError(f"line {old!r} occurs {text.count(old)} times in run_sample.py")
        text = text.replace(old + "\n", new + "\n")
    script = host_dir / name
    script.write_text(text)
    return script


def irn_fork(host_dir: Path, *, gpus: Optional[int] = None) -> Path:
    """A user's IRN fork with the adapter, as ``examples/irn/run_sample.patch`` makes it: the
    ``--lpcam_*`` options, ``--sem_seg_bg_thres`` typed (IRN declares it without a type, so a value
    on the command line would arrive as str), INFO logging, and the CAM step either
    ``lpcam_irn.run(args)`` (``gpus`` None) or ``lpcam_irn.patch()`` before the unchanged step with
    ``gpus`` faked GPUs (its workers run on CPU)."""
    setup = "    import logging\n    logging.basicConfig(level=logging.INFO)\n"
    if gpus is not None:
        setup += fake_gpus(gpus)
    step = "        lpcam_irn.run(args)" if gpus is None else "        lpcam_irn.patch()\n        step.make_cam.run(args)"
    return make_fork(host_dir, {
        "    args = parser.parse_args()":
            setup + "    import lpcam_plugin.adapters.irn as lpcam_irn\n    lpcam_irn.add_arguments(parser)\n"
                    "    args = parser.parse_args()",
        "        step.make_cam.run(args)": step,
        '    parser.add_argument("--sem_seg_bg_thres", default=0.25)':
            '    parser.add_argument("--sem_seg_bg_thres", default=0.25, type=float)',
    })


HOST_PACKAGES = ("net", "misc", "voc12", "step", "mscoco", "step_coco", "coco14")


@contextlib.contextmanager
def imported_host(host_dir: Path) -> Iterator[None]:
    """Run the block inside a stand-in host checkout: cwd = ``host_dir`` (IRN loads
    ``voc12/cls_labels.npy`` relative to it), ``host_dir`` first on ``sys.path``; afterwards the
    host's modules (``net``, ``misc``, ``voc12``, ``step`` and their submodules) are dropped from
    ``sys.modules`` so that the IRN and AMN stand-ins never see each other's modules."""

    def host_modules() -> List[str]:
        return [m for m in sys.modules if m.split(".")[0] in HOST_PACKAGES]

    if host_modules():
        raise AssertionError(f"host modules already imported: {host_modules()}")
    old_cwd = os.getcwd()
    sys.path.insert(0, str(host_dir))
    os.chdir(host_dir)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(host_dir))
        for name in host_modules():
            del sys.modules[name]


def run_fork(script: Path, host_dir: Path, args: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    """Run a forked ``run_sample`` script of a stand-in host in a fresh interpreter (one thread,
    warnings off); fail with its output tail when it exits non-zero."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), *args], cwd=host_dir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load_host_dict(path: Path) -> dict:
    """Read a host's pickled ``.npy`` dict (the IRN/AMN CAM format)."""
    return np.load(path, allow_pickle=True).item()
