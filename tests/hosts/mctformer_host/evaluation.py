"""Stand-in for MCTformer's ``evaluation.py``: ``do_python_eval`` with the npy rule.

Same reading and score as upstream (``{c: map}`` dicts into a 21-channel tensor at ``key + 1``,
channel 0 = ``threshold``, argmax; IoU per class with a 1e-10 guard, averaged over all
``num_cls`` classes, reported x100 as ``mIoU``); differences: one process instead of eight
workers, no pandas, no log files, png input not supported.
"""
import os

import numpy as np
from PIL import Image


def do_python_eval(predict_folder, gt_folder, name_list, num_cls=21, input_type='png', threshold=1.0, printlog=False):
    if input_type != "npy":
        raise NotImplementedError("the stand-in reads npy dicts only")
    tp, p, t = np.zeros(num_cls), np.zeros(num_cls), np.zeros(num_cls)
    for name in name_list:
        cams = np.load(os.path.join(predict_folder, f"{name}.npy"), allow_pickle=True).item()
        h, w = list(cams.values())[0].shape
        scores = np.zeros((num_cls, h, w), np.float32)
        for key, value in cams.items():
            scores[key + 1] = value
        scores[0] = threshold
        predict = np.argmax(scores, axis=0).astype(np.uint8)
        gt = np.array(Image.open(os.path.join(gt_folder, f"{name}.png")))
        valid = gt < 255
        for c in range(num_cls):
            p[c] += np.sum((predict == c) & valid)
            t[c] += np.sum((gt == c) & valid)
            tp[c] += np.sum((gt == c) & (predict == gt) & valid)
    iou = tp / (t + p - tp + 1e-10)
    return {"mIoU": float(np.mean(iou)) * 100}
