"""The frontier of summary.md: methods ordered by their interleaved time per step, each beside its keeps-SAM
verdict, and the time goal met, or not with what comes closest; known answers on synthetic records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite import claims, frontier
from suite.claims import Claim, Margin
from suite.config import load_profile

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ("cheap-keeps", "cheap-loses", "dear-keeps")
KEEPS = Claim("keeps-sam", "keeps SAM's accuracy", "test", metric="test_acc", test="keeps", subjects=SUBJECTS,
              reference="sam", margin=Margin(at_least=0.02), scale=100.0)


def runs() -> pd.DataFrame:
    """8 seeds: one subject level with SAM (holds), one 10 points below (fails), one 1 point above (holds)."""
    rng = np.random.default_rng(0)
    sam = 0.40 + rng.normal(0, 0.02, 8)
    def near(shift: float) -> np.ndarray:
        return sam + shift + rng.uniform(-1e-3, 1e-3, 8)

    acc = {"sgd": near(-0.05), "sam": sam, "cheap-keeps": near(0.0), "cheap-loses": near(-0.10),
           "dear-keeps": near(0.01)}
    return pd.DataFrame([{"profile": "p", "setting": "", "budget": "epochs", "optimizer": name, "seed": seed,
                          "test_acc": a, "status": "finished"} for name, accs in acc.items()
                         for seed, a in enumerate(accs)])


def summary() -> pd.DataFrame:
    flops = {"sgd": 1.0, "sam": 2.0, "cheap-keeps": 1.1, "cheap-loses": 1.05, "dear-keeps": 1.9}
    return pd.DataFrame([{"profile": "p", "setting": "", "budget": "epochs", "optimizer": k,
                          "flops_per_step_mean": 1e9 * v} for k, v in flops.items()])


def repeats(cheap_keeps_time: float) -> pd.DataFrame:
    """Three interleaved repeats; each optimizer's ratio to SGD is the same in every repeat but the second."""
    ratio = {"sgd": 1.0, "sam": 2.0, "cheap-keeps": cheap_keeps_time, "cheap-loses": 1.1, "dear-keeps": 1.9}
    return pd.DataFrame([{"optimizer": k, "repeat": r, "time_per_step_s": 0.1 * (1 + r) * v * (1.5 if r == 1 else 1)}
                         for r in range(3) for k, v in ratio.items()])


def section(cheap_keeps_time: float, monkeypatch) -> str:
    monkeypatch.setitem(frontier.PRICED_BY, "p", "cost")
    judged = claims.verdicts(runs(), {}, [KEEPS])
    return frontier.markdown(summary(), judged, [KEEPS], {"cost": repeats(cheap_keeps_time)})


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| `")]


def test_rows_are_ordered_by_interleaved_time_with_their_verdicts(monkeypatch):
    text = section(1.15, monkeypatch)
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["`sgd`", "`cheap-loses`", "`cheap-keeps`", "`dear-keeps`", "`sam`"]
    by = {r[0]: r for r in rows}
    assert by["`cheap-keeps`"][1:3] == ["1.10", "1.15 (1.15–1.15)"]  # FLOPs exact; time: median (range)
    assert by["`cheap-loses`"][6] == "**fails**" and by["`cheap-keeps`"][6] == "**holds**"
    assert by["`sam`"][3] == "reference" and by["`sgd`"][6] == "–"
    assert "(time: the `cost` table, 3 repeats)" in text


def test_the_goal_is_met_by_a_method_that_keeps_sams_accuracy_within_it(monkeypatch):
    assert "not met" not in section(1.15, monkeypatch)
    assert "met by `cheap-keeps` (1.15×)." in section(1.15, monkeypatch)


def test_when_none_meets_it_those_within_it_and_the_cheapest_that_keeps_are_named(monkeypatch):
    text = section(1.3, monkeypatch)
    assert ("not met. Within it: `cheap-loses` (1.10×, fails); the cheapest that keeps it is `cheap-keeps` at "
            "1.30×.") in text


def test_a_profile_no_cost_table_prices_gets_flops_and_no_time_verdict():
    judged = claims.verdicts(runs(), {}, [KEEPS])
    text = frontier.markdown(summary(), judged, [KEEPS], {"cost": repeats(1.15)})  # "p" is not in PRICED_BY
    assert all(r[2] == "–" for r in table_rows(text)) and "not judged here" in text


def test_time_ratios_are_taken_within_each_repeat():
    got = frontier.time_ratios(repeats(1.15)).set_index("optimizer")
    assert got.loc["sam", "time_x_sgd"] == pytest.approx(2.0) and got.loc["sam", "repeats"] == 3


@pytest.mark.parametrize("profile", sorted(frontier.PRICED_BY))
def test_the_cost_table_prices_the_profiles_step(profile):
    """A profile is priced by a cost table only where the step is the same: model, batch and precision."""
    train, cost = load_profile(profile).train, load_profile(frontier.PRICED_BY[profile]).train
    for key in ("model", "batch_size", "precision", "channels_last", "accumulate"):
        assert getattr(train, key) == getattr(cost, key), (profile, key)


def test_the_published_frontier_is_what_the_records_say():
    """summary.md's frontier, regenerated from the published records and cost table."""
    from suite import report

    results = ROOT / "results"
    records, _ = report.latest_per_seed(report.label_tables([r for _, r in report.iter_records(results) if r]))
    declared, judged = report.verdicts(results, records)
    expected = frontier.markdown(report.summarize(records), judged, declared, frontier.cost_tables(results))
    changed = report.as_run(records, report.record_profiles(records))
    notes = report.heading_notes(changed, records, results)  # as the report's headings
    assert expected and report.headings_say(expected, notes) in (results / "summary.md").read_text()


def test_the_readmes_findings_end_a_priced_tables_line_with_the_goal(monkeypatch):
    monkeypatch.setitem(frontier.PRICED_BY, "p", "cost")
    judged = claims.verdicts(runs(), {}, [KEEPS])
    goals = frontier.goals(summary(), judged, [KEEPS], {"cost": repeats(1.3)})
    line = claims.findings(judged, [KEEPS], goals)
    assert line.startswith("- `p`: `keeps-sam` 2/3 hold, 1/3 fail") and line.rstrip().endswith(
        "the cheapest that keeps it is `cheap-keeps` at 1.30×.")
