"""Stand-in for AMN coco14's ``net/resnet50_cam.py``: ``Net(coco=False)`` (80 classes with ``coco=True``; its
``forward`` still reshapes to 20, as upstream) and ``CAM``.

Same attributes as upstream (``resnet50``, ``stage1..stage4``, ``classifier`` = 1x1 conv without
bias, ``backbone``, ``newly_added``), the same ``train()`` override that never calls
``super().train`` and the same functional use of ``classifier.weight`` in ``CAM.forward``.
"""
import torch.nn as nn
import torch.nn.functional as F
from net import resnet50


class Net(nn.Module):
    def __init__(self, coco=False):
        super().__init__()
        self.resnet50 = resnet50.resnet50(pretrained=True, strides=(2, 2, 2, 1))
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.n_cls = 80 if coco else 20
        self.classifier = nn.Conv2d(resnet50.FEATURE_DIM, self.n_cls, 1, bias=False)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier])

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(x)).detach()))
        x = self.classifier(x.mean(dim=(2, 3), keepdim=True))
        return x.view(-1, 20)

    def train(self, mode=True):
        for p in self.resnet50.conv1.parameters():
            p.requires_grad = False
        for p in self.resnet50.bn1.parameters():
            p.requires_grad = False

    def trainable_parameters(self):
        return list(self.backbone.parameters()), list(self.newly_added.parameters())


class CAM(Net):
    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        x = F.relu(F.conv2d(x, self.classifier.weight))
        return x[0] + x[1].flip(-1)
