"""Stand-in for EDAM's ``network/resnet38_EDAM_cls.py``: ``mask_layer`` and ``forward_cam``."""
import torch
import torch.nn.functional as F
from torch import nn

import network.resnet38d


class Net(network.resnet38d.Net):
    def __init__(self):
        super().__init__()
        self.mask_layer = nn.Conv2d(network.resnet38d.FEATURE_DIM, 21, 3, padding=1, bias=False)
        torch.nn.init.xavier_uniform_(self.mask_layer.weight)

    def forward_cam(self, x):
        x = super().forward(x)
        mask = self.mask_layer(x)
        mask = F.normalize(mask)  # L2 across the 21 channels
        return torch.abs(mask)
