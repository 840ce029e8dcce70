"""Every registered optimizer steps inside an outer ``torch.autocast`` (issue 26): the usual way a bfloat16
loop is written, ``with torch.autocast("cpu", dtype=torch.bfloat16): opt.step(closure)``, rather than the
closure's own ``autocast=`` option. Generated from the registry table, as the contract tests are."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TRAIN_SIZE, shaped, tiny_model, toy_batch

from baselines.core import ModelClosure
from ssam.fisher import fisher_loop, fisher_vectorised
from suite import registry

NAMES = registry.names()
COMMON = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)


def build(name: str, model: torch.nn.Module, **overrides) -> torch.optim.Optimizer:
    """As tests/test_registry_contract.py builds it (masks refreshed every 2 steps: a step crosses one)."""
    inputs = {"model": model, "total_steps": 12, "steps_per_epoch": 2, "seed": 0, "train_size": TRAIN_SIZE,
              "sample_examples": lambda n: toy_batch(n=n, seed=100)}
    return registry.get(name).build(model.parameters(), inputs, **{**COMMON, **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_steps_under_an_outer_autocast(name):
    model = tiny_model()
    opt = build(name, model)
    before = [p.detach().clone() for p in model.parameters()]
    for i in range(3):  # SSAM's first mask refresh comes at the first or second step, by its timing
        x, y = toy_batch(seed=i)  # 16 examples: SSAM-F scores 16 by default
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = opt.step(shaped(opt, model, x, y))
        assert math.isfinite(float(loss)), (name, i, loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before)), "the weights must move"


@pytest.mark.parametrize("bn", ["batch", "running"])
def test_ssam_f_under_an_outer_autocast_with_a_resnet(bn):
    """The report's case: a CIFAR ResNet at 32x32, SSAM-F's vectorised Fisher pass, either fisher_bn."""
    from suite.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    opt = registry.get("ssam-f-unstructured-explicit").build(
        model.parameters(), {"steps_per_epoch": 2, "seed": 0}, lr=0.05, fisher_samples=2, fisher_bn=bn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(float(opt.step(ModelClosure(model, x, y))))


def test_the_vectorised_fisher_under_an_outer_autocast_is_the_fp32_one():
    """Under an outer autocast the vectorised Fisher scores are those without it, bit for bit: the closure
    option ``autocast=`` never reached that pass, so the two ways of writing a bf16 loop agree."""
    model = tiny_model()
    x, y = toy_batch(n=8)
    params = list(model.parameters())
    plain = fisher_vectorised(ModelClosure(model, x, y), params, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outer = fisher_vectorised(ModelClosure(model, x, y), params, 4)
    inner = fisher_vectorised(ModelClosure(model, x, y, autocast=torch.bfloat16), params, 4)
    for a, b, c in zip(plain, outer, inner):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b) and torch.equal(a, c)
    # the loop's forwards run as the closure's do (under the outer autocast, in bfloat16): close, not equal
    with torch.autocast("cpu", dtype=torch.bfloat16):
        looped = fisher_loop(ModelClosure(model, x, y), params, 4)
    for a, b in zip(plain, looped):
        assert torch.allclose(a, b, rtol=0.1, atol=1e-3 * float(a.abs().max()))
