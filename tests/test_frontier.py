"""The frontier of summary.md: methods ordered by their interleaved time per step, each beside its keeps-SAM
verdict, and the time goal met, or not with what comes closest; known answers on synthetic records."""

from __future__ import annotations

import dataclasses
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


def test_a_table_with_its_own_goal_is_judged_against_it(monkeypatch):
    """[time_goals] in the study: the confirmatory table's 1.1x (issue 38), the others' 1.2x; a method at 1.15x
    meets the one and not the other, and the sentence says which goal it judged."""
    monkeypatch.setattr(frontier, "STUDY", dataclasses.replace(frontier.STUDY, time_goals=(("p", 1.1),)))
    text = section(1.15, monkeypatch)
    assert "Time goal (keeps SAM's accuracy at ≤ 1.1× SGD's time per step" in text
    assert "not met. Within it: `cheap-loses` (1.10×, fails); the cheapest that keeps it is `cheap-keeps` at 1.15×." \
        in text
    assert frontier.STUDY.goal_for("q") == frontier.STUDY.time_goal
    assert claims.STUDY.goal_for("cpu-noise-confirm") == 1.1 and claims.STUDY.goal_for("cpu-noise") == 1.2


def test_a_tuned_tables_frontier_shows_each_methods_value_beside_its_grid(monkeypatch):
    """A profile that names its tuning (tuned_by): a "tuned" column with the value its runs ran at and the grid,
    "–" for a method not tuned, and a sentence naming the tuning and its budget."""
    grids = {"cheap-keeps": ("rho", (0.05, 0.1, 0.2, 0.4)), "sam": ("rho", (0.05, 0.1, 0.2, 0.4))}
    monkeypatch.setattr(frontier, "tuning", lambda name: ("p-tune", grids, 2) if name == "p" else None)
    monkeypatch.setitem(frontier.PRICED_BY, "p", "cost")
    records = [{"config": {"profile": "p", "optimizer": o, "train": {"budget": "epochs"}, "hparams": {"rho": v}}}
               for o, v in (("cheap-keeps", 0.2), ("sam", 0.1), ("sgd", None))]
    judged = claims.verdicts(runs(), {}, [KEEPS])
    text = frontier.markdown(summary(), judged, [KEEPS], {"cost": repeats(1.15)}, records)
    by = {r[0]: r for r in table_rows(text)}
    assert by["`cheap-keeps`"][-1] == "rho = 0.2 (of 0.05, 0.1, 0.2, 0.4)" and by["`sgd`"][-1] == "–"
    assert by["`sam`"][-1] == "rho = 0.1 (of 0.05, 0.1, 0.2, 0.4)"
    assert "Tuned: each method's main setting (column \"tuned\") was chosen in `p-tune`" in text
    assert "4 values × 2 seeds, scored on a validation split" in text


def test_the_tuning_of_a_profile_is_read_from_its_files(tmp_path):
    """tuned_by names a tuning profile: its grids come from that profile's [tune]; none named, or a name that
    does not load, is no tuning (a published table whose profile changed since still renders)."""
    assert frontier.tuning("cpu-noise") is None and frontier.tuning("no-such-profile") is None
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "cpu-noise"\ntuned_by = "cpu-noise-tune"\n')
    tuned_by, grids, seeds = frontier.tuning(str(mine))
    assert tuned_by == "cpu-noise-tune" and seeds == 2 and grids["msam"] == ("rho", (0.75, 1.5, 3.0, 6.0))


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
    """A profile is priced by a published cost table only where the step is the same: model, batch and precision
    of the profile that table was made with (its step says which: cost-step.json, or an older cost.md's header)."""
    step = frontier.cost_steps(ROOT / "results")[frontier.PRICED_BY[profile]]
    train, cost = load_profile(profile).train, load_profile(step["profile"]).train
    for key in ("model", "batch_size", "precision", "channels_last", "accumulate"):
        assert getattr(train, key) == getattr(cost, key), (profile, key)
    assert (step["model"], step["batch_size"]) == (train.model, train.batch_size)


def test_the_published_frontier_is_what_the_records_say():
    """summary.md's frontier, regenerated from the published records and cost table."""
    from suite import report

    results = ROOT / "results"
    records, _ = report.latest_per_seed(report.label_tables([r for _, r in report.iter_records(results) if r]))
    declared, judged = report.verdicts(results, records)
    expected = frontier.markdown(report.summarize(records), judged, declared, frontier.cost_tables(results), records,
                                 frontier.cost_steps(results))
    changed = report.as_run(records, report.record_profiles(records))
    notes = report.heading_notes(changed, records, results)  # as the report's headings
    assert expected and report.headings_say(expected, notes) in (results / "summary.md").read_text()


def test_the_readmes_findings_end_a_priced_tables_line_with_the_goal(monkeypatch):
    monkeypatch.setitem(frontier.PRICED_BY, "p", "cost")
    judged = claims.verdicts(runs(), {}, [KEEPS])
    goals = frontier.goals(summary(), judged, [KEEPS], {"cost": repeats(1.3)})
    line = claims.findings(judged, [KEEPS], goals)
    assert line.startswith("- `p` (exploratory): `keeps-sam` 2/3 hold, 1/3 fail") and line.rstrip().endswith(
        "the cheapest that keeps it is `cheap-keeps` at 1.30×.")


