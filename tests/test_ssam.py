"""SSAM: equivalences with SAM and SGD, where the perturbation lands, Fisher scores, DST schedule,
the implicit form's gradients, state and bad input."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from helpers import tiny_model, toy_batch
from torch import nn
from torch.nn import functional as F

from baselines import SAM, ModelClosure
from baselines.core import Meter
from ssam import SSAM, SSAMD, MaskedBackward
from ssam import masks as mk
from ssam.fisher import fisher_loop, fisher_vectorised

HP = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
VARIANTS = [(mask, form) for mask in ("fisher", "dynamic") for form in ("explicit", "implicit")]


def ssam(net, **kw):
    args = dict(rho=0.1, update_every=2, total_steps=8, model=net, **HP)
    return SSAM(net.parameters(), **{**args, **kw})


def train(model, opt, steps=4, meter=None):
    for i in range(steps):
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y, meter=meter))


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("mask,form", VARIANTS)
@pytest.mark.parametrize("pattern,extra", [("unstructured", {"sparsity": 0.0}), ("structured", {"sparsity": 0.0}),
                                           ("nm", {"n": 4, "m": 4})])
def test_density_one_is_sam(mask, form, pattern, extra):
    a, b = tiny_model(), tiny_model()
    train(a, SAM(a.parameters(), rho=0.1, **HP))
    train(b, ssam(b, mask=mask, form=form, pattern=pattern, **extra))
    assert same_weights(a, b)


@pytest.mark.parametrize("mask,form", [v for v in VARIANTS if v[1] == "explicit"])  # implicit e stays dense
@pytest.mark.parametrize("pattern", ["unstructured", "structured"])
def test_sparsity_one_is_sgd(mask, form, pattern):
    a, b = tiny_model(), tiny_model()
    train(a, torch.optim.SGD(a.parameters(), **HP))
    train(b, ssam(b, mask=mask, form=form, pattern=pattern, sparsity=1.0))
    assert same_weights(a, b)


def test_half_sparsity_is_neither_sam_nor_sgd():
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    train(a, SAM(a.parameters(), rho=0.5, **HP))
    train(b, torch.optim.SGD(b.parameters(), **HP))
    train(c, ssam(c, rho=0.5, sparsity=0.5))
    assert not same_weights(a, c) and not same_weights(b, c)


@pytest.mark.parametrize("mask", ["fisher", "dynamic"])
@pytest.mark.parametrize("pattern", mk.PATTERNS)
@pytest.mark.parametrize("normalise", ["paper", "masked"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_perturbation_is_masked_gradient_scaled_by_the_stated_norm(mask, pattern, normalise, adaptive):
    """Explicit: e = rho * m ⊙ T g / ||·|| with T = 1, or |w|² on e and |w| in the norm (ASAM); the
    "masked" norm is over what is perturbed, the adaptive scaling included."""
    model = tiny_model()
    opt = ssam(model, mask=mask, form="explicit", pattern=pattern, normalise=normalise, adaptive=adaptive,
               lr=0.0, momentum=0.0, weight_decay=0.0)
    x, y = toy_batch()
    seen = []

    class Spy(ModelClosure):
        def __call__(self, **kw):
            out = super().__call__(**kw)
            seen.append(([p.detach().clone() for p in model.parameters()],  # a tensor left out has no grad
                         [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]))
            return out

    opt.step(Spy(model, x, y))
    (w0, g), (w1, _) = seen[-2], seen[-1]  # the first pass (after any Fisher passes), then the second
    masks = opt.masks()
    assert 0 < mk.density(masks) < 1
    tg = [wi.abs() * gi if adaptive else gi for wi, gi in zip(w0, g)]
    norm = torch.stack([(t * mi if normalise == "masked" else t).norm() for t, mi in zip(tg, masks)]).norm()
    for a, b, gi, mi in zip(w0, w1, g, masks):
        e = b - a
        assert torch.equal(e[~mi], torch.zeros_like(e[~mi])), "zero exactly where the mask is zero"
        expected = 0.1 * (a.square() * gi if adaptive else gi) / norm
        torch.testing.assert_close(e[mi], expected[mi], rtol=1e-4, atol=1e-7)


def test_vectorised_fisher_equals_the_batch_of_one_loop_and_leaves_no_trace():
    model = tiny_model()
    x, y = toy_batch(n=16)
    closure = ModelClosure(model, x, y)
    stats = copy.deepcopy(model.bn.state_dict())
    params = list(model.parameters())
    fast = fisher_vectorised(closure, params, 12)
    assert all(p.grad is None for p in params), "the vectorised pass leaves .grad alone"
    slow = fisher_loop(closure, params, 12)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert all(torch.equal(v, stats[k]) for k, v in model.bn.state_dict().items()), "BN statistics untouched"
    assert all(a.sum() > 0 for a in fast)


def test_fisher_mask_keeps_the_largest_scores_and_refreshes_on_schedule(monkeypatch):
    from ssam.fisher import FISHER

    model = tiny_model()
    opt = ssam(model, sparsity=0.6, update_every=3)
    calls = []

    def counting(closure, params, n, bn):
        calls.append((n, bn))
        return fisher_vectorised(closure, params, n, bn)

    monkeypatch.setitem(FISHER, "vmap", counting)
    x, y = toy_batch()
    expected = fisher_vectorised(ModelClosure(model, x, y), list(model.parameters()), 16)
    opt.step(ModelClosure(model, x, y))
    assert all(torch.equal(m, e) for m, e in zip(opt.masks(), mk.project(expected, "unstructured", 0.4)))
    train(model, opt, steps=6)
    assert calls == [(16, "batch")] * 3  # 1 + 6 steps: refreshes at steps 0, 3 and 6


def test_meter_counts_the_fisher_pass():
    model, meter = tiny_model(), Meter()
    opt = ssam(model, fisher_samples=8)
    opt.step(ModelClosure(model, *toy_batch(n=16), meter=meter))
    assert (meter.backward_passes, meter.backward_samples) == (3, 16 + 8 + 16)


def test_dst_schedule_and_updates():
    model = tiny_model()
    opt = ssam(model, mask="dynamic", drop_rate=0.5, total_steps=8, update_every=2, sparsity=0.5)
    assert [opt.drop_rate_at(t) for t in (0, 4, 8, 20)] == pytest.approx([0.5, 0.25, 0.0, 0.0])
    first = [m.clone() for m in opt.masks()]
    counts = []
    for i in range(4):
        train(model, opt, steps=1)
        counts.append(sum(int(m.sum()) for m in opt.masks()))
        if i == 0:
            assert all(torch.equal(a, b) for a, b in zip(first, opt.masks())), "no update before step 2"
    assert len(set(counts)) == 1 and counts[0] == round(0.5 * sum(p.numel() for p in model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first, opt.masks())), "updated at steps 2 and 4"


def test_dst_initial_mask_depends_on_the_seed_only():
    a, b, c = (ssam(tiny_model(), mask="dynamic", seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a.masks(), b.masks()))
    assert not all(torch.equal(x, y) for x, y in zip(a.masks(), c.masks()))


def test_state_dict_restores_bool_masks_and_the_step_count():
    model = tiny_model()
    opt = ssam(model, mask="dynamic")
    train(model, opt, steps=3)
    state = opt.state_dict()
    fresh = ssam(tiny_model(), mask="dynamic", seed=5)
    fresh.load_state_dict(state)
    assert fresh.steps == 3 and all(m.dtype == torch.bool for m in fresh.masks())
    assert all(torch.equal(a, b) for a, b in zip(opt.masks(), fresh.masks()))


# ----- implicit form ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=True), nn.Linear(8, 5)])
def test_masked_backward_single_layer(layer):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 7) if isinstance(layer, nn.Conv2d) else torch.randn(3, 8)
    mask = torch.rand(layer.weight.shape) < 0.5
    ref_out = layer(x)
    dy = torch.randn_like(ref_out)
    ref_gw = torch.autograd.grad(ref_out, layer.weight, dy)[0]
    xr = x.clone().requires_grad_()
    with MaskedBackward(layer, lambda w: mask if w is layer.weight else None):
        out = layer(xr)
    assert torch.equal(out, ref_out), "forward unchanged"
    gx, gw = torch.autograd.grad(out, (xr, layer.weight), dy)
    masked = copy.deepcopy(layer)
    with torch.no_grad():
        masked.weight.mul_(mask)
    xm = x.clone().requires_grad_()
    expected_gx = torch.autograd.grad(masked(xm), xm, dy)[0]
    torch.testing.assert_close(gx, expected_gx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-6)
    assert "forward" not in vars(layer), "the model is untouched outside the context"


def test_masked_backward_keeps_the_top_layer_gradient_and_changes_the_lower_ones():
    model = tiny_model()
    x, y = toy_batch()
    masks = {p: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5 for p in model.parameters()}
    loss = nn.functional.cross_entropy(model(x), y)
    ref = torch.autograd.grad(loss, [model.conv.weight, model.fc.weight])
    with MaskedBackward(model, masks.get):
        out = model(x)
        loss2 = nn.functional.cross_entropy(out, y)
    got = torch.autograd.grad(loss2, [model.conv.weight, model.fc.weight])
    assert torch.equal(loss.detach(), loss2.detach())
    torch.testing.assert_close(got[1], ref[1], rtol=1e-6, atol=1e-8)  # top layer: exact
    assert not torch.allclose(got[0], ref[0])  # below a masked layer: the sparsified network's gradient


class TwoConv(nn.Module):
    """conv -> relu -> conv -> pool -> linear: the lower conv's gradient flows through the upper one."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x, w2=None):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h) if w2 is None else w2(h))
        return self.fc(h.mean((2, 3)))


