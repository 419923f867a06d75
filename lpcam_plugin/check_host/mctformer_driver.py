"""The MCTformer-V2 driver of ``lpcam check-host``: random model, the adapter's hook, the host's ``evaluation.py``.

Runs in the driver subprocess with the fork first on ``sys.path``: builds the host's DeiT-S
MCTformer-V2 with random weights, fits :mod:`lpcam_plugin.adapters.mctformer` on the host's own
dataset, runs the unchanged ``engine.generate_attention_maps_ms`` inside ``mctformer.patch``, then
has the host's ``evaluation.py`` read the dicts and checks that ``mctformer.evaluate`` agrees.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
from pathlib import Path
from typing import Any, Dict

from lpcam_plugin.check_host.checklist import Recorder
from lpcam_plugin.check_host.environment import module_version
from lpcam_plugin.check_host.host_data import IMAGE_SIZE
from lpcam_plugin.check_host.offline import offline_weights


def drive_mctformer(rec: Recorder, route: str, config: Dict[str, Any]) -> None:
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
    args = argparse.Namespace(img_list="voc12", data_path=root, scales=[1.0],
                              patch_size=model.patch_embed.patch_size[0], layer_index=mctformer.LAYER_INDEX,
                              nb_classes=20, attention_type="fused", patch_attn_refine=True, visualize_cls_attn=True,
                              cam_npy_dir="out_npy",
                              out_crf="out_crf" if module_version("pydensecrf.densecrf")[0] else None, low_alpha=1,
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


__all__ = ["drive_mctformer"]
