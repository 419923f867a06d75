"""Stand-in for IRN's ``step/eval_cam.py``: one threshold ``cam_eval_thres``, no sweep.

Reads ``high_res`` and ``keys`` of ``args.cam_out_dir/<id>.npy`` for every id of
``<voc12_root>/ImageSets/Segmentation/<chainer_eval_set>.txt``, prepends a constant background
plane, takes the argmax and scores it against ``SegmentationClass/<id>.png`` (255 ignored) over 21
classes. Upstream uses chainercv for the ground truth and the confusion matrix and returns None;
this prints the same dict and also returns it.
"""
import os

import numpy as np
from PIL import Image

N_CLASSES = 21


def load_gt(voc12_root, split):
    with open(os.path.join(voc12_root, 'ImageSets', 'Segmentation', split + '.txt')) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    labels = []
    for i in ids:
        with Image.open(os.path.join(voc12_root, 'SegmentationClass', i + '.png')) as image:
            gt = np.asarray(image).astype(np.int64)
        gt[gt == 255] = -1
        labels.append(gt)
    return ids, labels


def confusion_iou(preds, labels):
    confusion = np.zeros((N_CLASSES, N_CLASSES), np.int64)
    for pred, gt in zip(preds, labels):
        valid = gt >= 0
        confusion += np.bincount(N_CLASSES * gt[valid] + pred[valid],
                                 minlength=N_CLASSES ** 2).reshape(N_CLASSES, N_CLASSES)
    gtj, resj, tp = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = tp / (gtj + resj - tp)
    return {'iou': iou, 'miou': np.nanmean(iou)}


def predict(cams, keys, threshold):
    cams = np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode='constant', constant_values=threshold)
    keys = np.pad(keys + 1, (1, 0), mode='constant')
    return keys[np.argmax(cams, axis=0)]


def run(args):
    ids, labels = load_gt(args.voc12_root, args.chainer_eval_set)
    preds = []
    for i in ids:
        cam_dict = np.load(os.path.join(args.cam_out_dir, i + '.npy'), allow_pickle=True).item()
        preds.append(predict(cam_dict['high_res'], cam_dict['keys'], args.cam_eval_thres))
    result = confusion_iou(preds, labels)
    print(result)
    return result
