"""Stand-in for the reference's ``step_coco/cam_to_ir_label.py``: reads ``args.lpcam_out_dir/<name>.npy``
(not ``cam_out_dir``), pads the background at ``conf_fg_thres`` / ``conf_bg_thres``, writes
``args.ir_label_out_dir/<name>.png``; an image whose keys are empty gets an all-background PNG.
Splits the data with ``misc.torchutils.split_dataset`` (numpy indices upstream) and runs ``_work``
in-process (upstream: ``multiprocessing.spawn``); identity "CRF"; the progress print divides by
``len(databin) // 20`` as upstream."""
import os
import os.path as osp

import mscoco.dataloader
import numpy as np
from misc import torchutils
from PIL import Image
from torch.utils.data import DataLoader


def _work(process_id, infer_dataset, args):
    databin = infer_dataset[process_id]
    loader = DataLoader(databin, shuffle=False, num_workers=0, pin_memory=False)
    for it, pack in enumerate(loader):
        img_name = pack['name'][0].split('.')[0]
        img = pack['img'][0].numpy()
        cam_dict = np.load(os.path.join(args.lpcam_out_dir, img_name + '.npy'), allow_pickle=True).item()
        cams = cam_dict['high_res']
        keys = np.pad(cam_dict['keys'] + 1, (1, 0), mode='constant')
        if keys.shape[0] == 1:
            conf = np.zeros_like(img)[:, :, 0]
        else:
            fg = keys[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_fg_thres), 0)]
            bg = keys[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_bg_thres), 0)]
            conf = fg.copy()
            conf[fg == 0] = 255
            conf[bg + fg == 0] = 0
        Image.fromarray(conf.astype(np.uint8)).save(os.path.join(args.ir_label_out_dir, img_name + '.png'))
        if process_id == args.num_workers - 1 and it % (len(databin) // 20) == 0:
            print("%d " % ((5 * it + 1) // (len(databin) // 20)), end='')


def run(args):
    dataset = mscoco.dataloader.COCOClassificationDataset(
        image_dir=osp.join(args.mscoco_root, 'train2014/'),
        anno_path=osp.join(args.mscoco_root, 'annotations/instances_train2014.json'),
        labels_path='./mscoco/train_labels.npy', img_normal=None, to_torch=False)
    dataset = torchutils.split_dataset(dataset, args.num_workers)
    for process_id in range(args.num_workers):
        _work(process_id, dataset, args)
