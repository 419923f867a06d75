"""``DenseCRF2D`` with the real signatures; "inference" is the softmax of the unaries (no pairwise terms)."""
import numpy as np


def _buffer(array, dtype, name):
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        raise ValueError(f"{name}: expected a {np.dtype(dtype).name} array")
    if not array.flags.writeable:
        raise ValueError("buffer source array is read-only")
    if not array.flags.c_contiguous:
        raise ValueError("ndarray is not C-contiguous")
    return array


class DenseCRF2D:
    def __init__(self, width, height, labels):
        self.shape = (labels, height * width)
        self.image_shape = (height, width, 3)
        self.unary = None

    def setUnaryEnergy(self, unary):
        self.unary = _buffer(unary, np.float32, "unary").reshape(self.shape)

    def addPairwiseGaussian(self, sxy, compat):
        pass

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat):
        if _buffer(rgbim, np.uint8, "rgbim").shape != self.image_shape:
            raise ValueError(f"rgbim must be {self.image_shape}, got {rgbim.shape}")

    def inference(self, t):
        logits = -self.unary
        prob = np.exp(logits - logits.max(axis=0, keepdims=True))
        return prob / prob.sum(axis=0, keepdims=True)
