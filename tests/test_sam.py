"""SAM and the two-pass skeleton: equivalences, exact restore, BatchNorm statistics, ASAM."""

from __future__ import annotations

import pytest
import torch
from helpers import closure_for, tiny_model, toy_batch

from baselines import SAM, ModelClosure
from baselines.core import Meter

HP = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def train(model, opt, steps=4):
    for i in range(steps):
        x, y = toy_batch(seed=i)
        opt.step(closure_for(model, x, y))


def test_rho_zero_is_sgd_bit_for_bit():
    a, b = tiny_model(), tiny_model()
    train(a, torch.optim.SGD(a.parameters(), **HP))
    train(b, SAM(b.parameters(), base_optimizer=torch.optim.SGD, rho=0.0, **HP))
    for wa, wb in zip(weights(a), weights(b)):  # parameters and BatchNorm buffers alike
        assert torch.equal(wa, wb)


def test_positive_rho_differs_from_sgd():
    """The equivalence above is not vacuous: with rho > 0 the weights move elsewhere."""
    a, b = tiny_model(), tiny_model()
    train(a, torch.optim.SGD(a.parameters(), **HP))
    train(b, SAM(b.parameters(), rho=0.5, **HP))
    assert any(not torch.equal(wa, wb) for wa, wb in zip(weights(a), weights(b)))


def test_restore_is_exact_and_update_uses_perturbed_gradient():
    """With lr = 0 the step must leave every weight bit-identical; the second pass sees w + e."""
    model = tiny_model()
    opt = SAM(model.parameters(), rho=0.3, lr=0.0)
    x, y = toy_batch()
    before = [p.detach().clone() for p in model.parameters()]
    seen = []

    class Spy(ModelClosure):
        def __call__(self, **kw):
            seen.append([p.detach().clone() for p in model.parameters()])
            return super().__call__(**kw)

    opt.step(Spy(model, x, y))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    # e = rho * g / ||g||, with g the gradient of the first pass
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    norm = torch.stack([g.norm() for g in grads]).norm()
    for w0, w1, g in zip(seen[0], seen[1], grads):
        torch.testing.assert_close(w1 - w0, 0.3 * g / norm, rtol=1e-4, atol=1e-7)
    assert torch.equal(torch.cat([w.flatten() for w in seen[0]]), torch.cat([b.flatten() for b in before]))


def test_batchnorm_statistics_move_once_per_step():
    model, ref = tiny_model(), tiny_model()
    x, y = toy_batch()
    SAM(model.parameters(), rho=0.5, lr=0.0).step(closure_for(model, x, y))
    ref(x)  # one training-mode forward at w: what the statistics must equal
    assert model.bn.num_batches_tracked.item() == 1
    assert torch.equal(model.bn.running_mean, ref.bn.running_mean)
    assert torch.equal(model.bn.running_var, ref.bn.running_var)


def test_plain_user_closure_works():
    """A researcher's own closure (no keyword options) is called with none."""
    model = tiny_model()
    opt = SAM(model.parameters(), base_optimizer=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    x, y = toy_batch()
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(20)]
    assert len(calls) == 40 and losses[-1] < losses[0]


def test_adaptive_perturbation_is_asam():
    model = tiny_model()
    opt = SAM(model.parameters(), rho=0.5, adaptive=True, lr=0.0)
    x, y = toy_batch()
    closure_for(model, x, y)()
    w = [p.detach().clone() for p in model.parameters()]
    g = [p.grad.clone() for p in model.parameters()]
    opt.perturb()
    norm = torch.stack([(wi.abs() * gi).norm() for wi, gi in zip(w, g)]).norm()
    for p, wi, gi in zip(model.parameters(), w, g):
        torch.testing.assert_close(p.detach() - wi, 0.5 * wi.square() * gi / norm, rtol=1e-4, atol=1e-7)
    opt.restore()
    for p, wi in zip(model.parameters(), w):
        assert torch.equal(p.detach(), wi)


def test_meter_counts_two_passes():
    model = tiny_model()
    meter = Meter()
    x, y = toy_batch(n=10)
    SAM(model.parameters(), lr=0.1).step(ModelClosure(model, x, y, meter=meter))
    assert (meter.forward_passes, meter.backward_passes, meter.backward_samples) == (2, 2, 20)


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), "0.1"])
def test_bad_rho_raises_naming_value(rho):
    with pytest.raises(ValueError, match="rho"):
        SAM(tiny_model().parameters(), rho=rho, lr=0.1)


