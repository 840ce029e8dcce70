"""Tuning with the same budget for every method (docs/tuning.md): a profile's ``[tune]`` table names, per
optimizer, its main hyper-parameter and the values tried — the same number of values for each — and how many
seeds each value gets. ``plan`` expands it into ordinary runs (every value x seed x optimizer, seed-major), each
with that value and a validation split carved from the training data (``TrainConfig.validation_fraction``), so
that the sweep engine and the launchers run them as they run any profile: resumable, idempotent, under leases.
``choose`` reads the trials' records and picks, per optimizer, the value of highest mean validation accuracy;
``write_choice`` writes it as ``<profile>-tuned.md`` and a ``<profile>-tuned.toml`` of ``[hparams.<optimizer>]``
blocks that a confirmatory profile pastes. The test set is never evaluated by a trial, so nothing here can
choose by it.

    [tune]
    seeds = 2
    validation_fraction = 0.2
    [tune.grid.sam]
    rho = [0.05, 0.1, 0.2, 0.4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.core import check_int, check_number
from suite import registry, store
from suite.config import ConfigError, Profile, RunConfig, tomllib, with_overrides
from suite.sweep import MAX_SEEDS, canonical, runs_for

TUNE_KEYS = ("grid", "seeds", "validation_fraction")


@dataclass(frozen=True)
class Grid:
    """One optimizer's grid: its (registered) name, the hyper-parameter tuned and the values tried."""

    optimizer: str
    param: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class TuneSettings:
    seeds: int
    validation_fraction: float
    grids: tuple[Grid, ...]


@dataclass(frozen=True)
class Choice:
    """An optimizer's tuning: per value (in grid order) its trials' validation accuracies, and the value chosen."""

    grid: Grid
    accuracies: tuple[tuple[float, ...], ...]
    diverged: tuple[int, ...]
    chosen: Any
    default: Any  # the registered default of the parameter (ties go to the value nearest it)


def settings(profile: Profile) -> TuneSettings:
    """The profile's ``[tune]`` table, checked: one line (``ConfigError``) for anything wrong in it."""
    if not profile.tune:
        raise ConfigError(f"profile {profile.name} has no [tune] table: nothing to tune (docs/tuning.md)")
    try:
        return _settings(profile.tune)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"profile {profile.name}: {exc}") from None


def _settings(table: dict[str, Any]) -> TuneSettings:
    unknown = sorted(set(table) - set(TUNE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in [tune];{registry.did_you_mean(unknown[0], TUNE_KEYS)} "
                         f"allowed: {', '.join(TUNE_KEYS)}")
    seeds = check_int("[tune] seeds", table.get("seeds", 1), minimum=1)
    if seeds > MAX_SEEDS:
        raise ValueError(f"[tune] seeds must be at most {MAX_SEEDS}, got {seeds}")
    if "validation_fraction" not in table:
        raise ValueError("[tune] needs validation_fraction (e.g. 0.2): trials are scored on a validation split "
                         "carved from the training data, never on the test set")
    fraction = check_number("[tune] validation_fraction", table["validation_fraction"], 0, 1, low_open=True,
                            high_open=True)
    grid = table.get("grid")
    if not (isinstance(grid, dict) and grid and all(isinstance(v, dict) for v in grid.values())):
        raise ValueError("[tune] needs a grid: one table per optimizer, e.g. [tune.grid.sam] rho = [0.05, 0.1]")
    grids = [_grid(name, spec) for name, spec in grid.items()]
    names = [g.optimizer for g in grids]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"[tune.grid] names {twice} twice (by its name and an alias)")
    if len({len(g.values) for g in grids}) > 1:
        sizes = ", ".join(f"{name} {len(g.values)}" for name, g in zip(grid, grids))
        raise ValueError(f"[tune.grid] gives the optimizers different numbers of values ({sizes}): the same tuning "
                         "budget needs the same number for each")
    return TuneSettings(seeds, float(fraction), tuple(grids))


def _grid(name: str, spec: dict[str, Any]) -> Grid:
    info = registry.get(canonical(name))  # an unknown name: one line, with the close ones
    if len(spec) != 1:
        raise ValueError(f"[tune.grid.{name}] must name one hyper-parameter (the optimizer's main one) with its "
                         f"values, e.g. rho = [0.05, 0.1], got {', '.join(spec) or 'none'}")
    param, values = next(iter(spec.items()))
    if not info.accepts(param):
        known = sorted(info.defaults())
        raise ValueError(f"[tune.grid.{name}] {param}: {info.name}'s constructor takes no {param!r};"
                         f"{registry.did_you_mean(param, known)} it takes: {', '.join(known)}")
    scalar = (int, float, str, bool)
    if not (isinstance(values, list) and values and all(isinstance(v, scalar) for v in values)):
        raise ValueError(f"[tune.grid.{name}] {param} must be a list of values, e.g. [0.05, 0.1], got {values!r}")
    if len(set(map(repr, values))) < len(values):
        raise ValueError(f"[tune.grid.{name}] {param} names a value twice: {values!r}")
    return Grid(info.name, param, tuple(values))


