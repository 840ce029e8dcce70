"""ESAM: SWP draws the stated fraction with the stated scale, SDS keeps exactly the top ceil(gamma*B),
beta = gamma = 1 is SAM bit for bit, and the extra forward is metered."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import closure_for, tiny_model, toy_batch
from torch import nn

from baselines import ESAM, SAM, ModelClosure
from baselines.core import Meter

HP = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


class Spy(ModelClosure):
    """Records every call: its options, the weights it saw, and which parameters wanted gradients."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, **kw):
        params = list(self.model.parameters())
        self.calls.append({"kw": kw, "weights": [p.detach().clone() for p in params],
                           "requires_grad": [p.requires_grad for p in params]})
        return super().__call__(**kw)


class Deep(nn.Module):
    """Many small tensors, so that the drawn fraction can be measured."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(6, 6) for _ in range(20)], nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1)[:, :6])


def test_beta_and_gamma_one_is_sam_bit_for_bit():
    a, b = tiny_model(), tiny_model()
    sam, esam = SAM(a.parameters(), rho=0.2, **HP), ESAM(b.parameters(), rho=0.2, beta=1.0, gamma=1.0, **HP)
    for i in range(5):
        x, y = toy_batch(seed=i)
        la, lb = sam.step(closure_for(a, x, y)), esam.step(closure_for(b, x, y))
        assert torch.equal(la, lb)
    for wa, wb in zip(a.state_dict().values(), b.state_dict().values()):  # BatchNorm buffers included
        assert torch.equal(wa, wb)


def test_defaults_are_the_papers():
    opt = ESAM(tiny_model().parameters(), lr=0.1)
    assert (opt.defaults["rho"], opt.defaults["beta"], opt.defaults["gamma"], opt.defaults["swp"]) == \
        (0.05, 0.6, 0.5, "tensor")


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_swp_tensor_draws_beta_of_the_tensors_and_skips_their_first_backward(beta):
    model = Deep()
    opt = ESAM(model.parameters(), rho=0.1, beta=beta, gamma=1.0, lr=0.0, seed=3)
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    drawn, total = 0, 0
    for _ in range(60):
        spy = Spy(model, x, y)
        opt.step(spy)
        first, second = spy.calls
        chosen = first["requires_grad"]
        assert all(second["requires_grad"]), "the second pass computes every gradient"
        # the perturbation: e = rho * g_c / (beta * ||g_c||) on drawn tensors, exactly 0 elsewhere
        params = list(model.parameters())
        for p, c in zip(params, chosen):
            p.requires_grad_(c)
        ModelClosure(model, x, y)()
        grads = [p.grad if c else None for p, c in zip(params, chosen)]
        for p in params:
            p.requires_grad_(True)
        if any(chosen):
            norm = torch.stack([g.norm() for g in grads if g is not None]).norm()
        for w0, w1, g in zip(first["weights"], second["weights"], grads):
            if g is None:
                assert torch.equal(w1, w0)
            else:
                torch.testing.assert_close(w1 - w0, 0.1 * g / (beta * norm), rtol=1e-4, atol=1e-7)
        drawn += sum(chosen)
        total += len(chosen)
    sd = math.sqrt(total * beta * (1 - beta))
    assert abs(drawn - beta * total) < 4 * sd, (drawn, total)


def test_swp_element_draws_beta_of_the_weights_scaled_by_one_over_beta():
    model = Deep()
    beta = 0.6
    opt = ESAM(model.parameters(), rho=0.1, beta=beta, gamma=1.0, swp="element", lr=0.0, seed=1)
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    spy = Spy(model, x, y)
    opt.step(spy)
    first, second = spy.calls
    assert all(first["requires_grad"]), "the element form computes the dense first gradient"
    ModelClosure(model, x, y)()
    grads = [p.grad for p in model.parameters()]
    sam_e = [0.1 * g / torch.stack([g.norm() for g in grads]).norm() for g in grads]
    kept, total = 0, 0
    for w0, w1, e in zip(first["weights"], second["weights"], sam_e):
        moved = w1 - w0
        on = moved != 0
        torch.testing.assert_close(moved[on], e[on] / beta, rtol=1e-4, atol=1e-7)
        kept += int(on.sum())
        total += on.numel() - int((e == 0).sum())
    assert abs(kept - beta * total) < 4 * math.sqrt(total * beta * (1 - beta))


@pytest.mark.parametrize(("batch", "gamma", "expected"), [(10, 0.25, 3), (10, 0.7, 7), (16, 0.5, 8), (7, 0.5, 4),
                                                          (5, 0.01, 1)])
def test_sds_keeps_exactly_the_top_ceil_gamma_b_by_sharpness(batch, gamma, expected):
    model = tiny_model()
    opt = ESAM(model.parameters(), rho=0.5, beta=1.0, gamma=gamma, lr=0.0)
    x, y = toy_batch(n=batch)
    spy = Spy(model, x, y)
    opt.step(spy)
    assert [c["kw"] for c in spy.calls[1:]] == [
        {"backward": False, "per_sample": True, "freeze_bn": True},
        {"subset": spy.calls[2]["kw"]["subset"], "freeze_bn": True},
    ]
    subset = spy.calls[2]["kw"]["subset"]
    assert len(subset) == expected
    # recompute the sharpness independently: losses at w, and at the weights the selection forward saw
    fn = torch.nn.functional.cross_entropy
    check = tiny_model()
    with torch.no_grad():
        before = fn(check(x), y, reduction="none")
        for p, w in zip(check.parameters(), spy.calls[1]["weights"]):
            p.copy_(w)
        check.bn.track_running_stats = False
        after = fn(check(x), y, reduction="none")
    sharpness = after - before
    chosen = set(subset.tolist())
    rest = [i for i in range(batch) if i not in chosen]
    assert rest and min(sharpness[list(chosen)]) >= max(sharpness[rest])


def test_sds_with_ties_still_keeps_exactly_ceil_gamma_b():
    opt = ESAM(tiny_model().parameters(), gamma=0.5, lr=0.1)
    picked = opt.select(torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 2.0]))
    assert len(picked) == 3 and 5 in picked.tolist()  # the official strict '>' would keep only 1 here


def test_the_selection_forward_is_metered():
    model, meter = tiny_model(), Meter()
    opt = ESAM(model.parameters(), beta=1.0, gamma=0.25, lr=0.1)
    x, y = toy_batch(n=16)
    opt.step(ModelClosure(model, x, y, meter=meter))
    assert (meter.forward_passes, meter.backward_passes) == (3, 2)
    assert (meter.forward_samples, meter.backward_samples) == (16 + 16 + 4, 16 + 4)


def test_batchnorm_statistics_move_once_per_step():
    model, ref = tiny_model(), tiny_model()
    x, y = toy_batch()
    ESAM(model.parameters(), rho=0.5, beta=1.0, gamma=0.5, lr=0.0).step(closure_for(model, x, y))
    ref(x)
    assert model.bn.num_batches_tracked.item() == 1
    assert torch.equal(model.bn.running_mean, ref.bn.running_mean)


def test_when_no_tensor_is_drawn_the_step_is_sgd_on_the_selected_samples():
    model = tiny_model()
    opt = ESAM(model.parameters(), rho=0.5, beta=0.01, gamma=1.0, lr=0.0, seed=0)
    x, y = toy_batch()
    spy = Spy(model, x, y)
    opt.step(spy)
    # gamma = 1: nothing to select; sync=False: under DDP the ascent pass is not all-reduced
    assert spy.calls[0]["kw"] == {"backward": False, "per_sample": False, "sync": False}
    assert all(torch.equal(a, b) for a, b in zip(spy.calls[0]["weights"], spy.calls[1]["weights"]))


def test_plain_user_closure():
    model = tiny_model()
    x, y = toy_batch()

    def closure():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    ESAM(model.parameters(), beta=0.01, gamma=1.0, lr=0.1).step(closure)  # draws nothing: still runs
    with pytest.raises(ValueError, match="per_sample, subset"):
        ESAM(model.parameters(), gamma=0.5, lr=0.1).step(closure)


@pytest.mark.parametrize(("kw", "match"), [({"beta": 0.0}, "beta"), ({"beta": 1.5}, "beta"), ({"gamma": 0}, "gamma"),
                                           ({"gamma": True}, "gamma"), ({"swp": "layer"}, "swp"), ({"rho": -1}, "rho")])
def test_bad_hyper_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        ESAM(tiny_model().parameters(), lr=0.1, **kw)


def test_each_parameter_group_draws_with_its_own_beta():
    model = tiny_model()
    opt = ESAM([{"params": [model.conv.weight, model.bn.weight, model.bn.bias], "beta": 1.0},
                {"params": list(model.fc.parameters()), "beta": 0.02}], gamma=1.0, lr=0.0, seed=0)
    x, y = toy_batch()
    first = []
    for _ in range(20):
        spy = Spy(model, x, y)
        opt.step(spy)
        first.append(spy.calls[0]["requires_grad"])
    assert all(all(r[:3]) for r in first), "beta 1: always drawn"
    assert sum(r[3] for r in first) <= 3, "beta 0.02: almost never drawn"


def test_a_mean_reduced_loss_is_refused_rather_than_training_on_the_whole_batch():
    """Data selection needs per-sample losses; a loss_fn that reduces them must fail, not become SAM."""
    model = tiny_model()
    x, y = toy_batch()
    opt = ESAM(model.parameters(), rho=0.5, beta=1.0, gamma=0.5, lr=0.1)
    mean_loss = ModelClosure(model, x, y, loss_fn=torch.nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="one loss per sample"):
        opt.step(mean_loss)


def test_a_closure_declaring_per_sample_but_returning_one_number_is_refused():
    model = tiny_model()
    x, y = toy_batch()

    class Liar(ModelClosure):
        def __call__(self, **kw):
            return super().__call__(**{**kw, "per_sample": False})

    opt = ESAM(model.parameters(), rho=0.5, beta=1.0, gamma=0.5, lr=0.1)
    with pytest.raises(ValueError, match="one loss per sample"):
        opt.step(Liar(model, x, y))


def test_with_gamma_one_a_mean_reduced_loss_is_fine():
    model = tiny_model()
    x, y = toy_batch()
    ESAM(model.parameters(), rho=0.5, beta=1.0, gamma=1.0, lr=0.1).step(
        ModelClosure(model, x, y, loss_fn=torch.nn.functional.cross_entropy))


def test_with_an_ascent_sub_batch_beta_and_gamma_one_is_sam_with_the_same_sub_batch():
    a, b = tiny_model(), tiny_model()
    sam = SAM(a.parameters(), rho=0.2, ascent_fraction=0.25, **HP)
    esam = ESAM(b.parameters(), rho=0.2, beta=1.0, gamma=1.0, ascent_fraction=0.25, **HP)
    for i in range(4):
        x, y = toy_batch(seed=i)
        assert torch.equal(sam.step(closure_for(a, x, y)), esam.step(closure_for(b, x, y)))
    assert all(torch.equal(wa, wb) for wa, wb in zip(a.state_dict().values(), b.state_dict().values()))


def test_drawn_tensors_and_the_ascent_sub_batch_combine():
    torch.manual_seed(0)
    model = Deep()
    x, y = torch.randn(16, 6), torch.arange(16) % 3
    spy = Spy(model, x, y)
    ESAM(model.parameters(), beta=0.5, gamma=1.0, ascent_fraction=0.5, lr=0.1).step(spy)
    first, second = spy.calls
    assert first["kw"]["subset"].tolist() == list(range(8)) and "subset" not in second["kw"]
    assert 0 < sum(first["requires_grad"]) < len(first["requires_grad"]) and all(second["requires_grad"])


def test_data_selection_with_an_ascent_sub_batch_is_refused():
    with pytest.raises(ValueError, match="gamma=0.5 < 1.*ascent_fraction=0.5"):
        ESAM(tiny_model().parameters(), gamma=0.5, ascent_fraction=0.5, lr=0.1)
