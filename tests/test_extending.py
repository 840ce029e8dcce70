"""Each kind of addition in the one place docs/extending.md names, done as a user would do it, then run
through the command line: an optimizer (its file, and one registry line — or one out-of-tree file), a
metric (one entry), a model (one entry), a data set (no code: a profile naming it and its directory), a
figure (one entry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import squash

from suite import metrics, models, plots, registry
from suite.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = """seeds = 1
optimizers = {optimizers}
[train]
dataset = "synthetic"
model = "{model}"
epochs = 1
batch_size = 32
train_subset = 96
test_subset = 50
"""
LINF_SAM = '''"""SAM in an L-infinity ball: e = rho * sign(g)."""
import torch
from baselines.core import TwoPassOptimizer


class LinfSAM(TwoPassOptimizer):
    def perturbation(self, p, group, scale):
        return group["rho"] * p.grad.sign()
'''


def sweep(tmp_path: Path, optimizers: list[str], model: str = "resnet8", extra: str = "") -> Path:
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY.format(optimizers=json.dumps(optimizers), model=model) + extra)
    out = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--results-dir", str(out), "--no-progress"]) == 0
    return out


def records(out: Path, profile: str = "tiny") -> dict[str, dict]:
    found = (json.loads(p.read_text()) for p in (out / "runs" / profile).glob("*.json"))
    return {r["config"]["optimizer"]: r for r in found}


def test_an_optimizer_is_its_file_and_one_registry_line(tmp_path, monkeypatch):
    """In tree: the class (written here as its file would be) and one OptimizerInfo in the table."""
    namespace: dict = {}
    exec(compile(LINF_SAM, "baselines/linf_sam.py", "exec"), namespace)
    entry = registry.OptimizerInfo("linf-sam", namespace["LinfSAM"], "SAM in an L-infinity ball", passes_per_step=2,
                                   invalid=({"rho": -1.0},))
    monkeypatch.setattr(registry, "OPTIMIZERS", [*registry.OPTIMIZERS, entry])
    out = sweep(tmp_path, ["sgd", "sam", "linf-sam"])
    runs = records(out)
    assert runs["linf-sam"]["metrics"]["status"] == "finished"
    assert runs["linf-sam"]["metrics"]["backward_passes_per_step"] == 2
    assert "| linf-sam | 1 |" in squash((out / "summary.md").read_text())


PLUGIN = (LINF_SAM + "\nfrom suite.registry import OptimizerInfo, register\n"
          "register(OptimizerInfo('linf-sam', LinfSAM, 'SAM in an L-infinity ball', passes_per_step=2,"
          " invalid=({'rho': -1.0},)))\n")


def _without_pythonpath() -> dict[str, str]:
    """The environment tox gives its commands: PYTHONPATH does not reach it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_an_out_of_tree_optimizer_is_one_file_and_gets_the_contract_tests(tmp_path):
    """One file beside the user's project, named by its path in SUITE_OPTIMIZER_MODULES (no PYTHONPATH,
    as under tox): listed, run, and every registry-generated contract test (invalid inputs included)
    runs for it through the test command."""
    (tmp_path / "my_optimizers.py").write_text(PLUGIN)
    env = {**_without_pythonpath(), "SUITE_OPTIMIZER_MODULES": str(tmp_path / "my_optimizers.py")}
    listed = subprocess.run([sys.executable, "-m", "suite", "list"], capture_output=True, text=True, env=env)
    names = [line.split()[0] for line in listed.stdout.splitlines() if line and not line.startswith(" ")]
    assert listed.returncode == 0 and names[-1] == "linf-sam"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "test_registry_contract.py"), "-k", "linf-sam"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
    assert tests.returncode == 0, tests.stdout[-2000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert int(summary.split(" passed")[0].split()[-1]) >= 8, summary  # every generated test, for it too


def test_tox_hands_the_plugin_variable_to_the_test_command():
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert "SUITE_OPTIMIZER_MODULES" in tox["testenv"]["pass_env"].split()


@pytest.mark.parametrize("value", ["my_optimisers", "./no_such_file.py", "json.no_such_module"])
@pytest.mark.parametrize("command", ["suite", "pytest"])
def test_a_misspelled_plugin_module_is_one_line(tmp_path, value, command):
    env = {**_without_pythonpath(), "SUITE_OPTIMIZER_MODULES": value}
    argv = ["-m", "suite", "list"] if command == "suite" else \
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_registry_contract.py")]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path)
    said = (done.stderr + done.stdout).strip()
    assert done.returncode == 2, said
    assert said.count("\n") == 0 and "Traceback" not in said and value.lstrip("./") in said, said


def test_a_metric_is_one_entry(tmp_path, monkeypatch):
    entry = metrics.Metric("parameters_k", lambda r: sum(p.numel() for p in r.state.model.parameters()) / 1e3,
                           "parameters (k)", "{:.1f}", ratios="params")
    monkeypatch.setattr(metrics, "METRICS", [*metrics.METRICS, entry])
    out = sweep(tmp_path, ["sgd", "sam"])
    expected = sum(p.numel() for p in models.build_model("resnet8", 10).parameters()) / 1e3
    assert all(r["metrics"]["parameters_k"] == expected for r in records(out).values())
    table = squash((out / "summary.md").read_text())
    assert "| parameters (k) | params × SGD | params × SAM |" in table
    assert f"| {expected:.1f} | 1.00 | 1.00 |" in table
    assert pd.read_csv(out / "summary.csv")["parameters_k_mean"].tolist() == [expected, expected]


def test_a_figure_is_one_entry(tmp_path, monkeypatch):
    """A Figure in FIGURES: the report draws it for every table whose data it needs, beside the others."""
    drawn = []

    def seeds(shown: plots.Shown):
        import matplotlib.pyplot as plt

        drawn.append(shown)
        fig, ax = plt.subplots()
        ax.bar(shown.summary["optimizer"], shown.summary["seeds"])
        ax.set_title(f"{shown.title}: seeds, beside {' and '.join(shown.references)}")
        return fig

    def masked(shown: plots.Shown) -> bool:  # a table whose optimizers have masks (SSAM's)
        return "mask_density_mean" in shown.summary and bool(shown.summary["mask_density_mean"].notna().any())

    entries = [plots.Figure("seeds", seeds), plots.Figure("masks", seeds, needs=masked)]
    monkeypatch.setattr(plots, "FIGURES", [*plots.FIGURES, *entries])
    out = sweep(tmp_path, ["sgd", "sam"])
    assert (out / "tiny-seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tiny-comparison.png").is_file() and not (out / "tiny-masks.png").exists()  # no masks: not drawn
    (shown,) = drawn
    assert shown.title == "tiny" and shown.references == ("sgd", "sam")
    assert shown.summary["optimizer"].tolist() == ["sgd", "sam"] and set(shown.epochs["optimizer"]) == {"sgd", "sam"}


def test_a_model_is_one_entry(tmp_path, monkeypatch):
    def mlp(num_classes: int, in_channels: int = 3) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * 32 * 32, 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, num_classes))

    monkeypatch.setitem(models.MODELS, "mlp", mlp)
    runs = records(sweep(tmp_path, ["sgd", "ssam-f-nm-explicit"], model="mlp"))
    assert {r["metrics"]["status"] for r in runs.values()} == {"finished"}
    assert runs["sgd"]["config"]["train"]["model"] == "mlp"


