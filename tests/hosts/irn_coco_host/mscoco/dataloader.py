"""Stand-in for the LPCAM / ReCAM reference's ``mscoco/dataloader.py`` (COCO datasets of the IRN pipeline).

As upstream: the images are those of the annotation file in sorted id order (torchvision's
``CocoDetection`` there, :class:`_CocoImages` here, which like current torchvision refuses a numpy
integer index); labels come from ``labels_path`` (``./mscoco/train_labels.npy`` relative to the
working directory: ``(N, 80)``, > 0 means present), computed from the annotations and saved when
the file is missing; ``name`` is the file name without ``.jpg``; ``COCOClassificationDatasetMSF``
passes ``img_normal`` and ``hor_flip`` positionally into the parent's ``resize_long`` and ``rescale``.
"""
import json
import os

import numpy as np
from misc import imutils
from PIL import Image
from torch.utils import data

COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
category_map = {str(c): i + 1 for i, c in enumerate(COCO_IDS)}


class TorchvisionNormalize:
    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, img):
        return ((np.asarray(img, np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)


class _Index:
    """``coco.coco``: what the pipeline reads of pycocotools' ``COCO`` (``imgs``, ``loadImgs``)."""

    def __init__(self, anno_path):
        with open(anno_path) as f:
            self.dataset = json.load(f)
        self.imgs = {image["id"]: image for image in self.dataset["images"]}
        self.anns = {}
        for ann in self.dataset["annotations"]:
            self.anns.setdefault(ann["image_id"], []).append(ann)

    def loadImgs(self, ids):
        return [self.imgs[i] for i in (ids if isinstance(ids, list) else [ids])]


class _CocoImages:
    """``CocoDetection(root, annFile)``: ``ids`` sorted, items ``(PIL image, annotations)``."""

    def __init__(self, root, annFile):
        self.root = root
        self.coco = _Index(annFile)
        self.ids = sorted(self.coco.imgs)

    def __getitem__(self, index):
        if not isinstance(index, int):
            raise ValueError(f"Index must be of type integer, got {type(index)} instead.")
        image_id = self.ids[index]
        path = os.path.join(self.root, self.coco.imgs[image_id]["file_name"])
        with Image.open(path) as image:
            return image.convert("RGB"), self.coco.anns.get(image_id, [])

    def __len__(self):
        return len(self.ids)


class COCOClassificationDataset(data.Dataset):
    def __init__(self, image_dir, anno_path, labels_path=None, resize_long=None, rescale=None,
                 img_normal=TorchvisionNormalize(), hor_flip=False, crop_size=None, crop_method=None, to_torch=True):
        self.coco = _CocoImages(root=image_dir, annFile=anno_path)
        self.resize_long = resize_long
        self.rescale = rescale
        self.crop_size = crop_size
        self.img_normal = img_normal
        self.hor_flip = hor_flip
        self.crop_method = crop_method
        self.to_torch = to_torch
        if os.path.exists(labels_path):
            self.labels = (np.load(labels_path).astype(np.float64) > 0).astype(np.float64)
        else:
            print("No preprocessed label file found in {}.".format(labels_path))
            self.labels = np.zeros((len(self.coco), 80))
            for i in range(len(self.coco)):
                for ann in self.coco[i][1]:
                    self.labels[i, category_map[str(ann["category_id"])] - 1] = 1.0
            os.makedirs(os.path.dirname(labels_path), exist_ok=True)
            np.save(labels_path, self.labels)

    def __getitem__(self, index):
        name = self.coco.coco.loadImgs(self.coco.ids[index])[0]["file_name"].split('.')[0]
        img = np.asarray(self.coco[index][0])
        if self.resize_long:
            img = imutils.random_resize_long(img, self.resize_long[0], self.resize_long[1])
        if self.img_normal:
            img = self.img_normal(img)
        if self.hor_flip:
            img = imutils.random_lr_flip(img)
        if self.crop_size:
            img = imutils.random_crop(img, self.crop_size, 0)
        if self.to_torch:
            img = imutils.HWC_to_CHW(img)
        return {'name': name, 'img': img, 'label': self.labels[index]}

    def __len__(self):
        return len(self.coco)


class COCOClassificationDatasetMSF(COCOClassificationDataset):
    def __init__(self, image_dir, anno_path, labels_path=None, img_normal=TorchvisionNormalize(), hor_flip=False,
                 scales=(1.0,)):
        self.scales = scales
        super().__init__(image_dir, anno_path, labels_path, img_normal, hor_flip)  # upstream's positional slip

    def __getitem__(self, index):
        name = self.coco.coco.loadImgs(self.coco.ids[index])[0]["file_name"].split('.')[0]
        img = np.asarray(self.coco[index][0])
        stacks = []
        for s in self.scales:
            s_img = img if s == 1 else imutils.pil_rescale(img, s, order=3)
            s_img = imutils.HWC_to_CHW(self.img_normal(s_img))
            stacks.append(np.stack([s_img, np.flip(s_img, -1)], axis=0))
        if len(self.scales) == 1:
            stacks = stacks[0]
        return {"name": name, "img": stacks, "size": (img.shape[0], img.shape[1]), "label": self.labels[index]}


class COCOSegmentationDataset(data.Dataset):
    """The images with their ``<masks_path>/<int id>.png`` ground truth (values 0..80, 255 ignored)."""

    def __init__(self, image_dir, anno_path, masks_path, crop_size, **kwargs):
        self.coco = _CocoImages(root=image_dir, annFile=anno_path)
        self.masks_path = masks_path

    def __getitem__(self, index):
        name = self.coco.coco.loadImgs(self.coco.ids[index])[0]["file_name"].split('.')[0]
        return {'name': name, 'label': self.get_label_by_name(name)}

    def get_label_by_name(self, name):
        with Image.open(os.path.join(self.masks_path, str(int(name.split('.')[0].split('_')[-1])) + '.png')) as png:
            return np.array(png)

    def __len__(self):
        return len(self.coco)
