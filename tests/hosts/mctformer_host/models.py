"""Stand-in for MCTformer's ``models.py`` at ``9606597``: a tiny MCTformer-V2.

Same interface as upstream: 20 class tokens, ``forward_features`` returning (class tokens,
patch tokens without the final norm, per-block attentions), a 3x3 ``Conv2d`` ``head`` on the
patch-token map, and ``forward(x, return_att, n_layers, attention_type)`` returning
(class-token logits, cams, patch attention) with the ``fused`` / ``patchcam`` rules. Tiny sizes:
patch 8, embed dim 32, 2 blocks, 2 heads.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, img_size=32, patch_size=8, in_chans=3, embed_dim=32):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        weights = attn
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x), weights


class Block(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        o, weights = self.attn(self.norm1(x))
        x = x + o
        x = x + self.mlp(self.norm2(x))
        return x, weights


class MCTformerV2(nn.Module):
    def __init__(self, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=20):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.randn(1, num_classes, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + num_classes, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # never applied by V2
        self.head = nn.Conv2d(embed_dim, num_classes, kernel_size=3, stride=1, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - self.num_classes
        n = self.pos_embed.shape[1] - self.num_classes
        if npatch == n and w == h:
            return self.pos_embed
        class_pos = self.pos_embed[:, 0:self.num_classes]
        patch_pos = self.pos_embed[:, self.num_classes:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size[0] + 0.1
        h0 = h // self.patch_embed.patch_size[0] + 0.1
        side = int(math.sqrt(n))
        patch_pos = F.interpolate(patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),
                                  scale_factor=(w0 / side, h0 / side), mode="bicubic")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos, patch_pos), dim=1)

    def forward_features(self, x, n=12):
        b, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        x = self.pos_drop(x)
        attn_weights = []
        for blk in self.blocks:
            x, weights = blk(x)
            attn_weights.append(weights)
        return x[:, 0:self.num_classes], x[:, self.num_classes:], attn_weights

    def forward(self, x, return_att=False, n_layers=12, attention_type="fused"):
        w, h = x.shape[2:]
        x_cls, x_patch, attn_weights = self.forward_features(x)
        n, p, c = x_patch.shape
        w0 = w // self.patch_embed.patch_size[0]
        h0 = h // self.patch_embed.patch_size[0]
        x_patch = torch.reshape(x_patch, [n, w0, h0, c]).permute([0, 3, 1, 2]).contiguous()
        x_patch = self.head(x_patch)
        x_patch_logits = self.avgpool(x_patch).squeeze(3).squeeze(2)
        attn_weights = torch.mean(torch.stack(attn_weights), dim=2)  # layers x B x N x N
        feature_map = F.relu(x_patch.detach().clone())
        n, c, h, w = feature_map.shape
        mtatt = attn_weights[-n_layers:].sum(0)[:, 0:self.num_classes, self.num_classes:].reshape([n, c, h, w])
        if attention_type == "fused":
            cams = mtatt * feature_map
        elif attention_type == "patchcam":
            cams = feature_map
        else:
            cams = mtatt
        patch_attn = attn_weights[:, :, self.num_classes:, self.num_classes:]
        x_cls_logits = x_cls.mean(-1)
        if return_att:
            return x_cls_logits, cams, patch_attn
        return x_cls_logits, x_patch_logits


def deit_small_MCTformerV2_patch16_224(pretrained=False, **kwargs):
    """The registered entry point's name; tiny sizes here, ``pretrained`` is ignored."""
    return MCTformerV2(**kwargs)
