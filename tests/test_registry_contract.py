"""The optimizer contract, generated from the registry: every registered name gets every test."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_model, toy_batch

from baselines.closure import Meter, ModelClosure
from suite import registry

NAMES = registry.names(include_aliases=True)
COMMON = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)


def build(name: str, model: torch.nn.Module, **overrides) -> torch.optim.Optimizer:
    """As the harness builds it: common hyper-parameters, then the inputs the spec asks for (masks are
    refreshed every 2 steps, so the round-trip test crosses refreshes)."""
    spec = registry.get(name)
    inputs = {"model": model, "total_steps": 12, "steps_per_epoch": 2, "seed": 0}
    return spec.build(model.parameters(), inputs, **{**COMMON, **overrides})


def step(opt, model, i, meter=None):
    x, y = toy_batch(seed=i)
    return opt.step(ModelClosure(model, x, y, meter=meter))


def test_registry_has_the_baselines():
    assert {"sgd", "sam"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_as_torch_optimizer_with_hparams_in_groups(name):
    opt = build(name, tiny_model())
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == COMMON["lr"]
    for key, value in registry.get(name).defaults.items():
        assert opt.param_groups[0][key] == value, f"{key} must live in param_groups"


@pytest.mark.parametrize("name", NAMES)
def test_reduces_loss_on_a_toy_problem(name):
    model = tiny_model()
    opt = build(name, model, lr=0.1)
    x, y = toy_batch(n=24)
    closure = ModelClosure(model, x, y)
    first = float(closure(backward=False))
    for _ in range(30):
        opt.step(closure)
    assert float(closure(backward=False)) < 0.5 * first


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run_continues_bit_identically(name):
    model = tiny_model()
    opt = build(name, model)
    for i in range(3):
        step(opt, model, i)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for i in range(3, 6):
        step(opt, model, i)
    resumed = tiny_model(seed=99)  # different initial weights: everything must come from the state
    resumed.load_state_dict(saved_model)
    opt2 = build(name, resumed)
    opt2.load_state_dict(saved_opt)
    for i in range(3, 6):
        step(opt2, resumed, i)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_honours_an_lr_scheduler(name):
    model = tiny_model()
    opt = build(name, model, weight_decay=0.0, momentum=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t == 0 else 0.0)
    before = [p.detach().clone() for p in model.parameters()]
    step(opt, model, 0)
    scheduler.step()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before)), "lr > 0 must move weights"
    frozen = [p.detach().clone() for p in model.parameters()]
    step(opt, model, 1)
    assert all(torch.equal(p, f) for p, f in zip(model.parameters(), frozen)), "lr = 0 must not move weights"


@pytest.mark.parametrize("name", NAMES)
def test_meter_reports_the_declared_passes(name):
    """Outside a mask refresh (step 1 of a 2-step period) a step runs the declared passes."""
    model, meter = tiny_model(), Meter()
    opt = build(name, model)
    step(opt, model, 0, meter)
    meter.reset()
    step(opt, model, 1, meter)
    assert meter.backward_passes == registry.get(name).passes_per_step
    assert meter.forward_passes >= meter.backward_passes


@pytest.mark.parametrize("name", NAMES)
def test_bad_learning_rate_raises_value_error(name):
    with pytest.raises(ValueError, match="-1"):
        build(name, tiny_model(), lr=-1.0)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: sgd"):
        registry.get("adamw-sam")


def test_register_rejects_unknown_closure_features():
    with pytest.raises(ValueError, match="closure features"):
        registry.register("x", description="x", closure_features={"telepathy"})


def test_out_of_tree_module_registers_through_env(tmp_path, monkeypatch):
    (tmp_path / "my_opt.py").write_text(
        "import torch\nfrom suite.registry import register\n"
        "@register('my-sgd', description='test plug-in')\n"
        "class MySGD(torch.optim.SGD):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SUITE_OPTIMIZER_MODULES", "my_opt")
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "my-sgd" in registry.names()
