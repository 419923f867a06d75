"""IRN's ``make_cam`` step (``jiwoon-ahn/irn``; AMN's stage 1, route "a") as a
:class:`~lpcam_plugin.adapters.resnet.host.HostSpec`: its classifier as the selection weight, its
CAM computed the host way (the split baseline), and its file format ``{"keys": torch int64 (K,),
"cam": torch float32 (K, (H-1)//4+1, (W-1)//4+1), "high_res": numpy float32 (K, H, W)}``.

:data:`COCO_SPEC` is the same step in the IRN-based COCO pipeline of the LPCAM / ReCAM reference
repositories (``run_sample_coco.py``, ``step_coco/``): 80 classes, ``CAM(n_classes=80)``, the
weights file ``cam_weights_name`` itself, files ``<lpcam_out_dir>/COCO_train2014_<12 digits>.npy``
(where the pipeline's ``eval_cam`` and ``cam_to_ir_label`` read), and the host's own CAM files of
``step_coco.make_cam`` in ``cam_out_dir`` as the LPCAM fit's baseline.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.adapters.resnet.datasets import COCO, COCO14, host_dataset
from lpcam_plugin.adapters.resnet.host import HostSpec, strided_up_size
from lpcam_plugin.adapters.resnet.options import HostValues
from lpcam_plugin.core.formats import write_irn_cam
from lpcam_plugin.core.maps import max_normalize


def selection_weight(model: nn.Module) -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """IRN's classifier: ``classifier.weight`` (C, D, 1, 1) as (C, D); no bias."""
    weight = model.classifier.weight.detach()
    return weight.reshape(weight.shape[0], weight.shape[1]).float(), None, "classifier.weight[:, :, 0, 0]"


def host_cams(model: nn.Module, stacks: Sequence[torch.Tensor], label: torch.Tensor, size: Tuple[int, int],
              name: str, args: HostValues) -> torch.Tensor:
    """IRN's ``make_cam`` high-res CAM of one image: ``(K, H, W)`` for its present classes.

    ``args``: the run's options (or the host's namespace); unused by IRN.

    ``CAM.forward`` per scale (ReLU'd, image + flip summed), each resized to the 16-padded size,
    summed over scales, cropped to (H, W), divided by its max + 1e-5.
    """
    up = strided_up_size(size)
    total = sum(F.interpolate(model(x)[:, None], up, mode="bilinear", align_corners=False) for x in stacks)
    high = total[:, 0, :size[0], :size[1]][torch.nonzero(label)[:, 0]]
    return max_normalize(high.float())


def write(path: Path, keys: torch.Tensor, strided: torch.Tensor, high_res: torch.Tensor) -> None:
    """Save IRN's dict: ``keys`` torch int64, ``cam`` torch float32 (K, h4, w4), ``high_res`` numpy (K, H, W)."""
    write_irn_cam(path, keys, strided, high_res)


SPEC = HostSpec(name="irn", network_arg="cam_network", weights_arg="cam_weights_name", out_dir_arg="cam_out_dir",
                selection_weight=selection_weight, host_cams=host_cams, write=write, high_res_direct=False)
COCO_SPEC = dataclasses.replace(SPEC, name="irn-coco", out_dir_arg="lpcam_out_dir", dataset=COCO,
                                baseline_dir_arg="cam_out_dir", model_kwargs={"n_classes": 80})
COCO14_SPEC = dataclasses.replace(SPEC, name="irn-coco14", dataset=COCO14, model_kwargs={"coco": True})


def spec_for(args: HostValues) -> HostSpec:
    """The stage-1 step of the dataset ``args`` point at: :data:`COCO_SPEC` for the reference's
    ``run_sample_coco.py`` (``mscoco_root``), :data:`COCO14_SPEC` for AMN's (``coco14_root``), else :data:`SPEC`."""
    return {COCO.name: COCO_SPEC, COCO14.name: COCO14_SPEC}.get(host_dataset(args).name, SPEC)


__all__ = ["COCO14_SPEC", "COCO_SPEC", "SPEC", "host_cams", "selection_weight", "spec_for", "write"]
