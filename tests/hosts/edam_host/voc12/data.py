"""Stand-in for EDAM's ``voc12/data.py``: EDAM list format, the 8-view MSF dataset and the
training pairs ``VOC12EDAMClsDataset`` (label sampling with the global ``random``, as upstream).

Labels: ``voc12/cls_labels.npy`` relative to the working directory (``{id: (20,) float32}``), as
upstream; a ``<voc12_root>/cls_labels.json`` ({id: [20 floats]}) takes its place when present (the
older form some tests write).
"""
import json
import os.path
import random

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
        labels = _labels(voc12_root)
        self.label_list = [labels[name] for name in self.img_name_list]
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


def _labels(voc12_root):
    json_path = os.path.join(voc12_root, "cls_labels.json")
    if os.path.exists(json_path):
        with open(json_path) as handle:
            return {name: np.asarray(vec, np.float32) for name, vec in json.load(handle).items()}
    table = np.load("voc12/cls_labels.npy", allow_pickle=True).item()
    return {name: np.asarray(vec, np.float32) for name, vec in table.items()}


def load_img_name_pair_list(dataset_path):
    lines = open(dataset_path).read().splitlines()
    pairs = [(line.split(" ")[0][-15:-4], line.split(" ")[1][-15:-4]) for line in lines]
    return pairs, [int(line.split(" ")[2]) for line in lines]


class VOC12EDAMClsDataset(Dataset):
    def __init__(self, img_name_list_path, voc12_root, transform=None):
        self.img_name_pair_list, self.common_label_list = load_img_name_pair_list(img_name_list_path)
        self.voc12_root = voc12_root
        self.transform = transform
        labels = _labels(voc12_root)
        self.label_pair_list = [(labels[a], labels[b]) for a, b in self.img_name_pair_list]

    def __len__(self):
        return len(self.img_name_pair_list)

    def __getitem__(self, idx):
        name_pair = self.img_name_pair_list[idx]
        img1 = PIL.Image.open(get_img_path(name_pair[0], self.voc12_root)).convert("RGB")
        img2 = PIL.Image.open(get_img_path(name_pair[1], self.voc12_root)).convert("RGB")
        if self.transform:
            img_pair = torch.stack((self.transform(img1), self.transform(img2)), dim=0)
        label1 = torch.from_numpy(self.label_pair_list[idx][0])
        label2 = torch.from_numpy(self.label_pair_list[idx][1])
        common = self.common_label_list[idx]
        absent = [i for i in range(20) if label1[i] == 0 and label2[i] == 0]
        random.shuffle(absent)
        label_idx = [i for i in range(20) if label1[i] == 1 or label2[i] == 1][:20]
        for i in range(20 - len(label_idx)):
            label_idx.append(absent[i])
        assert label1[common] == 1 and label2[common] == 1
        assert len(label_idx) == len(set(label_idx))
        label = [0 for _ in range(40)]
        for i in range(20):
            if label1[label_idx[i]] == 1:
                label[i] = 1.0
            if label2[label_idx[i]] == 1:
                label[i + 20] = 1.0
        return name_pair, img_pair, torch.tensor(label), label_idx
