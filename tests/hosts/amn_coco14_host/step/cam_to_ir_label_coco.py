"""Stand-in for AMN coco14's ``step/cam_to_ir_label_coco.py``: ``args.cam_out_dir/<id>.npy`` ->
``args.ir_label_out_dir/<id>.png`` (and ``<id>_palette.png``), fg / bg padded at ``conf_fg_thres`` /
``conf_bg_thres``, identity "CRF"; a dict without ``high_res`` gives an all-background PNG; an
existing PNG is skipped. As upstream the list is split into 16 parts whatever ``num_workers`` is and
part ``num_workers - 1`` prints progress dividing by ``len(databin) // 20``; the parts run in-process."""
import os

import coco14.dataloader
import numpy as np
from misc import torchutils
from PIL import Image
from torch.utils.data import DataLoader

CAM_DIR, OUT_DIR = "cam_out_dir", "ir_label_out_dir"


def _save(conf, out_dir, img_name):
    Image.fromarray(conf.astype(np.uint8), mode='P').save(os.path.join(out_dir, img_name + '_palette.png'))
    Image.fromarray(conf.astype(np.uint8)).save(os.path.join(out_dir, img_name + '.png'))


def _work(process_id, infer_dataset, args, cam_dir=CAM_DIR, out_dir=OUT_DIR, drop_background=False):
    databin = infer_dataset[process_id]
    for it, pack in enumerate(DataLoader(databin, shuffle=False, num_workers=0)):
        img_name = coco14.dataloader.decode_int_filename(pack['name'][0])
        img = pack['img'][0].numpy()
        if os.path.exists(os.path.join(getattr(args, out_dir), img_name + '.png')):
            continue
        cam_dict = np.load(os.path.join(getattr(args, cam_dir), img_name + '.npy'), allow_pickle=True).item()
        if 'high_res' not in cam_dict:
            _save(np.zeros_like(img)[:, :, 0], getattr(args, out_dir), img_name)
            continue
        cams = cam_dict['high_res'][1:] if drop_background else cam_dict['high_res']
        keys = np.pad(cam_dict['keys'] + 1, (1, 0), mode='constant')
        fg = keys[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_fg_thres), 0)]
        bg = keys[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=args.conf_bg_thres), 0)]
        conf = fg.copy()
        conf[fg == 0] = 255
        conf[bg + fg == 0] = 0
        _save(conf, getattr(args, out_dir), img_name)
        if process_id == args.num_workers - 1 and it % (len(databin) // 20) == 0:
            print("%d " % ((5 * it + 1) // (len(databin) // 20)), end='')


def run(args):
    dataset = coco14.dataloader.COCO14ImageDataset(args.train_list, coco14_root=args.coco14_root, img_normal=None,
                                                   to_torch=False)
    dataset = torchutils.split_dataset(dataset, 16)
    for process_id in range(16):
        _work(process_id, dataset, args)
