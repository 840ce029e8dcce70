"""K-SAM (Ni et al. 2022, arXiv 2210.12864) against a transcription of its rule written here on plain tensors: rank
the batch by each example's loss at w, take SAM's ascent and descent gradients on the k highest. Also: the meter
counts the ranking forward and the two passes on k examples; k = the whole batch is SAM bit for bit; a restart
continues exactly; bad settings and closures are one line."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import tiny_model, toy_batch
from torch import nn

from baselines import KSAM, SAM, ModelClosure
from baselines.core import Meter
from baselines.ksam import K_FRACTION

LR, MU, WD, RHO = 0.1, 0.9, 5e-4, 0.05
STEPS = 6


def mlp(seed: int = 0) -> nn.Module:
    """No BatchNorm: every pass is a pure function of the weights and the examples it sees."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.Tanh(), nn.Linear(8, 3))


def losses_at(model: nn.Module, w: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = dict(zip([n for n, _ in model.named_parameters()], w))
    return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y, reduction="none")


def grad_on(model: nn.Module, w: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    w = [t.detach().requires_grad_() for t in w]
    return list(torch.autograd.grad(losses_at(model, w, x, y).mean(), w))


def norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.norm() for t in ts]).norm()


def sgd_rule(w, g, buf):
    """torch.optim.SGD with momentum and weight decay, written out: d = g + wd w; b = mu b + d (b = d at first)."""
    d = [gi + WD * wi for gi, wi in zip(g, w)]
    buf = d if buf is None else [MU * b + di for b, di in zip(buf, d)]
    return [wi - LR * b for wi, b in zip(w, buf)], buf


def transcription(model: nn.Module, k: int, adaptive: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The paper's step, by hand: losses at w over the batch; S = the top k; g = grad L_S(w) (a mean over S);
    e = rho g / ||g|| (ASAM: rho T^2 g / ||T g||, T = |w|); the base step with grad L_S(w + e), the same S."""
    w, buf, reported = [p.detach().clone() for p in model.parameters()], None, []
    for i in range(STEPS):
        x, y = toy_batch(seed=i)
        with torch.no_grad():
            losses = losses_at(model, w, x, y)
        top = torch.topk(losses, k).indices
        g = grad_on(model, w, x[top], y[top])
        t = [wi.abs() if adaptive else torch.ones_like(wi) for wi in w]
        tg = [ti * gi for ti, gi in zip(t, g)]
        e = [RHO * ti * v / (norm(tg) + 1e-12) for ti, v in zip(t, tg)]
        w, buf = sgd_rule(w, grad_on(model, [wi + ei for wi, ei in zip(w, e)], x[top], y[top]), buf)
        reported.append(losses.mean())
    return w, reported


@pytest.mark.parametrize(("k_fraction", "adaptive", "k"), [(K_FRACTION, False, 6), (0.25, False, 4), (0.5, True, 8)])
def test_follows_the_papers_rule(k_fraction, adaptive, k):
    """Batches of 16: k = ceil(k_fraction * 16). The step reports the whole batch's loss at w."""
    model = mlp()
    w, reported = transcription(mlp(), k, adaptive)
    opt = KSAM(model.parameters(), rho=RHO, k_fraction=k_fraction, adaptive=adaptive, lr=LR, momentum=MU,
               weight_decay=WD)
    ours = []
    for i in range(STEPS):
        x, y = toy_batch(seed=i)
        ours.append(opt.step(ModelClosure(model, x, y)))
    for a, b in zip([p.detach() for p in model.parameters()], w):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(ours), torch.stack(reported), rtol=1e-6, atol=1e-7)


