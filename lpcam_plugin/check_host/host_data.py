"""The tiny synthetic VOC set ``lpcam check-host`` writes, in each host's folder layout and list formats.

Images, ground truth and labels come from :mod:`lpcam_plugin.benchmark.synthetic`; this module
writes them as the hosts read VOC: ``VOC2012/JPEGImages``, ``SegmentationClass`` and
``SegmentationClassAug`` palette PNGs, ``ImageSets/Segmentation/train.txt``, and under ``voc12/``
the host's lists (IRN/AMN plain ids and a ``cls_labels.npy`` keyed by the int id; EDAM
``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` lines; MCTformer ``train_aug_id.txt`` /
``train_id.txt`` / ``val_id.txt``; EDAM and MCTformer ``cls_labels.npy`` keyed by the id string).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

#: Images written; IRN/AMN's ``cam_to_ir_label`` divides by ``len(databin) // 20``, so at least 20.
NUM_IMAGES = 20
#: The first images form the fit / evaluation list (``train.txt``); all form ``train_aug``.
NUM_FIT = 10
IMAGE_SIZE = 64
#: VOC class ids given to the synthetic classes (aeroplane, cat, dog, horse, person, sheep).
VOC_CLASSES = (0, 7, 11, 12, 14, 16)
#: Hosts whose ``cls_labels.npy`` is keyed by the int id (``2007_000032`` -> ``2007000032``).
INT_KEYED_HOSTS = ("irn", "amn")


def label_key(host: str, name: str) -> Any:
    """The key of image ``name`` in ``host``'s ``cls_labels.npy``."""
    return np.int32(int(name.replace("_", ""))) if host in INT_KEYED_HOSTS else name


def _palette() -> List[int]:
    """The VOC colour map (bit-interleaved), as the dataset's palette PNGs carry it."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.extend((r, g, b))
    return colours


def write_dataset(work: Path, host: str, num_images: int = NUM_IMAGES, num_fit: int = NUM_FIT,
                  image_size: int = IMAGE_SIZE) -> Tuple[Path, List[str]]:
    """Write the synthetic VOC folder under ``work/VOC2012`` and the host's lists under ``work/voc12``.

    Returns ``(voc12_root, ids)``; ``ids[:num_fit]`` is the train / fit split.
    """
    from PIL import Image

    from lpcam_plugin.benchmark.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(num_images=num_images, image_size=image_size, seed=0), progress=False)
    if data.labels.shape[1] > len(VOC_CLASSES):
        raise ValueError(f"the synthetic set has {data.labels.shape[1]} classes, only {len(VOC_CLASSES)} are mapped")
    root, lists = work / "VOC2012", work / "voc12"
    for folder in (root / "JPEGImages", root / "SegmentationClass", root / "SegmentationClassAug",
                   root / "ImageSets" / "Segmentation", lists):
        folder.mkdir(parents=True, exist_ok=True)
    lut = np.zeros(256, np.uint8)
    lut[0], lut[255] = 0, 255
    for k, voc in enumerate(VOC_CLASSES[:data.labels.shape[1]]):
        lut[k + 1] = voc + 1
    ids = [f"2007_{i + 1:06d}" for i in range(num_images)]
    labels: Dict[str, np.ndarray] = {}
    palette = _palette()
    for i, name in enumerate(ids):
        Image.fromarray(data.images[i]).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        gt = Image.fromarray(lut[data.masks[i]], mode="P")
        gt.putpalette(palette)
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            gt.save(root / folder / f"{name}.png")
        vector = np.zeros(20, np.float32)
        vector[[VOC_CLASSES[k] for k in np.nonzero(data.labels[i])[0]]] = 1.0
        labels[name] = vector
    train = ids[:num_fit]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in train))

    def write(name: str, lines: Sequence[str]) -> None:
        (lists / name).write_text("".join(f"{line}\n" for line in lines))

    if host in INT_KEYED_HOSTS:
        write("train_aug.txt", ids)
        write("train.txt", train)
    elif host == "edam":
        write("train_aug.txt", [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in ids])
        write("train.txt", [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in train])
    else:  # MCTformer; main.py also builds the validation set (val_id.txt)
        write("train_aug_id.txt", ids)
        write("train_id.txt", train)
        write("val_id.txt", ids[num_fit:])
    keyed: Dict[Any, np.ndarray] = {label_key(host, n): v for n, v in labels.items()}
    np.save(lists / "cls_labels.npy", keyed, allow_pickle=True)
    return root, ids


__all__ = ["IMAGE_SIZE", "NUM_FIT", "NUM_IMAGES", "VOC_CLASSES", "label_key", "write_dataset"]