def test_a_data_set_is_a_name_and_a_directory(digits_dir, tmp_path):
    """scikit-learn's digits as an ImageFolder (8x8 grayscale, 7 classes — nothing like CIFAR), given only
    its directory: the model is built for it and learns it."""
    profile = tmp_path / "digits.toml"
    profile.write_text(f'seeds = 1\noptimizers = ["sgd", "sam"]\ndata_dir = "{digits_dir}"\n[train]\n'
                       'dataset = "digits"\nmodel = "resnet8"\nepochs = 3\nbatch_size = 32\ncrop_padding = 1\n'
                       'flip = false\nlr = 0.05\n')
    out = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--results-dir", str(out), "--no-progress"]) == 0
    runs = records(out, "digits")
    data = runs["sgd"]["data"]
    assert (data["name"], data["channels"], data["image_size"], data["num_classes"]) == ("digits", 1, [8, 8], 7)
    assert data["stats"] == "computed" and data["source"] == str(digits_dir.resolve())
    assert len(data["fingerprint"]) == 16
    assert data["train_size"] + data["test_size"] == 1264
    assert all(r["metrics"]["test_acc"] > 0.6 for r in runs.values())  # chance is 1/7
    assert (out / "digits-comparison.png").is_file()


def test_the_same_data_set_by_flags_alone(digits_dir, tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(TINY.format(optimizers='["sgd"]', model="resnet8"))
    out = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--dataset", "digits", "--data-dir", str(digits_dir),
                 "--results-dir", str(out), "--no-progress", "--no-report"]) == 0
    (record,) = records(out, "p").values()
    assert record["data"]["name"] == "digits" and record["config"]["train"]["dataset"] == "digits"