def test_step_without_closure_raises():
    with pytest.raises(RuntimeError, match="closure"):
        SAM(tiny_model().parameters(), lr=0.1).step()


def test_state_dict_carries_base_momentum_and_keeps_groups_shared():
    model = tiny_model()
    opt = SAM(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, steps=2)
    state = opt.state_dict()
    assert state["base"]["state"], "momentum buffers must be saved"
    fresh = SAM(tiny_model().parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(state)
    assert fresh.param_groups is fresh.base_optimizer.param_groups
    fresh.param_groups[0]["lr"] = 0.5
    assert fresh.base_optimizer.param_groups[0]["lr"] == 0.5


def test_the_documented_clipping_and_loss_hook_example_runs_and_clips_both_passes():
    """docs/sam.md's example, run as written: every backward the step ran is clipped before use."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "sam.md").read_text()
    section = text.split("### Clipping, loss hooks")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    model = tiny_model()
    x, y = toy_batch()
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm):
        params = list(params)
        clip(params, max_norm)
        norms.append(torch.stack([p.grad.norm() for p in params if p.grad is not None]).norm().item())

    namespace = {"model": model, "x": x, "y": y}
    torch.nn.utils.clip_grad_norm_ = recording
    try:
        exec(compile(code, "docs/sam.md", "exec"), namespace)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    assert len(norms) == 2 and all(n <= 1.0 + 1e-5 for n in norms)  # both passes, clipped
    assert torch.isfinite(namespace["loss"])


# ----- the ascent pass on part of the batch (ascent_fraction) ----------------------------------------------------
def test_ascent_fraction_takes_g_from_the_first_examples_and_descends_on_the_whole_batch():
    """e = rho * g_S / ||g_S|| with g_S the gradient of the first ceil(f * B) examples (computed here
    independently); the second pass runs on all B; BatchNorm statistics move with the sub-batch."""
    model, ref = tiny_model(), tiny_model()
    x, y = toy_batch(n=16)
    opt = SAM(model.parameters(), rho=0.3, lr=0.0, ascent_fraction=0.3)  # ceil(0.3 * 16) = 5
    seen, meter = [], Meter()

    class Spy(ModelClosure):
        def __call__(self, **kw):
            seen.append(([p.detach().clone() for p in model.parameters()], kw.get("subset")))
            return super().__call__(**kw)

    opt.step(Spy(model, x, y, meter=meter))
    (w0, subset), (w1, second) = seen
    assert subset.tolist() == [0, 1, 2, 3, 4] and second is None
    assert meter.backward_samples == 5 + 16
    torch.nn.functional.cross_entropy(ref(x[:5]), y[:5]).backward()  # also the only BatchNorm update
    norm = torch.stack([p.grad.norm() for p in ref.parameters()]).norm()
    for a, b, p in zip(w0, w1, ref.parameters()):
        torch.testing.assert_close(b - a, 0.3 * p.grad / norm, rtol=1e-4, atol=1e-7)
    assert torch.equal(model.bn.running_mean, ref.bn.running_mean)
    assert torch.equal(model.bn.running_var, ref.bn.running_var)


def test_ascent_fraction_one_or_covering_the_batch_is_sam_bit_for_bit():
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    train(a, SAM(a.parameters(), rho=0.2, **HP))
    train(b, SAM(b.parameters(), rho=0.2, ascent_fraction=1.0, **HP))
    train(c, SAM(c.parameters(), rho=0.2, ascent_fraction=0.999, **HP))  # ceil(0.999 * 16) = 16: no subset
    assert all(torch.equal(wa, wb) and torch.equal(wa, wc) for wa, wb, wc in zip(weights(a), weights(b), weights(c)))
    d = tiny_model()
    train(d, SAM(d.parameters(), rho=0.2, ascent_fraction=0.5, **HP))
    assert any(not torch.equal(wa, wd) for wa, wd in zip(weights(a), weights(d)))


def test_ascent_fraction_needs_a_closure_that_takes_a_subset():
    model = tiny_model()
    x, y = toy_batch()
    opt = SAM(model.parameters(), lr=0.1, ascent_fraction=0.5)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"ascent_fraction=0.5 .*ModelClosure"):
        opt.step(closure)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), "half"])
def test_bad_ascent_fraction_raises_naming_it(fraction):
    with pytest.raises(ValueError, match="ascent_fraction"):
        SAM(tiny_model().parameters(), lr=0.1, ascent_fraction=fraction)
