"""Blocks on one machine: whether the seed-paired runs of a results table crossed machines, and the table split
into strata that did not.

A verdict (``suite.claims``) pairs the runs of one table by seed: subject − reference on seed k. Pairing removes
what a seed does to both runs, and nothing else; where seed k of the subject ran on another processor kind, at
another commit or with another thread count than seed k of the reference, the difference of the machines (their
kernels round differently, a commit may change the code) is in the pair, confounded with the method's effect.
Blocking puts seed k of every method on one machine; where a sweep was spread over machines, this module says
which runs ran where (``note``), which seeds ran on more than one (``mixed_blocks``), how many pairs of a
comparison cross (``crossed``), and splits the table into its runs on each machine (``strata``), where no pair
crosses, so that a comparison can be judged within one machine.

What tells machines apart, from each record's ``env`` (``machine_of``), are the ``MACHINE_COLUMNS``: the processor
(the GPU for a run on one: that is what computed), the threads torch used, the commit (7 characters, a
"-dirty" suffix dropped: a dirty run's diff is not in its record to compare), and the instruction set torch's CPU
kernels used (``cpu_capability``: a processor name such as "AMD EPYC" covers generations that round differently;
records made before it was recorded leave it empty). An empty value is unknown, and counts as a value of its own:
a run whose machine is unknown is not shown to be on the other's. Pure pandas: the report imports it, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

MACHINE_COLUMNS = ("processor", "threads", "commit", "isa")
MIN_STRATUM_PAIRS = 3  # a stratum's comparison is judged from this many seed pairs up (a t-test on 2 says little)

# how the note names what a column's values are, and each value
_KINDS = {"processor": "processor kinds", "threads": "thread counts", "commit": "commits", "isa": "instruction sets"}


def machine_of(env: Mapping[str, Any] | None) -> dict[str, str]:
    """A record's ``env`` as the ``MACHINE_COLUMNS`` (strings; "" where the record does not say)."""
    env = env or {}
    threads = env.get("torch_threads")
    commit = env.get("git_commit") or ""
    return {"processor": str(env.get("gpu") or env.get("processor") or ""),
            "threads": "" if threads is None else str(threads),
            "commit": commit.removesuffix("-dirty")[:7],
            "isa": str(env.get("cpu_capability") or "")}


def _columns(table: pd.DataFrame) -> list[str]:
    return [c for c in MACHINE_COLUMNS if c in table]


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    """The runs a verdict pairs: the finished ones."""
    return table[table["status"] == "finished"] if "status" in table else table


def crossing(table: pd.DataFrame) -> dict[str, list[str]]:
    """Per machine column that takes more than one value over one table's finished runs (rows: optimizer,
    seed and the ``MACHINE_COLUMNS``), its values, fewest runs first: the columns a pair of runs may cross."""
    runs = _finished(table)
    out = {}
    for c in _columns(runs):
        counts = runs[c].astype(str).value_counts()
        if len(counts) > 1:
            out[c] = sorted(counts.index, key=lambda v: (counts[v], v))
    return out


def mixed_blocks(table: pd.DataFrame) -> list[int]:
    """The seeds whose runs (over the optimizers) span more than one value of a machine column: seed blocks on
    more than one machine."""
    runs = _finished(table)
    columns = _columns(runs)
    if not columns or not len(runs):
        return []
    spread = runs.groupby("seed")[columns].nunique()
    return sorted(int(s) for s in spread.index[(spread > 1).any(axis=1)])


