"""The tiny synthetic MS COCO set ``lpcam check-host --dataset coco`` writes, in the layout of the
IRN-based COCO pipeline (LPCAM / ReCAM reference repositories, ``run_sample_coco.py``;
:func:`write_coco_dataset`) or of AMN's ``coco14`` branch (:func:`write_coco14_dataset`).

Reference layout: under ``<work>/MSCOCO`` (the pipeline's ``--mscoco_root``):
``train2014/COCO_train2014_<12 digits>.jpg``,
``annotations/instances_train2014.json`` (images, one annotation per object with its bounding-box
polygon, the 80 categories with COCO's ids) and ``mask/train2014/<int id>.png`` (0 background,
``1..80`` the host's index + 1, as ``mscoco/annToMask.py`` writes); under ``<work>/mscoco`` the
label file ``train_labels.npy`` ((N, 80) in the annotation file's sorted image-id order, the
file the pipeline reads relative to its working directory).

AMN layout: under ``<work>/COCO14`` (``--coco14_root``) ``JPEGImages/train2014/COCO_train2014_<12 digits>.jpg``
and ``coco_seg_anno/<12 digits>.png``; under ``<work>/coco14`` (read relative to the working
directory) ``train14.txt`` (the 12-digit ids) and ``cls_labels_coco.npy`` (``{int id: float32 (80,)}``).

MCTformer layout (:func:`write_mctformer_coco_dataset`): the reference layout's images and masks,
and under ``<work>/coco`` (``--img-list coco``) ``train_id.txt``, a copy ``train_aug_id.txt`` (the
engine names its outputs from it; the repository lacks it), ``val_id.txt`` (two ``COCO_val2014``
ids, which ``main.py``'s validation set looks up) and ``cls_labels.npy`` (``{id: float32 (80,)}``,
given with ``--label-file-path``).

Images, masks and labels come from :mod:`lpcam_plugin.benchmark.synthetic`; the last image holds no
object (COCO has such images).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from lpcam_plugin.core.datasets import COCO_CATEGORY_IDS, COCO_CLASS_NAMES, coco_class_index

#: Images written (the host's ``cam_to_ir_label`` divides by ``len(databin) // 20``), the last one empty.
NUM_IMAGES = 20
IMAGE_SIZE = 64
#: COCO category ids given to the synthetic classes (airplane, cat, dog, horse, person, sheep).
COCO_IDS = (5, 17, 18, 19, 1, 20)
#: Image ids: spaced like COCO's, not contiguous, so an index taken for an id shows.
FIRST_ID, ID_STEP = 9, 7


def coco_file_name(image_id: int) -> str:
    """``COCO_train2014_<12 digits>`` (without ``.jpg``), as the pipeline names images and CAM files."""
    return f"COCO_train2014_{image_id:012d}"


def _annotations(mask: np.ndarray, image_id: int, first_ann: int) -> List[Dict]:
    """One annotation per class present in ``mask`` (host index + 1), its bounding box as the polygon."""
    annotations = []
    for k in [int(v) for v in np.unique(mask) if v]:
        ys, xs = np.nonzero(mask == k)
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        annotations.append({"id": first_ann + len(annotations), "image_id": image_id,
                            "category_id": int(COCO_CATEGORY_IDS[k - 1]), "iscrowd": 0,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((mask == k).sum()),
                            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    return annotations


def _synthetic(num_images: int, image_size: int) -> Tuple[List[int], List[np.ndarray], List[np.ndarray]]:
    """``(image ids, RGB images, masks)``: masks hold the host index + 1 (0 background); the last image is empty."""
    from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(num_images=num_images, image_size=image_size, seed=0), progress=False)
    if data.labels.shape[1] > len(COCO_IDS):
        raise ValueError(f"the synthetic set has {data.labels.shape[1]} classes, only {len(COCO_IDS)} are mapped")
    lut = np.zeros(256, np.uint8)  # synthetic mask value k + 1 -> host index + 1
    for k, category in enumerate(COCO_IDS[:data.labels.shape[1]]):
        lut[k + 1] = coco_class_index(category) + 1
    ids = [FIRST_ID + ID_STEP * i for i in range(num_images)]
    images = [data.images[i] if i < num_images - 1 else np.full_like(data.images[i], 128) for i in range(num_images)]
    masks = [lut[data.masks[i]] if i < num_images - 1 else np.zeros_like(data.masks[i]) for i in range(num_images)]
    return ids, images, masks


def _label(mask: np.ndarray) -> np.ndarray:
    """The (80,) float32 multi-hot label of a mask holding host index + 1."""
    vector = np.zeros(80, np.float32)
    vector[[int(v) - 1 for v in np.unique(mask) if v]] = 1.0
    return vector


def write_coco_dataset(work: Path, num_images: int = NUM_IMAGES,
                       image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str], Dict[str, List[float]]]:
    """Write the reference pipeline's synthetic COCO under ``work/MSCOCO`` and ``work/mscoco/train_labels.npy``.

    Returns ``(mscoco_root, names, labels)``: the file names (without ``.jpg``) in sorted id order and
    each image's (80,) label.
    """
    from PIL import Image

    root = work / "MSCOCO"
    for folder in (root / "train2014", root / "annotations", root / "mask" / "train2014", work / "mscoco"):
        folder.mkdir(parents=True, exist_ok=True)
    images, annotations, names, labels = [], [], [], {}
    for image_id, pixels, mask in zip(*_synthetic(num_images, image_size)):
        name = coco_file_name(image_id)
        Image.fromarray(pixels).save(root / "train2014" / f"{name}.jpg", quality=95)
        Image.fromarray(mask).save(root / "mask" / "train2014" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": image_size, "width": image_size})
        annotations += _annotations(mask, image_id, len(annotations) + 1)
        names.append(name)
        labels[name] = _label(mask).tolist()
    categories = [{"id": int(c), "name": n, "supercategory": ""} for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    np.save(work / "mscoco" / "train_labels.npy", np.stack([labels[n] for n in names]).astype(np.float64))
    return root, names, labels


def write_coco14_dataset(work: Path, num_images: int = NUM_IMAGES,
                         image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str], Dict[str, List[float]]]:
    """Write AMN's ``coco14`` layout under ``work/COCO14`` and ``work/coco14``.

    Returns ``(coco14_root, names, labels)``: the 12-digit names in list order and each image's (80,) label.
    """
    from PIL import Image

    root = work / "COCO14"
    for folder in (root / "JPEGImages" / "train2014", root / "coco_seg_anno", work / "coco14"):
        folder.mkdir(parents=True, exist_ok=True)
    names, labels, keyed = [], {}, {}
    for image_id, pixels, mask in zip(*_synthetic(num_images, image_size)):
        name = f"{image_id:012d}"
        Image.fromarray(pixels).save(root / "JPEGImages" / "train2014" / f"COCO_train2014_{name}.jpg", quality=95)
        Image.fromarray(mask).save(root / "coco_seg_anno" / f"{name}.png")
        names.append(name)
        keyed[image_id] = _label(mask)
        labels[name] = keyed[image_id].tolist()
    (work / "coco14" / "train14.txt").write_text("".join(f"{n}\n" for n in names))
    np.save(work / "coco14" / "cls_labels_coco.npy", keyed, allow_pickle=True)
    return root, names, labels


def write_mctformer_coco_dataset(work: Path, num_images: int = NUM_IMAGES,
                                 image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str], Dict[str, List[float]]]:
    """Write MCTformer's COCO layout: the reference layout's images and masks, and ``work/coco`` lists and labels.

    Returns ``(data_path, names, labels)`` as :func:`write_coco_dataset`.
    """
    root, names, labels = write_coco_dataset(work, num_images, image_size)
    lists = work / "coco"
    lists.mkdir(parents=True, exist_ok=True)
    val = [f"COCO_val2014_{FIRST_ID + ID_STEP * i:012d}" for i in range(2)]
    for name, ids in (("train_id.txt", names), ("train_aug_id.txt", names), ("val_id.txt", val)):
        (lists / name).write_text("".join(f"{n}\n" for n in ids))
    keyed = {n: np.asarray(v, np.float32) for n, v in labels.items()}
    keyed.update({n: keyed[names[0]] for n in val})
    np.save(lists / "cls_labels.npy", keyed, allow_pickle=True)
    return root, names, labels


__all__ = ["COCO_IDS", "IMAGE_SIZE", "NUM_IMAGES", "coco_file_name", "write_coco14_dataset", "write_coco_dataset",
           "write_mctformer_coco_dataset"]
