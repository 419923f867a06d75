"""The EDAM driver of ``lpcam check-host``: random ``Net``, the adapter's route, then the host's ``eval.py``.

Runs in the driver subprocess with the fork first on ``sys.path``. With ``--train-cam pss`` the
classifier is first trained for one step by :mod:`lpcam_plugin.adapters.edam_pixelsup_train` (on a
pair list written by :func:`lpcam_plugin.adapters.edam.write_pair_list`) and the weights it saves
are the ones used below. Then: fits :mod:`lpcam_plugin.adapters.edam` on the host's own dataset,
writes the ``{class: map}`` dicts with ``edam.run`` (route "loop"), the unchanged ``infer_cls.py``
(route "infer_cls") or an F-CAM decoder (:mod:`lpcam_plugin.adapters.edam_fcam`, ``--method
fcam``), then has the host's ``eval.py`` read them and checks that ``edam.evaluate`` agrees.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.environment import module_version
from lpcam_plugin.check_host.fixes import known_fix
from lpcam_plugin.check_host.host_data import IMAGE_SIZE
from lpcam_plugin.check_host.offline import offline_weights

#: ``infer_cls.py`` on a machine without CUDA: the edits ``docs/hosts/edam.md`` documents.
INFER_CLS_CPU_FIX = ("infer_cls.py assumes CUDA: make the documented CPU edits (docs/hosts/edam.md, route B: "
                     "model.to(device), n_gpus = max(torch.cuda.device_count(), 1), no torch.cuda.device() on CPU, "
                     "img.to(device), model_replicas = [model]) or check --route loop")
#: This step's own fixes: a CUDA failure of the unedited script points to the CPU edits.
INFER_CLS_FIXES: Tuple[Tuple[str, str], ...] = (
    (r"CUDA|cuda|NVIDIA|modulo by zero|replicate", INFER_CLS_CPU_FIX),
)
#: Tiny F-CAM settings for the check (one epoch on the 64-pixel images).
FCAM_SETTINGS: Dict[str, Any] = dict(batch_size=4, crop_size=IMAGE_SIZE, epochs=1, decoder_channels=(16, 8))
#: ``--train-cam pss``: one step of one pair; EDAM's positional embedding needs a 368 crop (46 x 46 bn7).
PSS_ARGV = ("--batch_size", "1", "--max_epoches", "1", "--crop_size", "368", "--lr", "0.001", "--num_workers", "0",
            "--lpcam_pss_epoch_steps", "1", "--lpcam_pss_scales", "1.0", "--lpcam_pss_device", "cpu",
            "--lpcam_pss_progress", "no", "--lpcam_pss_loader_workers", "0")


def _edam_dataset(model: Any, list_path: str, voc12_root: str) -> Any:
    """The host's multi-scale dataset over ``list_path``, normalised by the network."""
    data = importlib.import_module("voc12.data")
    imutils = importlib.import_module("tool.imutils")

    def transform(img: Any) -> np.ndarray:
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    return data.VOC12ClsDatasetMSF(list_path, voc12_root=voc12_root, scales=(1, 0.5, 1.5, 2.0),
                                   inter_transform=transform)


def _train_pss(rec: Recorder, config: Dict[str, Any]) -> str:
    """One step of RCM + MAM training through ``edam_pixelsup_train``; the path of the weights it saved."""
    import torch

    from lpcam_plugin.adapters import edam, edam_pixelsup_train

    with rec.step("edam.write_pair_list (voc12/EDAM_train.txt, absent from the checkout)") as info:
        count = edam.write_pair_list("voc12/EDAM_train.txt", "voc12/train_aug.txt", "voc12/cls_labels.npy",
                                     epochs=0.1)
        info["detail"] = f"{count} pair"
    with rec.step("edam_pixelsup_train (RCM + MAM, one step, crop 368)") as info:
        torch.manual_seed(1)
        with offline_weights():
            init = importlib.import_module(edam.DEFAULT_NETWORK).Net()
        torch.save(init.state_dict(), "edam_init.pth")
        argv = ["--weights", "edam_init.pth", "--voc12_root", config["voc12_root"], "--train_list",
                "voc12/EDAM_train.txt", "--session_name", "edam_pss", *PSS_ARGV]
        edam_pixelsup_train.train(edam_pixelsup_train.build_parser().parse_args(argv))
        saved = sorted(Path("edam_pss").glob("*.pth"), key=lambda path: int(path.stem))
        if not saved:
            raise AssertionError("edam_pss/<n>.pth was not written")
        info["detail"] = f"{saved[-1]} written"
    return str(saved[-1])


