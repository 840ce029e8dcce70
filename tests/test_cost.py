"""The cost command: FLOPs ratios that follow from the passes each optimizer runs, a sparse kernel's
FLOPs by hand on a tiny net, the files it writes, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import closure_for, tiny_model, toy_batch
from test_cli import profile, run_cli

from baselines import SAM
from ssam import SSAM
from suite import cost

FC_FLOPS = 2 * 36 * 3  # TinyNet's classifier, one example: 36 inputs, 3 outputs, a multiply-add = 2
CONV_FLOPS = 2 * (3 * 2 * 2) * 4 * 3 * 3  # its conv: 12 weights per output, 4 channels, a 3x3 map


def _stepped(**kw):
    model = tiny_model()
    opt = SSAM(model.parameters(), model=model, update_every=100, lr=0.1, **kw)
    x, y = toy_batch(n=16)
    closure = closure_for(model, x, y)
    opt.step(closure)
    return model, opt, closure


def test_layer_flops_are_the_forward_per_example():
    model, _, closure = _stepped()
    assert list(cost.layer_forward_flops(model, closure).values()) == [CONV_FLOPS, FC_FLOPS]


@pytest.mark.parametrize("form", ["implicit", "implicit-masked"])
def test_a_sparse_kernel_runs_the_input_gradient_through_the_masked_weight_except_at_the_bottom(form):
    """N:M 2:4 keeps half of every layer; the conv is the lowest layer (no input-gradient), so only the
    classifier's input-gradient halves: 0.5 * 216 FLOPs * 16 examples."""
    model, opt, closure = _stepped(pattern="nm", form=form)
    assert cost.sparse_kernel_flops(opt, model, closure, 1e6) == 1e6 - 0.5 * FC_FLOPS * 16
    half = _stepped(pattern="nm", form=form, ascent_fraction=0.5)  # the first pass sees 8 examples
    assert cost.sparse_kernel_flops(half[1], half[0], half[2], 1e6) == 1e6 - 0.5 * FC_FLOPS * 8


def test_a_masked_norm_lets_a_kernel_skip_the_weight_gradient_outside_the_mask():
    model, opt, closure = _stepped(pattern="unstructured", normalise="masked")
    kept = {id(p): float(m.float().mean()) for p, m in zip(opt._params, opt.masks())}
    expected = ((1 - kept[id(model.conv.weight)]) * CONV_FLOPS + (1 - kept[id(model.fc.weight)]) * FC_FLOPS) * 16
    assert cost.sparse_kernel_flops(opt, model, closure, 1e6) == pytest.approx(1e6 - expected)


def test_nothing_to_skip_where_every_gradient_is_read():
    """The paper's explicit form divides by ||g|| over every weight; SAM has no mask."""
    model, opt, closure = _stepped(pattern="nm")
    assert cost.sparse_kernel_flops(opt, model, closure, 1e6) == 1e6
    sam = SAM(model.parameters(), lr=0.1)
    assert cost.sparse_kernel_flops(sam, model, closure, 1e6) == 1e6


def test_the_cost_command_writes_its_tables_with_ratios_that_follow_from_the_passes(tmp_path, capsys):
    top = {"optimizers": '["sgd", "sam", "sam-quarter-ascent", "sam-two-fifths-ascent"]'}
    path = profile(tmp_path, train={"batch_size": "16", "train_subset": "64"}, top=top)
    out = tmp_path / "out"
    assert run_cli("cost", "--profile", path, "--repeats", "2", "--out", str(out), "--no-progress") == 0
    summary = pd.read_csv(out / "cost.csv")
    assert summary["optimizer"].tolist() == ["sgd", "sam", "sam-quarter-ascent", "sam-two-fifths-ascent"]
    flops = dict(zip(summary["optimizer"], summary["flops_x_sgd"]))
    assert flops["sgd"] == 1 and flops["sam"] == pytest.approx(2.0)
    assert flops["sam-quarter-ascent"] == pytest.approx(1.25)  # a quarter of the batch in the first pass
    assert flops["sam-two-fifths-ascent"] == pytest.approx(1 + 7 / 16)  # ceil(0.4 * 16) = 7 of 16 examples
    assert summary.loc[0, "time_x_sgd_median"] == 1 and (summary["repeats"] == 2).all()
    repeats = pd.read_csv(out / "cost-repeats.csv")
    assert len(repeats) == 8 and (repeats["time_per_step_s"] > 0).all()
    # every repeat starts with another optimizer: drift does not always hit the same one first
    assert repeats.groupby("repeat")["optimizer"].first().tolist() == ["sgd", "sam"]
    table = (out / "cost.md").read_text()
    assert "| `sam-quarter-ascent` | extension of this suite |" in table and "1.25" in table
    assert "38% of SAM's FLOPs" in table.split("`sam-quarter-ascent`")[1].splitlines()[0]
    assert "cost --profile" in table


