"""Stand-in for IRN's ``step/train_cam.py``: saves seeded random weights, no training.

Like upstream it writes ``args.cam_weights_name + '.pth'`` (a plain state dict). The classifier
weight is made non-negative so that the CAMs of the random network are not all zero.
"""
import importlib

import torch


def run(args):
    torch.manual_seed(0)
    model = importlib.import_module(args.cam_network).Net()
    with torch.no_grad():
        model.classifier.weight.abs_()
    torch.save(model.state_dict(), args.cam_weights_name + '.pth')
