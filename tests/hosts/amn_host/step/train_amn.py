"""Stand-in for AMN's ``step/train_amn.py``: saves seeded random weights to ``amn_weights_name + '.pth'``."""
import importlib

import torch


def run(args):
    torch.manual_seed(1)
    model = importlib.import_module(args.amn_network).Net()
    torch.save(model.state_dict(), args.amn_weights_name + '.pth')
