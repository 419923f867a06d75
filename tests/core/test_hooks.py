"""FeatureHook hygiene (no hook left behind, ever) and the ViT token transform."""
import pickle

import pytest
import torch
from torch import nn

from lpcam_plugin import FeatureHook, tokens_to_map


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage1 = nn.Conv2d(3, 4, 3, padding=1)
        self.stage2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.stage2(torch.relu(self.stage1(x)))))


def test_captures_output_and_input_and_removes_hooks():
    net = TinyNet()
    x = torch.randn(2, 3, 8, 8)
    with FeatureHook(net.stage2) as out_hook, FeatureHook(net.head, capture="input") as in_hook:
        assert len(net.stage2._forward_hooks) == 1 and len(net.head._forward_pre_hooks) == 1
        with torch.inference_mode():
            net(x)
        assert out_hook.features.shape == (2, 6, 4, 4)
        torch.testing.assert_close(in_hook.features, torch.relu(out_hook.features))
    assert len(net.stage2._forward_hooks) == 0 and len(net.head._forward_pre_hooks) == 0


def test_hooks_removed_when_forward_raises():
    net = TinyNet()
    with pytest.raises(RuntimeError):
        with FeatureHook(net.stage2):
            net(torch.randn(1, 5, 8, 8))  # wrong channel count
    assert len(net.stage2._forward_hooks) == 0


def test_remove_is_idempotent_and_del_is_safe():
    net = TinyNet()
    hook = FeatureHook(net.stage1)
    hook.remove()
    hook.remove()
    assert not hook.active and len(net.stage1._forward_hooks) == 0
    hook = FeatureHook(net.stage1)
    del hook
    assert len(net.stage1._forward_hooks) == 0
    with pytest.raises(ValueError):
        FeatureHook(net.stage1, capture="gradient")
    assert len(net.stage1._forward_hooks) == 0


def test_keep_all_history_and_detached():
    net = TinyNet()
    with FeatureHook(net.stage2, keep_all=True) as hook:
        net(torch.randn(1, 3, 8, 8))
        net(torch.randn(1, 3, 8, 8))
        assert len(hook.history) == 2 and not hook.features.requires_grad
        hook.clear()
        assert hook.features is None and hook.history == []


class TupleBlock(nn.Module):
    def forward(self, x):
        return x * 2, x.sum()


def test_tuple_outputs_and_selector():
    block = TupleBlock()
    x = torch.randn(2, 5, 3)
    with FeatureHook(block) as hook:
        block(x)
        torch.testing.assert_close(hook.features, x * 2)
    with FeatureHook(block, feature_selector=_second) as hook:
        block(x)
        torch.testing.assert_close(hook.features, x.sum())


def _second(output):
    return output[1]


def test_tokens_to_map_drops_prefix_and_folds_grid():
    b, prefix, h, w, d = 2, 20, 3, 5, 4
    patches = torch.arange(b * h * w * d, dtype=torch.float32).reshape(b, h * w, d)
    tokens = torch.cat([torch.full((b, prefix, d), -1.0), patches], dim=1)
    maps = tokens_to_map(prefix, grid=(h, w))(tokens)
    assert maps.shape == (b, d, h, w)
    assert torch.equal(maps[1, :, 2, 4], patches[1, 2 * w + 4])
    square = tokens_to_map(1)(torch.randn(2, 1 + 16, d))
    assert square.shape == (2, d, 4, 4)
    with pytest.raises(ValueError, match="square"):
        tokens_to_map(1)(torch.randn(2, 1 + 15, d))
    with pytest.raises(ValueError, match="grid"):
        tokens_to_map(1, grid=(2, 2))(torch.randn(2, 1 + 6, d))
    transform = pickle.loads(pickle.dumps(tokens_to_map(20, (3, 5))))
    assert torch.equal(transform(tokens), maps)


def test_hooked_module_is_picklable_with_token_transform():
    block = nn.Linear(4, 4)
    with FeatureHook(block, reshape_transform=tokens_to_map(0, (2, 2))) as hook:
        copy = pickle.loads(pickle.dumps(block))
        copy(torch.randn(1, 4, 4))
        assert isinstance(copy, nn.Linear)
        block(torch.randn(1, 4, 4))
        assert hook.features.shape == (1, 4, 2, 2)