def test_the_cost_command_prices_a_mixed_step_by_kind_weighted_by_its_expected_share(tmp_path, monkeypatch):
    """Late-phase SAM over the profile's T = 8 steps (1 epoch of 8): one SAM step (from ceil(0.875 * 8) = 7), so
    1.125 x SGD's FLOPs; priced by its first steps it was 1.00. RST: p = 0.5; AE-SAM: its declared 0.5. Seconds
    by the same weighting: each kind's time probe is replaced by known seconds (1 s a one-pass step, 2 s a SAM
    step), so the time ratios are exact too. Each row says its share and how it is known."""
    from suite import probe

    real = probe._probe_steps

    def seconds(config, dataset, kind, steps, two_passes=None):
        if kind != "time":
            return real(config, dataset, kind, steps, two_passes)
        return 2.0 if two_passes or config.optimizer == "sam" else 1.0

    monkeypatch.setattr(probe, "_probe_steps", seconds)
    top = {"optimizers": '["sgd", "sam", "late-sam", "rst", "ae-sam"]'}
    path = profile(tmp_path, train={"batch_size": "16", "train_subset": "128"}, top=top)
    out = tmp_path / "out"
    assert run_cli("cost", "--profile", path, "--repeats", "1", "--out", str(out), "--no-progress") == 0
    summary = pd.read_csv(out / "cost.csv").set_index("optimizer")
    assert summary.loc["late-sam", "flops_x_sgd"] == pytest.approx(1.125)
    assert summary.loc["late-sam", "time_x_sgd_median"] == pytest.approx(1.125)
    assert summary.loc["late-sam", "flops_x_sam"] == pytest.approx(1.125 / 2)
    assert summary.loc["rst", "flops_x_sgd"] == pytest.approx(1.5) == summary.loc["ae-sam", "flops_x_sgd"]
    assert summary.loc["late-sam", "sam_step_share"] == 0.125 and pd.isna(summary.loc["sam", "sam_step_share"])
    rows = {line.split("|")[1].strip(): line for line in (out / "cost.md").read_text().splitlines()
            if line.startswith("| `")}
    assert rows["`late-sam`"].endswith("| 0.125: its schedule's share, exact for the run's length (T = 8 steps) |")
    assert "| 0.500: the probability of its draws" in rows["`rst`"]
    assert "| 0.500: declared: the gradients decide" in rows["`ae-sam`"]
    assert rows["`sam`"].endswith("| – |") and "priced by kind" in (out / "cost.md").read_text()


def test_the_cost_command_says_the_step_it_timed_in_cost_step_json_at_the_threads_asked(tmp_path):
    """cost-step.json (what the frontier compares with a table's runs) holds the header cost.md prints; --threads
    sets torch's threads for the timing, and the step and the command say it."""
    import json

    import torch

    out, before = tmp_path / "out", torch.get_num_threads()
    try:
        assert run_cli("cost", "--profile", profile(tmp_path), "--repeats", "1", "--threads", "1", "--out", str(out),
                       "--no-progress") == 0
    finally:
        torch.set_num_threads(before)
    step = json.loads((out / cost.STEP_FILE).read_text())
    assert step["threads"] == 1 and step["command"].endswith("cost --profile " + profile(tmp_path)
                                                             + " --repeats 1 --threads 1")
    assert {*cost.STEP, "profile", "device", "repeats"} <= set(step) and step["precision"] == "fp32"
    assert step["model"] == "resnet8" and step["batch_size"] == 32 and step["profile"] == "tiny"
    assert "(1 thread)" in (out / "cost.md").read_text().replace(f"{step['machine']}, ", "")
    assert cost.step(out) == step


HEADER = {"profile": "p", "model": "resnet18", "batch_size": 64, "device": "cuda:0", "machine": "NVIDIA H100 80GB HBM3",
          "threads": 16, "torch": "2.11.0+cu130", "commit": "4712b965d5aa", "repeats": 3, "command": "x"}


@pytest.mark.parametrize("precision, compile_mode", [("bf16", "reduce-overhead"), ("fp32", "default"),
                                                     ("fp16", "none")])
def test_a_table_without_cost_step_json_is_read_from_its_cost_md_header(tmp_path, precision, compile_mode):
    """Tables made before cost-step.json (the published results/cost) say their step in cost.md's header only."""
    header = {**HEADER, "precision": precision, "compile": compile_mode}
    (tmp_path / "cost.md").write_text(cost.markdown(pd.DataFrame(columns=["optimizer"]), header))
    assert cost.step(tmp_path) == {k: v for k, v in header.items() if k != "command"}


