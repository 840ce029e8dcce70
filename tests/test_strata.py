"""Blocks on one machine (suite/strata.py): which machine columns a table's pairs cross, the seed blocks on more
than one machine, the strata, the note, and the report that says them under a table's verdicts."""

from __future__ import annotations

import pandas as pd
from helpers import squash
from test_report import record

from suite import report, strata
from suite.claims import Claim, Margin
from suite.store import record_path, write_record

INTEL, AMD = "Intel(R) Xeon(R) Processor", "AMD EPYC"


def runs(where: dict[str, dict[int, tuple[str, str, str]]]) -> pd.DataFrame:
    """One row per optimizer and seed: {optimizer: {seed: (processor, threads, commit)}}."""
    return pd.DataFrame([{"optimizer": name, "seed": seed, "status": "finished", "processor": p, "threads": t,
                          "commit": c, "isa": ""}
                         for name, seeds in where.items() for seed, (p, t, c) in seeds.items()])


ON_INTEL, ON_AMD = (INTEL, "1", "0de2615"), (AMD, "1", "0de2615")
# the published cpu-noise case in small: sgd and sam ran seeds 0-2 on Intel and seed 3 on AMD, asam all on AMD
NOISE = runs({"sgd": {0: ON_INTEL, 1: ON_INTEL, 2: ON_INTEL, 3: ON_AMD},
              "sam": {0: ON_INTEL, 1: ON_INTEL, 2: ON_INTEL, 3: ON_AMD},
              "asam": {0: ON_AMD, 1: ON_AMD, 2: ON_AMD, 3: ON_AMD}})
# the published cpu case in small: one processor, but thread count and commit changed together between optimizers
CPU = runs({"sgd": {s: (AMD, "2", "3875c93") for s in range(3)},
            "sam": {s: (AMD, "2", "3875c93") for s in range(3)},
            "gsam": {s: (AMD, "1", "2aefe05") for s in range(3)}})


def test_a_record_names_its_machine_by_processor_threads_commit_and_instruction_set():
    env = {"processor": INTEL, "torch_threads": 2, "git_commit": "0de261597d196f1bf034515da30ca214cf23e4f5-dirty",
           "cpu_capability": "AVX512", "machine": "x86_64"}
    assert strata.machine_of(env) == {"processor": INTEL, "threads": "2", "commit": "0de2615", "isa": "AVX512"}
    # a run on a GPU is named by the GPU, which computed; a record without env is unknown, not an error
    assert strata.machine_of({**env, "gpu": "NVIDIA H100"})["processor"] == "NVIDIA H100"
    assert strata.machine_of(None) == {"processor": "", "threads": "", "commit": "", "isa": ""}
    assert strata.label({"processor": INTEL, "threads": "1", "commit": "0de2615", "isa": ""}) == \
        "Intel Xeon, 1 thread, commit 0de2615"
    assert strata.label({"processor": "", "threads": "2", "commit": "", "isa": "AVX2"}) == \
        "processor unknown, 2 threads, commit unknown, AVX2"
    assert strata.seed_ranges([7, 0, 1, 2, 3, 5, 8]) == "0–3, 5, 7–8"


def test_crossing_names_the_columns_that_vary_and_nothing_else():
    assert strata.crossing(NOISE) == {"processor": [AMD, INTEL]}  # fewest runs first (6 each), then by name
    assert strata.crossing(CPU) == {"threads": ["1", "2"], "commit": ["2aefe05", "3875c93"]}
    one = NOISE[NOISE["processor"] == AMD]
    assert strata.crossing(one) == {} and strata.note(one) == "" and strata.mixed_blocks(one) == []
    # a diverged run pairs with nothing: its machine crosses no pair
    diverged = pd.concat([one, runs({"sam": {9: ON_INTEL}}).assign(status="diverged")])
    assert strata.crossing(diverged) == {}


