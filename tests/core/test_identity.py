"""The identity digests a training checkpoint records: equal for the same weights, data and source
on any copy, different as soon as one value, item or closed-over tensor differs."""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lpcam_plugin.core.identity import data_identity, module_digest, value_digest


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_module_digest_follows_every_weight_and_buffer_not_the_object() -> None:
    net = _net()
    assert module_digest(net) == module_digest(copy.deepcopy(net))
    changed = copy.deepcopy(net)
    with torch.no_grad():
        changed[0].weight[0, 0, 0, 0] += 1e-6
    assert module_digest(changed) != module_digest(net)
    buffers = copy.deepcopy(net)
    buffers[1].running_mean.fill_(0.5)  # a buffer, not a parameter
    assert module_digest(buffers) != module_digest(net)
    assert module_digest(net.to(torch.float64)) != module_digest(_net())  # dtype counts


def test_value_digest_sees_what_a_function_closes_over_and_its_code() -> None:
    weight = torch.ones(3, 4)

    def make(w: torch.Tensor):
        return lambda features, labels: torch.einsum("bdhw,cd->bchw", features, w)

    assert value_digest(make(weight)) == value_digest(make(weight.clone()))
    assert value_digest(make(weight)) != value_digest(make(weight * 2))
    assert value_digest(lambda f, y: f) != value_digest(lambda f, y: f * 2)  # same closure, other code
    partial = functools.partial(torch.mul, other=torch.ones(2))
    assert value_digest(partial) != value_digest(functools.partial(torch.mul, other=torch.zeros(2)))
    assert value_digest(_net()) == value_digest(_net())  # a module by its state


class Fitted:
    """An estimator-like object: fitted attributes count, how it reports does not."""

    def __init__(self, weight: np.ndarray, progress: bool) -> None:
        self.weight_, self.progress, self.metadata = weight, progress, {"note": progress}

    def __call__(self, features, labels):
        return features


def test_value_digest_of_a_fitted_object_ignores_progress_and_metadata() -> None:
    a = Fitted(np.arange(4.0), progress=True)
    assert value_digest(a) == value_digest(Fitted(np.arange(4.0), progress=False))
    assert value_digest(a) != value_digest(Fitted(np.arange(4.0) + 1, progress=True))
    assert value_digest(a.__call__) == value_digest(Fitted(np.arange(4.0), progress=False).__call__)


def test_data_identity_sees_the_items_a_dataset_lists() -> None:
    x, y = torch.arange(24.0).reshape(6, 4), torch.zeros(6, 2)
    base = data_identity(DataLoader(TensorDataset(x, y), batch_size=2))
    assert base == data_identity(DataLoader(TensorDataset(x.clone(), y), batch_size=2, shuffle=True))
    assert base["batches"] == 3 and base["items"] == 6 and base["listing_sha256"]
    other = x.clone()
    other[5, 3] = -1
    assert data_identity(DataLoader(TensorDataset(other, y), batch_size=2)) != base
    assert data_identity(DataLoader(TensorDataset(x, y), batch_size=3)) != base

    class Named(torch.utils.data.Dataset):
        def __init__(self, names):
            self.img_name_list = names

        def __len__(self):
            return len(self.img_name_list)

    names = data_identity(DataLoader(Named(["2007_000032", "2007_000039"]), batch_size=1))
    assert names != data_identity(DataLoader(Named(["2007_000032", "2007_000063"]), batch_size=1))
    subset = data_identity(DataLoader(Subset(TensorDataset(x, y), [0, 1]), batch_size=1))
    assert subset != data_identity(DataLoader(Subset(TensorDataset(x, y), [0, 2]), batch_size=1))


def test_a_wrapper_around_the_same_batches_is_the_same_data() -> None:
    batches = [(torch.ones(2, 3), torch.zeros(2, 2))]

    class Wrapper:
        def __init__(self, data):
            self.data = data

        def __len__(self):
            return len(self.data)

    assert data_identity(Wrapper(batches)) == data_identity(batches)
    assert data_identity(batches)["listing_sha256"] != data_identity([(torch.zeros(2, 3), torch.zeros(2, 2))])[
        "listing_sha256"]