def test_a_header_that_names_no_precision_leaves_it_unstated_and_an_unreadable_one_is_unknown(tmp_path):
    """Before 70e8908 cost.md printed no precision or compile mode (a bf16 table's header did not say bf16), and
    since it prints them only where they are not the defaults: a header naming neither does not guess fp32."""
    header = {**HEADER, "precision": "fp32", "compile": "none"}
    (tmp_path / "cost.md").write_text(cost.markdown(pd.DataFrame(columns=["optimizer"]), header))
    step = cost.step(tmp_path)
    assert step["precision"] is None and step["compile"] is None and step["threads"] == 16
    (tmp_path / "cost.md").write_text("# Cost per step\n\nsome other header\n")
    assert cost.step(tmp_path) is None and cost.step(tmp_path / "absent") is None


def test_the_published_cost_table_says_its_step():
    from pathlib import Path

    step = cost.step(Path(__file__).resolve().parent.parent / "results")
    assert (step["model"], step["batch_size"], step["threads"], step["commit"][:7]) == ("resnet8", 128, 2, "472b507")


@pytest.mark.parametrize("flops, kernel, time, words", [
    (0.625, 0.625, 0.64, "38% of SAM's FLOPs, 36% of its time"),
    (0.85, 0.85, 1.02, "15% of SAM's FLOPs, none of its time"),
    (1.0, 0.92, 1.01, "nothing here (a dense gradient times a mask); a sparse kernel would skip 8% of SAM's FLOPs"),
    (1.0, 1.0, 0.99, "nothing: the first pass needs every weight's gradient"),
])
def test_the_table_says_what_each_variant_saves_against_sam_here(flops, kernel, time, words):
    row = {"optimizer": "x", "flops_x_sam": flops, "sparse_kernel_flops_x_sam": kernel, "time_x_sam_median": time}
    assert cost.saving(row) == words
    assert cost.saving({**row, "optimizer": "sam"}) == "–"


def test_the_tables_compare_with_the_profiles_references():
    """Another pair than SGD and SAM: the ratios, the columns and what is saved are against those."""
    rows = pd.DataFrame([{"optimizer": name, "repeat": r, "time_per_step_s": t * (1 + r / 10), "flops_per_step": f,
                          "sparse_kernel_flops_per_step": f}
                         for r in range(2) for name, t, f in (("sgd", 1.0, 1e9), ("esam", 1.5, 1.6e9),
                                                               ("sam-quarter-ascent", 1.2, 1.25e9))])
    refs = ("sgd", "esam")
    summary = cost.summarise(rows, ["sgd", "esam", "sam-quarter-ascent"], refs)
    assert "flops_x_sam" not in summary and summary["flops_x_esam"].tolist() == pytest.approx([0.625, 1, 0.78125])
    assert summary["saves_here"].tolist() == ["–", "–", "22% of ESAM's FLOPs, 20% of its time"]
    table = cost.markdown(summary, {k: "x" for k in ("profile", "model", "batch_size", "device", "machine", "threads",
                                                     "torch", "commit", "repeats", "command")}, refs)
    head, rule = table.splitlines()[6:8]
    assert "| FLOPs × SGD | FLOPs × ESAM | sparse kernel × SGD |" in head and "saves against ESAM here |" in head
    assert head.count("|") == rule.count("|") == table.splitlines()[-1].count("|")


@pytest.mark.parametrize("args, message", [
    (("--repeats", "0"), "--repeats must be between 1 and 100"),
    (("--optimizer", "nope"), "unknown optimizer 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run_cli("cost", "--profile", profile(tmp_path), "--out", str(out), *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_an_out_that_is_a_file_is_refused_before_anything_is_measured(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert run_cli("cost", "--profile", profile(tmp_path), "--out", str(blocker / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a directory" in err and len(err.splitlines()) == 1 and blocker.read_text() == "a file"


def test_publishing_from_an_uncommitted_tree_is_refused(tmp_path, capsys, monkeypatch):
    from suite import measure

    real = measure.environment
    monkeypatch.setattr(measure, "environment", lambda *args: {**real(*args), "git_commit": "abc-dirty"})
    monkeypatch.chdir(tmp_path)
    assert run_cli("cost", "--profile", profile(tmp_path), "--out", "results") == 2
    assert "not a clean commit" in capsys.readouterr().err and not (tmp_path / "results").exists()



def test_every_ratio_the_results_readme_quotes_from_the_cost_table_is_in_it():
    """The prose about the published cost table (results/README.md, from its heading to "Other measurements")
    quotes ratios; each must be one the table says, so a table re-measured without the prose fails here."""
    import re
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "results"
    readme = (results / "README.md").read_text()
    start = readme.index("# Cost per step: `cost.md`")
    section = readme[start:readme.index("Other measurements, not in the records", start)]
    table = (results / "cost.md").read_text()
    quoted = set(re.findall(r"(?<![\d.])\d\.\d\d(?![\d])", section))
    assert len(quoted) > 10
    assert sorted(q for q in quoted if q not in table) == []
