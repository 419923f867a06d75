"""Writing the IRN-family CAM step's files: one shard of images, atomically, resumable, with a
per-directory done log so that files written by this package are never mistaken for host CAMs."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Set

import torch
from torch import nn
from torch.utils.data import DataLoader

from lpcam_plugin.adapters.resnet.host import HostSpec, image_stacks, pack_size
from lpcam_plugin.adapters.resnet.options import LPCAMOptions
from lpcam_plugin.adapters.resnet.readouts import HostReadout, host_maps
from lpcam_plugin.core.formats import write_keys_only
from lpcam_plugin.core.progress import progress_bar

logger = logging.getLogger(__name__)

DONE_LOG_PREFIX = ".lpcam_done_"


def lpcam_written_ids(out_dir: Path) -> Set[str]:
    """Ids that an LPCAM adapter wrote into ``out_dir`` (any bank): the union of its done logs."""
    ids: Set[str] = set()
    for log in out_dir.glob(DONE_LOG_PREFIX + "*.txt"):
        ids.update(line.strip() for line in log.read_text().splitlines() if line.strip())
    return ids


def done_log(out_dir: Path, output_key: Dict[str, Any]) -> Path:
    """The done log of the producer ``output_key`` in ``out_dir`` (named by a hash of the key)."""
    tag = hashlib.sha256(json.dumps(output_key, sort_keys=True).encode()).hexdigest()[:16]
    return out_dir / f"{DONE_LOG_PREFIX}{tag}.txt"


def write_shard(spec: HostSpec, model: nn.Module, readout: HostReadout, subset: Any, opts: LPCAMOptions,
                device: torch.device, *, process_id: int = 0, n_procs: int = 1) -> int:
    """Write the maps of every image of ``subset`` (a host MSF dataset or a Subset of it).

    Images whose file exists and is recorded in the done log of this read-out's key are
    skipped; every file is written atomically and then appended to the done log. Returns the
    number written.
    """
    out_dir = spec.out_dir(opts)
    out_dir.mkdir(parents=True, exist_ok=True)
    output_key = {"host": spec.name, **readout.key, "cam_scales": [float(s) for s in opts.scales()]}
    log_path = done_log(out_dir, output_key)
    done = set(log_path.read_text().split()) if log_path.exists() else set()
    loader = DataLoader(subset, shuffle=False, num_workers=opts.workers(n_procs), pin_memory=False)
    written = skipped = 0
    with torch.no_grad(), open(log_path, "a") as log:
        for pack in progress_bar(loader, progress=opts.progress, desc=f"{readout.method} {spec.name} [{process_id}]",
                                 total=len(loader), position=process_id if n_procs > 1 else None):
            name = pack["name"][0]
            target = out_dir / f"{name}.npy"
            if name in done and target.exists():
                skipped += 1
                continue
            valid_cat = torch.nonzero(pack["label"][0])[:, 0]
            if not valid_cat.numel() and spec.dataset.empty_keys_only:
                write_keys_only(target)
            else:
                _write_maps(spec, model, readout, pack, valid_cat, target, device)
            log.write(name + "\n")
            log.flush()
            written += 1
    logger.info("worker %d: wrote %d %s files to %s, skipped %d already written", process_id, written,
                readout.method, out_dir, skipped)
    return written


def _write_maps(spec: HostSpec, model: nn.Module, readout: HostReadout, pack: Dict[str, Any],
                valid_cat: torch.Tensor, target: Path, device: torch.device) -> None:
    """Render one image's maps of ``readout`` (classes ``valid_cat``) and write them in the host format."""
    stacks = [s.to(device) for s in image_stacks(pack)]
    if readout.render is not None:
        strided, high = readout.render(stacks, valid_cat.tolist(), pack_size(pack))
    else:
        strided, high = host_maps(model, readout, stacks, valid_cat.tolist(), pack_size(pack),
                                  high_res_direct=spec.high_res_direct)
    spec.write(target, valid_cat, strided, high)


__all__ = ["DONE_LOG_PREFIX", "done_log", "lpcam_written_ids", "write_shard"]