def _fcam(rec: Recorder, config: Dict[str, Any], model: Any, bank: Any) -> None:
    """F-CAM over ``config['fcam_source']``: train one epoch, write ``out_cam`` dicts, CRF dicts of the first."""
    from lpcam_plugin.adapters import edam, edam_fcam

    root = config["voc12_root"]
    source = bank if config.get("fcam_source") == "lpcam" else "cam"
    with rec.step(f"edam_fcam.fit (F-CAM over {config.get('fcam_source', 'cam')}, one epoch)") as info:
        data = importlib.import_module("voc12.data")
        imutils = importlib.import_module("tool.imutils")

        def transform(img: Any) -> np.ndarray:
            return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

        train = data.VOC12ClsDatasetMSF("voc12/train_aug.txt", voc12_root=root, scales=(1.0,),
                                        inter_transform=transform)
        fcam = edam_fcam.fit(model, train, source=source, progress=False, **FCAM_SETTINGS)
        fcam.save("fcam_edam.npz")
        info["detail"] = f"skips {fcam.skip_layers_}"
    with rec.step("edam_fcam.run (out_cam dicts)") as info:
        import torch

        count = edam_fcam.run(model, fcam, torch.utils.data.DataLoader(train, batch_size=1), out_cam="out_cam",
                              progress=False)
        info["detail"] = f"{count} files"
    if module_version("pydensecrf.densecrf")[0] is not None:
        with rec.step("edam_fcam.crf_dict (out_crf dicts for eval.py --crf)") as info:
            loader = edam.voc_image_loader(root)
            os.makedirs("out_crf", exist_ok=True)
            for name in config["ids"]:
                cams = np.load(Path("out_cam") / f"{name}.npy", allow_pickle=True).item()
                crf = edam_fcam.crf_dict(cams, loader(name), alpha=edam.CRF_ALPHA, t=edam.CRF_ITERATIONS)
                np.save(Path("out_crf") / f"{name}.npy", crf)
            info["detail"] = f"{len(config['ids'])} files"


def drive_edam(rec: Recorder, route: str, config: Dict[str, Any]) -> None:
    """EDAM: random (or RCM + MAM-trained) ``Net``, fit, then ``edam.run`` (route "loop"), the unchanged
    ``infer_cls.py`` (route "infer_cls") or F-CAM, then ``eval.py``."""
    import torch

    from lpcam_plugin.adapters import edam

    root, train = config["voc12_root"], config["ids"][:config["num_fit"]]
    method = config.get("method", "lpcam")
    with rec.step("import the host (network, voc12.data, tool.imutils)"):
        net_module = importlib.import_module(edam.DEFAULT_NETWORK)
        importlib.import_module("voc12.data")
    weights = _train_pss(rec, config) if config.get("train_cam") == "pss" else None
    with rec.step("host network with " + ("the trained weights" if weights else "random weights")
                  + "; eval mode without chaining") as info:
        torch.manual_seed(0)
        with offline_weights():
            model = net_module.Net()
        if weights:
            model.load_state_dict(torch.load(weights, map_location="cpu"))
        torch.save(model.state_dict(), "edam_random.pth")
        edam.prepare_model(model, "cpu")
        info["detail"] = f"Net.train() returns {type(model.train(False)).__name__}"
    with rec.step("host dataset reads the lists") as info:
        fit_set = _edam_dataset(model, "voc12/train.txt", root)
        info["detail"] = f"{len(fit_set)} images, {len(fit_set[0][1])} views each"
    crf = module_version("pydensecrf.densecrf")[0] is not None
    bank = None
    if method == "lpcam" or config.get("fcam_source") == "lpcam":
        with rec.step("edam.fit (prototypes, host CAM baseline)") as info:
            bank = edam.fit(model, fit_set, baseline="host", num_clusters=4, progress=False).bank_
            info["detail"] = repr(bank)[:200]
    if method == "fcam":
        _fcam(rec, config, model, bank)
    elif route == "loop":
        with rec.step("edam.run (out_cam" + (", out_crf" if crf else "") + ")") as info:
            count = edam.run(model, bank, _edam_dataset(model, "voc12/train_aug.txt", root), out_cam="out_cam",
                             out_crf="out_crf" if crf else None, image_loader=edam.voc_image_loader(root),
                             progress=False)
            info["detail"] = f"{count} images"
    else:
        argv = ["--weights", "edam_random.pth", "--network", edam.DEFAULT_NETWORK, "--infer_list",
                "voc12/train_aug.txt", "--voc12_root", root, "--out_cam", "out_cam"]
        argv += ["--out_crf", "out_crf"] if crf else []
        fixes = INFER_CLS_FIXES if torch.cuda.device_count() == 0 else ()
        with rec.step("edam.run_infer_cls (unchanged infer_cls.py)", fixes=fixes) as info:
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


__all__ = ["FCAM_SETTINGS", "INFER_CLS_CPU_FIX", "INFER_CLS_FIXES", "PSS_ARGV", "drive_edam"]