def plan(profile: Profile, optimizers: list[str] | None = None,
         check_device: bool = True) -> tuple[Profile, list[RunConfig]]:
    """The profile the trials run under (its ``[tune]`` put aside, so the sweep engine takes it) and the trials:
    every value x seed x optimizer of the grid (of ``optimizers`` only, if given), each a run of the profile with
    that value and the validation split, in the order seed, optimizer, value — seed-major, as ``runs_for``."""
    tune = settings(profile)
    grids = _selected(profile, tune, optimizers)
    base = dataclasses.replace(profile, tune={}, seeds=tune.seeds, optimizer_seeds={},
                               train=with_overrides(profile.train, validation_fraction=tune.validation_fraction))
    keyed = []
    for g_index, g in enumerate(grids):
        for v_index, value in enumerate(g.values):
            own = {**profile.hparams, g.optimizer: {**profile.hparams.get(g.optimizer, {}), g.param: value}}
            trial = dataclasses.replace(base, optimizers=(g.optimizer,), hparams=own)
            keyed += [((base.budgets.index(r.train.budget), r.seed, g_index, v_index), r)
                      for r in runs_for(trial, check_device=check_device)]
    return base, [r for _, r in sorted(keyed, key=lambda kr: kr[0])]


def _selected(profile: Profile, tune: TuneSettings, optimizers: list[str] | None) -> list[Grid]:
    if not optimizers:
        return list(tune.grids)
    wanted = [canonical(o) for o in optimizers]
    tuned = [g.optimizer for g in tune.grids]
    for name in wanted:
        if name not in tuned:
            raise ConfigError(f"--optimizer {name}: profile {profile.name} does not tune it; its [tune.grid] "
                              f"names: {', '.join(tuned)}")
    return [g for g in tune.grids if g.optimizer in wanted]


def labels(profile: Profile, runs: list[RunConfig]) -> dict[str, str]:
    """Each trial's name for ``suite status``, by run id: the optimizer and the value it tries (``sam rho=0.1``)."""
    param = {g.optimizer: g.param for g in settings(profile).grids}
    return {r.run_id: f"{r.optimizer} {param[r.optimizer]}={dict(r.hparams)[param[r.optimizer]]}" for r in runs
            if r.optimizer in param}


def choose(profile: Profile, results_dir: Path, optimizers: list[str] | None = None) -> tuple[list[Choice], dict]:
    """Per optimizer of the grid, its values' validation accuracies from the trials' records and the value
    chosen: the highest mean, a tie to the value nearest the registered default. Every trial must have its
    record (one line naming the first that has none); returns the choices and one trial's record (its sizes)."""
    _, runs = plan(profile, optimizers, check_device=False)
    grids = _selected(profile, settings(profile), optimizers)
    records = {r.run_id: store.read_record(store.record_path(results_dir, r.profile, r.run_id)) for r in runs}
    missing = [r for r in runs if records[r.run_id] is None]
    if missing:
        first = missing[0]
        param = next(g.param for g in grids if g.optimizer == first.optimizer)
        raise ConfigError(f"{len(missing)} of the {len(runs)} trials of profile {profile.name} have no record in "
                          f"{results_dir / 'runs' / profile.name} (the first: {first.optimizer} "
                          f"{param}={dict(first.hparams)[param]} seed {first.seed}); run `python -m suite tune "
                          f"--profile {profile.name} --results-dir {results_dir}` first")
    choices = []
    for g in grids:
        trials = [[records[r.run_id] for r in runs if r.optimizer == g.optimizer
                   and dict(r.hparams)[g.param] == v] for v in g.values]
        accuracies = tuple(tuple(rec["metrics"]["val_acc"] for rec in per) for per in trials)
        diverged = tuple(sum(rec["metrics"].get("status") != "finished" for rec in per) for per in trials)
        info = registry.get(g.optimizer)
        default = {**info.defaults(), **info.changes}.get(g.param)
        choices.append(Choice(g, accuracies, diverged, _best(g.values, accuracies, default), default))
    return choices, records[runs[0].run_id]


def _best(values: tuple[Any, ...], accuracies: tuple[tuple[float, ...], ...], default: Any) -> Any:
    """The value of highest mean accuracy; among equal means, the one nearest ``default`` (the first in the
    grid where the values or the default are not numbers)."""
    means = [round(statistics.fmean(a), 12) for a in accuracies]
    tied = [v for v, m in zip(values, means) if m == max(means)]

    def distance(v: Any) -> float:
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (v, default))
        return abs(math.log(v / default)) if numeric and v > 0 and default > 0 else (
            abs(v - default) if numeric else 0.0)
    return min(tied, key=distance)


def _toml_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else (
        repr(value) if isinstance(value, (int, float)) else json.dumps(value))


