"""Tuning with the same budget for every method (issue 38 §2, docs/tuning.md): a validation split carved from the
training data, runs scored on it that never touch the test set, the [tune] grid run through the sweep engine,
the choice written as a table and as [hparams] blocks, and every bad input one line, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import run_config

from suite import build, harness, tune
from suite.cli import main
from suite.config import ConfigError, TrainConfig, load_profile, parse_profile, tomllib
from suite.data import Split, synthetic_dataset
from suite.store import SCHEMA

TINY = """\
seeds = 1
optimizers = ["sgd", "sam", "msam"]
[train]
dataset = "synthetic"
model = "tiny-nobn"
epochs = 1
batch_size = 16
train_subset = 60
test_subset = 20
label_noise = 0.4
[tune]
seeds = 2
validation_fraction = 0.25
"""
GRID = """\
[tune.grid.sam]
rho = [0.2, 0.05]
[tune.grid.msam]
rho = [0.3, 0.6]
"""


def tiny_profile(tmp_path: Path, grid: str = GRID, head: str = TINY) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(head + grid)
    return str(path)


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


def test_a_table_shows_the_accuracy_its_runs_were_scored_on():
    """A tuning table (scored on a validation split) has no test columns, any other table no validation ones,
    and a table whose every run diverged (no mean at all) keeps its test columns, empty."""
    import pandas as pd

    from suite import report

    def split_columns(**means: list[float]) -> list[str]:
        return [m.key for m in report._present(pd.DataFrame(means)) if m.split]
    nan = float("nan")
    assert split_columns(val_acc_mean=[0.4], test_acc_mean=[nan]) == ["val_acc"]
    assert split_columns(test_acc_mean=[0.5]) == ["test_acc"] == split_columns(test_acc_mean=[nan])


# ----- the [tune] grid -----------------------------------------------------------------------------------------
def test_the_grid_expands_seed_major_each_trial_a_run_with_its_value_and_the_validation_split(tmp_path):
    profile = load_profile(tiny_profile(tmp_path))
    base, runs = tune.plan(profile, check_device=False)
    assert [(r.seed, r.optimizer, dict(r.hparams)["rho"]) for r in runs] == [
        (0, "sam", 0.2), (0, "sam", 0.05), (0, "msam", 0.3), (0, "msam", 0.6),
        (1, "sam", 0.2), (1, "sam", 0.05), (1, "msam", 0.3), (1, "msam", 0.6)]
    assert {r.train.validation_fraction for r in runs} == {0.25} and len({r.run_id for r in runs}) == 8
    assert not base.tune and {r.profile for r in runs} == {"tiny"}
    assert [r.optimizer for r in tune.plan(profile, ["msam"], check_device=False)[1]] == ["msam"] * 4


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def set_val_acc(results: Path, accuracy: dict[tuple[str, float], list[float]]) -> None:
    """Give the recorded trials known validation accuracies, per (optimizer, rho), seed by seed."""
    for path in sorted((results / "runs" / "tiny").glob("*.json")):
        record = json.loads(path.read_text())
        c = record["config"]
        record["metrics"]["val_acc"] = accuracy[c["optimizer"], c["hparams"]["rho"]][c["seed"]]
        path.write_text(json.dumps(record))


def test_tune_runs_every_trial_once_and_choose_picks_the_higher_mean(tmp_path, capsys):
    path, results = tiny_profile(tmp_path), tmp_path / "out"
    args = ("tune", "--profile", path, "--results-dir", str(results), "--no-progress")
    code, err = run_cli(capsys, *args)
    assert code == 0 and "8 runs (0 already recorded, 8 to run" in err
    records = sorted((results / "runs" / "tiny").glob("*.json"))
    assert len(records) == 8
    summary = (results / "summary.md").read_text()
    assert "val acc %" in summary and "test acc" not in summary and "sam [rho=0.05]" in summary
    written = {p: p.stat().st_mtime_ns for p in records}
    assert main(["status", "--profile", path, "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "8 runs: 8 done"  # status counts a tuning profile's trials, each named by its value
    assert any(line.startswith("done") and "sam rho=0.05 seed 0 (epochs)" in line for line in out), out
    code, err = run_cli(capsys, *args, "--no-report")
    assert code == 0 and "8 already recorded, 0 to run" in err
    assert {p: p.stat().st_mtime_ns for p in records} == written

    # sam: equal means (a tie: the value nearest SAM's registered default, 0.05); msam: 0.6 is higher by 0.1
    set_val_acc(results, {("sam", 0.2): [0.5, 0.3], ("sam", 0.05): [0.4, 0.4],
                          ("msam", 0.3): [0.5, 0.6], ("msam", 0.6): [0.7, 0.6]})
    code, err = run_cli(capsys, "tune", "--profile", path, "--results-dir", str(results), "--choose")
    assert code == 0
    text = (results / "tiny-tuned.md").read_text()
    assert "| 0.6 | 65.00 ± 7.07 | 2 | **chosen** |" in text and "| 0.3 | 55.00 ± 7.07 | 2 |  |" in text
    assert "| 0.05 | 40.00 ± 0.00 | 2 | **chosen** |" in text and "Not tuned here (no [tune.grid] entry): sgd" in text
    assert "The test set was not evaluated" in text
    chosen = tomllib.loads((results / "tiny-tuned.toml").read_text())
    assert chosen == {"hparams": {"sam": {"rho": 0.05}, "msam": {"rho": 0.6}}}
    confirm = parse_profile("confirm", {"optimizers": ["sgd", "sam", "msam"],
                                        "hparams": {"sam*": {"rho": 0.1}, **chosen["hparams"]}})
    from suite import registry

    assert confirm.hparams_for(registry.get("msam"))["rho"] == 0.6
    assert confirm.hparams_for(registry.get("sam"))["rho"] == 0.05


def test_choose_refuses_in_one_line_while_a_trial_has_no_record(tmp_path, capsys):
    path, results = tiny_profile(tmp_path), tmp_path / "out"
    profile = load_profile(path)
    _, runs = tune.plan(profile, check_device=False)
    folder = results / "runs" / "tiny"
    folder.mkdir(parents=True)
    for r in runs[:-1]:  # every trial but msam rho 0.6 seed 1
        record = {"schema": SCHEMA, "run_id": r.run_id, "config": r.as_dict(),
                  "metrics": {"val_acc": 0.5, "status": "finished"}}
        (folder / f"{r.run_id}.json").write_text(json.dumps(record))
    code, err = run_cli(capsys, "tune", "--profile", path, "--results-dir", str(results), "--choose")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1 of the 8 trials of profile tiny have no record" in err and "msam rho=0.6 seed 1" in err
    assert not list(results.glob("*tuned*"))


@pytest.mark.parametrize("grid, says", [
    ("[tune.grid.sam]\nrho = [0.05, 0.1]\n[tune.grid.msam]\nrho = [0.3]\n",
     "[tune.grid] gives the optimizers different numbers of values (sam 2, msam 1)"),
    ("[tune.grid.sam]\nrhoo = [0.05, 0.1]\n", "[tune.grid.sam] rhoo: sam's constructor takes no 'rhoo'; did you mean"
                                              " 'rho'?"),
    ("[tune.grid.samm]\nrho = [0.05, 0.1]\n", "unknown optimizer 'samm'; did you mean 'sam'"),
    ("[tune.grid.sam]\nrho = [0.05, 0.1]\nadaptive = [true, false]\n", "must name one hyper-parameter"),
    ("[tune.grid.sam]\nrho = []\n", "must be a list of values"),
    ("", "[tune] needs a grid"),
])
def test_a_bad_grid_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, grid, says):
    results = tmp_path / "out"
    for extra in ((), ("--choose",)):
        code, err = run_cli(capsys, "tune", "--profile", tiny_profile(tmp_path, grid), "--results-dir", str(results),
                            *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
        assert not results.exists()


def test_a_value_the_optimizer_refuses_is_one_line_before_any_trial_runs(tmp_path, capsys):
    grid = "[tune.grid.sam]\nrho = [-0.1, 0.05]\n[tune.grid.msam]\nrho = [0.3, 0.6]\n"
    results = tmp_path / "out"
    code, err = run_cli(capsys, "tune", "--profile", tiny_profile(tmp_path, grid), "--results-dir", str(results))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "optimizer sam:" in err and "-0.1" in err, err
    assert not list(results.glob("runs/*/*.json"))


def test_a_tuning_profile_is_run_by_tune_not_by_run_and_a_profile_without_tune_has_nothing_to_tune(tmp_path, capsys):
    results = tmp_path / "out"
    code, err = run_cli(capsys, "run", "--profile", tiny_profile(tmp_path), "--results-dir", str(results))
    assert code == 2 and "is a tuning profile" in err and "suite tune --profile tiny" in err
    code, err = run_cli(capsys, "tune", "--profile", tiny_profile(tmp_path, head=TINY.split("[tune]")[0], grid=""),
                        "--results-dir", str(results))
    assert code == 2 and "has no [tune] table" in err
    code, err = run_cli(capsys, "tune", "--profile", tiny_profile(tmp_path), "--optimizer", "sgd",
                        "--results-dir", str(results))
    assert code == 2 and "does not tune it" in err
    assert not (results / "runs").exists()


# ----- the shipped tuning profile -------------------------------------------------------------------------------
def test_cpu_noise_tune_gives_every_candidate_four_values_around_cpu_noises_and_two_seeds(capsys):
    from suite import registry

    profile, noise = load_profile("cpu-noise-tune"), load_profile("cpu-noise")
    settings = tune.settings(profile)
    assert settings.seeds == 2 and round(settings.validation_fraction * noise.train.train_subset) == 512
    radii = {"sam": 0.1, "sam-two-fifths-ascent": 0.1, "msam": 1.5, "looksam": 0.1, "periodic-sam": 0.1,
             "sam-two-fifths-ascent-every-2": 0.1, "ssam-f-unstructured-explicit": 0.1, "rwp": 0.001}
    own = {("ae-sam", "lambda1"), ("late-sam", "switch_at"), ("k-sam", "k_fraction"), ("saf", "lam"), ("mesa", "lam")}
    assert {(g.optimizer, g.param) for g in settings.grids} == {(o, "rho") for o in radii} | own
    for g in settings.grids:
        if g.param == "rho":  # x0.5 to x4 of the radius (scale) cpu-noise runs it at, or its class's
            now = noise.hparams_for(registry.get(g.optimizer)).get("rho", registry.get(g.optimizer).defaults()["rho"])
            assert now == radii[g.optimizer] and g.values == (0.5 * now, now, 2 * now, 4 * now), g
        else:  # the other settings: around the class's default, which is among them
            assert registry.get(g.optimizer).defaults()[g.param] in g.values, g
            assert noise.hparams_for(registry.get(g.optimizer)).get("rho", 0.1) == 0.1  # SAM's, where it has one
    _, runs = tune.plan(profile, check_device=False)
    assert len(runs) == 104 and {r.train.validation_fraction for r in runs} == {0.2}
    assert {r.train.label_noise for r in runs} == {0.4} and {r.seed for r in runs} == {0, 1}
    assert main(["list", "--profiles"]) == 0
    assert "[suite tune: 104 runs of 13 optimizers" in " ".join(capsys.readouterr().out.split())
