"""The sweep engine: a profile becomes its runs (``runs_for``), each checked before anything is loaded
or written; the runs not yet recorded are run one at a time, each under its lease (``Sweep``), resumed from
their checkpoints, under torchrun with rank 0 deciding and writing. ``run_one`` is the one function that runs
one configuration into its record; every way of running a sweep (this loop, a launcher) calls it.

Every error a user can fix is a ``ConfigError`` (one line; the CLI exits 2). Progress lines go to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from suite import build, harness, metrics, probe, registry, sharpness, store
from suite.config import ConfigError, Profile, RunConfig, TrainConfig, with_overrides
from suite.data import DataError, load_dataset
from suite.distributed import ONE_PROCESS, World, broadcast_object
from suite.lease import Lease, clear_failure, failure_path, write_failure
from suite.models import check_model_name

MAX_SEEDS = 1000  # seeds 0..N-1: beyond this a sweep is a typo, and planning it would exhaust memory
MAX_EPOCHS = 100_000


def runs_for(profile: Profile, *, optimizers: list[str] | None = None, seeds: int | None = None,
             epochs: int | None = None, budgets: list[str] | None = None, device: str | None = None,
             dataset: str | None = None, check_device: bool = True) -> list[RunConfig]:
    """Every run of ``profile`` (with the command line's overrides), resolved and checked: budgets, then
    seeds (from the profile's ``first_seed``), then optimizers — seed-major within each budget, so a slow drift
    of the machine touches every optimizer alike."""
    for flag, value, most in (("seeds", seeds, MAX_SEEDS), ("epochs", epochs, MAX_EPOCHS)):
        if value is not None and not 1 <= value <= most:
            raise ConfigError(f"--{flag} must be between 1 and {most}, got {value}")
    settings = with_overrides(profile.train, epochs=epochs, device=device, dataset=dataset)
    _check_model_and_device(settings, check_device)
    names = [canonical(n) for n in optimizers or profile.optimizers or registry.names()]
    kinds = list(dict.fromkeys(budgets or profile.budgets))
    known = registry.names(include_aliases=True)
    if any(b != "epochs" for b in kinds) and settings.budget_reference not in known:
        raise ConfigError(f"budget_reference {settings.budget_reference!r} is not a registered optimizer")
    for pattern in profile.hparams:
        if not fnmatch.filter(known, pattern):
            raise ConfigError(f"[hparams.{pattern}] matches no optimizer (unknown optimizer {pattern!r});"
                              f"{registry.did_you_mean(pattern, known)} known: {', '.join(known)}")
    resolved = {name: profile.hparams_for(registry.get(name), settings) for name in dict.fromkeys(names)}
    counts = _seed_counts(profile, list(resolved), seeds)
    references = tuple(canonical(r) for r in profile.references)  # an unknown name is one line
    reference = () if all(b == "epochs" for b in kinds) else \
        tuple(sorted(profile.hparams_for(registry.get(settings.budget_reference), settings).items()))
    return [
        RunConfig(profile.name, name, seed, dataclasses.replace(settings, budget=kind), tuple(sorted(hparams.items())),
                  references, reference, profile.source)
        for kind in kinds
        for seed in range(profile.first_seed, profile.first_seed + max(counts.values(), default=0))
        for name, hparams in resolved.items() if seed < profile.first_seed + counts[name]
    ]


def _seed_counts(profile: Profile, names: list[str], seeds: int | None) -> dict[str, int]:
    """How many seeds each of ``names`` runs: ``--seeds`` for all, else the profile's ``seeds`` or its
    ``[optimizer_seeds]`` entry for that optimizer."""
    extra = ((f"[optimizer_seeds] {k}", v) for k, v in profile.optimizer_seeds.items())
    for what, count in (("seeds", profile.seeds), *extra):
        if count > MAX_SEEDS:
            raise ConfigError(f"profile {profile.name}: {what} must be at most {MAX_SEEDS}, got {count}")
    runs = {canonical(n) for n in profile.optimizers or registry.names()}
    for extra in profile.optimizer_seeds:  # a misspelt name would silently run the default count
        if canonical(extra) not in runs:
            raise ConfigError(f"[optimizer_seeds] names {extra!r}, which profile {profile.name} does not run; "
                              f"it runs: {', '.join(sorted(runs))}")
    return {name: seeds or profile.seeds_of(name, registry.get(name).aliases) for name in names}


def canonical(name: str) -> str:
    """The registered name of ``name`` (an alias is its target); an unknown name is one line."""
    try:
        return registry.get(name).name
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None


def _check_model_and_device(settings: TrainConfig, check_device: bool) -> None:
    try:
        check_model_name(settings.model)
        if check_device:
            if build.resolve_device(settings.device).type != "cuda" and settings.precision == "fp16":
                raise ValueError("precision fp16 needs a CUDA device (float16 with a gradient scaler); on a CPU use "
                                 "bf16")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_data(profile: Profile, settings: TrainConfig, data_dir: Path | None = None, download: bool | None = None):
    """The data set the runs train on: ``data_dir``, else the profile's data_dir, else $SUITE_DATA_DIR."""
    data_dir = data_dir or (Path(profile.data_dir).expanduser() if profile.data_dir else None)
    try:
        return load_dataset(settings.dataset, data_dir, download, image_size=settings.image_size or None,
                            streaming=settings.streaming)
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def load_data_on_every_rank(world: World, profile: Profile, settings: TrainConfig, data_dir: Path | None = None,
                            download: bool | None = None):
    """``load_data`` on every process: rank 0 first, which fills the decoded-image cache (a bad data directory
    is one line on every rank), then the others, from the cache."""
    dataset = from_rank_0(world, lambda: load_data(profile, settings, data_dir, download), keep=True)
    return dataset if world.main else load_data(profile, settings, data_dir, download)


def check_constructs(runs: list[RunConfig], dataset) -> None:
    """Build each optimizer once per setting it runs with (a tuning grid: once per value) on the runs' model (on
    the CPU, as a run builds it: ``build.build``), so that a bad hyper-parameter (an N:M that does not divide a
    layer, a negative rho in a grid) is one line before anything is trained or written."""
    if not runs:
        return
    settings = runs[0].train
    split = build.subsets(dataset, settings)[0]
    with torch.random.fork_rng(devices=[]):  # the caller's random state is not this check's to move
        for config in {(r.optimizer, repr(r.hparams)): r for r in runs}.values():
            try:
                _, built = build.build(config, dataset, split, torch.device("cpu"), seed=0)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"optimizer {config.optimizer}: {exc}") from None
            check_fisher_batch(config, built.defaults)


def check_fisher_batch(config: RunConfig, hparams: dict) -> None:
    """SSAM-F scoring its own batch needs that many examples in it (each process's slice under torchrun): one
    line here, not a traceback at the first mask refresh."""
    per_process = config.train.batch_size // config.train.replicas
    if hparams.get("mask") == "fisher" and hparams.get("fisher_data") == "batch" \
            and hparams.get("fisher_samples", 0) > per_process:
        where = f"each of {config.train.replicas} processes' {per_process}" if config.train.replicas > 1 else \
            f"the batch's {per_process}"
        raise ConfigError(f"optimizer {config.optimizer}: fisher_samples={hparams['fisher_samples']} scores more "
                          f"examples than {where}; lower it or set fisher_data = \"train\"")


def to_do(results_dir: Path, runs: list[RunConfig], force: bool = False) -> list[RunConfig]:
    """The runs still to do. Before anything is written: the results directory must be writable, and
    every existing record and checkpoint of these runs must be readable."""
    store.check_writable(results_dir, "results directory")
    todo = []
    try:
        for r in runs:
            if not force and store.read_record(store.record_path(results_dir, r.profile, r.run_id)) is not None:
                continue
            store.load_checkpoint(store.checkpoint_path(results_dir, r.profile, r.run_id), r.run_id)
            todo.append(r)
    except store.StoreError as exc:
        raise ConfigError(str(exc)) from None
    return todo


def from_rank_0(world: World, compute: Callable[[], Any], keep: bool = False) -> Any:
    """``compute()`` on rank 0, its result (None with ``keep``: rank 0 keeps it to itself) on every rank; a
    bad input or a file of the store that cannot be written there (``ConfigError``, ``StoreError``) is the
    same one-line error on every rank, rather than a rank waiting for ever."""
    if not world.distributed:
        return compute()
    value, error = None, None
    if world.main:
        try:
            value = compute()
        except (ConfigError, store.StoreError) as exc:
            error = (isinstance(exc, store.StoreError), str(exc))
    error = broadcast_object(error)
    if error is not None:
        raise (store.StoreError if error[0] else ConfigError)(error[1])
    shared = broadcast_object(None if keep else value)
    return value if world.main else shared


@dataclass
class Sweep:
    """How a sweep's runs are run and where they go: the same for each of its runs."""

    results_dir: Path
    force: bool = False  # re-run runs that already have a record
    progress: bool = True  # progress bars
    world: World = field(default=ONE_PROCESS)  # the processes this sweep runs in (torchrun)
    measuring: tuple | None = None  # (sharpness settings, rho): measure each run's final model as it ends

    def say(self, line: str) -> None:
        """A progress line on stderr, from rank 0 only under torchrun."""
        if self.world.main:
            print(line, file=sys.stderr)

    def run(self, todo: list[RunConfig], dataset) -> int:
        """Run what is to do, one run at a time, each under its lease; Ctrl-C says what is saved and how to go
        on. Under torchrun rank 0 takes the lease, and every rank learns from it whether to run (or the error
        that stopped it). Returns an exit status."""
        main = self.world.main
        t0, done, busy, current = time.monotonic(), 0, [], None
        try:
            for k, config in enumerate(todo, 1):
                lease = Lease.of(self.results_dir, config.profile, config.run_id)
                if not from_rank_0(self.world, lease.acquire):
                    busy.append(config)
                    self.say(f"[{k}/{len(todo)}] {config.optimizer} seed {config.seed}: running in "
                             f"{lease.holder()}, skipped")
                    continue
                with lease if main else contextlib.nullcontext():
                    current = config
                    record = run_one(self, config, dataset, lease)
                    current = None
                if record is not None:
                    done += 1
                    if main:
                        _print_run(k, len(todo), config, record["metrics"],
                                   (time.monotonic() - t0) / done * (len(todo) - k))
        except KeyboardInterrupt:
            self.say(f"interrupted: {done} runs finished and recorded{self._where(current)}. Run the same command "
                     "again to go on.")
            return 130
        if busy:
            self.say(f"{len(busy)} runs were running in other processes; run the same command again once they end "
                     "to pick up any they left unfinished")
        return 0

    def _where(self, current: RunConfig | None) -> str:
        if current is None:
            return ""
        ckpt = store.checkpoint_path(self.results_dir, current.profile, current.run_id)
        if ckpt.exists():
            return f"; {current.optimizer} seed {current.seed} resumes from its checkpoint {ckpt}"
        return f"; {current.optimizer} seed {current.seed} had no checkpoint yet and starts over"


def run_one(sweep: Sweep, config: RunConfig, dataset, lease: Lease | None = None) -> dict | None:
    """One run under its lease: trained (or resumed from its checkpoint), its final weights kept (and measured,
    where the sweep says), recorded, its checkpoint removed; None if another sweep finished it since we
    looked. Under torchrun every rank trains; rank 0 alone decides, measures and writes."""
    world, results = sweep.world, sweep.results_dir
    path = store.record_path(results, config.profile, config.run_id)
    ckpt = store.checkpoint_path(results, config.profile, config.run_id)
    finished = None
    if world.main:
        finished = not sweep.force and path.exists()
        if path.exists() and ckpt.exists() and ckpt.stat().st_mtime_ns <= path.stat().st_mtime_ns:
            ckpt.unlink()  # left by a kill between writing the record and removing it: not a resume point
    if broadcast_object(finished):
        return None
    weights = store.weights_path(results, config.profile, config.run_id)
    failure = failure_path(results, config.profile, config.run_id)
    if world.main:
        clear_failure(failure)  # this attempt is the one `suite status` reports from now on
    try:
        record = harness.run(config, dataset, progress=sweep.progress, checkpoint=ckpt,
                             on_checkpoint=lease.refresh if lease is not None else None, weights=weights, world=world)
    except Exception:
        if world.main:
            with contextlib.suppress(store.StoreError):  # a disk too full for the note too: the first error stands
                write_failure(failure, traceback.format_exc())
        raise
    if not world.main:
        return record
    if sweep.measuring is not None and record["metrics"].get("status") == "finished":
        record = sharpness.measure_into(record, weights, dataset, *sweep.measuring)
        print(f"  {sharpness.summary_line(record)}", file=sys.stderr)
    store.write_record(path, record)
    ckpt.unlink(missing_ok=True)  # empty folders stay: removing them races other sweeps
    return record


def prepare(profile: Profile, runs: list[RunConfig], sweep: Sweep, data_dir: Path | None = None,
            download: bool | None = None) -> tuple[list[RunConfig], Any]:
    """What ``run_profile`` and the launchers do before running: the runs still to do and the data set
    (loaded by rank 0 first under torchrun, which fills the cache), every optimizer built once as a check.
    Says how many there are."""
    if profile.tune:  # its runs are trials on a validation split, planned by suite/tune.py from the grid
        raise ConfigError(f"profile {profile.name} is a tuning profile (its [tune] grid): run it with `python -m "
                          f"suite tune --profile {profile.name}`, which scores every trial on a validation split")
    world = sweep.world
    todo = [runs[k] for k in from_rank_0(world, lambda: [runs.index(r) for r in to_do(sweep.results_dir, runs,
                                                                                        sweep.force)])]
    dataset = None
    if runs:
        dataset = load_data_on_every_rank(world, profile, runs[0].train, data_dir, download)
        check_constructs(runs, dataset)
        try:
            harness.check_batch(runs[0].train, build.subsets(dataset, runs[0].train)[0])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    resuming = sum(store.checkpoint_path(sweep.results_dir, r.profile, r.run_id).exists() for r in todo)
    sweep.say(f"profile {profile.name}: {len(runs)} runs ({len(runs) - len(todo)} already recorded, "
              f"{len(todo)} to run, {resuming} of them from a checkpoint) -> {sweep.results_dir}"
              + (f"; {world.size} processes" if world.distributed else ""))
    return todo, dataset


def measuring_for(profile: Profile, sharpness_at_end: bool | None) -> tuple | None:
    """What each run's final model is measured with as it ends (None: not measured); ``sharpness_at_end``
    None: the profile's ``[sharpness] at_end``."""
    at_end = profile.sharpness_at_end if sharpness_at_end is None else sharpness_at_end
    return (profile.sharpness, profile.sam_rho()) if at_end else None


def run_profile(profile: Profile, runs: list[RunConfig], sweep: Sweep, data_dir: Path | None = None,
                download: bool | None = None, sharpness_at_end: bool | None = None) -> int:
    """Run a profile's planned runs into ``sweep.results_dir``, one after another: what is recorded
    skipped, the rest run (``prepare``, then ``Sweep.run``). Returns an exit status."""
    if sweep.world.distributed:  # the runs are the same runs with their number of processes in their identity
        runs = [dataclasses.replace(r, train=with_overrides(r.train, replicas=sweep.world.size)) for r in runs]
    todo, dataset = prepare(profile, runs, sweep, data_dir, download)
    if todo:
        probe.warm_up(todo[0], dataset)
    sweep.measuring = measuring_for(profile, sharpness_at_end)
    return sweep.run(todo, dataset)


def _print_run(k: int, n: int, config: RunConfig, m: dict, eta: float) -> None:
    step = f"{m['time_per_step_s'] * 1000:.0f} ms/step" if m["time_per_step_s"] else "untimed"
    # streamed from disk: how much of training went to waiting for the loader
    data = f", waiting for data {100 * m['data_share']:.0f}%" if config.train.streaming and m.get("data_share") else ""
    print(f"[{k}/{n}] {config.optimizer} seed {config.seed}, {m['budget_kind']} budget "
          f"({m['budget_steps_run']} steps = {m['budget_epochs_run']:.2f} epochs): {m['status']}, "
          f"{metrics.accuracy_said(m)}, {step}{data}, {m['flops_per_step'] / 1e9:.2f} GFLOP/step "
          f"(about {eta / 60:.1f} min left)", file=sys.stderr)