def test_mixed_blocks_are_the_seeds_on_more_than_one_machine():
    assert strata.mixed_blocks(NOISE) == [0, 1, 2]  # seed 3 is AMD for every optimizer: a whole block
    assert strata.mixed_blocks(CPU) == [0, 1, 2]


def test_strata_split_the_runs_by_machine_so_no_pair_within_one_crosses():
    split = strata.strata(NOISE)
    assert [(name, sorted(set(g["seed"])), len(g)) for name, g in split] == [
        ("Intel Xeon, 1 thread, commit 0de2615", [0, 1, 2], 6),
        ("AMD EPYC, 1 thread, commit 0de2615", [0, 1, 2, 3], 6)]
    assert sum(len(g) for _, g in split) == len(NOISE)
    for _, g in split:
        assert strata.crossing(g) == {}
        assert strata.crossed(g, "sam", "sgd")[0] == 0 and strata.crossed(g, "asam", "sam")[0] == 0
    # the pairs that cross: asam - sam on seeds 0-2; sam - sgd on none
    assert strata.crossed(NOISE, "asam", "sam") == (3, 4) and strata.crossed(NOISE, "sam", "sgd") == (0, 4)
    assert [name for name, _ in strata.strata(CPU)] == ["AMD EPYC, 2 threads, commit 3875c93",
                                                        "AMD EPYC, 1 thread, commit 2aefe05"]


def test_the_note_says_which_runs_ran_where_in_ranges_and_groups():
    assert strata.note(NOISE) == (
        "Pairs in this table cross processor kinds (Intel Xeon: seeds 0–2 of sgd, sam; AMD EPYC: every other run); "
        "seeds 0–2 each ran on more than one machine: where a pair crosses, a difference between the machines is "
        "confounded with the difference between the methods.")
    # thread count and commit changed together: said together; optimizers in the order given
    assert strata.note(CPU, order=["gsam", "sam", "sgd"]).startswith(
        "Pairs in this table cross thread counts and commits (1 thread, commit 2aefe05: every seed of gsam; "
        "2 threads, commit 3875c93: every other run); seeds 0–2 each")
    # two columns that vary apart are said apart, each with its runs; one mixed seed is one seed
    apart = runs({"sgd": {0: (AMD, "1", "aaaaaaa"), 1: (AMD, "1", "bbbbbbb")},
                  "sam": {0: (INTEL, "1", "aaaaaaa"), 1: (AMD, "1", "bbbbbbb")}})
    assert strata.note(apart).startswith(
        "Pairs in this table cross processor kinds (Intel Xeon: seed 0 of sam; AMD EPYC: every other run) and "
        "commits (commit aaaaaaa: seed 0 of sgd, sam; commit bbbbbbb: every other run); seed 0 ran on more than one "
        "machine:")


def test_run_rows_carry_the_machine_and_the_summary_takes_it_for_no_metric():
    rec = {**record("sgd", 0, 0.5, 0.1, 1e9), "env": {"processor": AMD, "torch_threads": 1,
                                                      "git_commit": "2aefe050d99c-dirty"}}
    rows = report.run_rows([rec, record("sam", 0, 0.6, 0.2, 2e9)])
    assert rows[list(strata.MACHINE_COLUMNS)].to_dict("records") == [
        {"processor": AMD, "threads": "1", "commit": "2aefe05", "isa": ""},
        {"processor": "", "threads": "", "commit": "", "isa": ""}]
    table = report.summarize([rec, record("sam", 0, 0.6, 0.2, 2e9)])
    assert not [c for c in table.columns if c.split("_")[0] in strata.MACHINE_COLUMNS]


