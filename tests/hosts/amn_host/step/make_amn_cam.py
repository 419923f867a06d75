"""Stand-in for AMN's ``step/make_amn_cam.py`` (AMN CAM step, AMN file format).

As upstream: per scale, ``model(img, label)`` logits resized to the strided size and straight to
(H, W), averaged; softmax over 21 channels; channels ``[0] + keys + 1`` kept; min-max normalised
values replace the raw softmax where the stage-1 ``ir_label`` PNG is not 0. Saves ``{"keys",
"cam" (torch), "high_res" (numpy)}`` with channel 0 = background. As upstream, ``_work`` is
spawned on ``torch.cuda.device_count()`` processes: none without CUDA (nothing written, nothing
raised). Difference: ``_work`` computes on the CPU.
"""
import importlib
import os

import numpy as np
import torch
import torch.nn.functional as F
import voc12.dataloader
from misc import imutils, torchutils
from PIL import Image
from torch import multiprocessing
from torch.utils.data import DataLoader


def _minmax(x):
    low, high = np.min(x, (1, 2), keepdims=True), np.max(x, (1, 2), keepdims=True)
    return (x - low) / (high - low + 1e-5)


def _work(process_id, model, dataset, args):
    data_loader = DataLoader(dataset[process_id], shuffle=False, num_workers=0, pin_memory=False)
    with torch.no_grad():
        for pack in data_loader:
            img_name = pack['name'][0]
            label = pack['label'][0]
            size = (int(pack['size'][0]), int(pack['size'][1]))
            label_amn = Image.open(os.path.join(args.ir_label_out_dir, img_name + '.png'))
            strided_size = imutils.get_strided_size(size, 4)
            label_down = np.array(label_amn.resize((strided_size[1], strided_size[0]), resample=Image.NEAREST))
            label_up = np.array(label_amn.resize((size[1], size[0]), resample=Image.NEAREST))
            outputs = [model(img[0], label[None].expand(img[0].size(0), 20)) for img in pack['img']]
            strided_cam = torch.stack([F.interpolate(o[None], strided_size, mode='bilinear', align_corners=False)[0]
                                       for o in outputs]).mean(0)
            highres_cam = torch.stack([F.interpolate(o[None], size, mode='bilinear', align_corners=False)[0]
                                       for o in outputs]).mean(0)
            valid_cat = torch.nonzero(label)[:, 0]
            keys = np.pad(valid_cat + 1, (1, 0), mode='constant')
            strided_cam = F.softmax(strided_cam, dim=0)[keys].numpy()
            highres_cam = F.softmax(highres_cam, dim=0)[keys].numpy()
            strided_fg = np.broadcast_to(label_down != 0, strided_cam.shape)
            highres_fg = np.broadcast_to(label_up != 0, highres_cam.shape)
            strided_cam[strided_fg] = _minmax(strided_cam)[strided_fg]
            highres_cam[highres_fg] = _minmax(highres_cam)[highres_fg]
            np.save(os.path.join(args.amn_cam_out_dir, img_name + '.npy'),
                    {"keys": valid_cat, "cam": torch.tensor(strided_cam), "high_res": highres_cam})


def run(args):
    model = importlib.import_module(args.amn_network).CAM()
    model.load_state_dict(torch.load(args.amn_weights_name + '.pth'), strict=True)
    model.eval()
    n_gpus = torch.cuda.device_count()
    dataset = voc12.dataloader.VOC12ClassificationDatasetMSF(args.train_list, voc12_root=args.voc12_root,
                                                             scales=args.cam_scales)
    dataset = torchutils.split_dataset(dataset, n_gpus)
    multiprocessing.spawn(_work, nprocs=n_gpus, args=(model, dataset, args), join=True)
