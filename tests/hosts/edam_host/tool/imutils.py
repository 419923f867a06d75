"""Stand-in for EDAM's ``tool/imutils.py``: the functions ``infer_cls.py`` and ``train_EDAM_cls.py`` use."""
import random

import numpy as np


def HWC_to_CHW(img):
    return np.transpose(img, (2, 0, 1))


def crf_inference(img, probs, t=10, scale_factor=1, labels=21):
    import pydensecrf.densecrf as dcrf  # lazily, as upstream
    from pydensecrf.utils import unary_from_softmax

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
    d.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(d.inference(t)).reshape((labels, h, w))


class RandomResizeLong:
    """Resize so the long side is ``random.randint(min_long, max_long)`` (bicubic), as upstream."""

    def __init__(self, min_long, max_long):
        self.min_long = min_long
        self.max_long = max_long

    def __call__(self, img):
        import PIL.Image

        target_long = random.randint(self.min_long, self.max_long)
        w, h = img.size
        if w < h:
            target_shape = (int(round(w * target_long / h)), target_long)
        else:
            target_shape = (target_long, int(round(h * target_long / w)))
        return img.resize(target_shape, resample=PIL.Image.BICUBIC)


class RandomCrop:
    """A ``cropsize`` square from an (H, W, C) array, zero-padded where the image is smaller, as upstream."""

    def __init__(self, cropsize):
        self.cropsize = cropsize

    def __call__(self, imgarr):
        h, w, c = imgarr.shape
        ch, cw = min(self.cropsize, h), min(self.cropsize, w)
        w_space, h_space = w - self.cropsize, h - self.cropsize
        if w_space > 0:
            cont_left, img_left = 0, random.randrange(w_space + 1)
        else:
            cont_left, img_left = random.randrange(-w_space + 1), 0
        if h_space > 0:
            cont_top, img_top = 0, random.randrange(h_space + 1)
        else:
            cont_top, img_top = random.randrange(-h_space + 1), 0
        container = np.zeros((self.cropsize, self.cropsize, imgarr.shape[-1]), np.float32)
        container[cont_top:cont_top + ch, cont_left:cont_left + cw] = \
            imgarr[img_top:img_top + ch, img_left:img_left + cw]
        return container
