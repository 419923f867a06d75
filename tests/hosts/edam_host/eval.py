"""Stand-in for EDAM's ``eval.py``: ``do_python_eval`` with the npy rule (plain and CRF dicts).

Same reading and score as upstream: plain ``{c: map}`` dicts go to channel ``c + 1`` with channel
0 = ``theta``; CRF dicts ``{0: bg, c + 1: ...}`` go to their own channel; with ``sal_path`` the
saliency rule (bg = ``saliency <= theta * 100``, values below ``alpha`` -> -2, above ``beta`` -> 2);
argmax; IoU per class with a 1e-10 guard averaged over all ``num_cls`` classes, x100 as ``mIoU``.
Differences: one process instead of eight, no pandas, no log files, npy input only.
"""
import os

import numpy as np
from PIL import Image


def do_python_eval(predict_folder, gt_folder, name_list, num_cls=21, input_type='png', theta=1.0, printlog=False,
                   alpha=0, beta=1, crf=False, sal_path=None):
    if input_type != "npy":
        raise NotImplementedError("the stand-in reads npy dicts only")
    tp, p, t = np.zeros(num_cls), np.zeros(num_cls), np.zeros(num_cls)
    for name in name_list:
        cams = np.load(os.path.join(predict_folder, f"{name}.npy"), allow_pickle=True).item()
        h, w = list(cams.values())[0].shape
        scores = np.zeros((21, h, w), np.float32)
        for key, value in cams.items():
            scores[key if crf else key + 1] = value
        if sal_path is not None:
            saliency = np.array(Image.open(os.path.join(sal_path, f"{name}.png")))
            scores = np.where(scores < alpha, -2, np.where(scores > beta, 2, scores))
            scores[0] = np.where(saliency <= theta * 100, 1, 0)
        elif not crf:
            scores[0] = theta
        predict = np.argmax(scores, axis=0).astype(np.uint8)
        gt = np.array(Image.open(os.path.join(gt_folder, f"{name}.png")))
        valid = gt < 255
        for c in range(num_cls):
            p[c] += np.sum((predict == c) & valid)
            t[c] += np.sum((gt == c) & valid)
            tp[c] += np.sum((gt == c) & (predict == gt) & valid)
    iou = tp / (t + p - tp + 1e-10)
    return {"mIoU": float(np.mean(iou)) * 100}
