"""``unary_from_softmax`` as in pydensecrf: ``-log(p)`` as float32 ``(labels, H * W)``."""
import numpy as np


def unary_from_softmax(sm, scale=None, clip=1e-5):
    prob = np.clip(np.asarray(sm, np.float32), clip, None) if clip is not None else np.asarray(sm, np.float32)
    return -np.log(prob).reshape(prob.shape[0], -1).astype(np.float32)
