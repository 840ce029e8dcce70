"""The training loop: determinism, shared initial weights and batches, measured passes and FLOPs."""

from __future__ import annotations

import pytest
from helpers import run_config

from suite import harness
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
    assert {"torch", "python", "git_commit", "device", "processor"} <= set(record["env"])
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
