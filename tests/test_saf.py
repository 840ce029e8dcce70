"""SAF and MESA (baselines/saf.py) against hand transcriptions of the authors' training scripts
(github.com/AngusDujw/SAF: SAF_train.py, MESA_train.py and timm's ModelEmaV2, which MESA's teacher is), and the
closure's objective hook they use."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyNet, toy_batch

from baselines import MESA, SAF
from baselines.core import Meter, ModelClosure

N, BATCH, STEPS_PER_EPOCH, EPOCHS, LR = 32, 8, 4, 7, 0.05


def data() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """32 training examples and each epoch's order of them, 4 batches of 8 per epoch."""
    x, y = toy_batch(n=N, seed=5)
    g = torch.Generator().manual_seed(0)
    return x, y, [torch.randperm(N, generator=g)[i * BATCH:(i + 1) * BATCH] for _ in range(EPOCHS) for i in range(4)]


def kl_as_the_code(output: torch.Tensor, reference: torch.Tensor, tau: float) -> torch.Tensor:
    """SAF_train.py's and MESA_train.py's line: kl_div(softmax(out/T).log(), softmax(ref/T)).sum(-1).mean()*T^2."""
    return F.kl_div(F.softmax(output / tau, dim=1).log(), F.softmax(reference / tau, dim=1),
                    reduction="none").sum(-1).mean() * tau**2


def saf_as_the_code(model, x, y, batches, lam, tau, start, minus, end=300):
    """SAF_train.py's train_one_epoch, epoch by epoch (its memory: train_logits[N, minus + 1, classes])."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    train_logits = torch.zeros(N, minus + 1, 3)
    for step, idx in enumerate(batches):
        epoch = step // STEPS_PER_EPOCH
        output = model(x[idx])
        train_logits[idx, epoch % (minus + 1)] = output.detach()
        loss = F.cross_entropy(output, y[idx])
        if epoch > start and epoch < end:
            loss = loss + kl_as_the_code(output, train_logits[idx, (epoch - minus) % (minus + 1)], tau) * lam
        opt.zero_grad()
        loss.backward()
        opt.step()


def mesa_as_the_code(model, x, y, batches, lam, tau, start, decay):
    """MESA_train.py's train_one_epoch with timm's ModelEmaV2 (a deep copy in eval mode, updated after each step
    as decay * ema + (1 - decay) * model over the state dict)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    ema = copy.deepcopy(model).eval()
    for step, idx in enumerate(batches):
        epoch = step // STEPS_PER_EPOCH
        with torch.no_grad():
            ema_output = ema(x[idx])
        output = model(x[idx])
        loss = F.cross_entropy(output, y[idx])
        if epoch > start:
            loss = loss + kl_as_the_code(output, ema_output, tau) * lam
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
                e.copy_(e * decay + (1 - decay) * m) if e.is_floating_point() else e.copy_(m)


def train(opt, model, x, y, batches, meter=None):
    for idx in batches:
        opt.step(ModelClosure(model, x[idx], y[idx], indices=idx, objective=opt.objective, meter=meter))


def assert_same_weights(a, b):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("start", "minus", "end"), [(1, 2, None), (2, 3, None), (0, 1, 5)])
def test_saf_follows_the_codes_training_loop(start, minus, end):
    x, y, batches = data()
    torch.manual_seed(0)
    ours, theirs = TinyNet(), TinyNet()
    theirs.load_state_dict(ours.state_dict())
    saf_as_the_code(theirs, x, y, batches, lam=0.5, tau=2.0, start=start, minus=minus, end=end or 300)
    opt = SAF(ours.parameters(), lr=LR, momentum=0.9, lam=0.5, temperature=2.0, start_epoch=start, past_epochs=minus,
              end_epoch=end, train_size=N, steps_per_epoch=STEPS_PER_EPOCH)
    train(opt, ours, x, y, batches)
    assert_same_weights(ours, theirs)
    plain = TinyNet()  # and the trajectory loss did change the path: SGD alone ends elsewhere
    plain.load_state_dict(_initial())
    sgd = torch.optim.SGD(plain.parameters(), lr=LR, momentum=0.9)
    for idx in batches:
        sgd.step(ModelClosure(plain, x[idx], y[idx]))
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(plain.parameters(), ours.parameters()))


def _initial() -> dict:
    torch.manual_seed(0)
    return TinyNet().state_dict()