def _first_pass_e(model, opt, x, y):
    seen = []

    class Spy(ModelClosure):
        def __call__(self, **kw):
            out = super().__call__(**kw)
            seen.append([p.detach().clone() for p in model.parameters()])
            return out

    opt.step(Spy(model, x, y))
    return [b - a for a, b in zip(seen[-2], seen[-1])]


@pytest.mark.parametrize("pattern", ["structured", "nm"])
def test_implicit_e_is_dense_rho_g_over_norm_with_g_from_an_independent_masked_backward(pattern):
    """The paper's implicit form: g from a backward through W ⊙ M (computed here without the suite's
    masked-backward code), then SAM's dense e = rho * g / ||g||."""
    model = TwoConv()
    x, y = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(3)), torch.arange(8) % 3
    opt = SSAM(model.parameters(), rho=0.1, mask="fisher", pattern=pattern, form="implicit", model=model,
               sparsity=0.5 if pattern == "structured" else None, update_every=10, fisher_samples=8, lr=0.0,
               momentum=0.0)
    ref = copy.deepcopy(model)
    e = _first_pass_e(model, opt, x, y)
    masks = dict(zip(ref.parameters(), opt.masks()))  # the masks the step chose (Fisher at step 0)
    assert any(not m.all() for m in opt.masks())

    def masked_input_grad(conv):  # value: conv(h, W); d/dh: through W ⊙ M; d/dW: exact
        m = masks[conv.weight].to(conv.weight.dtype)
        return lambda h: (F.conv2d(h, conv.weight * m, conv.bias, padding=1)
                          + F.conv2d(h.detach(), conv.weight, None, padding=1)
                          - F.conv2d(h.detach(), conv.weight * m, None, padding=1))

    fc_mask = masks[ref.fc.weight].to(ref.fc.weight.dtype)
    h = torch.relu(ref.c1(x))
    h = torch.relu(masked_input_grad(ref.c2)(h)).mean((2, 3))
    out = F.linear(h, ref.fc.weight * fc_mask, ref.fc.bias) + F.linear(h.detach(), ref.fc.weight) \
        - F.linear(h.detach(), ref.fc.weight * fc_mask)
    g = torch.autograd.grad(F.cross_entropy(out, y), list(ref.parameters()))
    norm = torch.stack([gi.norm() for gi in g]).norm()
    for ei, gi in zip(e, g):
        torch.testing.assert_close(ei, 0.1 * gi / norm, rtol=1e-4, atol=1e-7)
    assert any((ei != 0).all() and not mi.all() for ei, mi in zip(e, opt.masks())), "dense where the mask is not"


