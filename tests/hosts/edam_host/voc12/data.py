"""Stand-in for EDAM's ``voc12/data.py``: EDAM list format and the 8-view MSF dataset.

Labels come from ``<voc12_root>/cls_labels.json`` ({id: [20 floats]}) instead of the pickled
``voc12/cls_labels.npy``.
"""
import json
import os.path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

IMG_FOLDER_NAME = "JPEGImages"


def load_img_name_list(dataset_path):
    lines = open(dataset_path).read().splitlines()
    return [line.split(" ")[0][12:-4] for line in lines]


def get_img_path(img_name, voc12_root):
    return os.path.join(voc12_root, IMG_FOLDER_NAME, img_name + ".jpg")


class VOC12ClsDatasetMSF(Dataset):
    def __init__(self, img_name_list_path, voc12_root, scales, inter_transform=None, unit=1):
        self.img_name_list = load_img_name_list(img_name_list_path)
        self.voc12_root = voc12_root
        with open(os.path.join(voc12_root, "cls_labels.json")) as handle:
            labels = json.load(handle)
        self.label_list = [np.asarray(labels[name], np.float32) for name in self.img_name_list]
        self.scales = scales
        self.unit = unit
        self.inter_transform = inter_transform

    def __len__(self):
        return len(self.img_name_list)

    def __getitem__(self, idx):
        name = self.img_name_list[idx]
        img = PIL.Image.open(get_img_path(name, self.voc12_root)).convert("RGB")
        label = torch.from_numpy(self.label_list[idx])
        rounded = (int(round(img.size[0] / self.unit) * self.unit), int(round(img.size[1] / self.unit) * self.unit))
        views = []
        for s in self.scales:
            scaled = img.resize((round(rounded[0] * s), round(rounded[1] * s)), resample=PIL.Image.BICUBIC)
            views.append(self.inter_transform(scaled) if self.inter_transform else scaled)
        msf = []
        for view in views:
            msf.append(view)
            msf.append(np.flip(view, -1).copy())
        return name, msf, label
