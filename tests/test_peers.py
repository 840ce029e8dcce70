"""The efficient-SAM peers against transcriptions of their papers' update rules (and the reference code's,
where there is one), written here on plain tensors: a few steps on identical tensors must agree.

Each reference below is written from the method's paper/code description, independently of the optimizer
files: flat lists of tensors, torch's SGD rule written out (d = g + wd * w; b = mu * b + d, b = d at first;
w -= lr * b), no skeleton. The model has no BatchNorm, so the passes are pure functions of the weights."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import toy_batch
from torch import nn

from baselines import AESAM, GSAM, MSAM, RST, SAM, LateSAM, LookSAM, ModelClosure, TwoPassOptimizer
from baselines.core import Meter

LR, MU, WD = 0.1, 0.9, 5e-4
STEPS = 7


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.Tanh(), nn.Linear(8, 3))


def grad_at(model: nn.Module, weights: list[torch.Tensor], i: int) -> list[torch.Tensor]:
    """The gradient of step i's batch loss at ``weights`` (the model's own weights are left as they were)."""
    x, y = toy_batch(seed=i)
    params = dict(zip([n for n, _ in model.named_parameters()], [w.detach().requires_grad_() for w in weights]))
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    return list(torch.autograd.grad(loss, list(params.values())))


def norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.norm() for t in ts]).norm()


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


class SGDRule:
    """torch.optim.SGD's update with momentum and weight decay, written out."""

    def __init__(self) -> None:
        self.buf: list[torch.Tensor] | None = None

    def __call__(self, w: list[torch.Tensor], g: list[torch.Tensor], lr: float = LR) -> list[torch.Tensor]:
        d = [gi + WD * wi for gi, wi in zip(g, w)]
        self.buf = d if self.buf is None else [MU * b + di for b, di in zip(self.buf, d)]
        return [wi - lr * b for wi, b in zip(w, self.buf)]


def run_optimizer(opt_cls, steps: int = STEPS, scheduler=None, **kwargs) -> tuple[list[torch.Tensor], list[int]]:
    """The optimizer's weights after ``steps`` steps on batches 0, 1, ..., and its passes per step."""
    model = mlp()
    opt = opt_cls(model.parameters(), lr=LR, momentum=MU, weight_decay=WD, **kwargs)
    sched = scheduler(opt) if scheduler else None
    passes = []
    for i in range(steps):
        meter = Meter()
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y, meter=meter))
        passes.append(meter.backward_passes)
        if sched:
            sched.step()
    return [p.detach().clone() for p in model.parameters()], passes


def initial() -> tuple[nn.Module, list[torch.Tensor]]:
    model = mlp()
    return model, [p.detach().clone() for p in model.parameters()]


def sam_gradient(model, w, i, rho) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(g at w, g at w + rho * g / ||g||)."""
    g = grad_at(model, w, i)
    scale = rho / (norm(g) + 1e-12)
    return g, grad_at(model, [wi + scale * gi for wi, gi in zip(w, g)], i)


def assert_close(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_asam_follows_its_codes_rule_on_weights():
    """Kwon et al. 2021 and their code (asam.py, ascent_step): T_w = |w| + eta on every weight, the norm of
    T_w * g, e = rho * T_w^2 * g / ||T_w g||; the code's biases keep T = 1, so the model here has none."""
    rho, eta = 0.5, 0.01
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False))
    w = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), rho=rho, adaptive=True, eta=eta, lr=LR, momentum=MU, weight_decay=WD)
    sgd = SGDRule()
    for i in range(STEPS):
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y))
        g = grad_at(model, w, i)
        t = [wi.abs() + eta for wi in w]
        tg = [ti * gi for ti, gi in zip(t, g)]
        e = [rho * ti * v / (norm(tg) + 1e-16) for ti, v in zip(t, tg)]
        w = sgd(w, grad_at(model, [wi + ei for wi, ei in zip(w, e)], i))
    assert_close([p.detach() for p in model.parameters()], w)


