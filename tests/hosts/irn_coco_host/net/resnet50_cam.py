"""Stand-in for the LPCAM / ReCAM reference's ``net/resnet50_cam.py``: ``Net(stride=16, n_classes=20)``
and ``CAM``, the IRN stand-in's network with the class count as a parameter (80 on COCO)."""
import torch.nn as nn
import torch.nn.functional as F
from net import resnet50


class Net(nn.Module):
    def __init__(self, stride=16, n_classes=20):
        super().__init__()
        self.resnet50 = resnet50.resnet50(pretrained=True, strides=(2, 2, 2, 1))
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.n_classes = n_classes
        self.classifier = nn.Conv2d(resnet50.FEATURE_DIM, n_classes, 1, bias=False)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier])

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(x)).detach()))
        x = self.classifier(x.mean(dim=(2, 3), keepdim=True))
        return x.view(-1, self.n_classes)

    def train(self, mode=True):  # as upstream's: never returns the module
        super().train(mode)
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
