"""Models by name: the CIFAR ResNets' sizes, the GPU models' output shape, timm names, bad names, the
input channel count, and the same initial weights as before ``in_channels`` existed."""

from __future__ import annotations

import hashlib

import pytest
import torch

from suite.models import MODELS, build_model, check_model_name

# sha256 (16 hex) of every state_dict entry's name, shape, dtype and bytes after torch.manual_seed(0) and
# build_model(name, 10), computed with the models of commit 32f9f8e (before in_channels) on torch 2.14.1
INITIAL_WEIGHTS = {
    "resnet8": "d9b5db8c8558341f",
    "resnet20": "e13b3f36bf28e3eb",
    "resnet32": "eb5e7cef50f4e35d",
    "resnet56": "4ee0c8f37ce6507b",
    "resnet18": "2c89055e3acd2cc6",
    "wrn28_10": "0af3099a213ee353",
    "tiny-nobn": "d5b34b53456e3fdf",
    "airbench94": "2383975d3ac8efa3",  # added after in_channels, at its first commit
}
# the smallest input side each model takes (three 2x2 pools after a 2x2 stem leave nothing of 8x8)
SMALLEST_SIDE = {"airbench94": 16}


def weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name,params", [("resnet8", 78_042), ("resnet20", 272_474)])
def test_cifar_resnets_have_the_published_size(name, params):
    model = build_model(name, 10)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.02)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_and_wrn_build_for_cifar():
    assert build_model("resnet18", 100)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    wrn = build_model("wrn28_10", 10)
    assert sum(p.numel() for p in wrn.parameters()) == pytest.approx(36.5e6, rel=0.01)


def test_timm_model_by_name():
    model = build_model("timm:resnet10t", 10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet999", "timm:not-a-model", ""])
def test_unknown_model_names_the_known_ones(name):
    with pytest.raises(ValueError, match="known: resnet8"):
        check_model_name(name)


@pytest.mark.parametrize("name", list(MODELS))
def test_local_models_take_the_input_channels(name):
    for channels in (1, 3):
        model = build_model(name, 7, in_channels=channels)
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert stem.in_channels == channels
        side = SMALLEST_SIDE.get(name, 8)
        assert model(torch.zeros(2, channels, side, side)).shape == (2, 7)


@pytest.mark.parametrize("name", list(MODELS))
def test_three_channels_give_the_same_initial_weights_as_before(name):
    assert set(INITIAL_WEIGHTS) == set(MODELS)
    torch.manual_seed(0)
    assert weights_hash(build_model(name, 10, in_channels=3)) == INITIAL_WEIGHTS[name]
    torch.manual_seed(0)
    assert weights_hash(build_model(name, 10)) == INITIAL_WEIGHTS[name]


def test_timm_model_takes_the_input_channels():
    model = build_model("timm:resnet10t", 5, in_channels=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


def test_in_channels_below_one_is_refused():
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet8", 10, in_channels=0)
