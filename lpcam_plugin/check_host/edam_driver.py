"""The EDAM driver of ``lpcam check-host``: random ``Net``, the adapter's route, then the host's ``eval.py``.

Runs in the driver subprocess with the fork first on ``sys.path``: fits
:mod:`lpcam_plugin.adapters.edam` on the host's own dataset, writes the ``{class: map}`` dicts
with ``edam.run`` (route "loop") or the unchanged ``infer_cls.py`` (route "infer_cls"), then has
the host's ``eval.py`` read them and checks that ``edam.evaluate`` agrees.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.environment import module_version
from lpcam_plugin.check_host.fixes import known_fix
from lpcam_plugin.check_host.offline import offline_weights


def _edam_dataset(model: Any, list_path: str, voc12_root: str) -> Any:
    """The host's multi-scale dataset over ``list_path``, normalised by the network."""
    data = importlib.import_module("voc12.data")
    imutils = importlib.import_module("tool.imutils")

    def transform(img: Any) -> np.ndarray:
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    return data.VOC12ClsDatasetMSF(list_path, voc12_root=voc12_root, scales=(1, 0.5, 1.5, 2.0),
                                   inter_transform=transform)


def drive_edam(rec: Recorder, route: str, config: Dict[str, Any]) -> None:
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
    crf = module_version("pydensecrf.densecrf")[0] is not None
    if route == "loop":
        with rec.step("edam.run (out_cam" + (", out_crf" if crf else "") + ")") as info:
            count = edam.run(model, bank, _edam_dataset(model, "voc12/train_aug.txt", root), out_cam="out_cam",
                             out_crf="out_crf" if crf else None, image_loader=edam.voc_image_loader(root),
                             progress=False)
            info["detail"] = f"{count} images"
    else:
        argv = ["--weights", "edam_random.pth", "--network", edam.DEFAULT_NETWORK, "--infer_list",
                "voc12/train_aug.txt", "--voc12_root", root, "--out_cam", "out_cam"]
        argv += ["--out_crf", "out_crf"] if crf else []
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


__all__ = ["drive_edam"]