def test_periodic_sam_is_sam_every_kth_step_and_sgd_between():
    ours, passes = run_optimizer(SAM, rho=0.05, sam_every=3)
    model, w = initial()
    sgd = SGDRule()
    for i in range(STEPS):
        g = sam_gradient(model, w, i, 0.05)[1] if i % 3 == 0 else grad_at(model, w, i)
        w = sgd(w, g)
    assert passes == [2 if i % 3 == 0 else 1 for i in range(STEPS)]
    assert_close(ours, w)


def test_looksam_follows_the_papers_algorithm():
    """Liu et al. 2022, Algorithm 1: every k-th step g_v = g_s - ||g_s|| cos(g, g_s) g / ||g||; between, the
    gradient g + alpha * ||g|| / ||g_v|| * g_v."""
    k, alpha, rho = 3, 0.7, 0.05
    ours, passes = run_optimizer(LookSAM, rho=rho, alpha=alpha, sam_every=k)
    model, w = initial()
    sgd, g_v = SGDRule(), None
    for i in range(STEPS):
        if i % k == 0:
            g, g_s = sam_gradient(model, w, i, rho)
            cos = dot(g, g_s) / (norm(g) * norm(g_s))
            g_v = [s - norm(g_s) * cos * gi / norm(g) for s, gi in zip(g_s, g)]
            step = g_s
        else:
            g = grad_at(model, w, i)
            step = [gi + alpha * norm(g) / norm(g_v) * v for gi, v in zip(g, g_v)]
        w = sgd(w, step)
    assert passes == [2 if i % k == 0 else 1 for i in range(STEPS)]
    assert_close(ours, w)


def test_gsam_follows_the_reference_codes_decomposition_and_radius_schedule():
    """Zhuang et al. 2022 (and their code's gradient_decompose): the first-pass g split along g_s,
    d = g_s - alpha * (g - <g, g_s> / ||g_s||^2 * g_s); rho_t linear in the learning rate between rho_min
    (lr 0) and rho (the initial lr)."""
    alpha, rho, rho_min = 0.3, 0.1, 0.02
    decay = 0.8  # the learning rate shrinks each step, so the radius moves
    ours, passes = run_optimizer(GSAM, rho=rho, rho_min=rho_min, alpha=alpha,
                                 scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: decay ** t))
    model, w = initial()
    sgd = SGDRule()
    for i in range(STEPS):
        lr = LR * decay ** i
        rho_t = rho_min + (rho - rho_min) * lr / LR
        g, g_s = sam_gradient(model, w, i, rho_t)
        cos = dot(g, g_s) / (norm(g) * norm(g_s))
        vertical = [gi - cos * norm(g) * s / norm(g_s) for gi, s in zip(g, g_s)]
        w = sgd(w, [s - alpha * v for s, v in zip(g_s, vertical)], lr=lr)
    assert passes == [2] * STEPS
    assert_close(ours, w)


def test_gsam_without_alpha_and_schedule_is_sam():
    model_a, model_b = mlp(), mlp()
    a = GSAM(model_a.parameters(), rho=0.05, alpha=0.0, lr=LR, momentum=MU)
    b = SAM(model_b.parameters(), rho=0.05, lr=LR, momentum=MU)
    for i in range(4):
        x, y = toy_batch(seed=i)
        a.step(ModelClosure(model_a, x, y))
        b.step(ModelClosure(model_b, x, y))
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


def test_momentum_sam_takes_the_gradient_at_w_minus_rho_times_the_normalised_momentum():
    """Becker et al. 2024 and their code: one gradient per step, at w - rho * v / ||v|| (v the momentum buffer,
    which holds the weight decay as torch's SGD keeps it); the update starts from w. Step 0 has no momentum:
    a plain step."""
    rho = 0.3
    ours, passes = run_optimizer(MSAM, rho=rho)
    model, w = initial()
    sgd = SGDRule()
    for i in range(STEPS):
        if sgd.buf is None:
            g = grad_at(model, w, i)
        else:
            scale = rho / (norm(sgd.buf) + 1e-12)
            g = grad_at(model, [wi - scale * b for wi, b in zip(w, sgd.buf)], i)
        w = sgd(w, g)
    assert passes == [1] * STEPS
    assert_close(ours, w)