def test_the_report_says_under_a_tables_verdicts_where_pairs_cross_and_judges_within_a_machine(tmp_path):
    """y's seeds 0-2 ran on AMD, every other run on Intel, and AMD costs y 6 points: over all six pairs y's
    loss is uncertain, on Intel's three it is within δ. The report says where the runs ran, that 3 of y's 6
    pairs cross (x's none), and judges y on Intel's runs alone, δ as above."""
    base = [0.50, 0.52, 0.54, 0.51, 0.53, 0.55]
    accs = {"base": base, "x": [b + 0.001 * (-1) ** s for s, b in enumerate(base)],
            "y": [b - (0.06 if s < 3 else 0.0) + 0.002 * (-1) ** s for s, b in enumerate(base)]}
    for name, values in accs.items():
        for seed, acc in enumerate(values):
            rec = record(name, seed, acc, 0.1, 1e9, references=("base",))
            rec["env"] = {"processor": AMD if name == "y" and seed < 3 else INTEL, "torch_threads": 1,
                          "git_commit": "0de261597d196f1bf034515da30ca214cf23e4f5"}
            write_record(record_path(tmp_path, "p", f"{name}-{seed}"), rec)
    keeps = Claim("xy-keep", "x and y keep base's accuracy", "test", metric="test_acc", test="keeps",
                  subjects=("x", "y"), reference="base", margin=Margin(at_least=0.02), scale=100.0)
    report.write_report(tmp_path, [keeps])
    md = squash((tmp_path / "summary.md").read_text())
    verdicts = md.split("### Verdicts (exploratory) — `p`")[1].split("\n## ")[0]
    assert "| `xy-keep` | `y` | `base` | 6 | 2 | -3.00 |" in verdicts and "| inconclusive |" in verdicts
    assert ("Pairs in this table cross processor kinds (AMD EPYC: seeds 0–2 of y; Intel Xeon: every other run); "
            "seeds 0–2 each ran on more than one machine:") in verdicts
    assert "Comparisons above whose pairs cross: against base, 3 of the 6 pairs of y. Every other" in verdicts
    within = verdicts.split("#### Within Intel Xeon, 1 thread, commit 0de2615 (seeds 0–5)")[1].split("Each claim")[0]
    # y on Intel: -0.07 points over 3 pairs, within δ = 2 points; x and y one family there (α / 2m a side); at n = 3
    # dropping any seed leaves 2 pairs, too few to hold at that level: fragile
    assert "| `xy-keep` | `y` | `base` | 3 | 2 | -0.07 |" in within
    assert "| 2.00 |" in within and "| 1/3: fragile | **holds** (fragile) | inconclusive, 3 of 6 cross |" in within
    assert "| `x` |" not in within  # x's pairs never cross: its verdict above stands as it is
    assert "#### Within AMD" not in verdicts  # base has no run on AMD: no pair there
    # the headings of a table's other sections are untouched, and summary.csv has no machine column
    assert "threads" not in (tmp_path / "summary.csv").read_text().split("\n")[0].split(",")


def test_no_note_where_every_pair_lies_on_one_machine(tmp_path):
    for name, accs in (("base", [0.5, 0.52, 0.54]), ("x", [0.51, 0.52, 0.53])):
        for seed, acc in enumerate(accs):
            rec = record(name, seed, acc, 0.1, 1e9, references=("base",))
            rec["env"] = {"processor": INTEL if seed else AMD, "torch_threads": 1, "git_commit": "abc"}
            write_record(record_path(tmp_path, "p", f"{name}-{seed}"), rec)
    keeps = Claim("x-keeps", "x keeps base's accuracy", "test", metric="test_acc", test="keeps",
                  subjects=("x",), reference="base", margin=Margin(at_least=0.02), scale=100.0)
    report.write_report(tmp_path, [keeps])
    md = (tmp_path / "summary.md").read_text()
    # seed 0 on AMD for both, 1-2 on Intel for both: the table crosses processors, its pairs do not
    assert "Pairs in this table cross processor kinds (AMD EPYC: seed 0 of base, x; Intel Xeon: every other run):" \
        in md
    assert "Yet no pair of the comparisons above crosses: each lies on one machine." in md
    assert "#### Within" not in md
