"""The training loop: determinism, shared initial weights and batches, measured passes and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import run_config

from suite import build, harness
from suite.config import TrainConfig
from suite.data import synthetic_dataset

TRAIN = TrainConfig(dataset="synthetic", model="resnet8", epochs=2, batch_size=32, train_subset=160,
                    test_subset=100, eval_batch_size=100, flop_steps=1)
from suite.metrics import EPOCH_VARIES, varying_keys  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_train=400, n_test=100)


def config(name, seed=0, train=TRAIN, **hp):
    return run_config(name, train, seed, **hp)


def comparable(record):
    metrics = {k: v for k, v in record["metrics"].items() if k not in varying_keys()}
    epochs = [{k: v for k, v in e.items() if k not in EPOCH_VARIES} for e in record["epochs"]]
    return metrics, epochs


def test_same_seed_same_metrics(dataset):
    a = harness.run(config("sam"), dataset, progress=False)
    b = harness.run(config("sam"), dataset, progress=False)
    assert comparable(a) == comparable(b)


def test_different_seed_different_run(dataset):
    a = harness.run(config("sgd", seed=0), dataset, progress=False)
    b = harness.run(config("sgd", seed=1), dataset, progress=False)
    assert comparable(a) != comparable(b)


def test_every_optimizer_sees_the_same_weights_and_batches(dataset):
    """SAM with rho = 0 is SGD: identical curves only if init, order and augmentation are shared."""
    sgd = harness.run(config("sgd"), dataset, progress=False)
    sam0 = harness.run(config("sam", rho=0.0), dataset, progress=False)
    assert [e["train_loss"] for e in sgd["epochs"]] == [e["train_loss"] for e in sam0["epochs"]]
    assert sgd["metrics"]["test_acc"] == sam0["metrics"]["test_acc"]


def test_record_measures_passes_flops_and_time(dataset):
    sgd = harness.run(config("sgd"), dataset, progress=False)["metrics"]
    sam = harness.run(config("sam"), dataset, progress=False)["metrics"]
    assert (sgd["forward_passes_per_step"], sgd["backward_passes_per_step"]) == (1, 1)
    assert (sam["forward_passes_per_step"], sam["backward_passes_per_step"]) == (2, 2)
    assert sgd["backward_samples_per_step"] == 32
    assert sam["flops_per_step"] == pytest.approx(2 * sgd["flops_per_step"], rel=1e-3)
    steps = 2 * (160 // 32)
    assert sgd["steps"] == steps and sgd["timed_steps"] == steps - 1 and sgd["flop_counted_steps"] == 1
    assert sgd["time_per_step_s"] > 0 and sgd["samples_per_s"] > 0 and sgd["peak_memory_mb"] > 0


def test_record_carries_what_made_it(dataset):
    record = harness.run(config("sgd"), dataset, progress=False)
    assert record["config"]["train"]["model"] == "resnet8"
    assert record["config"]["hparams"]["lr"] == TRAIN.lr
    assert {"torch", "python", "git_commit", "device", "processor", "cpu_capability"} <= set(record["env"])
    assert len(record["epochs"]) == 2 and record["epochs"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert record["data"]["train_size"] == 160


def test_flop_window_declared_by_a_spec_is_honoured(dataset, monkeypatch):
    import dataclasses

    from suite import registry

    info = dataclasses.replace(registry.get("sgd"), flop_window=lambda opt: 3)
    monkeypatch.setattr(registry, "OPTIMIZERS", [info, *registry.OPTIMIZERS[1:]])
    m = harness.run(config("sgd"), dataset, progress=False)["metrics"]
    assert m["flop_counted_steps"] == 3 and m["timed_steps"] == m["steps"] - 3


def test_divergence_is_recorded_not_raised(dataset):
    m = harness.run(config("sgd", lr=1e12), dataset, progress=False)["metrics"]
    assert m["status"] == "diverged" and m["diverged_at_step"] >= 1


def reading_every_step(monkeypatch):
    """What the loop read before it read once per epoch: each step's loss, as a float after the step (a spy
    on ``optimizer_step``), and how often it reads the epoch's losses (``mean_of``)."""
    seen, reads = [], []
    step, mean_of = build.optimizer_step, harness.mean_of
    monkeypatch.setattr(harness, "optimizer_step", lambda *a: seen.append(float(step(*a))) or torch.tensor(seen[-1]))
    monkeypatch.setattr(harness, "mean_of", lambda t: reads.append(t.numel()) or mean_of(t))
    return seen, reads


def test_the_loss_is_read_once_an_epoch_with_the_figures_a_read_each_step_gave(dataset, monkeypatch):
    """No host synchronisation per step (issue 25): one read of the epoch's losses, and the record's
    figures are the floats a per-step read gives, summed in step order (equal, not close)."""
    seen, reads = reading_every_step(monkeypatch)
    record = harness.run(config("sam"), dataset, progress=False)
    per_epoch = 160 // 32
    assert reads == [per_epoch, per_epoch], "one read of all the epoch's losses, each epoch"
    for e, row in enumerate(record["epochs"]):
        assert row["train_loss"] == sum(seen[e * per_epoch:(e + 1) * per_epoch], 0.0) / per_epoch
    assert record["metrics"]["last_finite_loss"] == seen[-1] and record["metrics"]["status"] == "finished"


def test_a_diverged_run_names_the_step_a_read_each_step_would_have(dataset, monkeypatch):
    """Read once an epoch, a diverged run still names its first non-finite step and the loss before it;
    it stops at that epoch's end, having run (and counted) the epoch's later steps."""
    seen, _ = reading_every_step(monkeypatch)
    m = harness.run(config("sgd", lr=1e12), dataset, progress=False)["metrics"]
    first_bad = next(i for i, v in enumerate(seen) if not math.isfinite(v))
    assert m["status"] == "diverged" and m["diverged_at_step"] == first_bad + 1
    assert m["last_finite_loss"] == (seen[first_bad - 1] if first_bad else None)
    assert len(seen) == 160 // 32 and m["steps"] == len(seen), "the rest of the epoch ran; no second epoch"


