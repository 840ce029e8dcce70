"""The report on known records: statistics, ratios to SGD, files, and unreadable records."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers import squash

from suite.report import references, summarize, to_markdown, write_report
from suite.stats import interval, paired_difference, pareto_front, t975
from suite.store import SCHEMA, iter_records, record_path, write_record


def record(optimizer, seed, acc, time_s, flops, profile="p", status="finished", budget="epochs", steps=10,
           references=("sgd", "sam")):
    return {
        "schema": SCHEMA,
        "config": {"profile": profile, "optimizer": optimizer, "seed": seed, "train": {"budget": budget}},
        "references": list(references),
        "metrics": {
            "status": status, "test_acc": acc, "test_loss": 1.0, "train_loss": 1.2, "time_per_step_s": time_s,
            "samples_per_s": 128 / time_s, "train_seconds": 10 * time_s, "flops_per_step": flops,
            "forward_passes_per_step": 1.0 if optimizer == "sgd" else 2.0,
            "backward_passes_per_step": 1.0 if optimizer == "sgd" else 2.0, "peak_memory_mb": 100.0, "steps": steps,
            "diverged_at_step": 7 if status == "diverged" else None,
            "last_finite_loss": 2.5 if status == "diverged" else None,
            "budget_kind": budget, "budget_epochs_run": steps / 5, "budget_train_flops": flops * steps,
            "budget_train_seconds_at_timed_rate": time_s * steps, "budget_spent_ratio": 1.0,
        },
        "epochs": [{"epoch": 1, "epochs_done": 1, "train_loss": 1.5, "test_loss": 1.1, "test_acc": acc - 0.1,
                    "train_seconds": 1.0, "lr": 0.05},
                   {"epoch": 2, "epochs_done": 2, "train_loss": 1.2, "test_loss": 1.0, "test_acc": acc,
                    "train_seconds": 1.0, "lr": 0.0}],
    }


RECORDS = [
    record("sgd", 0, 0.50, 0.10, 1e9), record("sgd", 1, 0.52, 0.10, 1e9), record("sgd", 2, 0.54, 0.10, 1e9),
    record("sam", 0, 0.60, 0.21, 2e9), record("sam", 1, 0.62, 0.19, 2e9), record("sam", 2, 0.55, 0.20, 2e9,
                                                                                 status="diverged"),
]


def test_summary_statistics_against_hand_computed_values():
    table = summarize(RECORDS).set_index("optimizer")
    sgd, sam = table.loc["sgd"], table.loc["sam"]
    assert sgd["seeds"] == 3 and sgd["test_acc_mean"] == pytest.approx(0.52)
    assert sgd["test_acc_std"] == pytest.approx(0.02)
    assert sgd["test_acc_ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3))
    assert sam["seeds"] == 2 and sam["diverged"] == 1  # the diverged run is counted, not averaged
    assert sam["test_acc_mean"] == pytest.approx(0.61)
    assert sam["time_per_step_s_ratio_sgd"] == pytest.approx(2.0) and sam["flops_per_step_ratio_sgd"] == 2.0
    assert sgd["time_per_step_s_ratio_sam"] == pytest.approx(0.5) and sam["flops_per_step_ratio_sam"] == 1.0
    assert list(table.index) == ["sgd", "sam"]


def test_row_order_is_each_profiles_own():
    """Rows follow the order a profile's own sweep first ran its optimizers: runs of another profile (here
    `b`, which ran `ssam` before `esam`) do not reorder it. Before, the first start over every profile did."""
    def at(rec, when):
        return {**rec, "started_at": when}

    a = [at(record(o, 0, 0.5, 0.1, 1e9, profile="a"), f"2026-01-0{i}T00:00:00")
         for i, o in enumerate(["sgd", "sam", "esam", "ssam"], start=1)]
    b = [at(record(o, 0, 0.5, 0.1, 1e9, profile="b"), f"2025-01-0{i}T00:00:00")
         for i, o in enumerate(["sgd", "sam", "ssam", "esam"], start=1)]
    table = summarize(a + b)
    assert list(table[table.profile == "a"].optimizer) == ["sgd", "sam", "esam", "ssam"]
    assert list(table[table.profile == "b"].optimizer) == ["sgd", "sam", "ssam", "esam"]


def test_ratios_are_taken_within_a_profile():
    other = [record("sgd", 0, 0.5, 1.0, 4e9, profile="q"), record("sam", 0, 0.5, 3.0, 8e9, profile="q")]
    table = summarize(RECORDS + other)
    q = table[table["profile"] == "q"].set_index("optimizer")
    assert q.loc["sam", "time_per_step_s_ratio_sgd"] == pytest.approx(3.0)
    assert q.loc["sam", "flops_per_step_ratio_sgd"] == pytest.approx(2.0)


def test_t_quantiles_for_any_degrees_of_freedom():
    """Against printed tables (3 decimals), including beyond 30 degrees of freedom, where a normal 1.96
    would make the interval too narrow."""
    for df, printed in [(1, 12.706), (2, 4.303), (9, 2.262), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)]:
        assert t975(df) == pytest.approx(printed, abs=5e-4)
    assert t975(10**6) == pytest.approx(1.960, abs=5e-4)


def test_markdown_shows_percentages_and_ratios():
    md = squash(to_markdown(summarize(RECORDS)))
    assert "| optimizer | seeds | epochs | test acc % (mean ± std) | 95% CI | Δ vs SGD (paired, 95% CI) |" in md
    assert "| sgd | 3 | 2.00 | 52.00 ± 2.00 |" in md
    assert "| sam | 2 (1 diverged) | 2.00 | 61.00 ± 1.41 |" in md
    assert "| 2.00 |" in md
    # SAM - SGD over the two seeds both finished: +10 and +10 points, std 0 -> an interval of 0; no verdict
    # decides it here (none given), so it is plain: the table marks only what the verdicts decide
    assert "| +10.00 ± 0.00 | – |" in md and "**+" not in md
    assert "- sam: seed 2 at step 7 (last finite loss 2.500)" in md  # a diverged run is shown, not dropped
    assert "| time × SGD | time × SAM |" in md and "| FLOPs × SGD | FLOPs × SAM |" in md


def test_references_come_from_the_records():
    """A profile that compares with SGD alone gets no SAM columns; another profile keeps its own."""
    only_sgd = [{**r, "references": ["sgd"], "config": {**r["config"], "profile": "q"}} for r in RECORDS]
    table = summarize(RECORDS + only_sgd)
    md = squash(to_markdown(table, references(RECORDS + only_sgd)))
    p_part, q_part = md.split("### Profile `q`")
    assert "Δ vs SAM" in p_part and "Δ vs SAM" not in q_part and "Δ vs SGD" in q_part
    assert "time × SAM" not in q_part
    q = table[table["profile"] == "q"]
    assert "diff_sam_test_acc_mean" not in q.dropna(axis=1, how="all").columns


def test_write_report_skips_corrupt_records_and_writes_every_file(tmp_path):
    for i, r in enumerate(RECORDS):
        write_record(record_path(tmp_path, r["config"]["profile"], f"r{i}"), r)
    bad = record_path(tmp_path, "p", "broken")
    bad.write_text('{"schema": 2, "metr')
    written, skipped, superseded = write_report(tmp_path)
    assert superseded == []
    assert skipped == [bad]
    names = {p.name for p in written}
    assert {"summary.csv", "summary.md", "p-comparison.png"} <= names
    for p in written:
        assert p.stat().st_size > 0
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert set(csv["optimizer"]) == {"sgd", "sam"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_records_are_written_whole(tmp_path):
    path = record_path(tmp_path, "p", "x")
    write_record(path, RECORDS[0])
    assert json.loads(path.read_text()) == RECORDS[0]
    assert [r for _, r in iter_records(tmp_path)] == [RECORDS[0]]


def test_interval_against_known_numbers():
    n, mean, std, half = interval([1, 2, 3, 4])
    assert (n, mean) == (4, 2.5)
    assert std == pytest.approx(1.2909944)
    assert half == pytest.approx(3.182446 * 1.2909944 / 2)
    assert interval([5])[:2] == (1, 5.0) and math.isnan(interval([5])[3])


def test_paired_difference_against_known_numbers():
    sgd = {0: 0.50, 1: 0.52, 2: 0.54}
    n, mean, std, half = paired_difference({0: 0.60, 1: 0.62, 2: 0.55, 3: 0.99}, sgd)  # seed 3 has no pair
    assert n == 3 and mean == pytest.approx(0.07) and std == pytest.approx(math.sqrt(0.0027))
    assert half == pytest.approx(4.302653 * math.sqrt(0.0027) / math.sqrt(3))
    assert abs(mean) < half  # the interval includes 0


def test_pairing_separates_what_unpaired_intervals_cannot():
    """Seeds move both optimizers alike (0.50, 0.60, 0.70): the unpaired intervals overlap widely,
    the paired difference (+2, +1, +2 points) is clearly above zero."""
    ref, other = {0: 0.50, 1: 0.60, 2: 0.70}, {0: 0.52, 1: 0.61, 2: 0.72}
    _, m_ref, _, h_ref = interval(ref.values())
    _, m_other, _, h_other = interval(other.values())
    assert m_other - h_other < m_ref + h_ref
    n, mean, _, half = paired_difference(other, ref)
    assert mean == pytest.approx(0.05 / 3) and half == pytest.approx(4.302653 * 0.0057735 / math.sqrt(3), rel=1e-4)
    assert abs(mean) > half  # the paired interval excludes 0


def test_pareto_front():
    assert pareto_front([1, 2, 3, 2], [0.5, 0.6, 0.55, 0.7]) == [0, 3]
    assert pareto_front([1, 1], [0.5, 0.5]) == [0, 1]  # equal points do not dominate each other
    assert pareto_front([], []) == []


def test_budgets_are_summarised_separately():
    flops = [record("sgd", 0, 0.5, 0.1, 1e9, budget="flops", steps=20), record("sam", 0, 0.7, 0.2, 2e9,
                                                                                 budget="flops", steps=10)]
    table = summarize(RECORDS + flops)
    f = table[table["budget"] == "flops"].set_index("optimizer")
    assert f.loc["sam", "budget_epochs_run_mean"] == 2 and f.loc["sgd", "budget_epochs_run_mean"] == 4
    assert f.loc["sam", "diff_sgd_test_acc_mean"] == pytest.approx(0.2) and f.loc["sam", "diff_sgd_test_acc_seeds"] == 1
    assert list(table["budget"]) == ["epochs", "epochs", "flops", "flops"]
    assert "budget `flops`" in to_markdown(table)


def test_a_seed_run_twice_under_one_profile_counts_once_the_latest():
    """E.g. a 1-epoch try and the real sweep in one directory: the mean and the pairing use the same run."""
    early = {**record("sam", 0, 0.10, 0.2, 2e9), "started_at": "2026-01-01T00:00:00"}
    late = {**record("sam", 0, 0.60, 0.2, 2e9), "started_at": "2026-01-02T00:00:00"}
    sgd = {**record("sgd", 0, 0.50, 0.1, 1e9), "started_at": "2026-01-01T00:00:00"}
    table = summarize([late, early, sgd]).set_index("optimizer")
    assert table.loc["sam", "seeds"] == 1 and table.loc["sam", "test_acc_mean"] == pytest.approx(0.60)
    assert table.loc["sam", "diff_sgd_test_acc_mean"] == pytest.approx(0.10)


def _with(r, epochs=None, hparams=None, **train):
    r = json.loads(json.dumps(r))
    if epochs is not None:
        r["config"]["train"]["epochs"] = epochs
    r["config"]["train"].update(train)
    r["config"]["hparams"] = hparams or {}
    return r


def test_runs_of_one_profile_with_different_settings_never_share_a_table():
    """The issue's case: a 2-epoch sweep, then SAM alone re-run at 1 epoch under the same profile name.
    SGD at 2 epochs must not be compared with SAM at 1 epoch."""
    two = [_with(r, epochs=2) for r in RECORDS]
    one = [_with(record("sam", s, 0.40, 0.2, 2e9), epochs=1) for s in range(3)]
    table = summarize(two + one)
    assert sorted(set(table["setting"])) == ["epochs=1", "epochs=2"]
    short = table[table["setting"] == "epochs=1"].set_index("optimizer")
    assert list(short.index) == ["sam"] and short.loc["sam", "seeds"] == 3
    assert math.isnan(short.loc["sam", "diff_sgd_test_acc_mean"]) and "time_per_step_s_ratio_sgd" in short
    assert math.isnan(short.loc["sam", "time_per_step_s_ratio_sgd"])
    long = table[table["setting"] == "epochs=2"].set_index("optimizer")
    assert long.loc["sam", "test_acc_mean"] == pytest.approx(0.61)  # the 2-epoch SAM only
    md = squash(to_markdown(table))
    assert "### Profile `p` with epochs=1, budget `epochs`" in md and "### Profile `p` with epochs=2" in md
    assert md.count("| sam |") == 2


def test_one_optimizer_with_other_hyper_parameters_is_its_own_row():
    base = [_with(r, hparams={"rho": 0.05}) for r in RECORDS]
    wide = [_with(record("sam", s, 0.3, 0.2, 2e9), hparams={"rho": 0.5}) for s in range(2)]
    table = summarize(base + wide).set_index("optimizer")
    assert {"sam [rho=0.05]", "sam [rho=0.5]", "sgd"} == set(table.index)
    assert table.loc["sam [rho=0.5]", "seeds"] == 2
    assert table.loc["sam [rho=0.5]", "test_acc_mean"] == pytest.approx(0.3)
    assert table.loc["sam [rho=0.5]", "diff_sgd_test_acc_mean"] == pytest.approx(0.3 - 0.51)


def test_the_same_settings_under_one_profile_stay_one_table():
    table = summarize([_with(r, epochs=2) for r in RECORDS])
    assert set(table["setting"]) == {""} and "`p` with" not in to_markdown(table)


def test_a_record_older_than_a_setting_reads_as_its_default():
    """Records made before label_noise existed (the published cpu sweep) share a table with new ones at
    label_noise = 0, and not with runs at another value."""
    old = [_with(r, epochs=2) for r in RECORDS]
    for r in old:
        r["config"]["train"].pop("label_noise", None)
    new = [_with(record("sam", s, 0.40, 0.2, 2e9), epochs=2, label_noise=0.0) for s in range(3)]
    assert set(summarize(old + new)["setting"]) == {""}
    noisy = [_with(record("sam", s, 0.40, 0.2, 2e9), epochs=2, label_noise=0.4) for s in range(3)]
    assert sorted(set(summarize(old + noisy)["setting"])) == ["label_noise=0.0", "label_noise=0.4"]


def test_pareto_front_treats_costs_within_the_budgets_rounding_as_equal():
    """The issue's case: under an equal-FLOPs budget a run one step short (1.406 vs 1.423 TFLOP) is not
    cheaper; only the most accurate of the equal-cost runs is on the front."""
    costs, accs = [1.423, 1.406, 1.420, 2.0], [0.40, 0.35, 0.38, 0.45]
    assert pareto_front(costs, accs) == [1, 2, 0, 3]  # no tolerance: every cheaper point counts
    assert pareto_front(costs, accs, tolerance=0.02) == [0, 3]


def test_an_optimizer_has_one_style_in_every_figure_and_families_get_panels():
    from suite.plots import panels, style

    assert style("sgd") == style("sgd") and style("sgd") != style("sam")
    ssams = [f"ssam-{m}-{p}-{f}" for m in "fd" for p in ("unstructured", "structured", "nm")
             for f in ("explicit", "implicit")]
    masked = ["ssam-f-structured-implicit-masked", "ssam-d-unstructured-implicit-masked"]
    from suite import registry

    assert len({style(n) for n in ["sgd", "sam", "esam", *ssams, *masked]}) == 17
    assert len({style(n) for n in registry.names()}) == len(registry.names())  # every registered one apart
    assert style(masked[0])[0] == style("ssam-f-structured-explicit")[0]  # the pattern's colour
    cheap = "ssam-d-unstructured-explicit-quarter-ascent"  # the base's colour, its own marker, its family's panel
    assert style(cheap)[0] == style("ssam-d-unstructured-explicit")[0] and style(cheap) != style(cheap[:-15])
    refs = ("sgd", "sam")
    assert panels(["sgd", "sam", "sam-quarter-ascent", cheap], refs) == [
        ("SAM, with sgd", ["sgd", "sam", "sam-quarter-ascent"]), ("SSAM-D, with sgd and sam", ["sgd", "sam", cheap])]
    fifths = "ssam-f-unstructured-explicit-two-fifths-ascent"  # another fraction: the same colour, another marker
    assert style(fifths)[0] == style("ssam-f-unstructured-explicit")[0]
    assert style(fifths)[1] not in {style("ssam-f-unstructured-explicit")[1], style(cheap)[1]}
    assert [t for t, _ in panels(["sgd", "sam", "sam-two-fifths-ascent", fifths], refs)] == [
        "SAM, with sgd", "SSAM-F, with sgd and sam"]
    names = ["sgd", "sam", "esam", "ssam-f-nm-explicit", "ssam-d-nm-implicit", "linf-sam"]
    assert panels(names, refs) == [
        ("SAM and ESAM, with sgd", ["sgd", "sam", "esam"]), ("SSAM-F, with sgd and sam", ["sgd", "sam",
                                                                                           "ssam-f-nm-explicit"]),
        ("SSAM-D, with sgd and sam", ["sgd", "sam", "ssam-d-nm-implicit"]),
        ("others, with sgd and sam", ["sgd", "sam", "linf-sam"])]
    assert panels(["sgd", "ssam-d-nm-explicit"], refs) == [("SSAM-D, with sgd", ["sgd", "ssam-d-nm-explicit"])]
    # the profile's references stand beside every panel: ESAM instead of SAM
    assert panels(names, ("sgd", "esam"))[0] == ("SAM and ESAM, with sgd", ["sgd", "esam", "sam"])


def test_the_statistics_and_the_figures_import_no_report():
    """report -> plots -> stats, one way: neither the figures nor the statistics import the report."""
    import ast
    from pathlib import Path

    import suite

    for name in ("plots", "stats"):
        tree = ast.parse((Path(suite.__file__).parent / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not {"suite.report", "suite.plots"} & imported, name


def test_style_and_panel_come_from_the_registry_entry_not_the_name(monkeypatch):
    """An entry named in no pattern the plots know is styled and grouped by its family and what it changes;
    one that names no family is drawn among the others."""
    from ssam import SSAM
    from suite import registry
    from suite.plots import panel_of, style

    fisher_nm = {"mask": "fisher", "pattern": "nm", "form": "explicit", "sparsity": 0.5}
    entries = [registry.OptimizerInfo("dense-fisher-nm", SSAM, "x", changes=fisher_nm, family="SSAM-F"),
               registry.OptimizerInfo("sam-half", registry.SAM, "x", changes={"ascent_fraction": 0.4}, family="SAM"),
               registry.OptimizerInfo("sam-wide", registry.SAM, "x", changes={"rho": 0.3}, family="SAM"),
               registry.OptimizerInfo("unsaid", SSAM, "x", changes=fisher_nm)]
    monkeypatch.setattr(registry, "OPTIMIZERS", [*registry.OPTIMIZERS, *entries])
    assert style("dense-fisher-nm") == style("ssam-f-nm-explicit") and panel_of("dense-fisher-nm") == "SSAM-F"
    assert style("sam-half") == style("sam-two-fifths-ascent") and panel_of("sam-half") == "SAM and ESAM"
    assert style("sam-wide") not in {style("sam"), style("sgd")} and panel_of("sam-wide") == "SAM and ESAM"
    assert panel_of("unsaid") == "others" and style("unsaid") != style("ssam-f-nm-explicit")
    assert panel_of("asam") == panel_of("looksam") == panel_of("sam-two-fifths-ascent-every-2") == "efficient-SAM field"
    # a row with hyper-parameters of its own: another optimizer's style, its optimizer's panel
    assert style("ssam-d-nm-explicit [rho=0.1]") != style("ssam-d-nm-explicit")
    assert panel_of("ssam-d-nm-explicit [rho=0.1]") == "SSAM-D"


def test_the_figures_import_no_optimizer_class():
    """Colours, markers and panels come from the registry's family field: plots.py imports neither an
    optimizer package nor torch (the classes it used to compare entries with)."""
    import ast
    from pathlib import Path

    import suite

    tree = ast.parse((Path(suite.__file__).parent / "plots.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m and m.split(".")[0] in ("baselines", "ssam", "torch")}, modules
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"SAM", "ESAM", "LookSAM", "GSAM", "MSAM", "RST", "SSAM", "SGD"}, names
    assert "registry.SAM" not in (Path(suite.__file__).parent / "plots.py").read_text()


def test_figure_titles_promise_spread_only_with_seeds(tmp_path):
    from suite.plots import _seeds_note

    assert _seeds_note(pd.DataFrame({"seeds": [1, 1]}), "bars") == "one seed each: no error bars"
    assert _seeds_note(pd.DataFrame({"seeds": [3, 3]}), "band") == "mean of 3 seeds, band: ± std over seeds"
    for r in RECORDS[:1] + RECORDS[3:4]:
        write_record(record_path(tmp_path, "p", f"{r['config']['optimizer']}-0"), r)
    names = {p.name for p in write_report(tmp_path)[0]}
    assert {"p-comparison.png", "p-curves.png"} <= names


# ----- what a profile declares (issue 36) ------------------------------------------------------------------------
def test_a_profile_that_says_nothing_about_accuracy_gets_no_accuracy_verdict(tmp_path, capsys):
    """smoke declares it (``accuracy_claims = false``): a few steps of every optimizer decide nothing about
    accuracy, so the same runs that give cpu a verdict give smoke none, and its table marks nothing."""
    from suite.config import ConfigError, load_profile, parse_profile
    from suite.report import on_accuracy

    assert load_profile("smoke").accuracy_claims is False and load_profile("cpu").accuracy_claims is True
    with pytest.raises(ConfigError, match="accuracy_claims must be true or false"):
        parse_profile("mine", {"accuracy_claims": "no"})
    assert on_accuracy("test_acc") and on_accuracy("best_test_acc_on_test_set")
    assert not on_accuracy("sharpness_lambda_max") and not on_accuracy("time_per_step_s")
    for profile in ("smoke", "cpu"):
        for name, accs in (("sgd", [0.40, 0.41, 0.42]), ("sam", [0.50, 0.52, 0.53])):
            for seed, acc in enumerate(accs):
                write_record(record_path(tmp_path, profile, f"{name}-{seed}"),
                             record(name, seed, acc, 0.1, 1e9, profile=profile))
    write_report(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "### Verdicts (exploratory) — `cpu`" in md and "Verdicts (exploratory) — `smoke`" not in md
    smoke = md.split("### Profile `smoke`")[1]
    assert "|" in smoke.split("\n\n")[1] and "**" not in smoke.split("\n\n")[1]  # its table


# ----- one rule for the table and the verdicts (issue 36) ---------------------------------------------------------
def _beats(subject: str, reference: str):
    from suite.claims import Claim

    return Claim(f"{subject}-beats-{reference}", f"{subject} is more accurate than {reference}", "test",
                 metric="test_acc", test="beats", subjects=(subject,), reference=reference, scale=100.0)


def test_the_table_marks_what_the_verdicts_decide_and_nothing_else(tmp_path):
    """The issue's case: a one-sided verdict that fails (p 0.03 at n = 3) beside a two-sided 95% interval that
    includes 0 was a plain cell, and a cell no claim judges was bold by its own rule. Now the cell a verdict
    decides is bold with the verdict and its own bound, every other cell plain, and the line under the table
    says so. (Since each side is tested at α / 2m, a family of one's bound is the two-sided interval's end.)"""
    from scipy import stats

    from suite.report import DIFF_RULE

    base = [0.50, 0.52, 0.54]
    worse = [b + d for b, d in zip(base, [-0.02, -0.03, -0.045])]  # -3.17 points, t = -4.36, p = 0.024
    better = [b + d for b, d in zip(base, [0.05, 0.06, 0.07])]  # +6 points, its interval excludes 0; no claim
    for name, accs in (("base", base), ("x", worse), ("y", better)):
        for seed, acc in enumerate(accs):
            write_record(record_path(tmp_path, "p", f"{name}-{seed}"), record(name, seed, acc, 0.1, 1e9,
                                                                              references=("base",)))
    write_report(tmp_path, [_beats("x", "base")])
    md = squash((tmp_path / "summary.md").read_text())
    d = [100 * (w - b) for w, b in zip(worse, base)]
    se = stats.tstd(d) / math.sqrt(3)
    half, upper = stats.t.ppf(0.975, 2) * se, sum(d) / 3 + stats.t.ppf(0.975, 2) * se
    assert 0 > upper and upper == pytest.approx(sum(d) / 3 + half)  # the bound at α / 2: the interval's end
    assert "| `x-beats-base` | `x` | `base` | 3 | 1 | -3.17 |" in md and "| **fails** (fragile) |" in md
    assert f"| **-3.17 ± {half:.2f} fails (≤ {upper:+.2f})** |" in md
    assert "| +6.00 ± 2.48 |" in md and md.count("**-") == 1  # no claim: plain, though it excludes 0
    assert squash(DIFF_RULE) in md


def test_a_cell_is_marked_on_its_own_table_alone():
    """A verdict names its table (profile, setting), its budget (the claim's), optimizer, reference and metric:
    the same comparison in the flops table stays plain, and so does an inconclusive one."""
    from suite.report import decided

    judged = pd.DataFrame([{"table": "p", "setting": "", "claim": "x-beats-base", "subject": "x", "reference": "base",
                            "metric": "test_acc", "test": "beats", "verdict": "holds", "bound": 0.012,
                            "bound_side": "holds"},
                           {"table": "p", "setting": "", "claim": "x-beats-base", "subject": "z", "reference": "base",
                            "metric": "test_acc", "test": "beats", "verdict": "inconclusive", "bound": -0.5,
                            "bound_side": "holds"}])
    marks = decided(judged, [_beats("x", "base")])
    assert list(marks) == [("p", "", "epochs", "x", "base", "test_acc")]  # inconclusive decides nothing
    rows = [record(o, s, a, 0.1, 1e9, budget=b, references=("base",)) for b in ("epochs", "flops")
            for o, accs in (("base", [0.5, 0.52]), ("x", [0.53, 0.56]), ("z", [0.4, 0.5])) for s, a in enumerate(accs)]
    md = squash(to_markdown(summarize(rows), {"p": ("base",)}, marks))
    epochs, flops = md.split("budget `flops`")
    assert "| **+3.50 ± 6.35 holds (≥ +1.20)** |" in epochs and "**+" not in flops and "**-" not in flops
    assert "| -6.00 ± " in epochs  # z: its verdict is inconclusive


# ----- shortened runs say so (issue 36) -----------------------------------------------------------------------------
SHARPNESS = {"sharpness_lambda_max": 100.0, "sharpness_trace": 500.0, "sharpness_m": 0.4, "sharpness_m_adaptive": 0.03}


def _of_profile(name: str, optimizer: str, seed: int, acc: float, **train):
    """A record of a shipped profile's runs, its training settings as the profile ships them but ``train``."""
    import dataclasses

    from suite.config import load_profile

    r = record(optimizer, seed, acc, 0.1, 1e9, profile=name)
    r["config"]["train"] = {**dataclasses.asdict(load_profile(name).train), **train}
    r["metrics"].update(SHARPNESS)
    return r


def test_how_runs_differ_from_their_profile_as_shipped():
    from suite.config import load_profile
    from suite.report import as_run, label_tables

    profiles = {name: load_profile(name) for name in ("cpu", "smoke")}

    def said(records):
        return as_run(label_tables(records), profiles)

    full = [_of_profile("cpu", o, s, 0.4) for o in ("sgd", "sam") for s in range(3)]
    assert said(full) == {}
    assert said([*full, _of_profile("cpu", "sgd", 3, 0.4)]) == {}  # more seeds than it gives: no cut
    assert said([_of_profile("cpu", o, s, 0.4, device="cuda") for o in ("sgd", "sam") for s in range(3)]) == {}
    short = [_of_profile("cpu", o, s, 0.4, epochs=2) for o in ("sgd", "sam") for s in range(2)]
    assert said(short) == {("cpu", ""): "shortened: 2 epochs, 2 seeds"}
    assert said([_of_profile("smoke", "sgd", 0, 0.4, train_subset=320)]) == {
        ("smoke", ""): "shortened: train_subset 320"}
    assert said([_of_profile("smoke", "sgd", 0, 0.4, dataset="synthetic", epochs=2)]) == {
        ("smoke", ""): "not as shipped: 2 epochs, dataset synthetic"}
    # two tables of one profile: each says its own
    both = said([*full, *short])
    assert both == {("cpu", "epochs=2"): "shortened: 2 epochs, 2 seeds"}
    profiles.pop("smoke")  # a profile that cannot be read now: nothing to compare with
    assert said([_of_profile("smoke", "sgd", 0, 0.4, epochs=9)]) == {}


def test_every_heading_that_names_a_shortened_profile_says_so(tmp_path):
    """The issue's case: `cpu` run with --epochs 2 --seeds 2 looked like the profile. Every heading of
    summary.md that names it — verdicts, frontier, summary and sharpness tables — now says how it was cut."""
    from suite.claims import Claim, Margin

    keeps = Claim("nm-keeps-sam", "N:M keeps SAM's accuracy", "test", metric="test_acc", test="keeps",
                  subjects=("ssam-f-nm-explicit",), reference="sam", margin=Margin(at_least=0.01), scale=100.0)
    accuracy = {"sgd": [0.40, 0.41], "sam": [0.45, 0.47], "ssam-f-nm-explicit": [0.45, 0.47]}
    for name, accs in accuracy.items():
        for seed, acc in enumerate(accs):
            write_record(record_path(tmp_path, "cpu", f"{name}-{seed}"), _of_profile("cpu", name, seed, acc, epochs=2))
    write_record(record_path(tmp_path, "smoke", "sgd-0"), _of_profile("smoke", "sgd", 0, 0.3))  # as shipped
    write_report(tmp_path, [keeps, _beats("sam", "sgd")])
    headings = [line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("#")]
    named = [h for h in headings if "`cpu`" in h]
    assert {h.split()[1] for h in named} >= {"Verdicts", "Frontier", "Profile", "Sharpness"}
    assert all("`cpu`, shortened: 2 epochs, 2 seeds" in h for h in named), named
    assert not any("`smoke`, shortened" in h or "not as shipped" in h for h in headings)


def test_a_heading_names_its_own_table_not_one_it_begins():
    from suite.report import headings_say

    text = ("### Verdicts — `cpu` with epochs=2\n### Profile `cpu` with epochs=2, label_noise=0.4, budget `epochs`\n"
            "### Frontier — `cpu` (time: the `cost` table)\n### Profile `cpu-noise`, budget `epochs`\n"
            "prose that names `cpu` with epochs=2")
    out = headings_say(text, {("cpu", "epochs=2"): "shortened: 2 epochs"}).splitlines()
    assert out[0] == "### Verdicts — `cpu` with epochs=2, shortened: 2 epochs"
    assert out[1:] == text.splitlines()[1:]
    out = headings_say(text, {("cpu", ""): "shortened: 1 seed"}).splitlines()
    assert out[2] == "### Frontier — `cpu`, shortened: 1 seed (time: the `cost` table)"
    assert out[:2] + out[3:] == text.splitlines()[:2] + text.splitlines()[3:]


# ----- summary.csv: one unit per number, named, and described (issue 36) ------------------------------------------
def test_summary_csv_gives_accuracy_in_percent_as_summary_md_does(tmp_path):
    """summary.md said 52.00 where summary.csv said 0.52 under the same name: the CSV now says percent, and its
    column's name says so; columns another already gives (budget_steps_run = steps; budget_spent = the
    budget's own measure) and the old bold rule's flags are gone."""
    for i, r in enumerate(RECORDS):
        r = json.loads(json.dumps(r))
        r["metrics"].update(budget_steps_run=10, budget_spent=2.0, best_test_acc_on_test_set=r["metrics"]["test_acc"])
        write_record(record_path(tmp_path, "p", f"r{i}"), r)
    write_report(tmp_path)
    csv = pd.read_csv(tmp_path / "summary.csv").set_index("optimizer")
    assert csv.loc["sgd", "test_acc_pct_mean"] == pytest.approx(52.0) and "| 52.00 ± 2.00 |" in squash(
        (tmp_path / "summary.md").read_text())
    assert csv.loc["sgd", "test_acc_pct_std"] == pytest.approx(2.0)
    assert csv.loc["sgd", "test_acc_pct_ci95"] == pytest.approx(100 * 4.302653 * 0.02 / math.sqrt(3))
    assert csv.loc["sam", "diff_sgd_test_acc_pct_mean"] == pytest.approx(10.0)
    assert csv.loc["sam", "diff_sgd_test_acc_pct_seeds"] == 2  # a count: not scaled
    assert csv.loc["sam", "best_test_acc_on_test_set_pct_mean"] == pytest.approx(61.0)
    assert csv.loc["sam", "budget_spent_pct_mean"] == pytest.approx(100.0)
    assert csv.loc["sam", "time_per_step_s_ratio_sgd"] == pytest.approx(2.0)  # a ratio: as it was
    assert not [c for c in csv.columns if "acc_" in c and "acc_pct_" not in c and "acc_on_test_set_pct_" not in c]
    assert not [c for c in csv.columns if c.endswith("_distinguishable")
                or c.startswith(("budget_steps_run_", "budget_spent_mean", "budget_spent_std", "budget_spent_ratio"))]


def test_the_results_readme_describes_every_column_of_summary_csv():
    """results/README.md's last section says what each column of summary.csv holds. The columns the published
    records give (``report.csv_table``) are exactly those it describes: a column added, dropped or renamed
    without its description fails here."""
    import re
    from pathlib import Path

    from suite.report import csv_table, label_tables, latest_per_seed

    root = Path(__file__).resolve().parent.parent
    section = (root / "results" / "README.md").read_text().split("# The columns of `summary.csv`")[1]
    columns_part, metrics_part = re.split(r"^# ", section, flags=re.M)[0].split("| metric |")

    def first_cells(text: str) -> list[str]:
        return [n for line in text.splitlines() if line.startswith("| `")
                for n in re.findall(r"`([^`]+)`", line.split("|")[1])]

    patterns, described = first_cells(columns_part), first_cells(metrics_part)
    records, _ = latest_per_seed(label_tables([r for _, r in iter_records(root / "results") if r is not None]))
    refs = sorted({ref for names in references(records).values() for ref in names})
    expected = {p.replace("<metric>", m).replace("<ref>", ref) for p in patterns for m in described for ref in refs}
    actual = set(csv_table(summarize(records)).columns)
    assert sorted(actual - expected) == [] and sorted(expected - actual) == []
