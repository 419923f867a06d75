"""Stand-in for EDAM's ``tool/torchutils.py``: ``PolyOptimizer`` with linear warm-up, as upstream."""
import torch


class PolyOptimizer(torch.optim.SGD):
    def __init__(self, params, lr, weight_decay, max_step, warm_up_step):
        super().__init__(params, lr, weight_decay=weight_decay, momentum=0.9)
        self.global_step = 0
        self.max_step = max_step
        self.warm_up_step = warm_up_step
        self.__initial_lr = [group["lr"] for group in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.warm_up_step:
            lr_mult = 0.1 + (self.global_step / self.warm_up_step) * 0.9
        elif self.global_step < self.max_step:
            lr_mult = (1 - (self.global_step - self.warm_up_step) / (self.max_step - self.warm_up_step)) ** 0.9
        for i in range(len(self.param_groups)):
            self.param_groups[i]["lr"] = self.__initial_lr[i] * lr_mult
        super().step(closure)
        self.global_step += 1
