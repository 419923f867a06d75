"""Stand-in for EDAM's ``tool/imutils.py`` (the two functions ``infer_cls.py`` uses)."""
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
