"""Profiles that start from another (``extends``), and the paper's presets: they load and start."""

from __future__ import annotations

import dataclasses
import re

import pytest
from helpers import run_config

from suite.config import ConfigError, available_profiles, load_profile


def test_a_profile_extends_another_table_by_table(tmp_path):
    (tmp_path / "base.toml").write_text('seeds = 2\noptimizers = ["sgd", "sam"]\n[train]\nepochs = 3\nlr = 0.1\n'
                                        '[hparams.sam]\nrho = 0.1\nadaptive = true\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\nseeds = 3\n[train]\nepochs = 1\n'
                                         '[hparams.sam]\nrho = 0.2\n')
    child = load_profile(str(tmp_path / "child.toml"))
    assert child.name == "child" and child.seeds == 3 and child.optimizers == ("sgd", "sam")
    assert (child.train.epochs, child.train.lr) == (1, 0.1)  # one [train] value changed, the rest kept
    assert child.hparams["sam"] == {"rho": 0.2, "adaptive": True}
    shipped = tmp_path / "fast.toml"
    shipped.write_text('extends = "cpu"\n[train]\nepochs = 1\n')  # a shipped profile by name
    fast, cpu = load_profile(str(shipped)), load_profile("cpu")
    assert fast.train == dataclasses.replace(cpu.train, epochs=1) and fast.hparams == cpu.hparams


@pytest.mark.parametrize("text, message", [
    ('extends = "loop.toml"\n', "extends itself"),
    ('extends = "missing.toml"\n', "does not exist"),
    ('extends = "nope"\n', "unknown profile 'nope'; known: benchmark, cost, cpu,"),
    ('extends = "smok"\n', "unknown profile 'smok'; did you mean 'smoke'? known: benchmark, cost, cpu,"),
    ("extends = 3\n", "extends must name a profile or a .toml path, got 3"),
])
def test_a_bad_extends_is_one_line(tmp_path, capsys, text, message):
    from helpers import refused_in_one_line

    (tmp_path / "loop.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_profile(str(tmp_path / "loop.toml"))
    refused_in_one_line(capsys, ["run", "--profile", str(tmp_path / "loop.toml")], message, tmp_path / "out")


PRESETS = [name for name in available_profiles() if name.startswith("paper-")]


def test_the_presets_are_the_papers_settings_on_each_data_set_and_model():
    assert set(PRESETS) >= {"paper-cifar10", "paper-cifar100", "paper-cifar10-wrn28-10", "paper-cifar100-wrn28-10",
                            "paper-imagenet-resnet50"}
    base = load_profile("paper-cifar10")
    for name in [n for n in PRESETS if "cifar" in n]:
        p = load_profile(name)
        assert p.hparams == base.hparams and (p.train.epochs, p.train.lr, p.train.cutout) == (200, 0.05, 16)
        assert p.train.dataset == ("cifar100" if "cifar100" in name else "cifar10")
        assert p.train.model == ("wrn28_10" if "wrn28-10" in name else "resnet18")


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_starts_a_few_steps_on_the_cpu(name):
    """Each preset's model and SAM settings, two steps on 8 generated images (its own data needs a GPU's
    time and a download)."""
    from suite import harness, registry
    from suite.data import load_dataset

    profile = load_profile(name)
    train = dataclasses.replace(profile.train, dataset="synthetic", device="cpu", batch_size=4, train_subset=8,
                                test_subset=8, eval_batch_size=8, epochs=1, flop_steps=1, streaming=False)
    config = run_config("sam", train, profile=name, **profile.overrides_for(("sam", *registry.get("sam").aliases)))
    record = harness.run(config, load_dataset("synthetic", None, False), progress=False)
    assert record["metrics"]["status"] == "finished" and record["metrics"]["steps"] == 2
    assert record["optimizer"]["hparams"]["rho"] == profile.hparams["sam*"]["rho"]
    assert record["config"]["train"]["model"] == profile.train.model


def test_the_imagenet_preset_streams_resnet50_with_the_recipes_values():
    p = load_profile("paper-imagenet-resnet50")
    assert (p.train.model, p.train.streaming, p.train.image_size, p.train.epochs) == ("timm:resnet50", True, 224, 90)
    assert (p.train.batch_size, p.train.lr, p.train.weight_decay) == (256, 0.1, 1e-4)
    assert p.hparams["sam*"]["rho"] == p.hparams["ssam-*"]["rho"] == 0.05
    assert p.hparams["ssam-f*"]["fisher_samples"] == 128  # the README's SSAM settings, from paper-cifar10


def test_the_own_data_profile_sizes_training_by_the_data(digits_dir, tmp_path):
    """On a small set of one's own (scikit-learn's digits: 8x8 grayscale, 7 classes) the cpu profile's 3
    epochs are ~50 steps and near chance; own-data trains the whole set for at least its min_steps, and
    learns. The README names this profile where it explains --dataset."""
    import json
    from pathlib import Path

    from suite.cli import main

    profile = load_profile("own-data")
    assert profile.train.min_steps > 0 and (profile.train.train_subset, profile.train.test_subset) == (0, 0)
    assert "--profile own-data" in (Path(__file__).resolve().parent.parent / "README.md").read_text()
    out, child = tmp_path / "out", tmp_path / "own.toml"
    child.write_text('extends = "own-data"\n[train]\nmin_steps = 200\n')  # its settings, a third of its steps
    profile = load_profile(str(child))
    assert main(["run", "--profile", str(child), "--dataset", "digits", "--data-dir", str(digits_dir),
                 "--optimizer", "sgd", "--seeds", "1", "--results-dir", str(out), "--no-progress",
                 "--no-report"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs" / "own").glob("*.json")]
    steps_per_epoch = record["data"]["train_size"] // profile.train.batch_size
    assert record["metrics"]["steps"] == steps_per_epoch * -(-profile.train.min_steps // steps_per_epoch)
    assert record["metrics"]["steps"] >= profile.train.min_steps > profile.train.epochs * steps_per_epoch
    assert record["metrics"]["test_acc"] > 0.5  # chance is 1/7


def test_min_steps_leaves_a_large_set_at_its_epochs():
    from suite.config import TrainConfig

    assert TrainConfig(epochs=3, min_steps=600).epochs_for(steps_per_epoch=50) == 12
    assert TrainConfig(epochs=3, min_steps=600).epochs_for(steps_per_epoch=400) == 3
    assert TrainConfig(epochs=3).epochs_for(steps_per_epoch=1) == 3
    with pytest.raises(ConfigError, match="min_steps must be an integer >= 0"):
        TrainConfig(min_steps=-1)


def test_a_misspelt_name_gets_the_close_ones_before_the_list():
    """difflib's close matches, those nearly as close as the closest: one typo is one suggestion, two equally
    likely names are both offered, a name like none gets none."""
    from suite.registry import did_you_mean, names

    profiles = available_profiles()
    assert did_you_mean("cpu-nose", profiles) == " did you mean 'cpu-noise'?"  # not gpu-cost, a worse match
    assert did_you_mean("nope", profiles) == ""
    assert did_you_mean("ssam-f-nm-explict", names()) == " did you mean 'ssam-f-nm-explicit' or 'ssam-d-nm-explicit'?"
    with pytest.raises(ConfigError, match=r"unknown key 'sed' in profile; did you mean 'seeds'\? allowed: "):
        from suite.config import parse_profile

        parse_profile("p", {"sed": 3})
