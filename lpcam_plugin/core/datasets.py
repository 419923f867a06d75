"""What the hosts' datasets are, as their evaluation sees them: class names, COCO's category ids and
how a CAM file's id names its ground-truth PNG.

- **VOC 2012**: 20 classes, ground truth ``<id>.png`` for CAM file ``<id>.npy`` (``2007_000032``),
  values 0 (background), ``c + 1`` (class c) and 255 (boundary, not scored).
- **COCO 2014** as the IRN-based COCO pipeline of the LPCAM / ReCAM repositories writes it
  (``mscoco/annToMask.py``): 80 classes, class index ``c`` = the rank of the category id among
  COCO's 80 ids in ascending order (id 1 ``person`` -> 0, id 90 ``toothbrush`` -> 79), ground truth
  ``<int image id>.png`` (``9.png``) for CAM file ``COCO_train2014_000000000009.npy``, values 0..80
  (crowd regions stay 0, nothing is 255).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

VOC_CLASS_NAMES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

#: COCO's 80 category ids in ascending order: position ``c`` is class index ``c``.
COCO_CATEGORY_IDS: Tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91))
COCO_CLASS_NAMES: Tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
_COCO_INDEX: Dict[int, int] = {category: index for index, category in enumerate(COCO_CATEGORY_IDS)}


def coco_class_index(category_id: int) -> int:
    """Class index 0..79 of a COCO category id (1..90, 80 of them); ``ValueError`` for any other id."""
    try:
        return _COCO_INDEX[int(category_id)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{category_id!r} is not one of COCO's 80 category ids (1..90 without "
                         f"{sorted(set(range(1, 91)) - set(COCO_CATEGORY_IDS))})") from None


def coco_gt_name(image_id: str) -> str:
    """The ground-truth PNG stem of a COCO image id: ``"COCO_train2014_000000000009"`` or ``"9"`` -> ``"9"``."""
    number = str(image_id).rsplit("_", 1)[-1]
    if not number.isdigit():
        raise ValueError(f"{image_id!r} is not a COCO image id (COCO_train2014_<12 digits> or an integer)")
    return str(int(number))


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset as an evaluation reads it: ``num_classes`` labels with background,
    ``class_names`` (without background), and ``gt_name(image id) -> PNG stem`` (None: the id
    itself, as :func:`~lpcam_plugin.core.evaluate.evaluate_folder` takes it)."""

    class_names: Tuple[str, ...]
    gt_name: Optional[Callable[[str], str]]

    @property
    def num_classes(self) -> int:
        """Labels scored, background included (21 for VOC, 81 for COCO)."""
        return len(self.class_names) + 1


DATASETS: Dict[str, DatasetLayout] = {
    "voc": DatasetLayout(VOC_CLASS_NAMES, None),
    "coco": DatasetLayout(COCO_CLASS_NAMES, coco_gt_name),
    # AMN's coco14 branch: 12-digit ids, ground truth coco_seg_anno/<12 digits>.png
    "coco14": DatasetLayout(COCO_CLASS_NAMES, None),
}

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASS_NAMES", "DATASETS", "DatasetLayout", "VOC_CLASS_NAMES",
           "coco_class_index", "coco_gt_name"]
