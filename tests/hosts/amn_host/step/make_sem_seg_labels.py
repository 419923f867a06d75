"""Stand-in for AMN's ``step/make_sem_seg_labels.py``: reads ``amn_cam_out_dir``, raises ``cam`` to
the power 1.3 with ``np.power`` (a torch tensor stays a tensor), drops channel 0, moves it with a
tensor method (upstream ``.cuda()``). No IRN model or random walk; in-process, CPU."""
import os

import numpy as np
import torch
import torch.nn.functional as F
import voc12.dataloader
from misc import torchutils
from PIL import Image
from torch.utils.data import DataLoader


def _work(process_id, model, dataset, args):
    loader = DataLoader(dataset[process_id], shuffle=False, num_workers=0, pin_memory=False)
    with torch.no_grad():
        for pack in loader:
            img_name = voc12.dataloader.decode_int_filename(pack['name'][0])
            orig_img_size = [int(s) for s in pack['size']]
            cam_dict = np.load(args.amn_cam_out_dir + '/' + img_name + '.npy', allow_pickle=True).item()
            cams = np.power(cam_dict['cam'], 1.3)
            keys = np.pad(cam_dict['keys'] + 1, (1, 0), mode='constant')
            rw = cams[1:, ...].to('cpu')[:, None]
            rw_up = F.interpolate(rw, scale_factor=4, mode='bilinear', align_corners=False)[
                ..., 0, :orig_img_size[0], :orig_img_size[1]]
            rw_up = rw_up / torch.max(rw_up)
            rw_up_bg = F.pad(rw_up, (0, 0, 0, 0, 1, 0), value=args.sem_seg_bg_thres)
            rw_pred = keys[torch.argmax(rw_up_bg, dim=0).cpu().numpy()]
            Image.fromarray(rw_pred.astype(np.uint8)).save(os.path.join(args.sem_seg_out_dir, img_name + '.png'))


def run(args):
    dataset = voc12.dataloader.VOC12ClassificationDatasetMSF(args.infer_list, voc12_root=args.voc12_root,
                                                             scales=(1.0,))
    _work(0, None, torchutils.split_dataset(dataset, 1), args)
