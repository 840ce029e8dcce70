"""Equal budgets: the arithmetic on known numbers, and runs that stop where their budget ends."""

from __future__ import annotations

import dataclasses
import math

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


# ----- steps of two kinds (registry.StepMix): each kind priced, weighted by the share expected over the run -------
def late(switch_at=0.875):
    return lambda steps: steps - math.ceil(round(switch_at * steps, 9))


def test_a_mixed_step_gets_the_most_steps_whose_expected_cost_fits():
    """Late-phase SAM at 1 FLOP a one-pass step, 2 a SAM step, 10 FLOPs: 9 steps (8 SGD's + 1 SAM's = 10); 10 steps
    would have 1 SAM step too (ceil(8.75) = 9) and cost 11. RST at p 0.5: 1.5 a step, 20 steps in 30."""
    mix = budget.Mix(1.0, 2.0, late())
    assert budget.steps_within_mixed(10.0, mix) == 9 and mix.total(9) == 10.0 and mix.total(10) == 11.0
    assert budget.steps_within_mixed(30.0, budget.Mix(1.0, 2.0, lambda t: 0.5 * t)) == 20
    assert budget.steps_within_mixed(1.0, mix) == 1  # at least one step
    b = budget.plan("flops", epochs=2, steps_per_epoch=5, reference="sgd", reference_cost=1.0, mix=mix)
    assert (b["steps"], b["planned_sam_share"], b["probed_cost_per_step"]) == (9, 1 / 9, pytest.approx(10 / 9))
    assert (b["probed_cost_one_pass_step"], b["probed_cost_sam_step"]) == (1.0, 2.0)


def test_a_flops_budget_plans_late_sam_with_its_sam_steps_and_spends_it(dataset):
    """The reference's 10 SGD steps buy late-phase SAM 9 steps, its last (ceil(0.875 * 9) = 8) a SAM step: priced
    by its first steps (all SGD's) it got 10 and overspent by a tenth. Its record prices the run by kind too."""
    sgd = harness.run(config("sgd", "flops"), dataset, progress=False)["metrics"]
    m = harness.run(config("late-sam", "flops"), dataset, progress=False)["metrics"]
    assert m["budget_steps"] == m["steps"] == 9 and m["budget_planned_sam_share"] == pytest.approx(1 / 9)
    assert m["sam_step_share"] == pytest.approx(1 / 9) and m["backward_passes_per_step"] == pytest.approx(10 / 9)
    assert m["budget_probed_cost_one_pass_step"] == pytest.approx(sgd["flops_per_step"])
    assert m["budget_probed_cost_sam_step"] == pytest.approx(2 * sgd["flops_per_step"])
    assert m["flops_per_step"] == pytest.approx(10 / 9 * sgd["flops_per_step"])
    assert m["budget_train_flops"] == pytest.approx(m["budget_amount"]) and m["budget_spent_ratio"] == pytest.approx(1)


def test_a_flops_budget_plans_ae_sam_with_its_declared_share_and_records_what_it_spent(dataset):
    """AE-SAM's gradients decide its steps, so the plan takes the declared share 0.5: 10 SGD steps' FLOPs buy
    6 steps at 1.5 each (9 of 10). The record says what the share it realised spent, whatever it was."""
    sgd = harness.run(config("sgd", "flops"), dataset, progress=False)["metrics"]
    m = harness.run(config("ae-sam", "flops", delta=0.5), dataset, progress=False)["metrics"]
    assert m["budget_steps"] == m["steps"] == 6 and m["budget_planned_sam_share"] == 0.5
    s = m["backward_passes_per_step"] - 1
    assert 0 < s < 1 and m["sam_step_share"] == pytest.approx(s)  # delta 0.5: its averages lag less than at 0.9
    assert m["budget_spent_ratio"] == pytest.approx(6 * (1 + s) * sgd["flops_per_step"] / m["budget_amount"])


def test_a_time_budget_prices_each_kind_of_late_sams_steps(dataset, monkeypatch):
    """3 s a one-pass step, 7 s a SAM step, 30 s: 8 steps (7 SGD's + 1 SAM's = 28 s; 9 would take 31 s)."""
    seconds = {"sgd": 3.0, "sam": 7.0}

    def fake(cfg, ds, kind, two_passes=None):
        if cfg.optimizer == "late-sam":
            assert two_passes is not None, "late-phase SAM is priced by kind"
            return seconds["sam" if two_passes else "sgd"]
        return seconds[cfg.optimizer]

    monkeypatch.setattr(probe, "_COSTS", {})
    monkeypatch.setattr(probe, "fresh_step_cost", fake)
    m = harness.run(config("late-sam", "time"), dataset, progress=False)["metrics"]
    assert m["budget_amount"] == 30.0 and m["steps"] == 8 and m["budget_planned_sam_share"] == 1 / 8
