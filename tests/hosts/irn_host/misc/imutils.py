"""Stand-in for IRN's ``misc/imutils.py``: resizing, the training augmentations (random long-side
resize, left-right flip, random crop padded with 0, all drawn from Python's ``random`` as upstream),
strided sizes; an identity "CRF"."""
import random

import numpy as np
from PIL import Image


def pil_resize(img, size, order):
    if tuple(size) == tuple(img.shape[:2]):
        return img
    resample = Image.BICUBIC if order == 3 else Image.NEAREST
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), resample))


def pil_rescale(img, scale, order):
    h, w = img.shape[:2]
    return pil_resize(img, (int(np.round(h * scale)), int(np.round(w * scale))), order)


def random_resize_long(img, min_long, max_long):
    target_long = random.randint(min_long, max_long)
    h, w = img.shape[:2]
    scale = target_long / max(h, w)
    return pil_rescale(img, scale, 3)


def random_lr_flip(img):
    return np.fliplr(img) if random.random() > 0.5 else img


def random_crop(img, cropsize, default_value):
    """A ``cropsize`` square: the image placed at a random offset when smaller (rest = default_value),
    a random window of it when larger."""
    h, w = img.shape[:2]
    out = np.full((cropsize, cropsize) + img.shape[2:], default_value, dtype=img.dtype)
    ch, cw = min(cropsize, h), min(cropsize, w)
    top, left = random.randrange(h - ch + 1), random.randrange(w - cw + 1)
    out_top, out_left = random.randrange(cropsize - ch + 1), random.randrange(cropsize - cw + 1)
    out[out_top:out_top + ch, out_left:out_left + cw] = img[top:top + ch, left:left + cw]
    return out


def HWC_to_CHW(img):
    return np.transpose(img, (2, 0, 1))


def crf_inference_label(img, labels, t=10, n_labels=21, gt_prob=0.7):
    """Upstream refines ``labels`` with pydensecrf; the stand-in returns them unchanged."""
    return labels


def get_strided_size(orig_size, stride):
    return (orig_size[0] - 1) // stride + 1, (orig_size[1] - 1) // stride + 1


def get_strided_up_size(orig_size, stride):
    h, w = get_strided_size(orig_size, stride)
    return h * stride, w * stride
