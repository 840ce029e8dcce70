"""Random weight perturbation, the adaptive one-pass form (ARWP, Li et al. 2024; baselines/rwp.py) against a
transcription of the authors' code (github.com/nblt/mARWP: ``ARWP.first_step``/``second_step`` in ``utils.py``,
the ``CosineInc`` schedule of ``train_rwp_cos.py``), written here on plain tensors: no skeleton, torch's SGD
written out, the noise drawn as the code draws it (``torch.normal`` with a tensor of standard deviations; a
vector's from its whole norm), from a generator seeded alike. The model has GroupNorm, not BatchNorm, so a pass
is a pure function of the weights, and it has every kind of tensor the rule treats apart: a conv filter bank, a
matrix, vectors (biases, the norm's affine weights)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import toy_batch
from test_resume import Stop, comparable, config, interrupter
from torch import nn

from baselines import RWP, ModelClosure, TwoPassOptimizer
from baselines.core import Meter
from suite import harness, registry
from suite.data import synthetic_dataset

LR, MU, WD = 0.1, 0.9, 5e-4


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 2), nn.GroupNorm(2, 4), nn.Tanh(), nn.Flatten(), nn.Linear(36, 3))


def grad_at(model: nn.Module, weights: list[torch.Tensor], i: int) -> list[torch.Tensor]:
    x, y = toy_batch(seed=i)
    params = dict(zip([n for n, _ in model.named_parameters()], [w.detach().requires_grad_() for w in weights]))
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    return list(torch.autograd.grad(loss, list(params.values())))


def authors_noise(w: torch.Tensor, old_g: torch.Tensor | None, std: float, eta: float,
                  gen: torch.Generator) -> torch.Tensor:
    """``ARWP.first_step`` for one tensor: a filter bank's noise from each filter's norm, a vector's from its whole
    norm (the code's 1e-16s included), divided by sqrt(1 + eta * fisher), fisher the filter's sum of old_g (a
    vector's: old_g itself)."""
    sh, per_row = w.shape, math.prod(w.shape[1:])
    if w.dim() > 1:
        rows = w.view(sh[0], -1).norm(dim=1, keepdim=True).repeat(1, per_row).view(sh)
        e = torch.normal(0, (std + 1e-16) * rows, generator=gen)
    else:
        e = torch.empty_like(w).normal_(0, std * (w.view(-1).norm().item() + 1e-16), generator=gen)
    if old_g is not None:
        e /= torch.sqrt(1 + eta * old_g.view(sh[0], -1).sum(dim=1, keepdim=True).repeat(1, per_row).view(sh))
    return e


def cosine_inc(base: float, inc: float, total: int, step: int) -> float:
    """``CosineInc(std, epochs, steps_per_epoch, inc)(step)``, with total = epochs * steps_per_epoch."""
    return base * ((-math.cos(step * math.pi / total) * 0.5 + 0.5) * inc + 1)


def _run(model: nn.Module, opt: RWP, steps: range) -> None:
    for i in steps:
        opt.step(ModelClosure(model, *toy_batch(seed=i)))


def authors_run(model: nn.Module, rho: float, inc: float, eta: float, beta: float, total: int,
                seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(weights, old_g) after ``total`` steps of the code's loop: ``optimizer.std = std_scheduler(step)`` before
    each, ``first_step`` (noise), the pass at w + e, ``second_step`` (back to w, old_g = g^2, then
    old_g * beta + g^2, torch's SGD from w: d = g + wd * w; b = mu * b + d, b = d at first; w -= lr * b)."""
    w = [p.detach().clone() for p in model.parameters()]
    gen, old_g, buf = torch.Generator().manual_seed(seed), None, None
    for i in range(total):
        std = cosine_inc(rho, inc, total, i)
        e = [authors_noise(wi, None if old_g is None else oi, std, eta, gen)
             for wi, oi in zip(w, old_g or [None] * len(w))]
        g = grad_at(model, [wi + ei for wi, ei in zip(w, e)], i)
        old_g = [gi**2 for gi in g] if old_g is None else [oi * beta + gi**2 for oi, gi in zip(old_g, g)]
        d = [gi + WD * wi for gi, wi in zip(g, w)]
        buf = d if buf is None else [MU * b + di for b, di in zip(buf, d)]
        w = [wi - LR * b for wi, b in zip(w, buf)]
    return w, old_g


def test_rwp_follows_the_authors_arwp_step():
    """Six steps over a schedule of T = 6, a large eta so that the moment shrinks the noise visibly: the weights
    and the running moment agree with the code's to float precision, and differ from the same loop without noise
    (so this check can fail)."""
    rho, inc, eta, beta, total, seed = 0.05, 2.0, 50.0, 0.9, 6, 7
    model = net()
    opt = RWP(model.parameters(), rho=rho, eta=eta, beta=beta, increase=inc, total_steps=total, seed=seed,
              lr=LR, momentum=MU, weight_decay=WD)
    w, old_g = authors_run(net(), rho, inc, eta, beta, total, seed)
    _run(model, opt, range(total))
    for p, wi, oi in zip(model.parameters(), w, old_g):
        torch.testing.assert_close(p.detach(), wi, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["moment"], oi, rtol=1e-5, atol=1e-9)
    still, _ = authors_run(net(), 0.0, inc, eta, beta, total, seed)
    assert max((a - b).abs().max() for a, b in zip(w, still)) > 1e-3


def test_one_forward_and_one_backward_per_step_on_the_whole_batch():
    model, meter = net(), Meter()
    opt = RWP(model.parameters(), total_steps=4, lr=LR, momentum=MU)
    for i in range(4):
        meter.reset()
        opt.step(ModelClosure(model, *toy_batch(n=16, seed=i), meter=meter))
        assert (meter.forward_passes, meter.backward_passes, meter.backward_samples) == (1, 1, 16)
    assert opt.second_passes_taken == 0 and isinstance(opt, TwoPassOptimizer)


def test_the_weights_between_steps_are_w_and_the_noise_is_per_filter():
    """Restored bit for bit after the pass (lr 0: nothing moves); a filter of zeros gets no noise, and a filter's
    noise has the standard deviation sigma * its norm (drawn over 20,000 entries)."""
    layer = nn.Linear(20000, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros(20000), torch.full((20000,), 0.01), torch.full((20000,), 0.03)]))
    before = layer.weight.detach().clone()
    opt = RWP(layer.parameters(), rho=0.1, eta=0.0, increase=0.0, lr=0.0)  # eta 0: the moment changes nothing
    opt.step(lambda: layer(torch.ones(1, 20000)).sum().backward())
    assert torch.equal(layer.weight, before)
    opt.perturb()
    e = layer.weight.detach() - before
    opt.restore()
    assert torch.equal(e[0], torch.zeros(20000)) and torch.equal(layer.weight, before)
    for row, norm in ((1, 0.01 * 20000**0.5), (2, 0.03 * 20000**0.5)):
        assert e[row].std().item() == pytest.approx(0.1 * norm, rel=0.03)


@pytest.mark.parametrize(("t", "factor"), [(0, 1.0), (5, 1 + 10 * 0.5), (10, 11.0), (25, 11.0)])
def test_sigma_rises_along_a_half_cosine_and_stays_after_t(t, factor):
    """sigma_t = rho * (1 + increase * (1 - cos(pi t / T)) / 2): rho at step 0, rho * 11 at T (the code's CosineInc
    with inc 10); past T it stays there (the code never runs past T; its cosine would fall again)."""
    opt = RWP(net().parameters(), total_steps=10, lr=LR)
    opt.steps_taken = t + 1  # inside step t: step() has counted it
    assert opt.sigma(opt.param_groups[0]) == pytest.approx(0.001 * factor)


def test_a_constant_sigma_needs_no_run_length():
    opt = RWP(net().parameters(), rho=0.02, increase=0.0, lr=LR)
    opt.steps_taken = 1000
    assert opt.sigma(opt.param_groups[0]) == 0.02


def test_a_restart_draws_the_same_noise_and_keeps_the_moment_and_schedule():
    """Three steps, a checkpoint, three more, against the same three resumed in a fresh optimizer built with another
    seed over a model with other weights: everything comes from the state, bit for bit."""
    make = lambda model, seed: RWP(model.parameters(), rho=0.05, eta=5.0, total_steps=6, seed=seed,  # noqa: E731
                                   lr=LR, momentum=MU, weight_decay=WD)
    model = net()
    opt = make(model, 3)
    _run(model, opt, range(3))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _run(model, opt, range(3, 6))
    resumed = net(seed=99)
    resumed.load_state_dict(saved_model)
    again = make(resumed, 12345)
    again.load_state_dict(saved_opt)
    _run(resumed, again, range(3, 6))
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(opt.generator.get_state(), again.generator.get_state())
    assert all(torch.equal(opt.state[a]["moment"], again.state[b]["moment"])
               for a, b in zip(model.parameters(), resumed.parameters()))


def test_the_seed_decides_the_noise():
    def weights(seed: int) -> list[torch.Tensor]:
        model = net()
        _run(model, RWP(model.parameters(), rho=0.05, total_steps=3, seed=seed, lr=LR), range(3))
        return [p.detach() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(1), weights(1)))
    assert not all(torch.equal(a, b) for a, b in zip(weights(1), weights(2)))


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_train=200, n_test=64)


