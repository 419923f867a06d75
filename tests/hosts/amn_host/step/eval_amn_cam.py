"""Stand-in for AMN's ``step/eval_amn_cam.py``: like ``eval_cam`` on ``high_res[1:]`` of ``amn_cam_out_dir``."""
import os

import numpy as np
from step.eval_cam import confusion_iou, load_gt, predict


def run(args):
    ids, labels = load_gt(args.voc12_root, args.chainer_eval_set)
    preds = []
    for i in ids:
        cam_dict = np.load(os.path.join(args.amn_cam_out_dir, i + '.npy'), allow_pickle=True).item()
        preds.append(predict(cam_dict['high_res'][1:, ...], cam_dict['keys'], args.cam_eval_thres))
    result = confusion_iou(preds, labels)
    print(result)
    return result
