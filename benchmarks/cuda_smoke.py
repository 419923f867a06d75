"""CUDA smoke check (run by hand on a GPU machine; about 1-5 minutes on one GPU): every CUDA path
of the package once, with one table at the end.

    python benchmarks/cuda_smoke.py                       # on a GPU: all checks
    python benchmarks/cuda_smoke.py --device cpu --tiny   # the same checks on the CPU (bf16 autocast only)

Without a GPU (and without ``--device cpu``) it says so and exits 0.

Checks, each a row of the table (status, seconds, time against the float32 run of the same row,
and the largest difference of its maps from that float32 run):

- every method's fit and maps on the device, in float32 and under ``torch.autocast`` (bfloat16,
  and float16 on CUDA): CAM, LPCAM (``partial_fit`` + ``fit_prototypes`` + maps), ReCAM
  (``fit`` + maps), F-CAM (``fit`` + ``predict``) and RCM + MAM (training steps with
  ``update_support``), on a small GAP-linear network with a ResNet-like stride;
- the host adapters on the device, through the IRN stand-in host of ``tests/hosts`` (LPCAM, ReCAM
  and F-CAM CAM steps with ``--lpcam_device``, and RCM + MAM ``train_cam`` with
  ``--lpcam_pss_device``; ``--skip-hosts`` leaves them out);
- ``torch.distributed`` with NCCL when two or more GPUs are visible: ReCAM and F-CAM fits on two
  processes against one process on the whole batches (else the row says why it was skipped).

Times are wall-clock seconds of one call, after one untimed float32 call of the same check (kernels
and imports warm), synchronised with the device. The maps of the training methods differ from
float32 by what training in lower precision changes (up to 1 after max-normalisation); those of
CAM and LPCAM only by rounding. Exit status 1 when any row failed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.multiprocessing as mp
from torch import nn

import lpcam_plugin as lp

REPO = Path(__file__).resolve().parents[1]
CLASSES = 6
#: The images' normalisation (0-255 colours), as F-CAM's ``pixel_mean`` / ``pixel_std`` state it.
PIXEL_MEAN, PIXEL_STD = 128.0, 60.0


class SmokeNet(nn.Module):
    """A GAP-linear classifier: ``stage1`` at stride 4, ``stage4`` at stride 16, 1x1 ``classifier``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, width // 4, 7, 4, 3), nn.BatchNorm2d(width // 4), nn.ReLU())
        self.stage4 = nn.Sequential(nn.Conv2d(width // 4, width, 3, 4, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = nn.Conv2d(width, CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stage4(self.stage1(x)).mean((2, 3), keepdim=True)).flatten(1)


class Sizes:
    """Batch, image side, feature width and batches per epoch of the method checks."""

    def __init__(self, tiny: bool) -> None:
        self.batch, self.side, self.width, self.batches = (2, 32, 32, 2) if tiny else (8, 224, 512, 4)


def batches(sizes: Sizes, device: torch.device) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(images (B, 3, S, S), labels (B, C))`` on ``device``, seeded, every image with a class."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(sizes.batches):
        colours = 255 * torch.rand(sizes.batch, 3, sizes.side, sizes.side, generator=generator)
        images = (colours - PIXEL_MEAN) / PIXEL_STD
        labels = (torch.rand(sizes.batch, CLASSES, generator=generator) < 0.3).float()
        labels[torch.arange(sizes.batch), (torch.arange(sizes.batch) + i) % CLASSES] = 1
        out.append((images.to(device), labels.to(device)))
    return out


def precision_context(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` for ``dtype``; a null context for float32 (``None``)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- method checks


def check_cam(model: nn.Module, data: list, device: torch.device) -> torch.Tensor:
    weight = model.classifier.weight[:, :, 0, 0].detach()
    with lp.FeatureHook(model.stage4) as hook, torch.no_grad():
        model(data[0][0])
        return lp.cam_map(hook.features, weight)


def check_lpcam(model: nn.Module, data: list, device: torch.device) -> torch.Tensor:
    weight = model.classifier.weight[:, :, 0, 0].detach()
    lpcam = lp.LPCAM(CLASSES, num_clusters=2, progress=False)
    with lp.FeatureHook(model.stage4) as hook, torch.no_grad():
        for i, (images, labels) in enumerate(data):
            model(images)
            lpcam.partial_fit(hook.features, labels, weight=weight, ids=[f"{i}_{j}" for j in range(len(images))])
        lpcam.fit_prototypes(weight)
        model(data[0][0])
        return lpcam(hook.features, data[0][1], fallback="cam")


def check_recam(model: nn.Module, data: list, device: torch.device) -> torch.Tensor:
    model = copy.deepcopy(model)
    recam = lp.ReCAM(CLASSES, epochs=1, progress=False)
    recam.fit(model, data, feature_layer="stage4", head="classifier", device=device)
    with lp.FeatureHook(model.stage4) as hook, torch.no_grad():
        model(data[0][0])
        return recam(hook.features, data[0][1])


def cam_source(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    weight = model.classifier.weight[:, :, 0, 0].detach().clone()
    return lambda features, labels: lp.cam_map(features, weight) * (labels > 0)[:, :, None, None]


FCAM_SETTINGS = {"epochs": 1, "decoder_channels": (32, 16), "pixel_mean": (PIXEL_MEAN,) * 3,
                 "pixel_std": (PIXEL_STD,) * 3}


def check_fcam(model: nn.Module, data: list, device: torch.device) -> torch.Tensor:
    fcam = lp.FCAM(CLASSES, progress=False, **FCAM_SETTINGS)
    fcam.fit(model, data, source=cam_source(model), feature_layer="stage4", skip_layers=["stage1"])
    return fcam.predict(model, data[0][0], data[0][1])


def check_pixelsup(model: nn.Module, data: list, device: torch.device) -> torch.Tensor:
    model = copy.deepcopy(model).train()
    pss = lp.PixelSelfSupervision(model, feature_layer="stage4", head="classifier", num_classes=CLASSES,
                                  embed_dim=16, mam_start_epoch=0).to(device)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(pss.parameters()), lr=1e-3)
    for images, labels in data:
        losses = pss(images, labels, epoch=1)
        optimizer.zero_grad()
        losses["total"].float().backward()
        optimizer.step()
        pss.update_support()
    model.eval()
    return check_cam(model, data, device)


METHOD_CHECKS: List[Tuple[str, Callable[[nn.Module, list, torch.device], torch.Tensor]]] = [
    ("CAM maps", check_cam), ("LPCAM fit + maps", check_lpcam), ("ReCAM fit + maps", check_recam),
    ("F-CAM fit + predict", check_fcam), ("RCM+MAM steps + CAM", check_pixelsup)]


def run_method_checks(device: torch.device, sizes: Sizes, precisions: List[Tuple[str, Optional[torch.dtype]]],
                      rows: List[Dict[str, Any]]) -> None:
    """One row per (method, precision); the float32 row is each method's reference."""
    torch.manual_seed(0)
    model = SmokeNet(sizes.width).to(device).eval()
    data = batches(sizes, device)
    for name, check in METHOD_CHECKS:
        with contextlib.suppress(Exception):  # warm-up (kernels, imports); a failure shows in the timed rows
            check(model, data, device)
        reference: Optional[Tuple[float, torch.Tensor]] = None
        for label, dtype in precisions:
            row: Dict[str, Any] = {"check": name, "precision": label}
            try:
                synchronize(device)
                start = time.perf_counter()
                with precision_context(device, dtype):
                    maps = check(model, data, device)
                synchronize(device)
                seconds = time.perf_counter() - start
                maps = maps.float()
                if not torch.isfinite(maps).all():
                    raise RuntimeError("non-finite maps")
                row.update(status="ok", seconds=seconds)
                if reference is None:
                    reference = (seconds, maps)
                else:
                    row.update(ratio=seconds / reference[0], diff=float((maps - reference[1]).abs().max()))
            except Exception as error:  # every failure becomes a row; the table is the report
                row.update(status=f"FAIL: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
                logging.debug("%s (%s) failed:\n%s", name, label, traceback.format_exc())
            rows.append(row)


# ----------------------------------------------------------------------------- host stand-ins


@contextlib.contextmanager
def irn_standin(folder: Path) -> Iterator[Tuple[Any, Path, Path]]:
    """The stand-in IRN host of ``tests/hosts`` with a tiny VOC and its classifier weights, imported."""
    sys.path.insert(0, str(REPO / "tests" / "hosts"))
    import voc_standin

    ids = voc_standin.image_ids(6)
    labels = voc_standin.make_voc(folder / "voc", ids, ids[:4])
    host = voc_standin.make_host(folder / "irn", "irn", labels, ids, ids[:4])
    (host / "sess").mkdir()
    with voc_standin.imported_host(host):
        import importlib

        torch.manual_seed(0)
        net = importlib.import_module("net.resnet50_cam").Net()
        torch.save(net.state_dict(), host / "sess" / "res50_cam.pth.pth")  # IRN appends ".pth"
        yield voc_standin, host, folder / "voc"


def run_host_checks(device: torch.device, rows: List[Dict[str, Any]]) -> None:
    """IRN's CAM step through the adapter for LPCAM, ReCAM and F-CAM, and RCM + MAM ``train_cam``."""
    import argparse as argparse_module

    import lpcam_plugin.adapters.irn as irn
    import lpcam_plugin.adapters.pixelsup_train as pss_train

    with tempfile.TemporaryDirectory() as tmp, irn_standin(Path(tmp)) as (_, host, voc):
        common = dict(num_workers=0, voc12_root=str(voc), train_list="voc12/train_aug.txt",
                      infer_list="voc12/train.txt", chainer_eval_set="train", cam_network="net.resnet50_cam",
                      cam_eval_thres=0.3, cam_scales=(1.0, 0.5), conf_fg_thres=0.45, conf_bg_thres=0.25,
                      sem_seg_bg_thres=0.35, cam_weights_name="sess/res50_cam.pth", lpcam_progress=False,
                      lpcam_device=str(device), lpcam_loader_workers=0)
        steps: List[Tuple[str, Callable[[], Any]]] = []
        for method in ("lpcam", "recam", "fcam"):
            extra = {"recam": {"lpcam_recam_epochs": 1, "lpcam_recam_batch_size": 2, "lpcam_recam_crop_size": 64},
                     "fcam": {"lpcam_fcam_epochs": 1, "lpcam_fcam_batch_size": 2, "lpcam_fcam_crop_size": 64,
                              "lpcam_fcam_decoder_channels": [16, 8]}}.get(method, {})
            args = argparse_module.Namespace(**common, cam_out_dir=f"result/{method}", lpcam_method=method, **extra)
            steps.append((f"IRN stand-in CAM step: {method}", lambda a=args: irn.run(a)))
        train_args = argparse_module.Namespace(**{**common, "cam_weights_name": "sess/pss.pth"}, cam_batch_size=2,
                                               cam_num_epoches=1, cam_learning_rate=0.01, cam_weight_decay=1e-4,
                                               cam_out_dir="result/pss", lpcam_method="cam",
                                               lpcam_pss_crop_size=64, lpcam_pss_progress=False,
                                               lpcam_pss_device=str(device))
        steps.append(("IRN stand-in train_cam: RCM+MAM", lambda: pss_train.run(train_args)))
        for name, step in steps:
            row: Dict[str, Any] = {"check": name, "precision": "fp32"}
            start = time.perf_counter()
            try:
                step()
                synchronize(device)
                row.update(status="ok", seconds=time.perf_counter() - start)
            except Exception as error:
                row.update(status=f"FAIL: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
                logging.debug("%s failed:\n%s", name, traceback.format_exc())
            rows.append(row)


# ----------------------------------------------------------------------------- DDP with NCCL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fit_recam_and_fcam(model: nn.Module, data: list, device: torch.device) -> Dict[str, Any]:
    """ReCAM (on a copy of ``model``) and F-CAM with deterministic seeds, fitted on ``data``: the
    weights to compare, ``{"sce": (C, D), "decoder": state dict}`` on the CPU."""
    recam = lp.ReCAM(CLASSES, epochs=1, progress=False).fit(copy.deepcopy(model), data, feature_layer="stage4",
                                                            head="classifier", device=device)
    fcam = lp.FCAM(CLASSES, progress=False, fg_samples=None, bg_samples=None, **FCAM_SETTINGS)
    fcam.fit(model, data, source=cam_source(model), feature_layer="stage4", skip_layers=["stage1"])
    return {"sce": recam.sce_weight_.cpu(), "decoder": {k: v.cpu() for k, v in fcam.decoder_.state_dict().items()}}


def _ddp_worker(rank: int, world: int, port: int, sizes: Sizes, out: str) -> None:
    import torch.distributed as dist

    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = SmokeNet(sizes.width).to(device).eval()
        shards = [(x[rank::world], y[rank::world]) for x, y in batches(sizes, device)]
        weights = _fit_recam_and_fcam(model, shards, device)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


def run_ddp_check(sizes: Sizes, rows: List[Dict[str, Any]]) -> None:
    """ReCAM and F-CAM on two NCCL processes against one process on the whole batches."""
    row: Dict[str, Any] = {"check": "DDP (NCCL, 2 GPUs): ReCAM + F-CAM vs 1 process", "precision": "fp32"}
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < 2:
        rows.append({**row, "status": f"skipped: {visible} GPU(s) visible"})
        return
    try:
        device = torch.device("cuda", 0)
        torch.manual_seed(0)
        model = SmokeNet(sizes.width).to(device).eval()
        single = _fit_recam_and_fcam(model, batches(sizes, device), device)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "ddp.pt")
            start = time.perf_counter()
            mp.spawn(_ddp_worker, args=(2, _free_port(), sizes, out), nprocs=2, join=True)
            seconds = time.perf_counter() - start
            shared = torch.load(out, weights_only=True)
        diff = max(float((shared["sce"] - single["sce"]).abs().max()),
                   max(float((shared["decoder"][k] - v).abs().max())
                       for k, v in single["decoder"].items() if v.is_floating_point()))
        status = "ok" if diff < 1e-3 else f"FAIL: weights differ by {diff:.2e}"
        rows.append({**row, "status": status, "seconds": seconds, "diff": diff})
    except Exception as error:
        rows.append({**row, "status": f"FAIL: {type(error).__name__}: {str(error).splitlines()[0][:120]}"})


# ----------------------------------------------------------------------------- report


def table(rows: List[Dict[str, Any]], device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"CUDA smoke on {name} (torch {torch.__version__}, lpcam_plugin {lp.__version__})", "",
             "| check | precision | status | seconds | time vs fp32 | max abs diff of maps vs fp32 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else ""
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        diff = f"{row['diff']:.2e}" if "diff" in row else ""
        lines.append(f"| {row['check']} | {row['precision']} | {row['status']} | {seconds} | {ratio} | {diff} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is visible), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for the CPU dry run)")
    parser.add_argument("--skip-hosts", action="store_true", help="leave out the host stand-in checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each failure's traceback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if args.device is None:
        if not torch.cuda.is_available():
            print("cuda_smoke: no CUDA device is visible; nothing to check (use --device cpu for a dry run)")
            return 0
        args.device = "cuda"
    device = torch.device(args.device)
    precisions: List[Tuple[str, Optional[torch.dtype]]] = [("fp32", None), ("bf16 autocast", torch.bfloat16)]
    if device.type == "cuda":
        precisions.append(("fp16 autocast", torch.float16))
    sizes = Sizes(args.tiny)
    rows: List[Dict[str, Any]] = []
    run_method_checks(device, sizes, precisions, rows)
    if not args.skip_hosts:
        run_host_checks(device, rows)
    if device.type == "cuda":
        run_ddp_check(sizes, rows)
    print(table(rows, device))
    return 1 if any(row["status"].startswith("FAIL") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
