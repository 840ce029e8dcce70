"""The command line: list, a sweep on generated data, skip-done, and every bad input (exit 2,
one line, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import squash

from suite.cli import main
from suite.config import available_profiles, load_profile
from suite.data import synthetic_dataset
from suite.sweep import check_constructs, runs_for

TRAIN = {"dataset": '"synthetic"', "model": '"resnet8"', "epochs": "1", "batch_size": "32",
         "train_subset": "96", "test_subset": "50"}


def profile(tmp_path: Path, train: dict | None = None, tables: str = "", name: str = "tiny",
            top: dict | None = None) -> str:
    """A profile file: the tiny synthetic setting with ``train`` (and top-level ``top``) values replaced
    (TOML literals)."""
    head = {"seeds": "1", "optimizers": '["sgd", "sam"]', **(top or {})}
    lines = [f"{k} = {v}" for k, v in {**TRAIN, **(train or {})}.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(f"{k} = {v}" for k, v in head.items()) + "\n[train]\n" + "\n".join(lines) + "\n"
                    + tables)
    return str(path)


def run_cli(*args: str) -> int:
    return main(list(args))


def plan(profile_path: str, optimizer: str | None = None):
    """The profile and its runs, as the run command plans them."""
    profile = load_profile(profile_path)
    return profile, runs_for(profile, optimizers=[optimizer] if optimizer else None, check_device=False)


def test_optimizer_seeds_give_some_optimizers_more_seeds_seed_major(tmp_path):
    """[optimizer_seeds] (issue 23): the optimizers whose verdict hinges run more seeds; the runs stay
    seed-major, so a drifting machine touches every optimizer alike, and --seeds still sets every count."""
    path = profile(tmp_path, top={"optimizer_seeds": "{ ssam-f = 3 }", "optimizers": '["sgd", "ssam-f", "sam"]'})
    _, runs = plan(path)
    assert [(r.optimizer, r.seed) for r in runs] == [
        ("sgd", 0), ("ssam-f-unstructured-explicit", 0), ("sam", 0),
        ("ssam-f-unstructured-explicit", 1), ("ssam-f-unstructured-explicit", 2)]  # an alias names it too
    assert len(runs_for(load_profile(path), seeds=2, check_device=False)) == 6


def test_list_prints_one_line_per_optimizer(capsys):
    assert run_cli("list") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("sgd ") and any(line.startswith("sam ") for line in lines)


def test_list_profiles_prints_each_shipped_profile_with_its_own_description(capsys):
    """The README's list of profiles is this command: the words come from the profiles' files."""
    assert run_cli("list", "--profiles") == 0
    out = capsys.readouterr().out
    starts = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert starts == available_profiles()
    for name in available_profiles():
        assert " ".join(load_profile(name).description.split()[:6]) in " ".join(out.split())
    assert max(len(line) for line in out.splitlines()) <= 100


def test_sweep_writes_records_and_report_then_skips_done_runs(tmp_path, capsys):
    results = tmp_path / "out"
    args = ("run", "--profile", profile(tmp_path), "--results-dir", str(results), "--no-progress")
    assert run_cli(*args) == 0
    records = sorted((results / "runs" / "tiny").glob("*.json"))
    assert [r.name.split("-s0-")[0] for r in records] == ["sam", "sgd"]
    assert (results / "summary.md").is_file() and (results / "tiny-comparison.png").is_file()
    assert "Sharpness" not in (results / "summary.md").read_text()  # nothing measured: no such section
    capsys.readouterr()
    assert run_cli(*args) == 0
    assert "2 already recorded, 0 to run" in capsys.readouterr().err
    mtimes = [r.stat().st_mtime_ns for r in records]
    assert run_cli(*args, "--force", "--optimizer", "sgd", "--no-report") == 0
    assert [r.stat().st_mtime_ns for r in records][0] == mtimes[0]  # sam untouched
    assert [r.stat().st_mtime_ns for r in records][1] != mtimes[1]  # sgd re-run


def test_two_budgets_in_one_sweep(tmp_path, capsys):
    results = tmp_path / "out"
    assert run_cli("run", "--profile", profile(tmp_path), "--results-dir", str(results), "--no-progress",
                   "--budget", "epochs", "--budget", "flops") == 0
    err = capsys.readouterr().err
    assert "4 to run" in err and "sam seed 0, flops budget (1 steps = 0.33 epochs)" in err
    summary = (results / "summary.md").read_text()
    assert "budget `epochs`" in summary and "budget `flops`" in summary


BAD = {  # case: (flags, [train] values or None for no profile file, extra tables, expected message)
    "unknown optimizer": (["--optimizer", "nope"], {}, "", "unknown optimizer 'nope'; known: sgd, sam"),
    "misspelt optimizer": (["--optimizer", "sam-quater-ascent"], {}, "",
                           "unknown optimizer 'sam-quater-ascent'; did you mean 'sam-quarter-ascent'? known: sgd, sam"),
    "unknown profile": (["--profile", "nope"], None, "", "unknown profile 'nope'; known: benchmark, cost, cpu"),
    "misspelt profile": (["--profile", "cpu-nose"], None, "",
                         "unknown profile 'cpu-nose'; did you mean 'cpu-noise'? known: benchmark, cost, cpu"),
    "missing profile file": (["--profile", "/no/such.toml"], None, "", "does not exist"),
    "zero epochs": ([], {"epochs": "0"}, "", "epochs must be an integer >= 1, got 0"),
    "zero epochs flag": (["--epochs", "0"], {}, "", "--epochs must be between 1 and 100000, got 0"),
    "zero seeds flag": (["--seeds", "0"], {}, "", "--seeds must be between 1 and 1000, got 0"),
    "a trillion seeds": (["--seeds", "1000000000000"], {}, "", "--seeds must be between 1 and 1000"),
    "a trillion epochs": (["--epochs", "1000000000000"], {}, "", "--epochs must be between 1 and 100000"),
    "zero batch": ([], {"batch_size": "0"}, "", "batch_size must be an integer >= 1, got 0"),
    "negative lr": ([], {"lr": "-0.1"}, "", "lr must be a finite number > 0, got -0.1"),
    "string lr": ([], {"lr": '"fast"'}, "", "lr must be a finite number > 0, got 'fast'"),
    "cutout_p above 1": ([], {"cutout_p": "1.5"}, "", "cutout_p must be a number in [0, 1], got 1.5"),
    "unknown model": ([], {"model": '"resnet999"'}, "", "unknown model 'resnet999'"),
    "unknown dataset": ([], {"dataset": '"mnist"'}, "", "no data set 'mnist' in"),
    "dataset not a name": ([], {"dataset": '"../x"'}, "", "dataset must be a name of letters"),
    "negative image size": ([], {"image_size": "-1"}, "", "image_size must be an integer >= 0, got -1"),
    "unknown key": ([], {"epoch": "3"}, "", "unknown key 'epoch' in [train]; did you mean 'epochs'? allowed: "),
    "negative rho": ([], {}, "[hparams.sam]\nrho = -1.0", "optimizer sam: rho must be a finite number >= 0"),
    "unknown hparam": ([], {}, "[hparams.sam]\nrhoo = 0.1", "optimizer sam:"),
    "hparams for unknown optimizer": ([], {}, "[hparams.sma]\nrho = 0.1",
                                      "unknown optimizer 'sma'); did you mean 'sam' or 'saf'? known: sgd"),
    "hparams glob matching nothing": ([], {}, '[hparams."asam-*"]\nrho = 0.1', "matches no optimizer"),
    "sparsity out of range": (["--optimizer", "ssam-f"], {}, '[hparams."ssam-*"]\nsparsity = 1.5',
                              "optimizer ssam-f-unstructured-explicit: sparsity must be a number in [0, 1], got 1.5"),
    "N:M not dividing": (["--optimizer", "ssam-d-nm-explicit"], {}, '[hparams."ssam-d-nm-explicit"]\nm = 5',
                         "divides no weight's reduction dimension"),
    "unknown pattern": (["--optimizer", "ssam-f"], {}, '[hparams.ssam-f]\npattern = "blocky"', "unknown pattern"),
    "zero refresh interval": (["--optimizer", "ssam-f"], {}, "[hparams.ssam-f]\nupdate_every = 0",
                              "update_every"),
    "zero fisher samples": (["--optimizer", "ssam-f"], {}, "[hparams.ssam-f]\nfisher_samples = 0",
                            "fisher_samples"),
    "bad toml": ([], {"epochs": "= 2"}, "", "not valid TOML"),
    "unknown budget": ([], {"budget": '"joules"'}, "", "unknown budget 'joules'; known: epochs, flops, time"),
    "unknown budget reference": ([], {"budget": '"flops"', "budget_reference": '"adam"'}, "",
                                 "budget_reference 'adam' is not a registered optimizer"),
    "esam beta zero": (["--optimizer", "esam"], {}, "[hparams.esam]\nbeta = 0",
                       "optimizer esam: beta must be a number in (0, 1], got 0"),
    "esam gamma above one": (["--optimizer", "esam"], {}, "[hparams.esam]\ngamma = 1.5",
                             "optimizer esam: gamma must be a number in (0, 1], got 1.5"),
    "esam unknown swp": (["--optimizer", "esam"], {}, '[hparams.esam]\nswp = "layer"', "unknown swp 'layer'"),
}


BAD_TYPES = {  # case: (top-level values, [train] values, expected message)
    "seeds as a string": ({"seeds": '"3"'}, {}, "seeds must be an integer >= 1, got '3'"),
    "seeds as a float": ({"seeds": "2.5"}, {}, "seeds must be an integer >= 1, got 2.5"),
    "optimizers as numbers": ({"optimizers": "[1, 2]"}, {}, 'optimizers must be "all" or a list of names'),
    "budgets as a string": ({"budgets": '"flops"'}, {}, "budgets must be a list"),
    "unknown budget in the list": ({"budgets": '["epochs", "watts"]'}, {}, "unknown budget 'watts'"),
    "unknown top-level key": ({"seed": "3"}, {}, "unknown key 'seed' in profile; did you mean 'seeds'? allowed: "),
    "the allowed keys name extends": ({"extend": '"cpu"'}, {},
                                      "allowed: accuracy_claims, budgets, claims, data_dir, description, extends,"),
    "flop_steps as a float": ({}, {"flop_steps": "1.5"}, "flop_steps must be an integer >= 1, got 1.5"),
    "flip as a string": ({}, {"flip": '"yes"'}, "flip must be true or false, got 'yes'"),
    "negative subset": ({}, {"train_subset": "-1"}, "train_subset must be an integer >= 0, got -1"),
    "infinite lr": ({}, {"lr": "inf"}, "lr must be a finite number > 0, got inf"),
    "momentum as a bool": ({}, {"momentum": "true"}, "momentum must be a finite number >= 0, got True"),
    "batch larger than the subset": ({}, {"batch_size": "500"}, "batch_size 500 is larger than the training set"),
    "budget_reference empty": ({}, {"budget_reference": '""'}, "budget_reference must be an optimizer name"),
    "unknown reference": ({"references": '["sgd", "adam"]'}, {}, "unknown optimizer 'adam'"),
    "references as a string": ({"references": '"sgd"'}, {}, "references must be a list of optimizer names"),
    "data_dir as a number": ({"data_dir": "3"}, {}, "data_dir must be a directory path, got 3"),
    "optimizer seeds zero": ({"optimizer_seeds": "{ sam = 0 }"}, {},
                             "[optimizer_seeds] sam must be an integer >= 1, got 0"),
    "optimizer seeds as a list": ({"optimizer_seeds": "[8]"}, {},
                                  "[optimizer_seeds] must be a table of optimizer = seeds"),
    "optimizer seeds misspelt": ({"optimizer_seeds": "{ samm = 8 }"}, {},
                                 "unknown optimizer 'samm'; did you mean 'sam'? known: "),
    "optimizer seeds of one not run": ({"optimizer_seeds": "{ esam = 8 }"}, {},
                                       "[optimizer_seeds] names 'esam', which profile tiny does not run; "
                                       "it runs: sam, sgd"),
    "optimizer seeds too many": ({"optimizer_seeds": "{ sam = 1001 }"}, {},
                                 "[optimizer_seeds] sam must be at most 1000"),
}


@pytest.mark.parametrize("case", BAD_TYPES, ids=list(BAD_TYPES))
def test_wrong_types_and_ranges_are_one_line_exit_2(case, tmp_path, capsys):
    top, train, message = BAD_TYPES[case]
    results = tmp_path / "out"
    prof = profile(tmp_path, train, top=top)
    code = run_cli("run", "--results-dir", str(results), "--no-progress", "--profile", prof)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not results.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--seeds", "many"], "argument --seeds: invalid int value: 'many'"),
    (["--budget", "watts"], "argument --budget: invalid choice: 'watts'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_arguments_are_one_line_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("run", "--results-dir", str(tmp_path / "out"), *flags)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def _sweep_once(tmp_path: Path) -> tuple[str, Path]:
    prof, results = profile(tmp_path), tmp_path / "out"
    assert run_cli("run", "--profile", prof, "--results-dir", str(results), "--no-progress", "--no-report") == 0
    return prof, results


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["record not json", "record not a record", "checkpoint torn"])
def test_corrupt_files_on_disk_are_named_exit_2_nothing_written(damage, tmp_path, capsys):
    prof, results = _sweep_once(tmp_path)
    rec = sorted((results / "runs" / "tiny").glob("sam-*.json"))[0]
    if damage == "record not json":
        rec.write_text('{"schema": 1, "metr')
        bad = rec
    elif damage == "record not a record":
        rec.write_text("[1, 2, 3]")
        bad = rec
    else:
        rec.unlink()
        bad = results / "checkpoints" / "tiny" / rec.name.replace(".json", ".pt")
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"PK\x03\x04 torn")
    before = _listing(results)
    capsys.readouterr()
    assert run_cli("run", "--profile", prof, "--results-dir", str(results), "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(bad) in err, err
    assert _listing(results) == before


def test_a_corrupt_record_is_named_and_skipped_by_the_report(tmp_path, capsys):
    _, results = _sweep_once(tmp_path)
    bad = sorted((results / "runs" / "tiny").glob("sam-*.json"))[0]
    bad.write_text("{")
    capsys.readouterr()
    assert run_cli("report", "--results-dir", str(results)) == 0
    assert f"warning: skipped unreadable record {bad}" in capsys.readouterr().err
    assert "| sgd |" in squash((results / "summary.md").read_text())


def test_a_diverging_sweep_goes_on_and_the_report_shows_it(tmp_path, capsys):
    results = tmp_path / "out"
    assert run_cli("run", "--profile", profile(tmp_path, {"lr": "1e12", "epochs": "2"}), "--results-dir", str(results),
                   "--no-progress") == 0
    err = capsys.readouterr().err
    assert "[1/2] sgd seed 0" in err and "[2/2] sam seed 0" in err and err.count(": diverged,") == 2
    summary = squash((results / "summary.md").read_text())
    assert "| sgd | 0 (1 diverged) |" in summary and "Diverged runs (loss NaN/inf; not in the means):" in summary
    assert "- sam: seed 0 at step" in summary


def test_results_directory_that_cannot_be_one(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli("run", "--profile", profile(tmp_path), "--results-dir", str(blocker / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert f"{str(blocker)!r} is not a directory" in err and "\n" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_results_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run_cli("run", "--profile", profile(tmp_path), "--results-dir", str(locked / "out")) == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    flags, train, tables, message = BAD[case]
    results = tmp_path / "out"
    args = ["run", "--results-dir", str(results), "--no-progress"]
    if train is not None:
        args += ["--profile", profile(tmp_path, train, tables)]
    assert run_cli(*args, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not results.exists()


def test_hparams_globs_then_exact_names():
    from suite import registry
    from suite.config import parse_profile

    profile = parse_profile("p", {"hparams": {"ssam-*": {"rho": 0.2, "sparsity": 0.7}, "ssam-f": {"rho": 0.3},
                                              "*": {"weight_decay": 1e-3}}})

    def overrides(name):
        info = registry.get(name)
        return profile.overrides_for((info.name, *info.aliases))

    assert overrides("ssam-f") == {"rho": 0.3, "sparsity": 0.7, "weight_decay": 1e-3}
    assert overrides("ssam-d-nm-implicit") == {"rho": 0.2, "sparsity": 0.7, "weight_decay": 1e-3}
    assert overrides("sgd") == {"weight_decay": 1e-3}


def test_missing_data_directory(tmp_path, capsys):
    results = tmp_path / "out"
    code = run_cli("run", "--profile", "smoke", "--data-dir", str(tmp_path / "nowhere"),
                   "--results-dir", str(results))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no cifar10 data in" in err and "\n" not in err
    assert not results.exists()


def test_data_directory_holding_neither_layout(tmp_path, capsys):
    (tmp_path / "d" / "stuff").mkdir(parents=True)
    code = run_cli("run", "--profile", "smoke", "--data-dir", str(tmp_path / "d"),
                   "--results-dir", str(tmp_path / "out"))
    assert code == 2 and "expected cifar-10-batches-py/" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_without_records(tmp_path, capsys):
    assert run_cli("report", "--results-dir", str(tmp_path)) == 2
    assert "no records" in capsys.readouterr().err


def test_module_entry_point_exit_code_for_a_bad_name(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "suite", "run", "--optimizer", "nope", "--results-dir",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown optimizer 'nope'; known: sgd, sam" in proc.stderr


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_resolves(name):
    """Each profile in suite/profiles parses, names known optimizers/models, and its optimizers build."""
    profile, runs = plan(name)
    seeds = sum(profile.seeds_of(o) for o in {r.optimizer for r in runs})
    assert runs and len(runs) == len(profile.budgets) * seeds
    check_constructs(runs, synthetic_dataset(n_train=20, n_test=10))  # every optimizer builds on its model
    assert [r.train.budget for r in runs[:: len(runs) // len(profile.budgets)]] == list(profile.budgets)


@pytest.mark.parametrize("name", available_profiles())
def test_a_cheaper_ascent_variant_runs_with_its_bases_settings_in_every_shipped_profile(name):
    """`[hparams.sam]` does not reach `sam-quarter-ascent`: a profile that sets a base's rho must set its
    cheaper-ascent variants' too, or the comparison measures rho, not the sub-batch."""
    from suite import registry
    from suite.registry import ASCENT_SUFFIXES

    _, runs = plan(name)
    built = {r.optimizer: {k: v for k, v in {**registry.get(r.optimizer).defaults(), **dict(r.hparams)}.items()
                           if k != "ascent_fraction"} for r in runs}
    pairs = [(n, n.removesuffix(s)) for n in built for s in ASCENT_SUFFIXES.values() if n.endswith(s)]
    for variant, base in pairs:
        if base in built:
            assert built[variant] == built[base], (variant, base)