def test_evaluation_gives_the_figures_of_a_read_each_batch(dataset):
    """The test loss and accuracy, read once, equal the sums of per-batch reads in batch order."""
    import dataclasses

    from torch.nn.functional import cross_entropy

    train = dataclasses.replace(TRAIN, eval_batch_size=30)  # 100 test examples: four batches, the last short
    ctx, state = harness.fit(config("sgd", train=train), dataset, progress=False)
    loss, correct, model = 0.0, 0, state.model.eval()
    with torch.no_grad():
        for i in range(0, len(ctx.eval_split), 30):
            out = model(ctx.augment.normalise(ctx.eval_split.images[i:i + 30]))
            y = ctx.eval_split.labels[i:i + 30]
            loss += cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    got = build.evaluate(model, ctx.eval_split, ctx.augment, train, torch.device("cpu"))
    assert got == (loss / len(ctx.eval_split), correct / len(ctx.eval_split)) and model.training


def test_batch_larger_than_the_data_is_refused(dataset):
    import dataclasses

    train = dataclasses.replace(TRAIN, batch_size=1000)
    with pytest.raises(ValueError, match="batch_size 1000"):
        harness.run(config("sgd", train=train), dataset, progress=False)


def test_the_realised_mask_density_and_its_range_are_recorded(dataset):
    """A structured mask takes whole tensors and falls short of its target; SSAM-D's density is exact
    for unstructured masks at every update. Both are recorded (and SGD, without a mask, says None)."""
    structured = harness.run(config("ssam-f-structured-explicit", update_every=2), dataset, progress=False)
    m = structured["metrics"]
    assert 0 < m["mask_density_min"] <= m["mask_density"] <= m["mask_density_max"] <= 0.5
    assert m["mask_density_min"] < 0.5, "whole tensors: short of the 0.5 target on this net"
    dynamic = harness.run(config("ssam-d-unstructured-explicit", update_every=2), dataset, progress=False)
    assert dynamic["metrics"]["mask_density_min"] == pytest.approx(0.5, abs=1e-4)
    assert dynamic["metrics"]["mask_density_max"] == pytest.approx(0.5, abs=1e-4)
    assert harness.run(config("sgd"), dataset, progress=False)["metrics"]["mask_density"] is None
    assert structured["optimizer"]["origin"] == "as in the paper's code"


# ----- steps of two kinds (registry.StepMix): a record prices them by the share the run realised ------------------
EIGHT = TrainConfig(dataset="synthetic", model="resnet8", epochs=1, batch_size=32, train_subset=256,
                    test_subset=100, eval_batch_size=100, flop_steps=1)  # 8 steps


@pytest.fixture(scope="module")
def kinds(dataset):
    """FLOPs of an SGD step and of a SAM step, from those optimizers' own records on the same 8 steps."""
    sgd = harness.run(config("sgd", train=EIGHT), dataset, progress=False)["metrics"]["flops_per_step"]
    sam = harness.run(config("sam", train=EIGHT), dataset, progress=False)["metrics"]["flops_per_step"]
    assert sam == pytest.approx(2 * sgd)
    return sgd, sam


def test_late_sams_record_prices_its_sam_steps_not_its_first_steps(dataset, kinds):
    """T = 8, SAM from step ceil(0.75 * 8) = 6: s = 2/8, so 1.25 x SGD's FLOPs a step. The first (FLOP-counted)
    step is SGD's, which once priced the whole run as SGD."""
    m = harness.run(config("late-sam", train=EIGHT, switch_at=0.75), dataset, progress=False)["metrics"]
    sgd, sam = kinds
    assert m["steps"] == 8 and m["sam_step_share"] == 2 / 8 and m["backward_passes_per_step"] == 1.25
    assert (m["flops_per_one_pass_step"], m["flops_per_sam_step"]) == (pytest.approx(sgd), pytest.approx(sam))
    assert m["flops_per_step"] == pytest.approx(6 / 8 * sgd + 2 / 8 * sam) == pytest.approx(1.25 * sgd)
    assert m["budget_train_flops"] == pytest.approx(8 * 1.25 * sgd)


@pytest.mark.parametrize(("name", "hp"), [("ae-sam", {"delta": 0.5}), ("rst", {})])
def test_a_drawn_or_data_dependent_mix_is_priced_by_the_share_the_run_realised(dataset, kinds, name, hp):
    """AE-SAM and RST: (1 - s) SGD's + s SAM's FLOPs, s the run's share of SAM steps over all its steps (the meter's
    extra backward passes). RST was priced by seed 0's first 16 draws before; now by the run's own draws. (AE-SAM's
    averages lag from zero: at delta 0.9 its first 8 steps are all SAM's, at 0.5 five of them are.)"""
    m = harness.run(config(name, train=EIGHT, **hp), dataset, progress=False)["metrics"]
    sgd, sam = kinds
    s = m["backward_passes_per_step"] - 1
    assert 0 < s < 1, "both kinds of step must occur to test the weighting"
    assert m["sam_step_share"] == pytest.approx(s)
    assert m["flops_per_step"] == pytest.approx((1 - s) * sgd + s * sam)


def test_a_method_of_one_kind_of_step_has_no_share(dataset):
    m = harness.run(config("sam", train=EIGHT), dataset, progress=False)["metrics"]
    assert m["sam_step_share"] is None and m["flops_per_sam_step"] is None
