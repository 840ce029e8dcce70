"""The report on known records: statistics, ratios to SGD, files, and unreadable records."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers import squash

from suite.report import references, summarize, to_markdown, write_report
from suite.stats import distinguishable, interval, paired_difference, pareto_front, t975
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
    # SAM - SGD over the two seeds both finished: +10 and +10 points, std 0 -> an interval of 0: bold
    assert "| **+10.00 ± 0.00** | – |" in md
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
    assert not distinguishable(n, mean, half)


def test_pairing_separates_what_unpaired_intervals_cannot():
    """Seeds move both optimizers alike (0.50, 0.60, 0.70): the unpaired intervals overlap widely,
    the paired difference (+2, +1, +2 points) is clearly above zero."""
    ref, other = {0: 0.50, 1: 0.60, 2: 0.70}, {0: 0.52, 1: 0.61, 2: 0.72}
    _, m_ref, _, h_ref = interval(ref.values())
    _, m_other, _, h_other = interval(other.values())
    assert m_other - h_other < m_ref + h_ref
    n, mean, _, half = paired_difference(other, ref)
    assert mean == pytest.approx(0.05 / 3) and half == pytest.approx(4.302653 * 0.0057735 / math.sqrt(3), rel=1e-4)
    assert distinguishable(n, mean, half)


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
    assert set(table["setting"]) == {""} and "with" not in to_markdown(table)


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
