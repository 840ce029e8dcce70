"""Blocks on one machine (suite/strata.py): which machine columns a table's pairs cross, the seed blocks on more
than one machine, the strata, the note, and the report that says them under a table's verdicts."""

from __future__ import annotations

import pandas as pd
from test_report import record

from suite import report, strata

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
