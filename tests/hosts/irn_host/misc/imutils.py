"""Stand-in for IRN's ``misc/imutils.py``: resizing and strided sizes; an identity "CRF"."""
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
