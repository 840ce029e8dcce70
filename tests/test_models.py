"""Models by name: the CIFAR ResNets' sizes, the GPU models' output shape, timm names, bad names."""

from __future__ import annotations

import pytest
import torch

from suite.models import build_model, check_model_name


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