def test_a_run_resumed_from_each_checkpoint_is_bit_identical(dataset, tmp_path):
    """Through the harness, as a killed run resumes: the run's seed and T handed again, the rest from the state."""
    cfg = config("rwp", rho=0.01)
    whole = harness.run(cfg, dataset, progress=False)
    for stop_after in (1, 2):
        ckpt = tmp_path / f"{stop_after}.pt"
        with pytest.raises(Stop):
            harness.run(cfg, dataset, progress=False, checkpoint=ckpt, on_checkpoint=interrupter(stop_after))
        torch.manual_seed(12345)
        resumed = harness.run(cfg, dataset, progress=False, checkpoint=ckpt)
        assert comparable(resumed) == comparable(whole) and resumed["resumed_after_epochs"] == [stop_after]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"rho": -0.1, "total_steps": 5}, "rho must be a finite number >= 0, got -0.1"),
    ({"eta": -1.0, "total_steps": 5}, "eta must be a finite number >= 0, got -1.0"),
    ({"beta": 1.5, "total_steps": 5}, "beta must be a number in [0, 1], got 1.5"),
    ({"increase": -2.0, "total_steps": 5}, "increase must be a finite number >= 0, got -2.0"),
    ({}, "total_steps (RWP's noise schedule) must be an integer >= 1, got None"),
    ({"total_steps": 0}, "total_steps (RWP's noise schedule) must be an integer >= 1, got 0"),
    ({"total_steps": 2.5}, "got 2.5"),
    ({"increase": 0.0, "total_steps": -3}, "got -3"),
    ({"seed": -1, "total_steps": 5}, "seed must be an integer >= 0, got -1"),
    ({"seed": "0", "total_steps": 5}, "seed must be an integer >= 0, got '0'"),
    ({"group": {"adaptive": True}, "total_steps": 5}, "adaptive=True"),
    ({"group": {"ascent_fraction": 0.5}, "total_steps": 5}, "ascent_fraction=0.5"),
    ({"group": {"sam_every": 2}, "total_steps": 5}, "sam_every=2"),
])
def test_a_bad_input_is_one_line_naming_the_value(kwargs, words):
    kwargs = dict(kwargs)
    params = [{"params": list(net().parameters()), **kwargs.pop("group", {})}]
    with pytest.raises(ValueError) as info:
        RWP(params, lr=LR, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_registry_entry():
    info = registry.get("rwp")
    names = registry.names()
    assert names.index("rwp") == names.index("late-sam") + 1
    assert (info.cls, info.origin, info.family, info.passes_per_step) == (RWP, "published", "field", 1)
    assert info.inputs == {"total_steps", "seed"} and "Revisiting Random Weight Perturbation" in info.description
    assert info.defaults() == {"rho": 0.001, "eta": 0.1, "beta": 0.99, "increase": 10.0}