def strata(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The table's finished runs split by machine (every ``MACHINE_COLUMNS`` value alike), each stratum labelled
    ("AMD EPYC, 1 thread, commit 0de2615"), the one with the lowest seed first. No pair within a stratum
    crosses machines; a pair that crosses is in none (its two runs are in two strata), so a seed block that
    ran on two machines is left out of each as a whole and kept in each as far as it ran there."""
    runs = _finished(table)
    columns = _columns(runs)
    if not len(runs):
        return []
    if not columns:
        return [("machine unknown", runs)]
    groups = [(key if isinstance(key, tuple) else (key,), g) for key, g in runs.groupby(columns, sort=False)]
    groups.sort(key=lambda kg: (int(kg[1]["seed"].min()), -len(kg[1])))
    return [(label(dict(zip(columns, key))), g) for key, g in groups]


def label(machine: Mapping[str, Any]) -> str:
    """A machine as a reader names it: "Intel Xeon, 1 thread, commit 0de2615" (with its instruction set where
    known); a column it lacks is not said, an empty one is unknown."""
    return ", ".join(_value(c, str(machine[c])) for c in MACHINE_COLUMNS
                     if c in machine and (c != "isa" or machine[c]))


def _value(column: str, value: str) -> str:
    if column == "processor":
        return processor_name(value) or "processor unknown"
    if column == "threads":
        return (f"{value} thread" + ("" if value == "1" else "s")) if value else "threads unknown"
    if column == "commit":
        return f"commit {value}" if value else "commit unknown"
    return value or "instruction set unknown"


def processor_name(name: str) -> str:
    """"Intel(R) Xeon(R) Processor" -> "Intel Xeon": without trademarks, the words "Processor" and "CPU", and
    the clock."""
    name = re.sub(r"\((R|TM)\)", "", name, flags=re.I)
    name = re.sub(r"\s*@.*$", "", name)
    name = re.sub(r"\b(Processor|CPU)\b", "", name)
    return " ".join(name.split())


def seed_ranges(seeds: Iterable[int]) -> str:
    """[0, 1, 2, 3, 5, 7, 8] -> "0–3, 5, 7–8"."""
    seeds = sorted({int(s) for s in seeds})
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def seeds_said(seeds: Iterable[int]) -> str:
    """"seed 7", "seeds 0–6"."""
    seeds = sorted({int(s) for s in seeds})
    return ("seed " if len(seeds) == 1 else "seeds ") + seed_ranges(seeds)


def crossed(table: pd.DataFrame, subject: str, reference: str, metric: str | None = None) -> tuple[int, int]:
    """(pairs that cross machines, pairs) of subject − reference in one table: seeds both ran (and, given a
    metric, both have a finite value of it)."""
    runs = _finished(table)
    if metric is not None and metric in runs:
        values = pd.to_numeric(runs[metric], errors="coerce")
        runs = runs[values.notna() & values.abs().ne(float("inf"))]
    columns = _columns(runs)
    a = runs[runs["optimizer"] == subject].drop_duplicates("seed", keep="last").set_index("seed")
    b = runs[runs["optimizer"] == reference].drop_duplicates("seed", keep="last").set_index("seed")
    seeds = a.index.intersection(b.index)
    if not columns:
        return 0, len(seeds)
    differ = (a.loc[seeds, columns].astype(str) != b.loc[seeds, columns].astype(str)).any(axis=1)
    return int(differ.sum()), len(seeds)


def _partitions(runs: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """The crossing columns grouped where they split the runs alike (thread count and commit changed together)."""
    groups: list[list[str]] = []
    for c in columns:
        for g in groups:
            if runs[[g[0], c]].drop_duplicates().shape[0] == runs[g[0]].nunique() == runs[c].nunique():
                g.append(c)
                break
        else:
            groups.append([c])
    return groups


def _where(runs: pd.DataFrame, columns: list[str], order: list[str]) -> str:
    """Which runs ran on each value of ``columns`` (together): "Intel Xeon: seeds 0–6 of sgd, sam; AMD EPYC:
    every other run" — optimizers sharing a pattern together, in ``order``; the value that takes the most
    patterns to say (of those, the one with the most runs) last, said as the rest."""
    key = runs[columns].astype(str).apply(tuple, axis=1)
    seeds_of = runs.groupby("optimizer")["seed"].apply(lambda s: tuple(sorted({int(x) for x in s})))
    said: dict[tuple[str, ...], list[str]] = {}
    for v in dict.fromkeys(key):
        here = runs[key == v]
        patterns: dict[Any, list[str]] = {}  # "every", or the seeds it ran here: its optimizers
        for name in [o for o in order if o in set(here["optimizer"])]:
            seeds = tuple(sorted({int(s) for s in here.loc[here["optimizer"] == name, "seed"]}))
            patterns.setdefault("every" if seeds == seeds_of[name] else seeds, []).append(name)
        said[v] = [f"every seed of {', '.join(names)}" if p == "every" else f"{seeds_said(p)} of {', '.join(names)}"
                   for p, names in patterns.items()]
    values = sorted(said, key=lambda v: (len(said[v]), int((key == v).sum()), v))
    return "; ".join([*(f"{_named(columns, v)}: {'; '.join(said[v])}" for v in values[:-1]),
                      f"{_named(columns, values[-1])}: every other run"])


def _named(columns: list[str], values: tuple[str, ...]) -> str:
    return ", ".join(_value(c, v) for c, v in zip(columns, values))


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def note(table: pd.DataFrame, order: Iterable[str] | None = None) -> str:
    """One sentence for under a table's verdicts where its runs crossed machines ("" where none did): which runs
    ran where, grouped by the columns that changed together, and which seeds ran on more than one. ``order``:
    the optimizers in the order the table shows them (default: as the rows come)."""
    runs = _finished(table)
    cross = crossing(runs)
    if not cross:
        return ""
    order = [o for o in dict.fromkeys(order or []) if o in set(runs["optimizer"])]
    order += [o for o in dict.fromkeys(runs["optimizer"]) if o not in order]
    groups = _partitions(runs, list(cross))
    said = _and([f"{_and([_KINDS[c] for c in g])} ({_where(runs, g, order)})" for g in groups])
    mixed = mixed_blocks(runs)
    blocks = (f"; {seeds_said(mixed)} each ran on more than one machine" if len(mixed) > 1 else
              f"; seed {mixed[0]} ran on more than one machine" if mixed else "")
    return (f"Pairs in this table cross {said}{blocks}: where a pair crosses, a difference between the machines "
            "is confounded with the difference between the methods.")
