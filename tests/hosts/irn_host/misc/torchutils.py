"""Stand-in for IRN's ``misc/torchutils.py`` (the two helpers the CAM steps use, and ``train_cam``'s ``PolyOptimizer``)."""
import numpy as np
import torch
from torch.utils.data import Subset


def split_dataset(dataset, n_splits):
    return [Subset(dataset, np.arange(i, len(dataset), n_splits)) for i in range(n_splits)]


def gap2d(x, keepdims=False):
    out = x.flatten(2).mean(-1)
    return out[..., None, None] if keepdims else out


class PolyOptimizer(torch.optim.SGD):
    """As upstream: SGD whose group rates follow ``initial * (1 - step / max_step) ** 0.9``, set
    before each step; ``global_step`` counts steps. Upstream passes ``weight_decay`` as SGD's third
    positional argument, which is ``momentum``: the groups get momentum = weight_decay (kept)."""

    def __init__(self, params, lr, weight_decay, max_step, momentum=0.9):
        super().__init__(params, lr, weight_decay)
        self.global_step = 0
        self.max_step = max_step
        self.momentum = momentum
        self.__initial_lr = [group['lr'] for group in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            factor = (1 - self.global_step / self.max_step) ** self.momentum
            for group, initial in zip(self.param_groups, self.__initial_lr):
                group['lr'] = initial * factor
        super().step(closure)
        self.global_step += 1