def test_implicit_refuses_the_masked_norm():
    model = tiny_model()
    with pytest.raises(ValueError, match="normalise='masked' is for the explicit form"):
        ssam(model, form="implicit", model=model, normalise="masked")


@pytest.mark.parametrize("impl", ["vmap", "loop"])
def test_fisher_on_a_model_with_dropout(impl):
    """Each example draws its own Dropout mask (vmap's randomness="different", as the loop's batch-of-one
    forwards do); without randomness (p=0) the two implementations agree."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(12, 10))
    x, y = torch.randn(16, 3, 2, 2), torch.randint(0, 10, (16,))
    opt = SSAM(model.parameters(), mask="fisher", update_every=10, lr=0.1, fisher_impl=impl)
    opt.step(ModelClosure(model, x, y))
    assert 0 < mk.density(opt.masks()) < 1
    model[1].p = 0.0
    closure, params = ModelClosure(model, x, y), list(model.parameters())
    for a, b in zip(fisher_vectorised(closure, params, 8), fisher_loop(closure, params, 8)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


# ----- library use and bad input ---------------------------------------------------------------------
def test_ssamd_alias_and_a_users_own_loop():
    model = tiny_model()
    opt = SSAMD(model.parameters(), rho=0.05, sparsity=0.5, update_every=5, total_steps=50, lr=0.1)
    x, y = toy_batch(n=24)
    losses = [float(opt.step(ModelClosure(model, x, y))) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]


BAD = [
    (dict(sparsity=-0.1), "sparsity must be a number in [0, 1], got -0.1"), (dict(sparsity=1.5), "1.5"),
    (dict(pattern="nm", n=3, m=2), "n <= m, got n=3, m=2"),
    (dict(pattern="nm", n=0, m=4), "n must be an integer >= 1, got 0"),
    (dict(pattern="nm", n=2, m=5), "divides no weight"), (dict(pattern="nm", n=2, m=4, sparsity=0.7), "1 - n/m"),
    (dict(mask="hessian"), "unknown mask 'hessian'"), (dict(pattern="blocky"), "unknown pattern 'blocky'"),
    (dict(form="magic"), "unknown form 'magic'"), (dict(update_every=0), "update_every"),
    (dict(update_every=None), "update_every"), (dict(fisher_samples=0), "fisher_samples"),
    (dict(mask="dynamic", total_steps=None), "total_steps"), (dict(form="implicit", model=None), "model="),
    (dict(drop_rate=2.0), "drop_rate"), (dict(rho=-1.0), "rho"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_hyper_parameters_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ssam(tiny_model(), **kwargs)


def test_fisher_samples_larger_than_the_batch():
    model = tiny_model()
    opt = ssam(model, fisher_samples=32)
    with pytest.raises(ValueError, match="fisher_samples=32 is larger than the batch"):
        opt.step(ModelClosure(model, *toy_batch(n=16)))


def _one_by_one_maps_net():
    """BatchNorm after a global pool: with one example, each channel holds a single value (as in
    torchvision's ResNet-18 on 32x32 images, whose last maps are 1x1)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4, 10))


@pytest.mark.parametrize("impl", ["vmap", "loop"])
def test_fisher_on_one_value_per_channel_is_refused_with_the_way_out(impl):
    model = _one_by_one_maps_net()
    x, y = toy_batch(n=16)
    opt = SSAM(model.parameters(), mask="fisher", fisher_impl=impl, update_every=10, lr=0.1)
    with pytest.raises(ValueError, match=r"BatchNorm layer '2' then sees one value per channel.*fisher_bn='running'"):
        opt.step(ModelClosure(model, x, y))


def test_fisher_with_running_statistics_works_there_and_both_implementations_agree():
    model = _one_by_one_maps_net()
    x, y = toy_batch(n=16)
    model(x)  # running statistics away from their start
    before = copy.deepcopy(model.state_dict())
    closure, params = ModelClosure(model, x, y), list(model.parameters())
    fast = fisher_vectorised(closure, params, 8, bn="running")
    slow = fisher_loop(closure, params, 8, bn="running")
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "buffers untouched"
    assert all(m.training for m in model.modules()), "the model is left in training mode"
    # the same scores as an eval-mode batch-of-one gradient, computed here by hand
    model.eval()
    expected = [torch.zeros_like(p) for p in params]
    for i in range(8):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for acc, p in zip(expected, params):
            acc += p.grad.square()
    for a, b in zip(fast, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    model.train()
    opt = SSAM(params, mask="fisher", fisher_bn="running", update_every=10, lr=0.1)
    opt.step(ModelClosure(model, x, y))
    assert torch.isfinite(torch.cat([p.flatten() for p in params])).all()


def test_fisher_on_random_training_examples_scores_what_the_sampler_draws():
    """fisher_data="train" (the paper's code): the Fisher is taken on fisher_samples examples drawn from the
    training data by the sampler, not on the step's batch."""
    model = tiny_model()
    x, y = toy_batch(seed=1)
    drawn_x, drawn_y = toy_batch(n=12, seed=7)
    asked = []

    def sample(n):
        asked.append(n)
        return drawn_x[:n], drawn_y[:n]

    opt = ssam(model, sparsity=0.6, update_every=3, fisher_samples=10, fisher_data="train", sample_examples=sample)
    expected = fisher_vectorised(ModelClosure(model, drawn_x[:10], drawn_y[:10]), list(model.parameters()), 10)
    meter = Meter()
    opt.step(ModelClosure(model, x, y, meter=meter))
    assert asked == [10]
    assert all(torch.equal(m, e) for m, e in zip(opt.masks(), mk.project(expected, "unstructured", 0.4)))
    assert meter.backward_samples == 10 + 2 * 16  # the Fisher pass is metered with the step's passes
    with pytest.raises(ValueError, match="sample_examples="):
        ssam(tiny_model(), fisher_data="train")


def test_paper_refresh_timing_for_the_fisher_mask(monkeypatch):
    """The paper's code: an all-zero mask at first (step 0 is an SGD step), the Fisher taken after the
    first step of every period, so at the start of steps 1, 1 + P, ..."""
    from ssam.fisher import FISHER

    calls = []
    original = FISHER["vmap"]

    def counting(closure, params, n, bn):
        calls.append(opt.steps)
        return original(closure, params, n, bn)

    monkeypatch.setitem(FISHER, "vmap", counting)
    a, b = tiny_model(), tiny_model()
    opt = ssam(a, update_every=3, refresh_timing="paper")
    train(a, opt, steps=1)
    train(b, torch.optim.SGD(b.parameters(), **HP), steps=1)
    assert same_weights(a, b), "step 0 perturbs nothing"
    train(a, opt, steps=6)
    assert calls == [1, 4]
    assert opt.density_range[0] == 0.0 and opt.density_range[1] == pytest.approx(0.5, abs=0.01)


def test_paper_refresh_timing_for_the_dynamic_mask():
    """SSAM-D as the paper's code: the drop-and-grow runs on steps 0, P, 2P, ... from that step's first-pass
    gradient, and the step still perturbs with the mask it started with; the suite's timing refreshes at
    the end of each period (steps P-1, 2P-1, ...) and uses the new mask at once."""
    model = tiny_model()
    opt = ssam(model, mask="dynamic", update_every=3, refresh_timing="paper", total_steps=30)
    history = []
    for i in range(7):
        before = [m.clone() for m in opt.masks()]
        x, y = toy_batch(seed=i)
        opt.step(ModelClosure(model, x, y))
        history.append(not all(torch.equal(m, n) for m, n in zip(before, opt.masks())))
    assert history == [True, False, False, True, False, False, True]
    suite = ssam(tiny_model(), mask="dynamic", update_every=3, total_steps=30)
    refreshed = []
    for step in range(6):
        suite.steps = step
        refreshed.append(suite._refreshes(suite.settings(), fisher=False))
    assert refreshed == [False, False, True, False, False, True]


# ----- first-pass work skipped for tensors left out (not_perturbed) -----------------------------------------------
class GradSpy(ModelClosure):
    """Records, after every call, which parameters hold no gradient."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def __call__(self, **kw):
        out = super().__call__(**kw)
        self.log.append([p.grad is None for p in self.model.parameters()])
        return out


def chain(seed: int = 0) -> nn.Module:
    """Many small tensors, so that a structured mask leaves several out and SSAM-D's regrowth changes which."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8), *[nn.Sequential(nn.ReLU(), nn.Linear(8, 8)) for _ in range(6)],
                         nn.ReLU(), nn.Linear(8, 3))


def _steps(model, opt, log, meter, steps=6):
    for i in range(steps):
        x, y = toy_batch(seed=i)
        opt.step(GradSpy(model, x, y, log=log, meter=meter))


@pytest.mark.parametrize("mask,form", [("fisher", "explicit"), ("dynamic", "explicit"), ("fisher", "implicit-masked")])
@pytest.mark.parametrize("timing", ["suite", "paper"])
@pytest.mark.parametrize("pattern", ["structured", "structured-top"])
@pytest.mark.parametrize("net", [tiny_model, chain])
def test_tensors_left_out_get_no_first_pass_weight_gradient_and_the_update_is_the_same_bit_for_bit(
        mask, form, timing, pattern, net):
    """A structured mask leaves whole tensors out; with the masked norm nothing reads their first-pass
    gradient, so it is not computed. The plain path (every dW computed) must give the same weights, BatchNorm
    buffers included, through mask refreshes (update_every=2; SSAM-D regrows other tensors) and the paper
    timing's all-zero first mask."""
    kw = dict(mask=mask, form=form, pattern=pattern, normalise="masked", refresh_timing=timing)
    a, b = net(), net()
    fast, plain = ssam(a, **kw), ssam(b, **kw)
    plain.not_perturbed = list  # the plain path: nothing skipped
    fast_log, plain_log, fast_meter, plain_meter = [], [], Meter(), Meter()
    first_masks = [m.clone() for m in fast.masks()]
    _steps(a, fast, fast_log, fast_meter)
    _steps(b, plain, plain_log, plain_meter)
    assert same_weights(a, b)
    if mask == "dynamic" and net is chain:  # the case that needs care: a regrown tensor's g is read
        assert any(not torch.equal(m, n) for m, n in zip(first_masks, fast.masks()))
    first_passes = fast_log[0::2]
    assert any(any(skipped) for skipped in first_passes), "some tensor was left out and skipped"
    assert not any(any(s) for s in plain_log) and not any(any(s) for s in fast_log[1::2])
    if mask == "fisher" and timing == "paper":  # step 0's mask is all zero: its first pass is a forward only
        assert all(first_passes[0]) and fast_meter.backward_passes == plain_meter.backward_passes - 1
    else:
        assert fast_meter == plain_meter


def test_nothing_is_skipped_where_the_left_out_gradient_is_read():
    """The paper's norm is over every weight's gradient; SSAM-D with gradient growth ranks the inactive
    weights by |g|; the implicit form's e is dense."""
    for kw in (dict(normalise="paper"), dict(normalise="masked", mask="dynamic", growth="gradient"),
               dict(form="implicit")):
        model = tiny_model()
        opt = ssam(model, pattern="structured", **{"mask": "fisher", **kw})
        _steps(model, opt, log := [], Meter(), steps=3)
        assert 0 < opt.mask_density() < 1 and not any(any(s) for s in log), kw


@pytest.mark.parametrize("mask,form", VARIANTS)
def test_density_one_with_an_ascent_sub_batch_is_sam_with_it(mask, form):
    a, b = tiny_model(), tiny_model()
    train(a, SAM(a.parameters(), rho=0.1, ascent_fraction=0.5, **HP))
    train(b, ssam(b, mask=mask, form=form, sparsity=0.0, ascent_fraction=0.5))
    assert same_weights(a, b)


def test_a_mask_near_the_output_stops_the_first_backward_there():
    """structured-top with the masked norm: the first pass computes no FLOPs of backward below the mask
    (here only the classifier's bias is perturbed, so no convolution backward runs at all)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_model()
    opt = ssam(model, pattern="structured-top", normalise="masked", lr=0.0)
    x, y = toy_batch()
    opt.step(ModelClosure(model, x, y))  # the Fisher pass chooses the mask
    assert [bool(m.any()) for m in opt.masks()] == [False, False, False, False, True]
    counted = []

    class Counted(ModelClosure):
        def __call__(self, **kw):
            with FlopCounterMode(display=False) as counter:
                out = super().__call__(**kw)
            counted.append({str(k): v for k, v in counter.get_flop_counts()["Global"].items()})
            return out

    opt.step(Counted(model, x, y))
    first, second = counted
    assert "aten.convolution_backward" not in first and second["aten.convolution_backward"] > 0