class Spy(ModelClosure):
    """Records each call's options and the per-example losses at the weights it was called at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, **kw):
        self.calls.append(kw)
        return super().__call__(**kw)


def test_both_passes_run_on_the_top_k_of_the_losses_at_w():
    """The ranking forward (whole batch, no graph, BatchNorm statistics moving), then the ascent at w and the
    descent at w + e on the same k examples, BatchNorm statistics frozen; the ascent kept on this replica."""
    model = tiny_model()
    x, y = toy_batch(seed=3)
    with torch.no_grad():
        expected = torch.topk(nn.functional.cross_entropy(copy.deepcopy(model)(x), y, reduction="none"), 6).indices
    spy = Spy(model, x, y)
    KSAM(model.parameters(), lr=LR).step(spy)
    rank, ascent, descent = spy.calls
    assert rank == {"backward": False, "per_sample": True}
    assert ascent.keys() == {"subset", "freeze_bn", "sync"} and ascent["freeze_bn"] and not ascent["sync"]
    assert descent.keys() == {"subset", "freeze_bn"} and descent["freeze_bn"]
    assert torch.equal(ascent["subset"], descent["subset"])
    assert torch.equal(ascent["subset"], expected.sort().values)


def test_running_statistics_move_once_over_the_whole_batch():
    model, reference = tiny_model(), tiny_model()
    x, y = toy_batch(seed=1)
    KSAM(model.parameters(), lr=LR).step(ModelClosure(model, x, y))
    with torch.no_grad():
        reference(x)  # one training-mode forward over the batch, as SGD's pass moves them
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(model.bn, name), getattr(reference.bn, name)), name


@pytest.mark.parametrize(("k_fraction", "k"), [(K_FRACTION, 6), (0.25, 4), (0.01, 1), (0.5, 8)])
def test_the_meter_counts_the_ranking_forward_and_two_passes_on_k(k_fraction, k):
    model, meter = tiny_model(), Meter()
    opt = KSAM(model.parameters(), k_fraction=k_fraction, lr=LR)
    for i in range(3):
        meter.reset()
        x, y = toy_batch(n=16, seed=i)
        opt.step(ModelClosure(model, x, y, meter=meter))
        assert (meter.forward_passes, meter.backward_passes) == (3, 2)
        assert (meter.forward_samples, meter.backward_samples) == (16 + 2 * k, 2 * k)


def test_the_whole_batch_is_sam_bit_for_bit():
    """k_fraction = 1: no ranking forward, SAM's two passes; weights, BatchNorm buffers and losses identical."""
    a, b = tiny_model(), tiny_model()
    sam = SAM(a.parameters(), rho=0.2, lr=LR, momentum=MU, weight_decay=WD)
    ksam = KSAM(b.parameters(), rho=0.2, k_fraction=1.0, lr=LR, momentum=MU, weight_decay=WD)
    for i in range(5):
        x, y = toy_batch(seed=i)
        meter = Meter()
        assert torch.equal(sam.step(ModelClosure(a, x, y)), ksam.step(ModelClosure(b, x, y, meter=meter)))
        assert (meter.forward_passes, meter.backward_passes, meter.backward_samples) == (2, 2, 32)
    for wa, wb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(wa, wb)


def test_k_counts_up_and_keeps_one():
    opt = KSAM(mlp().parameters(), lr=LR)
    assert [opt.selected(b) for b in (16, 128, 3, 1)] == [6, 43, 1, 1]
    opt.param_groups[0]["k_fraction"] = 0.7
    assert opt.selected(10) == 7  # 0.7 * 10 = 7.000000000000001 is 7
    assert opt.defaults["k_fraction"] == K_FRACTION == 1 / 3 and opt.defaults["rho"] == 0.05


@pytest.mark.parametrize("sam_every", [1, 2])
def test_a_restart_continues_bit_identically(sam_every):
    """Nothing of a step outlives it but the skeleton's state (momentum, the step count): a run restarted after
    3 steps from its state_dict, into a model built with other weights, ends where the run did."""
    model = tiny_model()
    opt = KSAM(model.parameters(), sam_every=sam_every, lr=LR, momentum=MU, weight_decay=WD)
    for i in range(3):
        opt.step(ModelClosure(model, *toy_batch(seed=i)))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for i in range(3, 7):
        opt.step(ModelClosure(model, *toy_batch(seed=i)))
    resumed = tiny_model(seed=99)
    resumed.load_state_dict(saved_model)
    again = KSAM(resumed.parameters(), sam_every=sam_every, lr=LR, momentum=MU, weight_decay=WD)
    again.load_state_dict(saved_opt)
    for i in range(3, 7):
        again.step(ModelClosure(resumed, *toy_batch(seed=i)))
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert again.steps_taken == opt.steps_taken == 7


def test_a_periodic_schedule_takes_the_base_step_on_the_whole_batch_between():
    model, passes = tiny_model(), []
    opt = KSAM(model.parameters(), sam_every=2, lr=LR)
    for i in range(4):
        meter = Meter()
        opt.step(ModelClosure(model, *toy_batch(seed=i), meter=meter))
        passes.append((meter.backward_passes, meter.backward_samples))
    assert passes == [(2, 12), (1, 16), (2, 12), (1, 16)]


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("bad", [{"k_fraction": 0}, {"k_fraction": 1.5}, {"k_fraction": -0.25},
                                 {"k_fraction": math.nan}, {"k_fraction": "0.5"}, {"k_fraction": True},
                                 {"k_fraction": 0.5, "ascent_fraction": 0.25}])
def test_a_bad_setting_is_one_line_naming_it(bad):
    with pytest.raises(ValueError) as info:
        KSAM(mlp().parameters(), lr=LR, **bad)
    message = one_line(info)
    assert "k_fraction" in message and repr(bad["k_fraction"]) in message


def test_a_closure_that_cannot_rank_is_one_line():
    """As ESAM's data selection: a plain closure is refused (not run as SAM), and works with k_fraction = 1."""
    model = mlp()
    x, y = toy_batch()

    def plain():
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(ValueError) as info:
        KSAM(model.parameters(), lr=LR).step(plain)
    assert "per_sample, subset and backward" in one_line(info)
    KSAM(model.parameters(), k_fraction=1.0, lr=LR).step(plain)


def test_a_closure_whose_loss_is_already_reduced_is_one_line():
    model = mlp()
    closure = ModelClosure(model, *toy_batch())
    reduced = lambda **kw: closure(**{**kw, "per_sample": False})  # noqa: E731
    reduced.features = closure.features - {"scaler"}
    with pytest.raises(ValueError) as info:
        KSAM(model.parameters(), lr=LR).step(reduced)
    assert "one loss per example" in one_line(info)
