"""Stand-in for IRN's ``step/make_cam.py`` (CAM step: multi-scale + flip, IRN file format).

``run(args)`` builds ``CAM`` from ``args.cam_network``, loads ``args.cam_weights_name + '.pth'``,
splits the MSF dataset over ``train_list`` and starts ``_work`` with
``torch.multiprocessing.spawn``, looking ``_work`` up in this module at call time, as upstream.
As upstream, ``run`` spawns ``torch.cuda.device_count()`` workers: none on a machine without
CUDA (nothing written, nothing raised), and ``_work`` prints progress every
``len(databin) // 20`` images of the last worker (ZeroDivisionError below 20 images there).
Difference: ``_work`` computes on the CPU (no ``.cuda()``), so tests can call it directly.
"""
import importlib
import os

import numpy as np
import torch
import torch.nn.functional as F
import voc12.dataloader
from misc import imutils, torchutils
from torch import multiprocessing
from torch.utils.data import DataLoader


def _work(process_id, model, dataset, args):
    databin = dataset[process_id]
    data_loader = DataLoader(databin, shuffle=False, num_workers=0, pin_memory=False)
    n_gpus = torch.cuda.device_count()
    with torch.no_grad():
        for iter, pack in enumerate(data_loader):
            img_name = pack['name'][0]
            label = pack['label'][0]
            size = (int(pack['size'][0]), int(pack['size'][1]))
            strided_size = imutils.get_strided_size(size, 4)
            strided_up_size = imutils.get_strided_up_size(size, 16)
            outputs = [model(img[0]) for img in pack['img']]
            strided_cam = torch.sum(torch.stack(
                [F.interpolate(o[None], strided_size, mode='bilinear', align_corners=False)[0]
                 for o in outputs]), 0)
            highres_cam = torch.sum(torch.stack(
                [F.interpolate(o[:, None], strided_up_size, mode='bilinear', align_corners=False)
                 for o in outputs], 0), 0)[:, 0, :size[0], :size[1]]
            valid_cat = torch.nonzero(label)[:, 0]
            strided_cam = strided_cam[valid_cat]
            strided_cam /= F.adaptive_max_pool2d(strided_cam, (1, 1)) + 1e-5
            highres_cam = highres_cam[valid_cat]
            highres_cam /= F.adaptive_max_pool2d(highres_cam, (1, 1)) + 1e-5
            np.save(os.path.join(args.cam_out_dir, img_name + '.npy'),
                    {"keys": valid_cat, "cam": strided_cam.cpu(), "high_res": highres_cam.cpu().numpy()})
            if process_id == n_gpus - 1 and iter % (len(databin) // 20) == 0:
                print("%d " % ((5 * iter + 1) // (len(databin) // 20)), end='')


def run(args):
    model = importlib.import_module(args.cam_network).CAM()
    model.load_state_dict(torch.load(args.cam_weights_name + '.pth'), strict=True)
    model.eval()
    n_gpus = torch.cuda.device_count()
    dataset = voc12.dataloader.VOC12ClassificationDatasetMSF(args.train_list, voc12_root=args.voc12_root,
                                                             scales=args.cam_scales)
    dataset = torchutils.split_dataset(dataset, n_gpus)
    multiprocessing.spawn(_work, nprocs=n_gpus, args=(model, dataset, args), join=True)
