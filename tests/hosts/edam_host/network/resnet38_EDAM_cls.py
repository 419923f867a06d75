"""Stand-in for EDAM's ``network/resnet38_EDAM_cls.py``: ``mask_layer``, ``forward_cam`` and the
training ``forward(img, label_idx)`` over one image pair.

As upstream: ``forward`` views ``img`` as ``(-1, 3, H, W)``, asserts 2 images (one pair) and 20
sampled class ids, weights ``d_d`` features by ``mask[i]`` per sampled class, runs the class's
own block (``trans_list[label_idx[i]]``, called as ``block.forward(x, None)``) over the pair's
tokens, GAP, ``fc_list[label_idx[i]]``, and returns ``(2 x 20,)`` logits (first image's 20, then
the second's); it calls ``.cuda()`` on ``segment_info`` unconditionally. ``get_parameter_groups``
returns the same six groups. The transformer is a tiny residual MLP; hidden is 8 instead of 128.
"""
import torch
import torch.nn.functional as F
from torch import nn

import network.resnet38d


class _Block(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.fc = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask):
        return x + self.dropout(torch.tanh(self.fc(x)))


class _Embedding(nn.Module):
    def __init__(self, embed_size):
        super().__init__()
        self.segment = nn.Embedding(2, embed_size)

    def forward(self, x, segment_info):
        return x + self.segment(segment_info)


class Net(network.resnet38d.Net):
    def __init__(self):
        super().__init__()
        self.mask_layer = nn.Conv2d(network.resnet38d.FEATURE_DIM, 21, 3, padding=1, bias=False)
        torch.nn.init.xavier_uniform_(self.mask_layer.weight)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.sample_num = 20
        self.hidden = 8
        self.mini_batch_size = 2
        self.embedding = _Embedding(self.hidden)
        self.trans_list = nn.ModuleList([nn.ModuleList([_Block(self.hidden)]) for _ in range(20)])
        self.d_d = nn.Conv2d(network.resnet38d.FEATURE_DIM, self.hidden, 1, bias=False)
        self.not_training = [self.conv1a, self.b2]
        self.from_scratch_layers = [self.mask_layer, self.d_d]
        self.fc_list = nn.ModuleList([nn.Conv2d(self.hidden, 1, 1, bias=False) for _ in range(20)])
        self.from_scratch_layers.extend(self.fc_list)

    def forward(self, img, label_idx):
        c, h, w = img.size()[-3:]
        x = img.view(-1, c, h, w)
        x = super().forward(x)
        n, c, h, w = x.size()
        assert n == self.mini_batch_size
        assert len(label_idx) == self.sample_num
        mask = torch.abs(F.normalize(self.mask_layer(x)))
        x = self.d_d(x).permute(1, 0, 2, 3)  # hidden, n, h, w
        mask = mask.permute(1, 0, 2, 3)  # 21, n, h, w
        segment_info = torch.zeros(1, n * h * w)
        segment_info[:, h * w:] = 1
        segment_info = segment_info.to(torch.int64).cuda()  # as upstream: unconditional
        output = []
        for i in range(self.sample_num):
            feature = torch.mul(x, mask[label_idx[i]]).permute(1, 2, 3, 0).reshape(1, n * h * w, self.hidden)
            tokens = self.embedding(feature, segment_info)
            for block in self.trans_list[label_idx[i]]:
                tokens = block.forward(tokens, None)
            out = tokens.view(n, h, w, self.hidden).permute(0, 3, 1, 2)
            output.append(self.fc_list[label_idx[i]](self.gap(out)).view(-1))
        return torch.stack(output, dim=1).view(-1)

    def forward_cam(self, x):
        x = super().forward(x)
        mask = self.mask_layer(x)
        mask = F.normalize(mask)  # L2 across the 21 channels
        return torch.abs(mask)

    def get_parameter_groups(self):
        groups = ([], [], [], [], [], [])
        for m in self.embedding.parameters():
            if m.requires_grad:
                groups[4].append(m)
        for transformer in self.trans_list:
            for m in transformer.parameters():
                if m.requires_grad:
                    groups[4].append(m)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.weight.requires_grad:
                    (groups[2] if m in self.from_scratch_layers else groups[0]).append(m.weight)
                if m.bias is not None and m.bias.requires_grad:
                    (groups[3] if m in self.from_scratch_layers else groups[1]).append(m.bias)
        return groups
