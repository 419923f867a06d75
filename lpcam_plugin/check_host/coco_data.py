"""The tiny synthetic MS COCO set ``lpcam check-host --dataset coco`` writes, in the layout of the
IRN-based COCO pipeline (LPCAM / ReCAM reference repositories, ``run_sample_coco.py``).

Under ``<work>/MSCOCO`` (the pipeline's ``--mscoco_root``): ``train2014/COCO_train2014_<12 digits>.jpg``,
``annotations/instances_train2014.json`` (images, one annotation per object with its bounding-box
polygon, the 80 categories with COCO's ids) and ``mask/train2014/<int id>.png`` (0 background,
``1..80`` the host's index + 1, as ``mscoco/annToMask.py`` writes); under ``<work>/mscoco`` the
label file ``train_labels.npy`` ((N, 80) in the annotation file's sorted image-id order, the
file the pipeline reads relative to its working directory). Images, masks and labels come from
:mod:`lpcam_plugin.benchmark.synthetic`; the last image holds no object (COCO has such images).
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


def _annotations(mask: np.ndarray, image_id: int, first_ann: int, lut: np.ndarray) -> List[Dict]:
    """One annotation per class present in ``mask`` (synthetic ids), its bounding box as the polygon."""
    annotations = []
    for k in [int(v) for v in np.unique(mask) if v]:
        ys, xs = np.nonzero(mask == k)
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        annotations.append({"id": first_ann + len(annotations), "image_id": image_id,
                            "category_id": int(COCO_CATEGORY_IDS[lut[k] - 1]), "iscrowd": 0,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((mask == k).sum()),
                            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    return annotations


def write_coco_dataset(work: Path, num_images: int = NUM_IMAGES,
                       image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str], Dict[str, List[float]]]:
    """Write the synthetic COCO under ``work/MSCOCO`` and ``work/mscoco/train_labels.npy``.

    Returns ``(mscoco_root, names, labels)``: the file names (without ``.jpg``) in sorted id order and
    each image's (80,) label.
    """
    from PIL import Image

    from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(num_images=num_images, image_size=image_size, seed=0), progress=False)
    if data.labels.shape[1] > len(COCO_IDS):
        raise ValueError(f"the synthetic set has {data.labels.shape[1]} classes, only {len(COCO_IDS)} are mapped")
    root = work / "MSCOCO"
    for folder in (root / "train2014", root / "annotations", root / "mask" / "train2014", work / "mscoco"):
        folder.mkdir(parents=True, exist_ok=True)
    lut = np.zeros(256, np.uint8)  # synthetic mask value k + 1 -> host index + 1
    for k, category in enumerate(COCO_IDS[:data.labels.shape[1]]):
        lut[k + 1] = coco_class_index(category) + 1
    images, annotations, names, labels = [], [], [], {}
    for i in range(num_images):
        image_id = FIRST_ID + ID_STEP * i
        name = coco_file_name(image_id)
        mask = data.masks[i] if i < num_images - 1 else np.zeros_like(data.masks[i])
        pixels = data.images[i] if i < num_images - 1 else np.full_like(data.images[i], 128)
        Image.fromarray(pixels).save(root / "train2014" / f"{name}.jpg", quality=95)
        Image.fromarray(lut[mask]).save(root / "mask" / "train2014" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": image_size, "width": image_size})
        annotations += _annotations(mask, image_id, len(annotations) + 1, lut)
        vector = np.zeros(80, np.float32)
        vector[[int(v) - 1 for v in np.unique(lut[mask]) if v]] = 1.0
        names.append(name)
        labels[name] = vector.tolist()
    categories = [{"id": int(c), "name": n, "supercategory": ""} for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    np.save(work / "mscoco" / "train_labels.npy", np.stack([labels[n] for n in names]).astype(np.float64))
    return root, names, labels


__all__ = ["COCO_IDS", "IMAGE_SIZE", "NUM_IMAGES", "coco_file_name", "write_coco_dataset"]
