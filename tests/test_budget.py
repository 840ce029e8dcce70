"""Equal budgets: the arithmetic on known numbers, and runs that stop where their budget ends."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import run_config

from suite import budget, harness, probe
from suite.config import ConfigError, TrainConfig
from suite.data import synthetic_dataset

TRAIN = TrainConfig(dataset="synthetic", model="resnet8", epochs=2, batch_size=32, train_subset=160,
                    test_subset=64, eval_batch_size=64, flop_steps=1)  # 5 steps per epoch


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_train=200, n_test=64)


def config(name, kind, seed=0, **hp):
    return run_config(name, dataclasses.replace(TRAIN, budget=kind), seed, **hp)


def test_amortised_finds_the_periods_extra_work_on_whichever_probed_step_it_fell():
    assert budget.amortised([10.0, 4.0, 4.0], window=5) == pytest.approx((10 + 4 * 4) / 5)
    assert budget.amortised([4.0, 10.0, 4.0], window=5) == pytest.approx((10 + 4 * 4) / 5)  # the paper's timing
    assert budget.amortised([10.0, 4.0], window=5) == pytest.approx((10 + 4 * 4) / 5)
    assert budget.amortised([10.0, 4.0, 4.0, 4.0, 4.0, 9.0], window=5) == pytest.approx(26 / 5)  # a whole period
    assert budget.amortised([3.0, 5.0], window=1) == 3.0


def test_steps_within():
    assert budget.steps_within(100.0, 30.0) == 3
    assert budget.steps_within(0.3 * 3, 0.3) == 3  # 0.9 / 0.3 = 2.9999999999999996 in floating point
    assert budget.steps_within(1.0, 30.0) == 1  # at least one step
    with pytest.raises(ValueError, match="positive"):
        budget.steps_within(1.0, 0.0)


def test_plan_gives_each_optimizer_the_reference_amount():
    b = budget.plan("flops", epochs=3, steps_per_epoch=10, reference="sgd", reference_cost=2.0, own_cost=4.0)
    assert (b["amount"], b["steps"], b["unit"]) == (60.0, 15, "FLOP")
    assert budget.plan("epochs", epochs=3, steps_per_epoch=10)["steps"] == 30


def test_unknown_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown budget 'joules'"):
        TrainConfig(budget="joules")


def test_flops_budget_stops_each_optimizer_at_the_reference_flops(dataset):
    sgd = harness.run(config("sgd", "flops"), dataset, progress=False)["metrics"]
    sam = harness.run(config("sam", "flops"), dataset, progress=False)["metrics"]
    amount = sgd["flops_per_step"] * 10  # the reference's 2 epochs of 5 steps
    assert sgd["budget_amount"] == sam["budget_amount"] == pytest.approx(amount)
    assert sgd["steps"] == 10 and sam["steps"] == 5  # SAM costs exactly twice SGD per step
    for m in (sgd, sam):
        assert m["budget_kind"] == "flops" and m["budget_reference"] == "sgd"
        assert m["budget_train_flops"] <= amount * (1 + 1e-9) < m["budget_train_flops"] + m["flops_per_step"]
        assert m["budget_spent_ratio"] == pytest.approx(1.0)


def test_flops_budget_with_a_periodic_cost_and_a_partial_epoch(dataset):
    """SSAM-F pays a Fisher pass every update_every steps: the probe amortises it, the run stops
    mid-epoch, evaluates there, and its LR schedule ends at the budget."""
    rec = harness.run(config("ssam-f", "flops", update_every=2), dataset, progress=False)
    m = rec["metrics"]
    assert m["steps"] == m["budget_steps"] < 10
    assert rec["epochs"][-1]["step"] == m["steps"]
    assert rec["epochs"][-1]["epochs_done"] == pytest.approx(m["steps"] / 5)
    assert rec["epochs"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    spent, amount = m["budget_train_flops"], m["budget_amount"]
    assert spent <= amount * (1 + 1e-9) < spent + m["flops_per_step"]  # the most whole steps that fit


def test_time_budget_converts_probed_seconds_into_steps(dataset, monkeypatch):
    """Seconds are noisy, so the probe is replaced by known costs: 3 s per SGD step, 7 s per SAM step."""
    seconds = {"sgd": 3.0, "sam": 7.0}
    monkeypatch.setattr(probe, "_COSTS", {})
    monkeypatch.setattr(probe, "fresh_step_cost", lambda cfg, ds, kind: seconds[cfg.optimizer])
    m = harness.run(config("sam", "time"), dataset, progress=False)["metrics"]
    assert m["budget_amount"] == 30.0 and m["budget_unit"] == "s"
    assert m["steps"] == 4  # floor(30 / 7)


def test_epochs_budget_probes_nothing(dataset, monkeypatch):
    monkeypatch.setattr(probe, "fresh_step_cost", lambda *a: pytest.fail("an epochs budget needs no probe"))
    m = harness.run(config("sam", "epochs"), dataset, progress=False)["metrics"]
    assert m["steps"] == 10 and m["budget_spent_ratio"] == 1.0


@pytest.mark.parametrize("timing", ["suite", "paper"])
def test_a_probe_prices_ssam_f_as_a_whole_period_does_whichever_step_refreshes(dataset, timing):
    """The paper's timing refreshes after step 0 (in step 1's call): the probe once took step 0 for the
    refresh step and counted step 1's Fisher pass as every step's, pricing SSAM-F 3% of a SAM step too
    high on the GPU (gpu-paper-short's cost table) and cutting its flops budget by as much."""
    cfg = config("ssam-f", "flops", update_every=20, fisher_samples=32, fisher_data="train", refresh_timing=timing)
    probed = probe.probe_cost(probe.probe_setup(cfg, dataset), "flops")  # 16 of the period's 20 steps
    whole = probe.probe_cost(probe.probe_setup(cfg, dataset), "flops", steps=20)
    assert probe.FLOP_STEPS < 20 and probed == pytest.approx(whole, rel=1e-12)


def test_the_budget_reference_is_priced_with_the_profiles_own_hyper_parameters():
    """A profile's ``[hparams.sam] rho`` reaches SAM's runs and the probe that prices SAM as a budget
    reference alike (the probe used to build the reference with its registered defaults)."""
    from suite import registry
    from suite.config import parse_profile
    from suite.sweep import runs_for

    profile = parse_profile("p", {"optimizers": ["sgd", "sam"], "budgets": ["flops"],
                                  "train": {"dataset": "synthetic", "budget_reference": "sam"},
                                  "hparams": {"sam": {"rho": 0.3}}})
    runs = runs_for(profile, check_device=False)
    sam = next(r for r in runs if r.optimizer == "sam")
    for run in runs:
        reference = probe.reference_config(run)
        assert reference.optimizer == "sam" and dict(reference.hparams)["rho"] == 0.3
        assert reference.hparams == sam.hparams
    assert registry.get("sam").defaults()["rho"] != 0.3