def test_momentum_sam_agrees_with_the_reference_codes_lazy_form():
    """The reference code holds u = w - rho * v / ||v|| between steps: each step takes the gradient at u, adds
    the old perturbation back, steps SGD, subtracts the new one (its norm factor starts at 0). Moved back at the
    end (``move_back_from_momentumAscent``) it must be our w. One difference, left out here (weight decay 0):
    the reference adds weight decay at u, the perturbed weights; ours (torch's SGD as the base) at w."""
    rho = 0.3
    model = mlp()
    opt = MSAM(model.parameters(), rho=rho, lr=LR, momentum=MU, weight_decay=0.0)
    for i in range(STEPS):
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y))
    _, u = initial()
    buf, inv = [torch.zeros_like(t) for t in u], 0.0
    for i in range(STEPS):
        g = grad_at(model, u, i)
        u = [ui + rho * inv * b for ui, b in zip(u, buf)]
        buf = [MU * b + gi for b, gi in zip(buf, g)] if i else g
        u = [ui - LR * b for ui, b in zip(u, buf)]
        inv = 1 / (float(norm(buf)) + 1e-12)
        u = [ui - rho * inv * b for ui, b in zip(u, buf)]
    w = [ui + rho * inv * b for ui, b in zip(u, buf)]
    assert_close([p.detach() for p in model.parameters()], w)