# ----- the step the cost table timed against the runs' --------------------------------------------------------
STEP = {"profile": "cost", "model": "resnet8", "batch_size": 128, "precision": "fp32", "compile": "none",
        "device": "cpu", "machine": "AMD EPYC", "threads": 2, "torch": "2.14.1+cu130", "commit": "08f4d61" + "0" * 33,
        "repeats": 3}


def record(optimizer: str, seed: int, threads: int = 2, commit: str = STEP["commit"], processor: str = "AMD EPYC",
           profile: str = "p", budget: str = "epochs") -> dict:
    return {"config": {"profile": profile, "optimizer": optimizer, "seed": seed,
                       "train": {"model": "resnet8", "batch_size": 128, "budget": budget}},
            "env": {"processor": processor, "torch_threads": threads, "torch": "2.14.1+cu130", "git_commit": commit}}


def priced(records: list[dict], step: dict | None, monkeypatch) -> str:
    monkeypatch.setitem(frontier.PRICED_BY, "p", "cost")
    judged = claims.verdicts(runs(), {}, [KEEPS])
    return frontier.markdown(summary(), judged, [KEEPS], {"cost": repeats(1.15)}, records, {"cost": step})


def every(**env) -> list[dict]:
    return [record(o, s, **env) for o in ("sgd", "sam", *SUBJECTS) for s in range(8)]


def test_a_cost_table_that_timed_the_runs_step_is_not_remarked(monkeypatch):
    text = priced(every() + [record("sgd", 0, threads=1, profile="q"), record("sgd", 0, threads=1, budget="flops")],
                  STEP, monkeypatch)  # another table's runs and the flops budget's are not this frontier's
    assert "(time: the `cost` table, 3 repeats)" in text and "different steps" not in text and "unknown" not in text


def test_a_cost_table_on_another_thread_count_and_commit_is_named_with_what_differs(monkeypatch):
    """The runs ran 1 thread at another commit, on two processors: the note names the cost table's threads and
    commit, and the runs grouped by theirs, with the processor where it differs too."""
    runs_ = every(threads=1, commit="0de2615" + "1" * 33)
    for r in runs_[::2]:
        r["env"]["processor"] = "Intel(R) Xeon(R) Processor"
    text = priced(runs_, STEP, monkeypatch)
    assert "### Frontier — `p` (time: the `cost` table, 3 repeats, another step: below)" in text
    assert ("Time and FLOPs here are of different steps: the `cost` table's step: AMD EPYC, 2 threads, commit "
            "`08f4d61`; these runs': AMD EPYC, 1 thread, commit `0de2615` (20 runs); Intel(R) Xeon(R) Processor, "
            "1 thread, commit `0de2615` (20 runs).") in text
    assert text.index("another step") < text.index("| `sgd`") < text.index("Time and FLOPs") < text.index("Time goal")


def test_the_optimizers_whose_runs_alone_ran_another_step_are_named(monkeypatch):
    runs_ = every()
    for r in runs_:
        if r["config"]["optimizer"] == "cheap-keeps":
            r["env"]["torch_threads"], r["env"]["git_commit"] = 1, "2aefe05-dirty"
    text = priced(runs_, STEP, monkeypatch)
    assert ("the `cost` table's step: 2 threads, commit `08f4d61`; these runs': 2 threads, commit `08f4d61` "
            "(32 runs); 1 thread, commit `2aefe05-dirty` (8 runs: `cheap-keeps`).") in text


def test_a_cost_table_that_does_not_say_its_step_is_said_unknown_not_guessed(monkeypatch):
    text = priced(every(), None, monkeypatch)
    assert "(time: the `cost` table, 3 repeats, its step unknown: below)" in text
    assert "whether its times are of these runs' step is unknown" in text
    unstated = priced(every(), {**STEP, "precision": None, "compile": None}, monkeypatch)
    assert "its step partly unknown: below)" in unstated and "different steps" not in unstated
    assert "does not state its precision or compile mode" in unstated


def test_without_records_nothing_is_compared(monkeypatch):
    assert "(time: the `cost` table, 3 repeats)" in priced([], None, monkeypatch)



def test_the_published_frontiers_say_which_step_prices_them():
    """cpu-noise is priced on its own step (cpu-noise-cost: 1 thread, as its runs ran); what still differs is
    named — the processor of its Intel runs and the commit — and cpu's cost table is another step than its runs'."""
    text = (ROOT / "results" / "summary.md").read_text()
    noise = text.split("### Frontier — `cpu-noise`", 1)[1].split("\n### ", 1)[0]
    assert noise.startswith(" (time: the `cpu-noise-cost` table, 5 repeats")
    assert "1 thread" not in noise.split("these runs'")[0].split("table's step:")[-1]  # the threads agree
    assert "Intel(R) Xeon(R) Processor" in noise
    cpu = text.split("### Frontier — `cpu`", 1)[1].split("\n### ", 1)[0]
    assert "the `cost` table's step: 2 threads, commit `472b507`" in cpu
