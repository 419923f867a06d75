"""Stand-in for AMN's ``coco14/dataloader.py`` (the classification datasets the CAM steps use).

As upstream: ``coco14/cls_labels_coco.npy`` (``{int id: (80,)}``) is loaded at import relative to
the working directory; the id list is read with ``np.loadtxt(dtype=np.int32)`` and reversed; names
are the 12-digit ids; items are dicts with ``name``, ``img``, ``size``, ``label``.
"""
import os

import numpy as np
import torch
from misc import imutils
from PIL import Image
from torch.utils.data import Dataset

IMG_FOLDER_NAME = "JPEGImages/train2014"

cls_labels_dict = np.load('coco14/cls_labels_coco.npy', allow_pickle=True).item()


def decode_int_filename(int_filename):
    s = str(int_filename).split('\n')[0]
    if len(s) != 12:
        s = '%012d' % int(s)
    return s


def load_image_label_list_from_npy(img_name_list):
    return np.array([cls_labels_dict[int(img_name)] for img_name in img_name_list])


def get_img_path(img_name, coco14_root):
    if not isinstance(img_name, str):
        img_name = decode_int_filename(img_name)
    return os.path.join(coco14_root, IMG_FOLDER_NAME, 'COCO_train2014_' + img_name + '.jpg')


def load_img_name_list(dataset_path):
    return np.loadtxt(dataset_path, dtype=np.int32)[::-1]


def read_rgb(path):
    with Image.open(path) as image:
        return np.array(image.convert('RGB'))


class TorchvisionNormalize:
    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, img):
        return ((np.asarray(img, np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)


class COCO14ImageDataset(Dataset):
    def __init__(self, img_name_list_path, coco14_root, resize_long=None, rescale=None,
                 img_normal=TorchvisionNormalize(), hor_flip=False, crop_size=None, crop_method=None, to_torch=True):
        self.img_name_list = load_img_name_list(img_name_list_path)
        self.coco14_root = coco14_root
        self.resize_long = resize_long
        self.img_normal = img_normal
        self.hor_flip = hor_flip
        self.crop_size = crop_size
        self.to_torch = to_torch

    def __len__(self):
        return len(self.img_name_list)

    def __getitem__(self, idx):
        name_str = decode_int_filename(self.img_name_list[idx])
        img = read_rgb(get_img_path(name_str, self.coco14_root))
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
        return {'name': name_str, 'img': img}


class COCO14ClassificationDataset(COCO14ImageDataset):
    def __init__(self, img_name_list_path, coco14_root, resize_long=None, rescale=None,
                 img_normal=TorchvisionNormalize(), hor_flip=False, crop_size=None, crop_method=None):
        super().__init__(img_name_list_path, coco14_root, resize_long, rescale, img_normal, hor_flip,
                         crop_size, crop_method)
        self.label_list = load_image_label_list_from_npy(self.img_name_list)

    def __getitem__(self, idx):
        out = super().__getitem__(idx)
        out['label'] = torch.from_numpy(self.label_list[idx])
        return out


class COCO14ClassificationDatasetMSF(COCO14ClassificationDataset):
    def __init__(self, img_name_list_path, coco14_root, img_normal=TorchvisionNormalize(), scales=(1.0,)):
        super().__init__(img_name_list_path, coco14_root, img_normal=img_normal)
        self.scales = scales

    def __getitem__(self, idx):
        name_str = decode_int_filename(self.img_name_list[idx])
        img = read_rgb(get_img_path(name_str, self.coco14_root))
        stacks = []
        for s in self.scales:
            s_img = img if s == 1 else imutils.pil_rescale(img, s, order=3)
            s_img = imutils.HWC_to_CHW(self.img_normal(s_img))
            stacks.append(np.stack([s_img, np.flip(s_img, -1)], axis=0))
        if len(self.scales) == 1:
            stacks = stacks[0]
        return {"name": name_str, "img": stacks, "size": (img.shape[0], img.shape[1]),
                "label": torch.from_numpy(self.label_list[idx])}