def test_momentum_sam_leaves_the_weights_unperturbed_between_steps():
    """The reference code keeps w + e between steps (and asks its users to move back before evaluating);
    here evaluation and the saved model see w, the weights the base optimizer stepped."""
    model = mlp()
    opt = MSAM(model.parameters(), rho=0.3, lr=LR, momentum=MU)
    for i in range(3):
        x, y = toy_batch(seed=i)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step(ModelClosure(model, x, y))
        buf = [opt.base_optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
        for p, b, v in zip(model.parameters(), before, buf):  # w_{t+1} = w_t - lr * v exactly: no e left
            torch.testing.assert_close(p.detach(), b - LR * v, rtol=0, atol=1e-7)


def test_rst_draws_a_sam_step_with_the_given_probability():
    p, seed = 0.4, 3
    ours, passes = run_optimizer(RST, rho=0.05, probability=p, seed=seed, steps=STEPS)
    model, w = initial()
    sgd, draws = SGDRule(), torch.Generator().manual_seed(seed)
    sam_steps = []
    for i in range(STEPS):
        sam = bool(torch.rand((), generator=draws) < p)
        sam_steps.append(sam)
        w = sgd(w, sam_gradient(model, w, i, 0.05)[1] if sam else grad_at(model, w, i))
    assert passes == [2 if s else 1 for s in sam_steps]
    assert 0 < sum(sam_steps) < STEPS, "the draws must include both kinds of step to test anything"
    assert_close(ours, w)


def test_rst_share_of_sam_steps_matches_the_probability():
    model = mlp()
    opt = RST(model.parameters(), probability=0.2, seed=0, lr=0.0)
    picks = []
    for _ in range(2000):
        picks.append(opt.two_passes())
    assert abs(sum(picks) / len(picks) - 0.2) < 0.03  # binomial sd 0.009


@pytest.mark.parametrize("cls", [LookSAM, RST])
def test_a_one_pass_step_runs_on_the_whole_batch_and_synchronised(cls):
    """ascent_fraction shrinks the ascent pass only: a step without a second pass uses every example."""
    model = mlp()
    kwargs = {"probability": 0.0} if cls is RST else {"sam_every": 2}
    opt = cls(model.parameters(), ascent_fraction=0.25, lr=LR, **kwargs)
    x, y = toy_batch(n=16, seed=0)
    meter = Meter()
    opt.step(ModelClosure(model, x, y, meter=meter))
    if cls is LookSAM:  # step 0 was a SAM step: the ascent on 4 examples, the descent on 16
        assert (meter.backward_passes, meter.backward_samples) == (2, 20)
        meter.reset()
        opt.step(ModelClosure(model, x, y, meter=meter))
    assert (meter.backward_passes, meter.backward_samples) == (1, 16)


def test_the_step_count_survives_a_restart():
    """sam_every counts the optimizer's own steps, saved with its state: a restart at step 4 of a period of 3
    makes step 6 the next SAM step, not step 4 + 0."""
    assert _passes_after_restart(lambda params: SAM(params, sam_every=3, lr=LR), before=4, after=3) == [1, 1, 2]


def _passes_after_restart(make, before: int, after: int) -> list[int]:
    """Backward passes of each of ``after`` steps of a fresh optimizer (``make(params)``) loaded from the state
    of one that took ``before`` steps: what a restart from a checkpoint does."""
    model = mlp()
    opt = make(model.parameters())
    for i in range(before):
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y))
    opt2 = make(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    passes = []
    for i in range(before, before + after):
        meter = Meter()
        x, y = toy_batch(seed=i)
        opt2.step(ModelClosure(model, x, y, meter=meter))
        passes.append(meter.backward_passes)
    return passes


def test_an_old_checkpoint_without_the_step_count_loads():
    model = mlp()
    opt = SAM(model.parameters(), lr=LR)
    state = opt.state_dict()
    del state["two_pass"]
    SAM(model.parameters(), lr=LR).load_state_dict(state)


@pytest.mark.parametrize(("cls", "bad", "words"), [
    (AESAM, {"ascent_fraction": 0.5, "total_steps": 10}, "whole batch"),
    (LateSAM, {"sam_every": 2, "total_steps": 10}, "switches once"),
    (MSAM, {"momentum": 0.0}, "momentum must be > 0"),
    (MSAM, {"momentum": 0.9, "ascent_fraction": 0.5}, "no ascent pass"),
    (RST, {"sam_every": 2}, "sam_every=2"),
])
def test_a_setting_a_method_cannot_honour_is_one_line(cls, bad, words):
    model = mlp()
    params = [{"params": list(model.parameters()), **bad}]
    kwargs = {"momentum": 0.9} if cls is MSAM and "momentum" not in bad else {}
    with pytest.raises(ValueError, match=words):
        cls(params, lr=LR, **kwargs)


def test_ssam_refuses_a_periodic_schedule():
    from ssam import SSAM

    model = mlp()
    with pytest.raises(ValueError, match="sam_every=3"):
        SSAM([{"params": list(model.parameters()), "sam_every": 3}], lr=LR, steps_per_epoch=5)


def test_every_peer_is_a_skeleton_variant():
    for cls in (AESAM, GSAM, LateSAM, MSAM, RST, LookSAM):
        assert issubclass(cls, TwoPassOptimizer)


# ----- AE-SAM (Jiang et al. 2023): no official code was found; the rule is checked against its equations ---------
def test_ae_sam_follows_the_papers_rule():
    """Jiang et al. 2023, the adaptive policy: mu_t and var_t, exponential moving averages of ||g_t||^2 (delta),
    var_t around the mean just updated; SAM's step where ||g_t||^2 >= mu_t + c_t * sqrt(var_t), with c_t moving
    linearly from lambda2 (t = 0) to lambda1 (t = T); the base step on g_t elsewhere. Written here in double
    precision from the equations, on the steps' own gradients at w. delta 0.5 rather than the paper's 0.9: from
    zero the averages lag, and the first dozens of steps at 0.9 are all SAM's; this test needs both kinds."""
    delta, lam1, lam2, rho, total, steps = 0.5, -1.0, 1.0, 0.05, 8, 10  # steps past T: c_t stays lambda1
    ours, passes = run_optimizer(AESAM, steps=steps, rho=rho, delta=delta, lambda1=lam1, lambda2=lam2,
                                 total_steps=total)
    model, w = initial()
    sgd, mean, var, sam_steps = SGDRule(), 0.0, 0.0, []
    for i in range(steps):
        g = grad_at(model, w, i)
        sq = float(norm(g)) ** 2
        mean = delta * mean + (1 - delta) * sq
        var = delta * var + (1 - delta) * (sq - mean) ** 2
        c = min(i / total, 1) * lam1 + (1 - min(i / total, 1)) * lam2
        sam = sq >= mean + c * var ** 0.5
        sam_steps.append(sam)
        w = sgd(w, sam_gradient(model, w, i, rho)[1] if sam else g)
    assert passes == [2 if s else 1 for s in sam_steps]
    assert 0 < sum(sam_steps) < steps, "the steps must include both kinds to test anything"
    assert_close(ours, w)


class LinearClosure:
    """loss = <a, w> on a one-weight model: the gradient is ``a`` wherever w is, so ||g||^2 is set by hand. It
    declares ``sync`` and records each call's value (the skeleton's ascent pass asks for ``sync=False``)."""

    features = frozenset({"sync"})

    def __init__(self, w: torch.nn.Parameter, a: float) -> None:
        self.w, self.a, self.syncs = w, a, []

    def __call__(self, sync: bool = True) -> torch.Tensor:
        self.syncs.append(sync)
        self.w.grad = None
        with torch.enable_grad():
            loss = (self.a * self.w).sum()
            loss.backward()
        return loss.detach()


def test_ae_sam_decides_as_a_hand_computation():
    """delta 0.5, lambda1 -1, lambda2 1, T 2; ||g||^2 = 4, 1, 9, 2.25:
    t=0: mu = 2,     var = 2,         c = 1:  2 + 1.414 = 3.414 <= 4     SAM
    t=1: mu = 1.5,   var = 1.125,     c = 0:  1.5           > 1          SGD's step
    t=2: mu = 5.25,  var = 7.59375,   c = -1: 5.25 - 2.756 = 2.494 <= 9  SAM
    t=3: mu = 3.75,  var = 4.921875,  c = -1 (t > T): 3.75 - 2.219 = 1.531 <= 2.25  SAM"""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = AESAM([w], delta=0.5, lambda1=-1.0, lambda2=1.0, total_steps=2, lr=0.0)
    calls = []
    for a in (2.0, 1.0, 3.0, 1.5):
        closure = LinearClosure(w, a)
        opt.step(closure)
        calls.append(len(closure.syncs))
        assert closure.syncs[0] is True, "the deciding pass is SGD's: synchronised, so every replica decides alike"
    assert calls == [2, 1, 2, 2]
    assert (opt.mean, opt.var) == (3.75, 4.921875)


@pytest.mark.parametrize("cls", [AESAM, LateSAM])
def test_a_schedule_needs_the_runs_total_steps(cls):
    model = mlp()
    with pytest.raises(ValueError, match="total_steps .*None"):
        cls(model.parameters(), lr=LR)
    with pytest.raises(ValueError, match="total_steps .*got 0"):
        cls(model.parameters(), lr=LR, total_steps=0)


def test_ae_sam_statistics_survive_a_restart():
    """The running mean and variance and the step count are the optimizer's state: a restart decides as before."""
    model_a, model_b = mlp(), mlp()
    a = AESAM(model_a.parameters(), total_steps=8, lr=LR, momentum=MU)
    for i in range(4):
        x, y = toy_batch(seed=i)
        a.step(ModelClosure(model_a, x, y))
    model_b.load_state_dict(model_a.state_dict())
    b = AESAM(model_b.parameters(), total_steps=8, lr=LR, momentum=MU)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # torch's load would share a's momentum tensors
    for i in range(4, 8):
        x, y = toy_batch(seed=i)
        meters = Meter(), Meter()
        a.step(ModelClosure(model_a, x, y, meter=meters[0]))
        b.step(ModelClosure(model_b, x, y, meter=meters[1]))
        assert meters[0].backward_passes == meters[1].backward_passes
    assert (a.mean, a.var, a.steps_taken) == (b.mean, b.var, b.steps_taken)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


# ----- late-phase SAM (Zhou et al. 2025) against their script's loop (script/ERM_to_SAM.py) ----------------------
def test_late_sam_follows_the_reference_scripts_switch():
    """The script trains epoch by epoch with ``isSAM = start_SAM <= epoch <= end_SAM`` (end_SAM = the last epoch
    here): SGD's steps, then SAM's (its SAM class is davda54's: e = rho * g / ||g||, the base step at w). 4 epochs
    of 2 steps, SAM from epoch 3: switch_at = 3/4 of T = 8. One difference, kept out of this transcription: the
    script builds a second SGD for the SAM phase, whose momentum starts at zero; here one momentum runs on."""
    epochs, per_epoch, start_sam, rho = 4, 2, 3, 0.05
    ours, passes = run_optimizer(LateSAM, steps=epochs * per_epoch, rho=rho, switch_at=start_sam / epochs,
                                 total_steps=epochs * per_epoch)
    model, w = initial()
    sgd, sam_steps = SGDRule(), []
    for epoch in range(epochs):
        is_sam = start_sam <= epoch <= epochs
        for b in range(per_epoch):
            i = epoch * per_epoch + b
            w = sgd(w, sam_gradient(model, w, i, rho)[1] if is_sam else grad_at(model, w, i))
            sam_steps.append(is_sam)
    assert passes == [2 if s else 1 for s in sam_steps] == [1] * 6 + [2] * 2
    assert_close(ours, w)


def test_late_sam_switches_at_the_same_step_after_a_restart():
    """The switch counts the optimizer's own steps, saved with its state: restarted at step 5 of T = 8 with
    switch_at 0.75, steps 5, 6, 7 are SGD's, SAM's, SAM's."""
    make = lambda params: LateSAM(params, switch_at=0.75, total_steps=8, lr=LR)  # noqa: E731
    assert _passes_after_restart(make, before=5, after=3) == [1, 2, 2]


@pytest.mark.parametrize(("switch_at", "total", "first"), [(0.875, 200 * 391, 175 * 391), (0.7, 10, 7), (0.0, 5, 0),
                                                            (1.0, 5, 5), (0.5, 7, 4)])
def test_late_sam_first_sam_step(switch_at, total, first):
    """ceil(switch_at * T): the paper's last 25 of 200 epochs of 391 steps start at step 175 * 391."""
    opt = LateSAM(mlp().parameters(), switch_at=switch_at, total_steps=total, lr=LR)
    assert opt.first_sam_step() == first


# ----- steps of two kinds: forcing a kind (for pricing each) and counting the SAM steps a run took ----------------
@pytest.mark.parametrize(("cls", "kw"), [(LateSAM, {"total_steps": 8}), (RST, {"probability": 0.5}),
                                         (AESAM, {"total_steps": 8})])
def test_a_step_kind_can_be_forced_and_the_second_passes_are_counted(cls, kw):
    """``step_kind(True)`` runs both passes whatever the method's schedule, its draw or its gradient say;
    ``step_kind(False)`` one; ``second_passes_taken`` counts the steps that ran the second pass."""
    model = mlp()
    opt = cls(model.parameters(), lr=LR, **kw)
    for two, want in ((True, [2, 2, 2]), (False, [1, 1, 1])):
        with opt.step_kind(two):
            passes = []
            for i in range(3):
                meter = Meter()
                x, y = toy_batch(seed=i)
                opt.step(ModelClosure(model, x, y, meter=meter))
                passes.append(meter.backward_passes)
        assert passes == want
    assert opt.forced_kind is None and (opt.steps_taken, opt.second_passes_taken) == (6, 3)


def test_forcing_a_kind_draws_nothing_from_rsts_generator():
    """A probe of one kind leaves the draws of the run's steps as they were."""
    model = mlp()
    opt = RST(model.parameters(), probability=0.5, seed=4, lr=LR)
    before = opt.generator.get_state()
    for two in (True, False):
        with opt.step_kind(two):
            x, y = toy_batch(seed=0)
            opt.step(ModelClosure(model, x, y))
    assert torch.equal(opt.generator.get_state(), before)


@pytest.mark.parametrize(("cls", "kw", "sam_steps"), [(LateSAM, {"switch_at": 0.75, "total_steps": 8}, 2),
                                                      (RST, {"probability": 0.5, "seed": 0}, None),
                                                      (AESAM, {"total_steps": 8}, None)])
def test_the_count_of_second_passes_is_the_meters_and_survives_a_restart(cls, kw, sam_steps):
    """Over 8 steps, restarted after 5: the second passes counted equal the meter's extra backward passes (late-phase
    SAM at switch_at 0.75 of T = 8: steps 6 and 7, 2 of 8)."""
    model = mlp()
    opt = cls(model.parameters(), lr=LR, **kw)
    extra = 0
    for i in range(8):
        if i == 5:
            again = cls(model.parameters(), lr=LR, **kw)
            again.load_state_dict(opt.state_dict())
            opt = again
        meter = Meter()
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y, meter=meter))
        extra += meter.backward_passes - 1
    assert opt.second_passes_taken == extra and (sam_steps is None or extra == sam_steps)