@pytest.mark.parametrize(("start", "decay"), [(1, 0.9), (0, 0.5), (3, 0.99)])
def test_mesa_follows_the_codes_training_loop_and_timms_ema(start, decay):
    x, y, batches = data()
    torch.manual_seed(0)
    ours, theirs = TinyNet(), TinyNet()
    theirs.load_state_dict(ours.state_dict())
    mesa_as_the_code(theirs, x, y, batches, lam=0.3, tau=3.0, start=start, decay=decay)
    opt = MESA(ours.parameters(), lr=LR, momentum=0.9, lam=0.3, temperature=3.0, start_epoch=start, ema_decay=decay,
               model=ours, steps_per_epoch=STEPS_PER_EPOCH)
    train(opt, ours, x, y, batches)
    assert_same_weights(ours, theirs)


def test_one_pass_per_step_and_mesas_teacher_forward_is_counted():
    x, y, batches = data()
    for make, forwards in ((lambda m: SAF(m.parameters(), lr=LR, train_size=N, steps_per_epoch=4), 1),
                           (lambda m: MESA(m.parameters(), lr=LR, model=m, steps_per_epoch=4), 2)):
        model = TinyNet()
        meter = Meter()
        train(make(model), model, x, y, batches[:3], meter)
        assert (meter.backward_passes, meter.forward_passes, meter.forward_samples) == (3, 3 * forwards,
                                                                                          3 * forwards * BATCH)


@pytest.mark.parametrize("kind", ["saf", "mesa"])
def test_a_restart_goes_on_as_if_never_stopped(kind):
    """The memory of past outputs (SAF) and the teacher (MESA) travel in state_dict with the step count."""
    x, y, batches = data()

    def make(model):
        if kind == "saf":
            return SAF(model.parameters(), lr=LR, start_epoch=1, past_epochs=2, train_size=N, steps_per_epoch=4)
        return MESA(model.parameters(), lr=LR, start_epoch=1, ema_decay=0.8, model=model, steps_per_epoch=4)

    torch.manual_seed(0)
    straight = TinyNet()
    resumed = copy.deepcopy(straight)
    train(make(straight), straight, x, y, batches)
    first = make(resumed)
    train(first, resumed, x, y, batches[:13])
    saved = copy.deepcopy(first.state_dict())
    again = make(resumed)
    again.load_state_dict(saved)
    train(again, resumed, x, y, batches[13:])
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_closure_without_the_objective_is_one_line():
    model = TinyNet()
    opt = SAF(model.parameters(), lr=LR, train_size=N, steps_per_epoch=4)
    x, y = toy_batch(n=8)
    with pytest.raises(TypeError, match="ModelClosure\\(model, x, y, indices=") as err:
        opt.step(ModelClosure(model, x, y))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="needs each example's index"):
        ModelClosure(model, x, y, objective=opt.objective)
    with pytest.raises(ValueError, match="one per target"):
        ModelClosure(model, x, y, indices=torch.arange(3), objective=opt.objective)


@pytest.mark.parametrize(("make", "words"), [
    (lambda m: SAF(m.parameters(), lr=LR, steps_per_epoch=4), "train_size"),
    (lambda m: SAF(m.parameters(), lr=LR, train_size=N), "steps_per_epoch"),
    (lambda m: SAF(m.parameters(), lr=LR, train_size=N, steps_per_epoch=4, start_epoch=1, past_epochs=3),
     "reaches before training"),
    (lambda m: MESA(m.parameters(), lr=LR, steps_per_epoch=4), "needs model="),
])
def test_what_the_harness_hands_is_checked(make, words):
    with pytest.raises((ValueError, TypeError), match=words):
        make(TinyNet())


def test_the_objective_follows_sub_batches_and_micro_batches():
    """Indices travel with the examples through a subset and a split into micro-batches: SAF's memory rows are
    each example's own, whichever way the closure cuts the batch."""
    x, y, _ = data()
    idx = torch.arange(N).flip(0)[:12]
    model = TinyNet().eval()  # BatchNorm by its running statistics: each example's outputs its own
    for accumulate in (1, 3):
        opt = SAF(model.parameters(), lr=0.0, train_size=N, steps_per_epoch=4)
        closure = ModelClosure(model, x[idx], y[idx], indices=idx, objective=opt.objective, accumulate=accumulate)
        closure(backward=False)
        closure(backward=False, subset=torch.tensor([0, 5]))
        with torch.no_grad():
            expected = model(x[idx])
        torch.testing.assert_close(opt.objective.memory[idx, 0], expected)
        assert not opt.objective.memory[torch.arange(N - 12)].any()  # the other rows untouched
