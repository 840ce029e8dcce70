"""fp16's gradient scaler with two passes (issue 14): each pass unscaled before it is read, an overflow in
either pass skips the whole step, the scale goes down, and the scaler's state travels with a checkpoint.
Run on the CPU with torch's CPU GradScaler and injected overflows (fp16 itself needs a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import shaped, toy_batch
from test_accumulate import NoBatchNormNet
from test_registry_contract import build

from baselines.core import ModelClosure, TwoPassOptimizer
from suite import registry
from suite.harness import optimizer_step

TWO_PASS = [n for n in registry.names() if isinstance(build(n, NoBatchNormNet()), TwoPassOptimizer)]


def _setup(name: str):
    torch.manual_seed(0)
    model = NoBatchNormNet()
    opt = build(name, model)
    torch.manual_seed(1)
    return model, opt


class Overflow:
    """A per-sample cross-entropy that returns inf at the backward passes it is told to (counted from 1)."""

    def __init__(self, at: set[int]) -> None:
        self.at, self.calls = at, 0

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = torch.nn.functional.cross_entropy(out, y, reduction="none")
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.at:
                return losses * torch.tensor(float("inf"))
        return losses


@pytest.mark.parametrize("name", ["sgd", *TWO_PASS])
def test_a_scaled_step_is_the_unscaled_step(name):
    """A power-of-two scale and its inverse are exact in floating point: the same weights, bit for bit."""
    plain_model, plain = _setup(name)
    scaled_model, scaled = _setup(name)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=2)
    seen = {id(plain): [], id(scaled): []}  # the ascent gradients the perturbation reads (SAM's e alone is
    for opt in (plain, scaled):  # scale-free, so this is where a missing unscale would show)
        if isinstance(opt, TwoPassOptimizer):
            def prepare(opt=opt, original=opt.prepare):
                seen[id(opt)].append([p.grad.clone() for p in opt.param_groups[0]["params"] if p.grad is not None])
                original()
            opt.prepare = prepare
    for i in range(4):
        x, y = toy_batch(n=16, seed=i)
        optimizer_step(plain, shaped(plain, plain_model, x, y))
        optimizer_step(scaled, shaped(scaled, scaled_model, x, y, scaler=scaler), scaler)
    for a, b in zip(plain_model.parameters(), scaled_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for step_plain, step_scaled in zip(seen[id(plain)], seen[id(scaled)], strict=True):
        for a, b in zip(step_plain, step_scaled, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert scaler.get_scale() == 2.0 ** 14  # grown twice: no overflow in 4 steps


# (name, the call that overflows in step 1): the first pass of every skeleton variant, the second of those whose
# step 1 runs two (periodic SAM, LookSAM, RST's draw and Momentum-SAM run one there: its only pass is the first)
OVERFLOWS = [(n, at) for at in (1, 2) for n in TWO_PASS if at == 1 or registry.get(n).passes_per_step == 2]


@pytest.mark.parametrize(("name", "overflow_at"), OVERFLOWS,
                         ids=[f"{'ascent' if at == 1 else 'descent'} pass-{n}" for n, at in OVERFLOWS])
def test_an_overflow_in_either_pass_skips_the_whole_step_and_lowers_the_scale(name, overflow_at):
    model, opt = _setup(name)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    x, y = toy_batch(n=16, seed=0)
    optimizer_step(opt, shaped(opt, model, x, y, scaler=scaler), scaler)  # a good step: momentum exists
    weights = [p.detach().clone() for p in model.parameters()]
    base_state = copy.deepcopy(opt.base_optimizer.state_dict()["state"])
    loss_fn = Overflow(at={overflow_at})
    x, y = toy_batch(n=16, seed=1)
    optimizer_step(opt, shaped(opt, model, x, y, loss_fn=loss_fn, scaler=scaler), scaler)
    assert loss_fn.calls >= overflow_at  # the overflow did happen in that pass
    for before, p in zip(weights, model.parameters(), strict=True):
        assert torch.equal(before, p)  # restored exactly, nothing applied
        assert p.grad is None
    after = opt.base_optimizer.state_dict()["state"]
    assert all(torch.equal(base_state[k]["momentum_buffer"], after[k]["momentum_buffer"]) for k in base_state)
    assert scaler.get_scale() == 2.0 ** 11  # backed off once
    optimizer_step(opt, shaped(opt, model, x, y, scaler=scaler), scaler)  # and goes on
    assert any(not torch.equal(b, p) for b, p in zip(weights, model.parameters()))


def test_sgd_skips_an_overflowing_step_through_the_scaler():
    model, opt = _setup("sgd")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    weights = [p.detach().clone() for p in model.parameters()]
    x, y = toy_batch(n=16)
    optimizer_step(opt, ModelClosure(model, x, y, loss_fn=Overflow(at={1}), scaler=scaler), scaler)
    assert all(torch.equal(b, p) for b, p in zip(weights, model.parameters()))
    assert scaler.get_scale() == 2.0 ** 11


def test_the_scale_is_checkpointed_with_the_run(tmp_path):
    """RunState's state_dict carries the scaler: a resumed fp16 run continues at the scale it reached."""
    from helpers import run_config

    from suite.config import TrainConfig
    from suite.data import load_dataset
    from suite.harness import RunState, context

    dataset = load_dataset("synthetic", None, False)
    config = run_config("sam", TrainConfig(dataset="synthetic", model="resnet8", batch_size=8, train_subset=16,
                                           test_subset=8, precision="fp16", device="cpu"))
    ctx = context(config, dataset)
    state = RunState(ctx, {"steps": 2})
    assert state.scaler is not None
    state.scaler.scale(torch.ones(()))  # the scale exists from the first scaled loss on
    state.scaler.update(new_scale=123.0)
    saved = state.state_dict()
    resumed = RunState(ctx, {"steps": 2})
    resumed.load_state_dict(saved)
    assert resumed.scaler.get_scale() == 123.0
