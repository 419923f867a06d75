"""Stand-in for the reference's ``step_coco/eval_cam.py``: reads ``args.lpcam_out_dir/<name>.npy``,
pads the background at ``cam_eval_thres``, scores 81 labels against ``mask/train2014/<int id>.png``
(chainercv's confusion reimplemented) and prints and returns the NaN-mean IoU."""
import os.path as osp

import mscoco.dataloader
import numpy as np


def run(args):
    dataset = mscoco.dataloader.COCOSegmentationDataset(
        image_dir=osp.join(args.mscoco_root, 'train2014/'),
        anno_path=osp.join(args.mscoco_root, 'annotations/instances_train2014.json'),
        masks_path=osp.join(args.mscoco_root, 'mask/train2014'), crop_size=512)
    confusion = np.zeros((81, 81), np.int64)
    for pack in dataset:
        cam_dict = np.load(osp.join(args.lpcam_out_dir, pack['name'] + '.npy'), allow_pickle=True).item()
        cams = np.pad(cam_dict['high_res'], ((1, 0), (0, 0), (0, 0)), constant_values=args.cam_eval_thres)
        keys = np.pad(cam_dict['keys'] + 1, (1, 0), mode='constant')
        pred = keys[np.argmax(cams, axis=0)].astype(np.int64)
        label = pack['label'].astype(np.int64)
        valid = label < 255
        confusion += np.bincount(81 * label[valid] + pred[valid], minlength=81 * 81).reshape(81, 81)
    gtj, resj, inter = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = inter / (gtj + resj - inter)
    print("threshold:", args.cam_eval_thres, 'miou:', np.nanmean(iou), "i_imgs", len(dataset))
    return np.nanmean(iou)