def test_cuda_profile_on_a_machine_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_cli("run", "--profile", "paper-cifar10", "--results-dir", str(tmp_path / "out"))
    assert code == 2 and "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----- a new user's first run, and publishing -----------------------------------------------------------------
def test_a_fresh_clone_runs_into_its_own_directory_whatever_results_holds(tmp_path, monkeypatch, capsys):
    """The published records in results/ have the same run_ids as the user's runs would: they must not
    count as done, and nothing in results/ may change."""
    prof = profile(tmp_path)
    published = tmp_path / "results"
    assert run_cli("run", "--profile", prof, "--results-dir", str(published), "--no-progress") == 0
    before = {p: p.read_bytes() for p in published.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("run", "--profile", prof, "--no-progress") == 0  # the README's command, no --results-dir
    assert "2 runs (0 already recorded, 2 to run" in capsys.readouterr().err
    assert len(list((tmp_path / "my-results" / "runs" / "tiny").glob("*.json"))) == 2
    assert (tmp_path / "my-results" / "summary.md").is_file()
    assert before == {p: p.read_bytes() for p in published.rglob("*") if p.is_file()}


def test_tox_benchmark_does_not_write_into_the_published_results():
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(Path(__file__).resolve().parent.parent / "tox.ini")
    command = tox["testenv:benchmark"]["commands"]
    assert "python -m suite run" in command and "--results-dir" not in command


def _records_from_commit(tmp_path: Path, commit: str | None) -> Path:
    import json

    src = tmp_path / "mine"
    assert run_cli("run", "--profile", profile(tmp_path), "--results-dir", str(src), "--no-progress",
                   "--no-report") == 0
    for path in (src / "runs" / "tiny").glob("*.json"):
        record = json.loads(path.read_text())
        record["env"]["git_commit"] = commit  # as if made at that commit, from a tree holding everything it read
        record["env"]["git_dirty_files"] = {}
        path.write_text(json.dumps(record))
    return src


def test_publish_replaces_a_profiles_records_and_rebuilds_the_report(tmp_path, capsys):
    src = _records_from_commit(tmp_path, "a" * 40)
    dest = tmp_path / "results"
    stale = dest / "runs" / "tiny" / "old-run.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    keep = dest / "runs" / "other" / "x.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    # both READMEs' findings blocks are rewritten: the one beside results/ and results/README.md
    block = "<!-- findings of tiny: generated by publish -->\nstale: 7 of 14\n<!-- end of findings -->\n"
    for readme in (tmp_path / "README.md", dest / "README.md"):
        readme.write_text(f"# top\n\n{block}\nrest\n")
    assert run_cli("publish", "--profile", "tiny", "--from", str(src), "--to", str(dest)) == 0
    for readme in (tmp_path / "README.md", dest / "README.md"):
        text = readme.read_text()
        assert "stale" not in text and "`tiny`" in text and text.endswith("\nrest\n"), readme
    assert sorted(p.name for p in (dest / "runs" / "tiny").iterdir()) == \
        sorted(p.name for p in (src / "runs" / "tiny").iterdir())
    assert keep.exists() and (dest / "summary.md").is_file() and (dest / "tiny-comparison.png").is_file()
    assert "published 2 records of tiny" in capsys.readouterr().err
    # the final weights travel with the records they belong to (git-ignored there)
    assert sorted(p.name for p in (dest / "weights" / "tiny").iterdir()) == \
        sorted(p.name for p in (src / "weights" / "tiny").iterdir()) == \
        sorted(p.stem + ".pt" for p in (src / "runs" / "tiny").iterdir())


def test_a_run_keeps_its_final_weights_and_they_give_its_recorded_test_accuracy(tmp_path):
    import json

    import torch

    from suite import build, harness, store
    from suite.data import load_dataset

    results = tmp_path / "out"
    assert run_cli("run", "--profile", profile(tmp_path), "--optimizer", "sam", "--results-dir", str(results),
                   "--no-progress", "--no-report") == 0
    [path] = (results / "runs" / "tiny").glob("*.json")
    record = json.loads(path.read_text())
    assert not (results / "checkpoints" / "tiny" / f"{path.stem}.pt").exists()
    weights = store.load_weights(store.weights_path(results, "tiny", path.stem), path.stem)
    _, runs = plan(profile(tmp_path), "sam")
    ctx = harness.context(runs[0], load_dataset("synthetic"))
    model = build.make_model(runs[0].train, ctx.dataset, ctx.device)
    model.load_state_dict(weights)
    loss, acc = build.evaluate(model, ctx.eval_split, ctx.augment, runs[0].train, ctx.device)
    last = record["epochs"][-1]
    assert acc == last["test_acc"] == record["metrics"]["test_acc"] and loss == pytest.approx(last["test_loss"])
    with pytest.raises(store.StoreError, match="does not belong to run"):
        store.load_weights(store.weights_path(results, "tiny", path.stem), "another-run")
    fresh = build.make_model(runs[0].train, ctx.dataset, ctx.device).state_dict()
    assert weights.keys() == fresh.keys() and not torch.equal(weights["fc.weight"], fresh["fc.weight"])


@pytest.mark.parametrize("commit", [None, "b" * 40 + "-dirty"])
def test_publish_refuses_records_not_made_from_a_clean_commit(tmp_path, capsys, commit):
    src = _records_from_commit(tmp_path, commit)
    dest = tmp_path / "results"
    capsys.readouterr()
    assert run_cli("publish", "--profile", "tiny", "--from", str(src), "--to", str(dest)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "clean commit" in err and "--allow-uncommitted" in err
    assert not dest.exists()
    assert run_cli("publish", "--profile", "tiny", "--from", str(src), "--to", str(dest), "--allow-uncommitted") == 0


def test_publish_of_a_profile_with_no_records_is_one_line(tmp_path, capsys):
    assert run_cli("publish", "--profile", "cpu", "--from", str(tmp_path / "nothing"), "--to", str(tmp_path)) == 2
    assert capsys.readouterr().err.strip().startswith("error: no records of profile 'cpu'")


def test_help_is_whole_sentences_and_names_the_command_the_user_typed(tmp_path):
    import shutil

    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "suite", "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m suite ")
    description = done.stdout.split("\n\n")[1].replace("\n", " ")
    assert description.endswith("results/.") and "publish" in description
    version = subprocess.run([sys.executable, "-m", "suite", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("python -m suite ")
    script = shutil.which("sharpness-suite", path=str(Path(sys.executable).parent))
    if script:  # installed (tox, the dev venv): the console script calls itself by its name
        done = subprocess.run([script, "--help"], capture_output=True, text=True, env=env)
        assert done.stdout.startswith("usage: sharpness-suite ")


def test_list_fits_a_terminal_and_shows_what_a_profile_runs(capsys):
    """`list` no longer prints constructor defaults (SGD's lr=0.001) in 300-character lines; `list --profile`
    shows the profile's own values (cpu-noise's SAM rho 0.1, its SSAM-F Fisher examples)."""
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100 and "lr=0.001" not in out
    assert run_cli("list", "--profile", "cpu-noise") == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "rho=0.1" in rows["sam"] and "fisher_samples=128" in out and "lr 0.05" in out
    assert "drop_rate" not in rows["ssam-f-unstructured-explicit"]
    assert run_cli("list", "--profile", "nope") == 2