def toml_text(profile: Profile, choices: list[Choice], command: str) -> str:
    """The ``[hparams.<optimizer>]`` blocks of the chosen values, for a confirmatory profile to paste."""
    lines = [f"# Chosen on a validation split of profile {profile.name}'s training data (the highest mean validation",
             f"# accuracy over {_seeds(choices)} seeds per value) by", f"#   {command}",
             "# Paste into the confirmatory profile's [hparams]."]
    for c in choices:
        name = c.grid.optimizer if re.fullmatch(r"[A-Za-z0-9_-]+", c.grid.optimizer) else json.dumps(c.grid.optimizer)
        lines += ["", f"[hparams.{name}]", f"{c.grid.param} = {_toml_value(c.chosen)}"]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what is written loads back
    return text


def _seeds(choices: list[Choice]) -> int:
    return max((len(a) for c in choices for a in c.accuracies), default=0)


def markdown(profile: Profile, choices: list[Choice], record: dict, command: str, toml: str) -> str:
    """tuned.md: per optimizer each value's mean ± sd validation accuracy over its seeds, n, the choice."""
    tune = settings(profile)
    data = record.get("data", {})
    tuned = {c.grid.optimizer for c in choices}
    untuned = [canonical(n) for n in profile.optimizers or ()]
    untuned = [n for n in dict.fromkeys(untuned) if n not in tuned]
    out = [f"# Tuned: profile `{profile.name}`", "",
           f"Made by `{command}` from the records of its {sum(len(a) for c in choices for a in c.accuracies)} "
           f"trials ({len(choices)} optimizers x {len(choices[0].grid.values)} values x {tune.seeds} seeds: the "
           "same budget for each). Each trial trained on "
           f"{data.get('train_size', '?')} training examples and was scored on {data.get('val_size', '?')} others "
           f"(validation_fraction {tune.validation_fraction:g}, carved from the training (sub)set after its label "
           "noise, so their labels are as noisy as the training labels; the same split for every trial). The test "
           "set was not evaluated. Chosen: the value of highest mean validation accuracy; a tie goes to the value "
           "nearest the optimizer's registered default.", ""]
    for c in choices:
        out += [f"## {c.grid.optimizer}: {c.grid.param} = {c.chosen}", "",
                f"| {c.grid.param} | val acc % (mean ± sd) | n | |", "|---:|---:|---:|---|"]
        for v, acc, bad in zip(c.grid.values, c.accuracies, c.diverged):
            sd = f"{100 * statistics.stdev(acc):.2f}" if len(acc) > 1 else "–"
            note = ("**chosen**" if v == c.chosen else "") + (f" {bad} diverged" if bad else "")
            out.append(f"| {v} | {100 * statistics.fmean(acc):.2f} ± {sd} | {len(acc)} | {note.strip()} |")
        grid = ", ".join(map(_toml_value, c.grid.values))
        out += ["", f"Grid: `{c.grid.param} = [{grid}]`; registered default {c.default}.", ""]
    if untuned:
        out += [f"Not tuned here (no [tune.grid] entry): {', '.join(untuned)}.", ""]
    out += ["For the confirmatory profile's `[hparams]` (also written beside this file as TOML):", "", "```toml",
            toml.rstrip("\n"), "```", ""]
    return "\n".join(out)


def write_choice(profile: Profile, results_dir: Path, optimizers: list[str] | None, prog: str) -> int:
    """Choose from the trials' records and write ``<profile>-tuned.md`` and ``<profile>-tuned.toml`` into
    ``results_dir`` (both made before either is written: a refusal writes nothing)."""
    command = (f"{prog} tune --profile {profile.name} --choose --results-dir {results_dir}"
               + "".join(f" --optimizer {o}" for o in optimizers or []))
    choices, record = choose(profile, results_dir, optimizers)
    toml = toml_text(profile, choices, command)
    text = markdown(profile, choices, record, command, toml)
    for path, content in ((results_dir / f"{profile.name}-tuned.md", text),
                          (results_dir / f"{profile.name}-tuned.toml", toml)):
        store.atomic_write(path, lambda tmp, content=content: Path(tmp).write_text(content))
        print(f"wrote {path}", file=sys.stderr)
    for c in choices:
        print(f"{c.grid.optimizer}: {c.grid.param} = {c.chosen}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser],
               launch_options: Callable[[argparse.ArgumentParser], None], func: Callable) -> None:
    """The ``tune`` command's arguments (the run command's launch options among them)."""
    tune = sub.add_parser("tune", parents=parents,
                          help="run a profile's [tune] grid on a validation split (every optimizer the same "
                               "budget); --choose: the chosen values -> <profile>-tuned.md and .toml")
    tune.add_argument("--profile", required=True, help="a profile with a [tune] table (a name or a .toml path)")
    tune.add_argument("--choose", action="store_true",
                      help="run nothing: choose each optimizer's value from the trials' records and write "
                           "RESULTS_DIR/<profile>-tuned.md and <profile>-tuned.toml")
    launch_options(tune)
    tune.set_defaults(func=func, force=False, sharpness=False)
