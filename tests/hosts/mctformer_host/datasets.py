"""Stand-in for MCTformer's ``datasets.py``: ``VOC12DatasetMS``, ``COCOClsDatasetMS`` and ``build_dataset``
(eval / gen mode).

``build_dataset`` reads what upstream reads: ``args.data_set`` (``"VOC12MS"`` or ``"COCOMS"`` here;
any other name gives ``(None, None)`` as upstream's if-chain does), ``args.img_list``, ``args.data_path``,
``args.scales``, and, through ``build_transform``, ``args.input_size`` and
``args.gen_attention_maps``: unless ``gen_attention_maps`` is set, an ``input_size`` above 32 adds
a Resize of the shorter side to ``input_size * 256 / 224`` and a CenterCrop(``input_size``) before
the tensor conversion, as upstream's eval transform does. The transform is written with Pillow and
numpy (no torchvision). Labels: ``voc12/cls_labels.npy`` relative to the working directory
(``{id: (20,) float32}``), as upstream; a ``cls_labels.json`` in ``args.img_list`` takes its place
when present (the older form some tests write). COCO, as upstream: ``<img_list>/train_id.txt`` (gen
mode), images ``<data_path>/train2014/<id>.jpg``, labels from ``args.label_file_path`` (a dict keyed
by the id, or by ``id + '.jpg'``), 80 classes.
"""
import json
import os

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
STD = np.asarray((0.229, 0.224, 0.225), np.float32)


def to_normalized_tensor(img):
    arr = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def resize_shorter(size):
    def resize(img):
        w, h = img.size
        scale = size / min(w, h)
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=PIL.Image.BICUBIC)
    return resize


def center_crop(size):
    def crop(img):
        w, h = img.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        return img.crop((left, top, left + size, top + size))
    return crop


def compose(steps):
    def run(img):
        for step in steps:
            img = step(img)
        return img
    return run


def load_img_name_list(dataset_path):
    return [line.strip() for line in open(dataset_path).readlines()]


def load_labels(img_list, names):
    json_path = os.path.join(img_list, "cls_labels.json")
    if os.path.exists(json_path):
        with open(json_path) as handle:
            labels = json.load(handle)
    else:
        labels = np.load("voc12/cls_labels.npy", allow_pickle=True).item()
    return [np.asarray(labels[name], np.float32) for name in names]


class VOC12DatasetMS(Dataset):
    def __init__(self, img_name_list_path, voc12_root, scales, train=True, transform=None, gen_attn=False, unit=1):
        img_list = img_name_list_path
        img_name_list_path = os.path.join(img_name_list_path, f'{"train_aug" if train or gen_attn else "val"}_id.txt')
        self.img_name_list = load_img_name_list(img_name_list_path)
        self.label_list = load_labels(img_list, self.img_name_list)
        self.voc12_root = voc12_root
        self.transform = transform
        self.unit = unit
        self.scales = scales

    def __getitem__(self, idx):
        name = self.img_name_list[idx]
        img = PIL.Image.open(self.image_path(name)).convert("RGB")
        label = torch.from_numpy(self.label_list[idx])
        rounded = (int(round(img.size[0] / self.unit) * self.unit), int(round(img.size[1] / self.unit) * self.unit))
        views = [img.resize((round(rounded[0] * s), round(rounded[1] * s)), resample=PIL.Image.BICUBIC)
                 for s in self.scales]
        if self.transform:
            views = [self.transform(v) for v in views]
        msf = []
        for view in views:
            msf.append(view)
            msf.append(torch.flip(view, [-1]))
        return msf, label

    def __len__(self):
        return len(self.img_name_list)

    def image_path(self, name):
        return os.path.join(self.voc12_root, "JPEGImages", name + ".jpg")


class COCOClsDatasetMS(VOC12DatasetMS):
    def __init__(self, img_name_list_path, coco_root, label_file_path, scales, train=True, transform=None,
                 gen_attn=False, unit=1):
        img_name_list_path = os.path.join(img_name_list_path, f'{"train" if train or gen_attn else "val"}_id.txt')
        self.img_name_list = load_img_name_list(img_name_list_path)
        labels = np.load(label_file_path, allow_pickle=True).item()
        self.label_list = [labels[name if name in labels else name + '.jpg'] for name in self.img_name_list]
        self.voc12_root = os.path.join(coco_root, "train2014" if train or gen_attn else "val2014")
        self.transform = transform
        self.unit = unit
        self.scales = scales

    def image_path(self, name):
        return os.path.join(self.voc12_root, name + ".jpg")


def build_transform(is_train, args):
    if is_train:
        raise NotImplementedError("the stand-in builds the eval / gen-mode transform only")
    steps = []
    if args.input_size > 32 and not args.gen_attention_maps:
        steps += [resize_shorter(int((256 / 224) * args.input_size)), center_crop(args.input_size)]
    steps.append(to_normalized_tensor)
    return compose(steps)


def build_dataset(is_train, args, gen_attn=False):
    transform = build_transform(is_train, args)
    if args.data_set == "COCOMS":
        return COCOClsDatasetMS(img_name_list_path=args.img_list, coco_root=args.data_path, scales=tuple(args.scales),
                                label_file_path=args.label_file_path, train=is_train, gen_attn=gen_attn,
                                transform=transform), 80
    if args.data_set != "VOC12MS":
        return None, None
    dataset = VOC12DatasetMS(img_name_list_path=args.img_list, voc12_root=args.data_path, scales=tuple(args.scales),
                             train=is_train, gen_attn=gen_attn, transform=transform)
    return dataset, 20
