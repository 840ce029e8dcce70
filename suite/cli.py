"""Command line: ``python -m suite {list,run,report}``. Bad input is one line on stderr and exit 2,
found before anything is written."""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from suite import registry, store
from suite.config import (
    BUDGETS,
    COMMON_HPARAMS,
    ConfigError,
    Profile,
    RunConfig,
    TrainConfig,
    available_profiles,
    load_profile,
)

EXIT_USAGE = 2
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}


class UsageError(Exception):
    """Anything the user can fix; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; the same command runs what is missing", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python -m suite list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``error: ...``) and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m suite", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="one line per registered optimizer")
    ls.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a profile's sweep and write one record per run")
    run.add_argument("--profile", default="cpu", help=f"a name ({', '.join(available_profiles())}) or a .toml path")
    run.add_argument("--optimizer", action="append", metavar="NAME", help="only these (repeatable)")
    run.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the profile's)")
    run.add_argument("--epochs", type=int, help="override the profile's epoch count")
    run.add_argument("--budget", action="append", choices=BUDGETS,
                     help="what every optimizer gets the same of (repeatable; default: the profile's budgets): "
                          "epochs, or the training FLOPs / seconds the reference (sgd) spends in those epochs")
    run.add_argument("--results-dir", type=Path, default=Path("results"))
    run.add_argument("--data-dir", type=Path, help="data directory (default: $SUITE_DATA_DIR, else ./data)")
    run.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                     help="download the data set if missing (default: only into the default ./data)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the profile's device")
    run.add_argument("--force", action="store_true", help="re-run runs that already have a record")
    run.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                     help="write the summary tables and plots afterwards (default: yes)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    run.set_defaults(func=cmd_run, check_device=True)

    rep = sub.add_parser("report", help="records -> summary.csv, summary.md and plots")
    rep.add_argument("--results-dir", type=Path, default=Path("results"))
    rep.set_defaults(func=cmd_report)
    return p


def cmd_list(args: argparse.Namespace) -> int:
    width = max(len(n) for n in registry.names(include_aliases=True))
    for name in registry.names(include_aliases=True):
        spec = registry.get(name)
        if spec.alias_of:
            print(f"{name:<{width}}  = {spec.alias_of}")
            continue
        defaults = " ".join(f"{k}={v}" for k, v in spec.defaults.items())
        print(f"{name:<{width}}  {spec.passes_per_step} passes/step  {spec.description}"
              + (f"  [{defaults}]" if defaults else ""))
    return 0


def plan(args: argparse.Namespace) -> tuple[Profile, list[RunConfig]]:
    """Resolve and check every run of the sweep before anything is loaded or written."""
    from suite.config import with_overrides
    from suite.models import check_model_name

    profile = load_profile(args.profile)
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    train = with_overrides(profile.train, epochs=args.epochs, device=args.device)
    try:
        check_model_name(train.model)
        if args.check_device:
            from suite.harness import resolve_device

            resolve_device(train.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    names = args.optimizer or list(profile.optimizers or registry.names())
    budgets = list(dict.fromkeys(getattr(args, "budget", None) or profile.budgets))
    if any(b != "epochs" for b in budgets) and train.budget_reference not in registry.names(include_aliases=True):
        raise UsageError(f"budget_reference {train.budget_reference!r} is not a registered optimizer")
    for name in names:
        try:
            registry.get(name)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
    known = registry.names(include_aliases=True)
    for pattern in profile.hparams:
        if not fnmatch.filter(known, pattern):
            raise UsageError(f"[hparams.{pattern}] matches no optimizer (unknown optimizer {pattern!r}); "
                             f"known: {', '.join(known)}")
    common = {k: getattr(train, k) for k in COMMON_HPARAMS}
    resolved = {}
    model = None
    for name in dict.fromkeys(names):
        spec = registry.get(name)
        resolved[name] = spec.resolved_hparams(common, profile_hparams(profile, name))
        if model is None:
            model = _planning_model(train)
        _check_constructs(name, spec, resolved[name], model, train)
    # Seed-major order within each budget: a slow drift of the machine touches every optimizer alike.
    runs = [
        RunConfig(profile.name, name, seed, dataclasses.replace(train, budget=budget), tuple(sorted(hparams.items())))
        for budget in budgets
        for seed in range(args.seeds or profile.seeds)
        for name, hparams in resolved.items()
    ]
    return profile, runs


def profile_hparams(profile: Profile, name: str) -> dict:
    """A profile's overrides for one optimizer: every ``[hparams."PATTERN"]`` table whose glob matches
    the name, in file order, then the table named exactly (e.g. ``"ssam-*"`` then ``"ssam-f-nm-explicit"``)."""
    merged: dict = {}
    for pattern, values in profile.hparams.items():
        if pattern != name and fnmatch.fnmatchcase(name, pattern):
            merged.update(values)
    return {**merged, **profile.hparams.get(name, {})}


def _planning_model(train: TrainConfig):
    """The profile's model, built once on the CPU, so that optimizers can check themselves against it
    (an N:M that does not divide a layer) before any data is loaded or anything is written."""
    from suite.models import build_model

    return build_model(train.model, NUM_CLASSES.get(train.dataset, 10))


def _check_constructs(name: str, spec: registry.OptimizerSpec, hparams: dict, model, train: TrainConfig) -> None:
    steps = max(1, (train.train_subset or 1000) // train.batch_size)
    inputs = {"model": model, "total_steps": steps * train.epochs, "steps_per_epoch": steps, "seed": 0}
    try:
        spec.build(model.parameters(), inputs, **hparams)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"optimizer {name}: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from suite import harness
    from suite.data import DataError, load_dataset

    profile, runs = plan(args)
    todo = _check_store(args, runs)
    try:
        dataset = load_dataset(profile.train.dataset, args.data_dir, args.download)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    if runs:
        train_size = len(harness.subsets(dataset, runs[0].train)[0])
        if runs[0].train.batch_size > train_size:
            raise UsageError(f"batch_size {runs[0].train.batch_size} is larger than the training set ({train_size})")
    resuming = sum(store.checkpoint_path(args.results_dir, r.profile, r.run_id).exists() for r in todo)
    print(f"profile {profile.name}: {len(runs)} runs ({len(runs) - len(todo)} already recorded, "
          f"{len(todo)} to run, {resuming} of them from a checkpoint) -> {args.results_dir}", file=sys.stderr)
    if todo:
        harness.warm_up(todo[0], dataset)
    t0, done, busy, current = time.monotonic(), 0, [], None
    try:
        for k, config in enumerate(todo, 1):
            claim = store.Claim(store.claim_path(args.results_dir, config.profile, config.run_id))
            if not claim.acquire():
                busy.append(config)
                print(f"[{k}/{len(todo)}] {config.optimizer} seed {config.seed}: running in {claim.holder()}, "
                      "skipped", file=sys.stderr)
                continue
            with claim:
                path = store.record_path(args.results_dir, config.profile, config.run_id)
                if not args.force and path.exists():  # another sweep finished it since we looked
                    continue
                current = config
                ckpt = store.checkpoint_path(args.results_dir, config.profile, config.run_id)
                if path.exists() and ckpt.exists() and ckpt.stat().st_mtime_ns <= path.stat().st_mtime_ns:
                    ckpt.unlink()  # left by a kill between writing the record and removing it: not a resume point
                record = harness.run(config, dataset, progress=args.progress, checkpoint=ckpt,
                                     on_checkpoint=claim.refresh)
                store.write_record(path, record)
                ckpt.unlink(missing_ok=True)  # empty folders stay: removing them races other sweeps
                current = None
            done += 1
            _print_run(k, len(todo), config, record["metrics"], (time.monotonic() - t0) / done * (len(todo) - k))
    except KeyboardInterrupt:
        where = ""
        if current is not None:
            ckpt = store.checkpoint_path(args.results_dir, current.profile, current.run_id)
            where = (f"; {current.optimizer} seed {current.seed} resumes from its checkpoint {ckpt}" if ckpt.exists()
                     else f"; {current.optimizer} seed {current.seed} had no checkpoint yet and starts over")
        print(f"interrupted: {done} runs finished and recorded{where}. Run the same command again to go on.",
              file=sys.stderr)
        return 130
    if busy:
        print(f"{len(busy)} runs were running in other processes; run the same command again once they end "
              "to pick up any they left unfinished", file=sys.stderr)
    if args.report:
        return cmd_report(args)
    return 0


def _check_store(args: argparse.Namespace, runs: list[RunConfig]) -> list[RunConfig]:
    """The runs still to do. Before anything is written: the results directory must be writable, and
    every existing record and checkpoint of these runs must be readable."""
    results = args.results_dir
    existing = next((p for p in [results, *results.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"results directory {str(results)!r}: {str(existing)!r} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"results directory {str(results)!r}: {str(existing)!r} is not writable")
    todo = []
    try:
        for r in runs:
            if not args.force and store.read_record(store.record_path(results, r.profile, r.run_id)) is not None:
                continue
            store.load_checkpoint(store.checkpoint_path(results, r.profile, r.run_id), r.run_id)
            todo.append(r)
    except store.StoreError as exc:
        raise UsageError(str(exc)) from None
    return todo


def _print_run(k: int, n: int, config: RunConfig, m: dict, eta: float) -> None:
    step = f"{m['time_per_step_s'] * 1000:.0f} ms/step" if m["time_per_step_s"] else "untimed"
    b = m["budget"]
    print(f"[{k}/{n}] {config.optimizer} seed {config.seed}, {b['kind']} budget "
          f"({b['steps_run']} steps = {b['epochs_run']:.2f} epochs): {m['status']}, "
          f"test acc {m['test_acc']:.4f}, {step}, {m['flops_per_step'] / 1e9:.2f} GFLOP/step "
          f"(about {eta / 60:.1f} min left)", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from suite.report import write_report

    if not (args.results_dir / "runs").is_dir():
        raise UsageError(f"no records in {str(args.results_dir)!r}: expected {args.results_dir}/runs/<profile>/*.json")
    written, skipped, superseded = write_report(args.results_dir)
    for path in skipped:
        print(f"warning: skipped unreadable record {path}", file=sys.stderr)
    for path in superseded:
        print(f"warning: left out {path}: a later run has the same profile, budget, optimizer and seed "
              "(another setting under one profile name? use another --results-dir)", file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
