"""Stand-in for AMN's ``step/amn_cam_to_ir_label.py``: ``cam_to_ir_label`` on ``high_res[1:]`` of
``amn_cam_out_dir``, written to ``amn_ir_label_out_dir``; in-process, identity CRF."""
import os

import numpy as np
import voc12.dataloader
from misc import imutils, torchutils
from PIL import Image
from torch.utils.data import DataLoader


def _work(process_id, infer_dataset, args):
    loader = DataLoader(infer_dataset[process_id], shuffle=False, num_workers=0, pin_memory=False)
    for pack in loader:
        img_name = voc12.dataloader.decode_int_filename(pack['name'][0])
        img = pack['img'][0].numpy()
        cam_dict = np.load(os.path.join(args.amn_cam_out_dir, img_name + '.npy'), allow_pickle=True).item()
        cams = cam_dict['high_res'][1:, ...]
        keys = np.pad(cam_dict['keys'] + 1, (1, 0), mode='constant')
        fg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_fg_thres), axis=0)
        fg_conf = keys[imutils.crf_inference_label(img, fg_conf_cam, n_labels=keys.shape[0])]
        bg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_bg_thres), axis=0)
        bg_conf = keys[imutils.crf_inference_label(img, bg_conf_cam, n_labels=keys.shape[0])]
        conf = fg_conf.copy()
        conf[fg_conf == 0] = 255
        conf[bg_conf + fg_conf == 0] = 0
        Image.fromarray(conf.astype(np.uint8)).save(os.path.join(args.amn_ir_label_out_dir, img_name + '.png'))


def run(args):
    dataset = voc12.dataloader.VOC12ImageDataset(args.train_list, voc12_root=args.voc12_root,
                                                 img_normal=None, to_torch=False)
    dataset = torchutils.split_dataset(dataset, args.num_workers)
    for process_id in range(args.num_workers):
        _work(process_id, dataset, args)