def test_a_corrupt_image_in_a_users_data_set_is_one_line(digits_dir, tmp_path, capsys):
    victim = next((digits_dir / "train" / "3").iterdir())
    victim.write_bytes(victim.read_bytes()[:40])
    profile = tmp_path / "p.toml"
    profile.write_text(TINY.format(optimizers='["sgd"]', model="resnet8"))
    code = main(["run", "--profile", str(profile), "--dataset", "digits", "--data-dir", str(digits_dir),
                 "--results-dir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and str(victim) in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["empty class", "missing class in test"])
def test_a_broken_folder_layout_is_refused_by_name(digits_dir, tmp_path, capsys, kind):
    if kind == "empty class":
        for f in (digits_dir / "train" / "5").iterdir():
            f.unlink()
    else:
        for f in (digits_dir / "test" / "5").iterdir():
            f.unlink()
        (digits_dir / "test" / "5").rmdir()
    profile = tmp_path / "p.toml"
    profile.write_text(TINY.format(optimizers='["sgd"]', model="resnet8"))
    code = main(["run", "--profile", str(profile), "--dataset", "digits", "--data-dir", str(digits_dir),
                 "--results-dir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and " 5" in err, err


def test_an_optimizer_is_handed_only_the_common_settings_it_accepts(tmp_path, monkeypatch):
    """A profile's lr/momentum/weight_decay/nesterov go to every optimizer that takes them; Adam (and
    SAM over AdamW) take no momentum, so none is handed to them or recorded as used."""
    from baselines import SAM

    entries = [registry.OptimizerInfo("adam", torch.optim.Adam, "Adam"),
               registry.OptimizerInfo("adamw-sam", SAM, "SAM over AdamW", changes={"base_optimizer": torch.optim.AdamW},
                                      passes_per_step=2)]
    monkeypatch.setattr(registry, "OPTIMIZERS", [*registry.OPTIMIZERS, *entries])
    runs = records(sweep(tmp_path, ["sgd", "adam", "adamw-sam"], extra="momentum = 0.8\nnesterov = true\n"))
    for name in ("adam", "adamw-sam"):
        assert {"momentum", "nesterov"}.isdisjoint(runs[name]["config"]["hparams"]), name
        assert {"momentum", "nesterov"}.isdisjoint(runs[name]["optimizer"]["hparams"]), name
        assert runs[name]["config"]["hparams"]["lr"] == runs[name]["optimizer"]["hparams"]["lr"] == 0.05
    assert runs["sgd"]["config"]["hparams"]["momentum"] == runs["sgd"]["optimizer"]["hparams"]["momentum"] == 0.8
    assert runs["sgd"]["optimizer"]["hparams"]["nesterov"] is True
