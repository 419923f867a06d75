"""The dataset an IRN-family CAM step reads, through the host's own data module.

- :data:`VOC`: ``voc12.dataloader`` of IRN / AMN (``VOC12ClassificationDatasetMSF(list, voc12_root=,
  scales=)``, ids from ``img_name_list`` as ints, labels ``label_list`` (N, 20)); weights are
  ``<cam_weights_name>.pth``.
- :data:`COCO`: ``mscoco.dataloader`` of the IRN-based COCO pipeline that the LPCAM and ReCAM
  reference repositories ship (``run_sample_coco.py``, ``step_coco/``): every image of
  ``<mscoco_root>/annotations/instances_train2014.json`` (images under ``train2014/``), labels from
  ``./mscoco/train_labels.npy`` ((N, 80) in the annotation file's sorted image-id order, read
  relative to the working directory as the host does), names ``COCO_train2014_<12 digits>``;
  weights are ``cam_weights_name`` itself (no ``.pth`` appended).
- :data:`COCO14`: ``coco14.dataloader`` of AMN's ``coco14`` branch, shaped like VOC's
  (``COCO14ClassificationDatasetMSF(list, coco14_root=, scales=)`` over ``coco14/train14.txt``,
  12-digit names, labels ``coco14/cls_labels_coco.npy`` keyed by the int id); weights
  ``<cam_weights_name>.pth``.

Which one a run reads follows from the host's arguments (:func:`host_dataset`): COCO when they
carry ``mscoco_root`` (``run_sample_coco.py``), COCO14 with ``coco14_root`` (AMN's
``run_sample_coco.py``), else VOC. The hosts' modules are imported from the user's fork at call time.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lpcam_plugin.core.datasets import COCO_CLASS_NAMES, VOC_CLASS_NAMES

#: The reference's training-image geometry (ReCAM ``train_recam.py``, IRN ``train_cam.py``).
RESIZE_LONG = (320, 640)
#: The COCO pipeline's label file, relative to the working directory (``labels_path`` in ``step_coco``).
COCO_LABELS = "./mscoco/train_labels.npy"


@dataclass(frozen=True)
class HostDataset:
    """One dataset as the host's data module reads it.

    Attributes:
        name: ``"voc"``, ``"coco"`` (the reference's pipeline) or ``"coco14"`` (AMN's).
        preset: the method presets it takes by default (``"voc"`` or ``"coco"``).
        num_classes, class_names: the foreground classes, in the host's index order.
        module: the host's data module.
        weights_suffix: appended to ``cam_weights_name`` to get the weights file.
        root_arg: the ``args`` attribute of the image root.
        msf_class, crop_class: the module's multi-scale and classification dataset classes.
        annotations: images from a COCO annotation file (the reference's pipeline) instead of a
            list file with ``<root_arg>=`` (VOC-shaped modules).
        empty_keys_only: an image without labels gets ``{"keys": empty}`` alone (AMN's ``coco14``
            steps; their consumers test ``'high_res' in``), not zero-channel maps (the reference's).
        fit_list: the list LPCAM clusters unless ``--lpcam_fit_list`` names one (None: the train list;
            VOC: ``voc12/train.txt``, the reference's).
    """

    name: str
    preset: str
    num_classes: int
    class_names: Tuple[str, ...]
    module: str
    weights_suffix: str
    root_arg: str
    msf_class: str
    crop_class: str
    annotations: bool = False
    empty_keys_only: bool = False
    fit_list: Optional[str] = None

    def _coco_paths(self, host: Any) -> Dict[str, str]:
        root = self.root(host)
        return {"image_dir": os.path.join(root, "train2014/"),
                "anno_path": os.path.join(root, "annotations", "instances_train2014.json"),
                "labels_path": COCO_LABELS}

    def root(self, host: Any) -> str:
        """The image root the host's ``args`` name (``ValueError`` naming the option when unset)."""
        root = getattr(host, self.root_arg, None)
        if not root:
            raise ValueError(f"the {self.name} dataset needs args.{self.root_arg} (--{self.root_arg})")
        return root

    def msf(self, host: Any, scales: Sequence[float], list_path: Optional[str] = None) -> Any:
        """The host's multi-scale + flip dataset over ``list_path`` (default ``host.train_list``);
        the reference's COCO pipeline reads every training image (``list_path`` must be None)."""
        loader = getattr(importlib.import_module(self.module), self.msf_class)
        if self.annotations:
            if list_path is not None:
                raise ValueError(f"the COCO pipeline reads every image of its annotation file, not {list_path}")
            return loader(**self._coco_paths(host), scales=tuple(scales))
        return loader(list_path or host.train_list, **{self.root_arg: self.root(host)}, scales=tuple(scales))

    def crops(self, host: Any, crop_size: int) -> Any:
        """The host's classification dataset of the training images with ``resize_long=(320, 640)``,
        horizontal flips and random ``crop_size`` crops (the ReCAM / F-CAM / RCM+MAM training data)."""
        loader = getattr(importlib.import_module(self.module), self.crop_class)
        geometry = dict(resize_long=RESIZE_LONG, hor_flip=True, crop_size=crop_size, crop_method="random")
        if self.annotations:
            return loader(**self._coco_paths(host), **geometry)
        return loader(host.train_list, **{self.root_arg: self.root(host)}, **geometry)

    def names(self, dataset: Any) -> List[str]:
        """The image names of a dataset from :meth:`msf`, in its order (what the files are named)."""
        if self.annotations:
            coco = dataset.coco.coco
            return [coco.loadImgs(i)[0]["file_name"].split(".")[0] for i in dataset.coco.ids]
        decode = importlib.import_module(self.module).decode_int_filename
        return [decode(n) for n in dataset.img_name_list]

    def labels(self, dataset: Any) -> np.ndarray:
        """``(N, num_classes)`` multi-hot labels of a dataset from :meth:`msf`."""
        labels = np.asarray(dataset.labels if self.annotations else dataset.label_list)
        if labels.ndim != 2 or labels.shape[1] != self.num_classes:
            raise ValueError(f"the host's {self.name} labels have shape {labels.shape}, "
                             f"expected (N, {self.num_classes})")
        return labels

    def fit_images(self, host: Any) -> Optional[str]:
        """The list LPCAM clusters: ``host.fit_list`` when given, else this dataset's
        (:attr:`fit_list`, or the train list); None for the reference's COCO pipeline (every image)."""
        if self.annotations:
            return None
        return getattr(host, "fit_list", None) or self.fit_list or host.train_list

    def image_list(self, host: Any) -> str:
        """The file that lists the training images (fingerprinted by the trained steps): the
        ``train_list``, or the reference COCO pipeline's annotation file."""
        return self._coco_paths(host)["anno_path"] if self.annotations else host.train_list

    def weights(self, weights_name: str) -> str:
        """The host's weights file for ``cam_weights_name``."""
        return weights_name + self.weights_suffix


VOC = HostDataset("voc", "voc", 20, VOC_CLASS_NAMES, "voc12.dataloader", ".pth", "voc12_root",
                  "VOC12ClassificationDatasetMSF", "VOC12ClassificationDataset", fit_list="voc12/train.txt")
COCO = HostDataset("coco", "coco", 80, COCO_CLASS_NAMES, "mscoco.dataloader", "", "mscoco_root",
                   "COCOClassificationDatasetMSF", "COCOClassificationDataset", annotations=True)
COCO14 = HostDataset("coco14", "coco", 80, COCO_CLASS_NAMES, "coco14.dataloader", ".pth", "coco14_root",
                     "COCO14ClassificationDatasetMSF", "COCO14ClassificationDataset", empty_keys_only=True)


def host_dataset(host: Any) -> HostDataset:
    """The dataset the host's arguments point at: :data:`COCO` with ``mscoco_root``, :data:`COCO14`
    with ``coco14_root``, else :data:`VOC`."""
    for data in (COCO, COCO14):
        if getattr(host, data.root_arg, None):
            return data
    return VOC


__all__ = ["COCO", "COCO14", "COCO_LABELS", "RESIZE_LONG", "VOC", "HostDataset", "host_dataset"]
