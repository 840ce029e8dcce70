"""Tuning with the same budget for every method (issue 38 §2): a validation split carved from the training data,
and runs scored on it that never touch the test set."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from helpers import run_config

from suite import build, harness
from suite.config import ConfigError, TrainConfig
from suite.data import Split, synthetic_dataset


def keyed(split: Split) -> Counter:
    """The examples of a split as (image bytes, label): a multiset to compare splits by."""
    return Counter((bytes(img.numpy().tobytes()), int(y)) for img, y in zip(split.images, split.labels))


# ----- the validation split ------------------------------------------------------------------------------------
def test_the_validation_split_is_carved_from_the_noisy_training_set_stratified_and_disjoint():
    data = synthetic_dataset(n_train=300, n_test=40)
    noisy = TrainConfig(dataset="synthetic", train_subset=200, label_noise=0.4)
    full, _ = build.subsets(data, noisy)
    train, val = build.subsets(data, dataclasses.replace(noisy, validation_fraction=0.2))
    assert (len(train), len(val)) == (160, 40)
    # disjoint, and together the training set of a run without validation: same images, same noisy labels
    assert keyed(train) + keyed(val) == keyed(full) and not set(keyed(train)) & set(keyed(val))
    # stratified by the labels a practitioner has (the noisy ones): every class gives its share, within one
    have, held = Counter(full.labels.tolist()), Counter(val.labels.tolist())
    assert all(abs(held[c] - 0.2 * n) < 1 for c, n in have.items())
    # their labels as noisy as the training labels: some validation labels are not the image's true class
    clean, _ = build.subsets(data, dataclasses.replace(noisy, label_noise=0.0))
    truth = {k: y for (k, y) in keyed(clean)}
    assert any(truth[k] != y for (k, y) in keyed(val))


def test_the_validation_split_is_the_same_for_every_seed_and_method():
    data = synthetic_dataset(n_train=120, n_test=20)
    train = TrainConfig(dataset="synthetic", model="tiny-nobn", batch_size=16, train_subset=80, label_noise=0.4,
                        validation_fraction=0.25)
    splits = [harness.context(run_config(name, train, seed=seed), data).eval_split
              for name, seed in (("sgd", 0), ("sam", 1), ("msam", 2))]
    assert all(torch.equal(s.images, splits[0].images) and torch.equal(s.labels, splits[0].labels) for s in splits)


def test_the_validation_fraction_is_part_of_a_runs_identity_and_zero_leaves_old_runs_as_they_were():
    base = TrainConfig(dataset="synthetic")
    plain, held = run_config("sam", base), run_config("sam", dataclasses.replace(base, validation_fraction=0.2))
    assert "validation_fraction" not in plain.as_dict()["train"]  # the runs recorded before it keep their ids
    assert held.as_dict()["train"]["validation_fraction"] == 0.2 and held.run_id != plain.run_id
    other = run_config("sam", dataclasses.replace(base, validation_fraction=0.3))
    assert other.run_id != held.run_id
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ConfigError, match="validation_fraction"):
            TrainConfig(validation_fraction=bad)


def test_a_run_with_validation_reports_val_acc_and_never_evaluates_the_test_set():
    """The test labels are poisoned (out of range): a run that evaluated the test set would fail."""
    data = synthetic_dataset(n_train=80, n_test=20)
    data.test = Split(data.test.images, torch.full_like(data.test.labels, 999))
    train = TrainConfig(dataset="synthetic", model="tiny-nobn", batch_size=16, train_subset=64, device="cpu",
                        validation_fraction=0.25)
    record = harness.run(run_config("sam", train), data, progress=False)
    m = record["metrics"]
    assert 0 <= m["val_acc"] <= 1 and m["val_loss"] > 0
    assert not [k for k in m if k.startswith("test") or "test_set" in k]
    assert all("val_acc" in e and "test_acc" not in e for e in record["epochs"])
    assert record["data"]["val_size"] == 16 and "test_size" not in record["data"]
    with pytest.raises(IndexError):  # the poison bites a run scored on the test set
        harness.run(run_config("sam", dataclasses.replace(train, validation_fraction=0.0)), data, progress=False)
