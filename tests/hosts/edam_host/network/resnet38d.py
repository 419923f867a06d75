"""Stand-in for EDAM's ``network/resnet38d.py``: a tiny net with the WideResNet-38 interface.

Output stride 8 (three stride-2 stages), ``bn7`` without ReLU as "conv6", ``forward`` returning
conv6, ``forward_as_dict`` and a ``normalize`` transform. Channels are tiny (D = 32). As upstream,
``train(mode)`` freezes the ``not_training`` layers, puts every BatchNorm in eval mode with frozen
affine weights, and returns None, so ``model.eval()`` is None too.
"""
import numpy as np
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 32


class Normalize:
    """ImageNet mean/std normalisation of an (H, W, 3) uint8 array, returning float32."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, img):
        return ((np.asarray(img, np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.b3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.b4 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.b5 = nn.Conv2d(24, 24, 3, padding=2, dilation=2)
        self.b6 = nn.Conv2d(24, 24, 3, padding=4, dilation=4)
        self.b7 = nn.Conv2d(24, FEATURE_DIM, 3, padding=4, dilation=4)
        self.bn7 = nn.BatchNorm2d(FEATURE_DIM)
        self.not_training = [self.conv1a]
        self.normalize = Normalize()

    def train(self, mode=True):
        super().train(mode)
        for layer in self.not_training:  # as upstream: freeze these layers, BatchNorm eval + frozen, no return
            if isinstance(layer, nn.Conv2d):
                layer.weight.requires_grad = False
            else:
                for c in layer.children():
                    c.weight.requires_grad = False
                    if c.bias is not None:
                        c.bias.requires_grad = False
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.eval()
                layer.bias.requires_grad = False
                layer.weight.requires_grad = False

    def forward(self, x):
        return self.forward_as_dict(x)["conv6"]

    def forward_as_dict(self, x):
        x = F.relu(self.conv1a(x))
        x = F.relu(self.b2(x))
        x = F.relu(self.b3(x))
        x = F.relu(self.b4(x))
        conv4 = F.relu(self.b5(x))
        conv5 = F.relu(self.b6(conv4))
        conv6 = self.bn7(self.b7(conv5))  # no ReLU, as EDAM
        return dict({"conv4": conv4, "conv5": conv5, "conv6": conv6})