@pytest.mark.parametrize(("switch_at", "total", "sam"), [(0.875, 200 * 391, 25 * 391), (0.75, 8, 2), (0.875, 8, 1),
                                                         (0.875, 10, 1), (0.0, 5, 5), (1.0, 5, 0)])
def test_late_sam_says_how_many_of_a_runs_steps_are_sams(switch_at, total, sam):
    """T - ceil(switch_at * T), for any T asked (a budget asks it of lengths it is still choosing between)."""
    opt = LateSAM(mlp().parameters(), switch_at=switch_at, total_steps=3, lr=LR)
    assert opt.sam_steps_in(total) == sam


def test_expected_shares_before_a_run():
    """RST: p. AE-SAM: 0.5 for its symmetric default threshold (lambda1 = -lambda2), else P(Z >= c) averaged over
    the linear c_t: from 2 down to 0, about 0.195."""
    assert RST(mlp().parameters(), probability=0.3, lr=LR).expected_sam_share() == 0.3
    assert AESAM(mlp().parameters(), total_steps=8, lr=LR).expected_sam_share() == 0.5
    shifted = AESAM(mlp().parameters(), total_steps=8, lambda1=0.0, lambda2=2.0, lr=LR).expected_sam_share()
    assert shifted == pytest.approx(0.1952, abs=1e-3)


def test_a_checkpoint_without_the_count_of_second_passes_leaves_it_unknown():
    """Resumed from a checkpoint written before the count existed, a run cannot know its SAM steps before the
    resume: None (its record then falls back to the FLOP counter), not a count from the resume on. A checkpoint
    older still (no step count either) starts both at 0, as before."""
    model = mlp()
    opt = RST(model.parameters(), probability=0.5, lr=LR)
    state = opt.state_dict()
    del state["two_pass"]["second_passes"]
    again = RST(model.parameters(), probability=0.5, lr=LR)
    again.load_state_dict(state)
    x, y = toy_batch(seed=0)
    again.step(ModelClosure(model, x, y))
    assert again.second_passes_taken is None
    del state["two_pass"]
    again.load_state_dict(state)
    assert again.second_passes_taken == 0
