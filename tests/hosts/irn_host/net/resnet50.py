"""Stand-in for IRN's ``net/resnet50.py``: a torchvision-style ResNet with FixedBatchNorm, tiny widths.

Same attribute names (``conv1, bn1, relu, maxpool, layer1..layer4``) and ``resnet50(pretrained,
strides)`` signature as upstream; one bottleneck per layer and ``FEATURE_DIM`` output channels.
``pretrained`` is accepted and ignored (nothing is downloaded).
"""
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (4, 8, 8, 8)
FEATURE_DIM = WIDTHS[3] * 4


class FixedBatchNorm(nn.BatchNorm2d):
    """Batch norm that always uses its running statistics."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = FixedBatchNorm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = FixedBatchNorm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = FixedBatchNorm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet(nn.Module):
    def __init__(self, strides=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 7, stride=strides[0], padding=3, bias=False)
        self.bn1 = FixedBatchNorm(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = WIDTHS[0]
        for i, (planes, stride) in enumerate(zip(WIDTHS, (1,) + tuple(strides[1:]))):
            down = nn.Sequential(nn.Conv2d(in_ch, planes * 4, 1, stride=stride, bias=False),
                                 FixedBatchNorm(planes * 4))
            setattr(self, f"layer{i + 1}", nn.Sequential(Bottleneck(in_ch, planes, stride, down)))
            in_ch = planes * 4


def resnet50(pretrained=True, **kwargs):
    return ResNet(**kwargs)
