"""Stages 1 and 3: the strict split by the baseline CAM, prototype selection, conv-head reduction."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lpcam_plugin import reduce_conv_head, select_prototypes, split_local_features
from lpcam_plugin.methods.lpcam.selection import class_probabilities


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), d=st.integers(1, 5), scale=st.integers(1, 3),
       threshold=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]), seed=st.integers(0, 10_000))
def test_split_is_strict_and_uses_nearest_resizing(h, w, d, scale, threshold, seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(d, h, w, generator=g)
    # quantised CAM so that values equal to the threshold occur
    cam = (torch.randint(0, 5, (h * scale, w * scale), generator=g).float() / 4)
    fg, bg = split_local_features(features, cam, threshold)
    small = F.interpolate(cam[None, None], size=(h, w), mode="nearest")[0, 0]
    assert fg.shape == (int((small > threshold).sum()), d)
    assert bg.shape == (int((small < threshold).sum()), d)
    flat = features.flatten(1).T
    assert torch.equal(fg, flat[(small > threshold).flatten()])
    assert torch.equal(bg, flat[(small < threshold).flatten()])


def test_split_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(D, h, w\)"):
        split_local_features(torch.ones(2, 3), torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="cam must have shape"):
        split_local_features(torch.ones(2, 3, 3), torch.ones(1, 3, 3), 0.1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 6), c=st.integers(0, 5),
       tau=st.sampled_from([0.3, 0.5, 0.9]), low=st.sampled_from([0.0, 0.05]), high=st.sampled_from([0.5, 0.9]))
def test_selection_thresholds(seed, classes, c, tau, low, high):
    c = c % classes
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, 8, generator=g) * 3
    fg = torch.randn(6, 8, generator=g)
    bg = torch.randn(5, 8, generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        protos, context = select_prototypes(fg, bg, weight, c, class_threshold=tau, context_window=(low, high))
    p_fg = class_probabilities(fg, weight, c)
    p_bg = class_probabilities(bg, weight, c)
    if bool((p_fg > tau).any()):
        assert torch.equal(protos, fg[p_fg > tau])
        assert not caught
    else:
        assert torch.equal(protos, fg[torch.argmax(p_fg)][None])
        assert any("keeping the best one" in str(w.message) for w in caught)
    assert torch.equal(context, bg[(p_bg > low) & (p_bg < high)])


def test_selection_bias_and_errors():
    weight = torch.eye(2)
    fg = torch.tensor([[1.0, 0.9]])
    with pytest.warns(RuntimeWarning):
        p, _ = select_prototypes(fg, fg[:0], weight, 0, class_threshold=0.9)
    assert p.shape == (1, 2)
    p, _ = select_prototypes(fg, fg[:0], weight, 0, class_threshold=0.9, bias=torch.tensor([5.0, 0.0]))
    assert p.shape == (1, 2)
    with pytest.raises(ValueError, match="out of range"):
        select_prototypes(fg, fg, weight, 2)
    with pytest.raises(ValueError, match="feature dimension mismatch"):
        select_prototypes(torch.ones(1, 3), fg, weight, 0)
    with pytest.raises(ValueError, match="bias must have shape"):
        select_prototypes(fg, fg, weight, 0, bias=torch.ones(3))


def test_empty_centres_give_empty_prototypes():
    protos, context = select_prototypes(torch.zeros(0, 4), torch.zeros(0, 4), torch.ones(3, 4), 1)
    assert protos.shape == (0, 4) and context.shape == (0, 4)


def test_sum_reduction_equals_conv_on_constant_interior():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 5, 3, 3, generator=g)
    bias = torch.randn(3, generator=g)
    z = torch.randn(5, generator=g)
    constant = z[None, :, None, None].expand(1, 5, 7, 7)
    conv = F.conv2d(constant, weight, bias, padding=1)[0, :, 3, 3]
    reduced, b = reduce_conv_head(weight, bias, mode="sum")
    torch.testing.assert_close(reduced @ z + b, conv, atol=1e-5, rtol=1e-5)
    centre, _ = reduce_conv_head(weight, mode="center")
    assert torch.equal(centre, weight[:, :, 1, 1])
    assert torch.equal(reduce_conv_head(weight[:, :, :1, :1])[0], weight[:, :, 0, 0])
    with pytest.raises(ValueError, match="mode"):
        reduce_conv_head(weight, mode="max")
    with pytest.raises(ValueError, match="kh, kw"):
        reduce_conv_head(torch.ones(3, 5, 3))
