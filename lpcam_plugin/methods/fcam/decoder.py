"""The F-CAM decoder: a light U-Net-style head over a frozen classifier's features.

The deepest features (the classifier's ``feature_layer``) are projected to
``channels[0]`` by a 1x1 convolution, then each block upsamples (bilinear) to the next skip's
size, concatenates that skip and applies two 3x3 conv - GroupNorm - ReLU layers. Skips run
coarse to fine and end with the RGB image itself, so the last block works at full resolution;
a 3x3 convolution then gives ``C + 1`` logits (background first, then the C classes).

GroupNorm rather than the authors' BatchNorm (ours): the statistics do not depend on the batch,
so small per-GPU batches and DistributedDataParallel shards train alike.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv_norm_relu(c_in: int, c_out: int) -> List[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(8, c_out), c_out),
            nn.ReLU(inplace=True)]


class DecoderBlock(nn.Sequential):
    """Two 3x3 conv - GroupNorm - ReLU layers: ``(B, c_in, h, w) -> (B, c_out, h, w)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(*_conv_norm_relu(c_in, c_out), *_conv_norm_relu(c_out, c_out))


class FCAMDecoder(nn.Module):
    """Features + skips + image -> full-resolution logits.

    Args:
        feature_dim: D, channels of the deepest features.
        skip_channels: channels of each skip feature map, coarse to fine (the image is added
            after them).
        num_classes: C; the output has C + 1 channels.
        channels: block widths, deepest first; more blocks than widths repeat the last one.
    """

    def __init__(self, feature_dim: int, skip_channels: Sequence[int], num_classes: int,
                 channels: Sequence[int]) -> None:
        super().__init__()
        widths = [channels[min(i, len(channels) - 1)] for i in range(len(skip_channels) + 2)]
        self.project = nn.Conv2d(feature_dim, widths[0], 1)
        blocks, c_in = [], widths[0]
        for i, c_skip in enumerate([*skip_channels, 3]):
            blocks.append(DecoderBlock(c_in + c_skip, widths[i + 1]))
            c_in = widths[i + 1]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c_in, num_classes + 1, 3, padding=1)

    def forward(self, features: torch.Tensor, skips: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            features: ``(B, D, h, w)``.
            skips: ``(B, D_i, h_i, w_i)`` coarse to fine, as many as ``skip_channels``.
            image: ``(B, 3, H, W)``.

        Returns:
            ``(B, C + 1, H, W)`` logits (unmasked; see :func:`mask_absent`).
        """
        dtype = self.head.weight.dtype
        x = self.project(features.to(dtype))
        for block, skip in zip(self.blocks, [*skips, image]):
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip.to(dtype)], dim=1))
        return self.head(x)


def present_channels(labels: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` multi-hot labels -> ``(B, C + 1)`` bool: background (always) then the present classes."""
    background = torch.ones(labels.shape[0], 1, dtype=torch.bool, device=labels.device)
    return torch.cat([background, labels > 0], dim=1)


def mask_absent(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Set the logits of absent channels to ``-inf``: their softmax probability is exactly 0.

    Args:
        logits: ``(B, C + 1, H, W)``.
        present: ``(B, C + 1)`` bool from :func:`present_channels`.
    """
    return logits.masked_fill(~present.to(logits.device)[:, :, None, None], float("-inf"))
