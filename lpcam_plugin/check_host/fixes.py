"""The known host-side failures of ``lpcam check-host`` and the fix printed for each.

A failing step's ``"ExceptionType: message"`` (and the fork line it came from) is matched against
:data:`KNOWN_FIXES`; the first pattern found gives the ``fix:`` line of the checklist. The
incompatibilities themselves are described in ``docs/design/hosts.md``.
"""
from __future__ import annotations

import re
from typing import Tuple

#: Known failures: (regex on "ExceptionType: message", the fix to print).
KNOWN_FIXES: Tuple[Tuple[str, str], ...] = (
    (r"could not convert string|invalid literal for int\(\).*_\d|ValueError: .*'\d{4}_\d{6}'",
     "voc12/dataloader.py load_img_name_list: np.loadtxt(dataset_path, dtype=np.int32) cannot parse ids like "
     "2007_000032 on numpy >= 1.23; use: img_name_list = np.array([int(line.strip().replace('_', '')) for line "
     "in open(dataset_path) if line.strip()], dtype=np.int32)"),
    (r"Index must be of type integer",
     "misc/torchutils.py split_dataset: recent torchvision's CocoDetection rejects numpy ints; write "
     "Subset(dataset, np.arange(i, len(dataset), n_splits).tolist())"),
    (r"module 'numpy' has no attribute 'bool'",
     "misc/pyutils.py: np.bool was removed in numpy 1.24; write bool (dtype=bool) instead"),
    (r"has no attribute 'CUBIC'", "Image.CUBIC was removed in Pillow 10: pip install 'pillow<10' "
                                  "(or write Image.BICUBIC in the fork)"),
    (r"No module named 'pyarrow'|pyarrow requires", "pip install pyarrow (EDAM's voc12/data.py imports it at the "
                                                    "top; recent pyarrow wheels need numpy >= 2, pin an older "
                                                    "pyarrow with numpy 1.x)"),
    (r"torchvision::nms does not exist|No module named 'torchvision'|torchvision",
     "install the torchvision release built for this torch (same release line and the same CPU/CUDA "
     "build, with --no-deps); on a CPU-only machine without one, put a copy of the wheel's pure-Python "
     "parts on PYTHONPATH (docs/check-host.md, 'torchvision on a CPU-only machine')"),
    (r"No module named 'timm'", "pip install timm==0.4.12 --no-deps (MCTformer's pin; without --no-deps pip "
                                "replaces a CPU torch with a CUDA build)"),
    (r"No module named 'imageio'", "pip install imageio (EDAM's infer_cls.py imports it)"),
    (r"No module named 'sklearn'", "pip install 'scikit-learn<1.6' (MCTformer's engine.py imports it; a recent one "
                                   "needs numpy >= 2)"),
    (r"No module named 'pandas'", "pip install pandas (the hosts' eval.py / evaluation.py import it)"),
    (r"No module named 'skimage'|has no attribute 'CUBIC'.*skimage",
     "pip install 'scikit-image<0.26' (PSA's CRF-dict reader; 0.26 pulls Pillow >= 10, which lacks Image.CUBIC)"),
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


def known_fix(message: str) -> str:
    """The fix of the first :data:`KNOWN_FIXES` pattern found in ``message`` ("" if none)."""
    for pattern, fix in KNOWN_FIXES:
        if re.search(pattern, message):
            return fix
    return ""


__all__ = ["KNOWN_FIXES", "known_fix"]
