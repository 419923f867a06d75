"""Stand-in for AMN's ``net/resnet50_amn.py``: label-conditioned features and a dropout + ASPP head.

Same names as upstream: ``label_enc = nn.Linear(C, D)``, ``classifier = Sequential(Dropout(0.1),
_ASPP(D -> C + 1, rates 6/12/18/24))`` with branches ``c0..c3`` (3x3 dilated convs with bias, summed);
channel 0 of the logits is background. ``CAM.forward(x, y)`` returns the flip-averaged (C + 1, h, w).
C is hard-coded, as upstream: 20 on the ``voc12`` branch, 80 on ``coco14`` (the tests' copy of that
branch sets :data:`N_CLASSES` to 80, ``voc_standin.copy_host``).
"""
import torch.nn as nn
from net import resnet50

N_CLASSES = 20


class _ASPP(nn.Module):
    def __init__(self, in_ch, out_ch, rates):
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module("c{}".format(i), nn.Conv2d(in_ch, out_ch, 3, 1, padding=rate, dilation=rate, bias=True))

    def forward(self, x):
        return sum(branch(x) for branch in self.children())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet50 = resnet50.resnet50(pretrained=True, strides=(2, 2, 2, 1))
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.label_enc = nn.Linear(N_CLASSES, resnet50.FEATURE_DIM)
        self.classifier = nn.Sequential(nn.Dropout(0.1),
                                        _ASPP(in_ch=resnet50.FEATURE_DIM, out_ch=N_CLASSES + 1,
                                              rates=[6, 12, 18, 24]))
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier, self.label_enc])

    def forward(self, img, label_cls):
        y = self.label_enc(label_cls)[..., None, None]
        x = self.stage4(self.stage3(self.stage2(self.stage1(img))))
        return self.classifier(x * y)

    def train(self, mode=True):
        for p in self.resnet50.conv1.parameters():
            p.requires_grad = False
        for p in self.resnet50.bn1.parameters():
            p.requires_grad = False


class CAM(Net):
    def forward(self, x, y):
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        x = x * self.label_enc(y)[..., None, None]
        logit = self.classifier(x)
        return (logit[0] + logit[1].flip(-1)) / 2
