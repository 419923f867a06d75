"""Stand-in for MCTformer's ``datasets.py``: ``VOC12DatasetMS`` and ``build_dataset`` (gen mode).

Labels come from ``<img_list>/cls_labels.json`` instead of ``voc12/cls_labels.npy``; the
transform is ToTensor + ImageNet Normalize written with numpy (no torchvision).
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


def load_img_name_list(dataset_path):
    return [line.strip() for line in open(dataset_path).readlines()]


class VOC12DatasetMS(Dataset):
    def __init__(self, img_name_list_path, voc12_root, scales, train=True, transform=None, gen_attn=False, unit=1):
        with open(os.path.join(img_name_list_path, "cls_labels.json")) as handle:
            labels = json.load(handle)
        img_name_list_path = os.path.join(img_name_list_path, f'{"train_aug" if train or gen_attn else "val"}_id.txt')
        self.img_name_list = load_img_name_list(img_name_list_path)
        self.label_list = [np.asarray(labels[name], np.float32) for name in self.img_name_list]
        self.voc12_root = voc12_root
        self.transform = transform
        self.unit = unit
        self.scales = scales

    def __getitem__(self, idx):
        name = self.img_name_list[idx]
        img = PIL.Image.open(os.path.join(self.voc12_root, "JPEGImages", name + ".jpg")).convert("RGB")
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


def build_dataset(is_train, args, gen_attn=False):
    dataset = VOC12DatasetMS(img_name_list_path=args.img_list, voc12_root=args.data_path, scales=tuple(args.scales),
                             train=is_train, gen_attn=gen_attn, transform=to_normalized_tensor)
    return dataset, 20
