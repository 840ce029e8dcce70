"""Run sharpness-aware optimizers through one harness and compare them: list the registry, run a
profile's sweep into your own results directory, report it, and publish it into results/.

Bad input is one line on stderr and exit 2, found before anything is written."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from suite import registry, store
from suite.config import (
    BUDGETS,
    ConfigError,
    Profile,
    RunConfig,
    TrainConfig,
    available_profiles,
    load_profile,
    resolve_hparams,
    with_overrides,
)

EXIT_USAGE = 2
MY_RESULTS = Path("my-results")  # a user's own runs: never the published results/ (git-ignored)
PUBLISHED = Path("results")
MAX_SEEDS = 1000  # seeds 0..N-1: beyond this a sweep is a typo, and planning it would exhaust memory
MAX_EPOCHS = 100_000
MAX_REPEATS = 100  # timed repeats of the cost command


class UsageError(Exception):
    """Anything the user can fix; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError, registry.PluginError) as exc:
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
    p = _Parser(prog=_prog(), description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    run.add_argument("--results-dir", type=Path, default=MY_RESULTS,
                     help=f"where records, tables and plots go (default: ./{MY_RESULTS}; publish them into "
                          f"{PUBLISHED}/ with the publish command)")
    run.add_argument("--dataset", metavar="NAME",
                     help="override the profile's data set: cifar10, cifar100, synthetic or any ImageFolder's name")
    run.add_argument("--data-dir", type=Path,
                     help="data directory (default: the profile's data_dir, else $SUITE_DATA_DIR, else ./data)")
    run.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                     help="download the data set if missing (default: only into the default ./data)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the profile's device")
    run.add_argument("--force", action="store_true", help="re-run runs that already have a record")
    run.add_argument("--sharpness", action=argparse.BooleanOptionalAction, default=None,
                     help="measure each run's final model as it ends, as `suite sharpness` does (default: the "
                          "profile's [sharpness] at_end; off in the shipped CPU profiles, see docs/sharpness.md)")
    run.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                     help="write the summary tables and plots afterwards (default: yes)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    run.set_defaults(func=cmd_run, check_device=True)

    _add_cost_parser(sub)
    _add_sharpness_parser(sub)

    rep = sub.add_parser("report", help="records -> summary.csv, summary.md and plots")
    rep.add_argument("--results-dir", type=Path, default=MY_RESULTS, help=f"default: ./{MY_RESULTS}")
    rep.set_defaults(func=cmd_report)

    pub = sub.add_parser("publish", help=f"copy a profile's records into {PUBLISHED}/ and rebuild its report")
    pub.add_argument("--profile", action="append", required=True, metavar="NAME",
                     help="the profile whose records to publish (repeatable); its published records are replaced")
    pub.add_argument("--from", dest="source", type=Path, default=MY_RESULTS, help=f"default: ./{MY_RESULTS}")
    pub.add_argument("--to", dest="results_dir", type=Path, default=PUBLISHED, help=f"default: ./{PUBLISHED}")
    pub.add_argument("--allow-uncommitted", action="store_true",
                     help="publish records whose code was not a clean commit (say why in results/README.md)")
    pub.set_defaults(func=cmd_publish)
    return p


def _add_sharpness_parser(sub: argparse._SubParsersAction) -> None:
    from suite.config import SharpnessSettings

    d = SharpnessSettings()
    sh = sub.add_parser("sharpness", help="measure each recorded run's final model (Hessian's top eigenvalue and "
                                          "trace, m-sharpness, loss surfaces) into its record")
    sh.add_argument("--results-dir", type=Path, default=MY_RESULTS, help=f"default: ./{MY_RESULTS}")
    sh.add_argument("--profile", action="append", metavar="NAME",
                    help="only these profiles (repeatable); a .toml path: that profile, measured with its "
                         "[sharpness] settings (a shipped profile's are read by name)")
    sh.add_argument("--optimizer", action="append", metavar="NAME", help="only these (repeatable; globs allowed)")
    sh.add_argument("--force", action="store_true", help="measure runs that already have the measures again")
    sh.add_argument("--examples", type=int,
                    help="fixed training examples the measures look at (default: the profile's [sharpness] "
                         f"examples, else {d.examples})")
    sh.add_argument("--iterations", type=int,
                    help="at most this many power-iteration and Hutchinson steps each (default: the profile's, "
                         f"else {d.iterations}; each stops earlier at a relative change below its tolerance, "
                         f"{d.tolerance:g} unless the profile says)")
    sh.add_argument("--rho", type=float, help="the ball of m-sharpness (default: the profile's [sharpness] rho, else "
                                               "its SAM rho, else 0.05)")
    sh.add_argument("--data-dir", type=Path, help="data directory (default: $SUITE_DATA_DIR, else ./data)")
    sh.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                    help="download the data set if missing (default: only into the default ./data)")
    sh.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                    help="rebuild the summary tables and plots afterwards (default: yes)")
    sh.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    sh.set_defaults(func=cmd_sharpness)


def _add_cost_parser(sub: argparse._SubParsersAction) -> None:
    cost = sub.add_parser("cost", help="FLOPs and time per step of a profile's optimizers, no training -> "
                                       "cost.csv, cost.md")
    cost.add_argument("--profile", default="cost", help="a name or a .toml path (default: cost, every optimizer)")
    cost.add_argument("--optimizer", action="append", metavar="NAME", help="only these (repeatable)")
    cost.add_argument("--repeats", type=int, default=5, help="timed repeats, optimizers interleaved (default: 5)")
    cost.add_argument("--out", type=Path, default=MY_RESULTS,
                      help=f"where cost.csv, cost-repeats.csv and cost.md go (default: ./{MY_RESULTS}; "
                           f"--out {PUBLISHED} publishes, from a clean commit)")
    cost.add_argument("--dataset", metavar="NAME", help="override the profile's data set")
    cost.add_argument("--data-dir", type=Path, help="data directory (as for run)")
    cost.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                      help="download the data set if missing (default: only into the default ./data)")
    cost.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the profile's device")
    cost.add_argument("--allow-uncommitted", action="store_true",
                      help=f"write into {PUBLISHED}/ from a tree with uncommitted changes")
    cost.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    cost.set_defaults(func=cmd_cost, check_device=True, seeds=None, epochs=None)


def _prog() -> str:
    """What the user typed: the console script's name, or ``python -m suite``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m suite" if name in ("", "__main__.py", "-c") else name


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sharpness-suite")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def cmd_list(args: argparse.Namespace) -> int:
    width = max(len(n) for n in registry.names(include_aliases=True))
    origin = max(len(o) for o in registry.ORIGINS.values())
    for name in registry.names():
        info = registry.get(name)
        shown = {k: v for k, v in info.defaults().items()  # the name already says what the entry changes
                 if k not in info.changes and v is not None and v is not False}
        defaults = " ".join(f"{k}={v}" for k, v in shown.items())
        aliases = f"  (also: {', '.join(info.aliases)})" if info.aliases else ""
        print(f"{name:<{width}}  {info.provenance:<{origin}}  {info.passes_per_step} passes/step  "
              f"{info.description}" + (f"  [{defaults}]" if defaults else "") + aliases)
    return 0


def plan(args: argparse.Namespace) -> tuple[Profile, list[RunConfig]]:
    """Resolve and check every run of the sweep before anything is loaded or written."""
    profile = load_profile(args.profile)
    for flag, most in (("seeds", MAX_SEEDS), ("epochs", MAX_EPOCHS)):
        value = getattr(args, flag, None)
        if value is not None and not 1 <= value <= most:
            raise UsageError(f"--{flag} must be between 1 and {most}, got {value}")
    if profile.seeds > MAX_SEEDS:
        raise UsageError(f"profile {profile.name}: seeds must be at most {MAX_SEEDS}, got {profile.seeds}")
    train = with_overrides(profile.train, epochs=args.epochs, device=args.device,
                           dataset=getattr(args, "dataset", None))
    _check_model_and_device(train, args.check_device)
    names = [_canonical(n) for n in args.optimizer or profile.optimizers or registry.names()]
    budgets = list(dict.fromkeys(getattr(args, "budget", None) or profile.budgets))
    if any(b != "epochs" for b in budgets) and train.budget_reference not in registry.names(include_aliases=True):
        raise UsageError(f"budget_reference {train.budget_reference!r} is not a registered optimizer")
    known = registry.names(include_aliases=True)
    for pattern in profile.hparams:
        if not fnmatch.filter(known, pattern):
            raise UsageError(f"[hparams.{pattern}] matches no optimizer (unknown optimizer {pattern!r}); "
                             f"known: {', '.join(known)}")
    resolved = {name: resolve_hparams(registry.get(name), train, profile_hparams(profile, name))
                for name in dict.fromkeys(names)}
    references = tuple(_canonical(r) for r in profile.references)  # an unknown name is one line
    # Seed-major order within each budget: a slow drift of the machine touches every optimizer alike.
    runs = [
        RunConfig(profile.name, name, seed, dataclasses.replace(train, budget=budget), tuple(sorted(hparams.items())),
                  references)
        for budget in budgets
        for seed in range(args.seeds or profile.seeds)
        for name, hparams in resolved.items()
    ]
    return profile, runs


def _canonical(name: str) -> str:
    try:
        return registry.get(name).name
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _check_model_and_device(train: TrainConfig, check_device: bool) -> None:
    from suite.models import check_model_name

    try:
        check_model_name(train.model)
        if check_device:
            from suite.harness import resolve_device

            if resolve_device(train.device).type != "cuda" and train.precision == "fp16":
                raise ValueError("precision fp16 needs a CUDA device (float16 with a gradient scaler); on a CPU use "
                                 "bf16")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def profile_hparams(profile: Profile, name: str) -> dict:
    """A profile's overrides for one optimizer: every ``[hparams."PATTERN"]`` table whose glob matches
    the name or one of its aliases, in file order, then the tables named exactly (e.g. ``"ssam-*"``,
    then ``"ssam-f"``, then ``"ssam-f-unstructured-explicit"``)."""
    info = registry.get(name)
    own = [info.name, *info.aliases]
    merged: dict = {}
    for pattern, values in profile.hparams.items():
        if pattern not in own and any(fnmatch.fnmatchcase(n, pattern) for n in own):
            merged.update(values)
    for exact in reversed(own):
        merged.update(profile.hparams.get(exact, {}))
    return merged


def check_constructs(runs: list[RunConfig], dataset) -> None:
    """Build each optimizer once on the runs' model (on the CPU), so that a bad hyper-parameter (an N:M
    that does not divide a layer) is one line before anything is trained or written."""
    import torch

    from suite.harness import example_sampler, inputs_for, make_augment, make_model, seeded_generator, subsets

    train = runs[0].train
    model = make_model(train, dataset, torch.device("cpu"))
    split = subsets(dataset, train)[0]
    sample = example_sampler(split, make_augment(train, dataset), train, torch.device("cpu"), seeded_generator(0, 3))
    inputs = inputs_for(model, max(1, len(split) // train.batch_size), train, seed=0, sample=sample)
    for config in {r.optimizer: r for r in runs}.values():
        try:
            built = registry.get(config.optimizer).build(model.parameters(), inputs, **dict(config.hparams))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"optimizer {config.optimizer}: {exc}") from None
        _check_fisher_batch(config, built.defaults)


def _check_fisher_batch(config: RunConfig, hparams: dict) -> None:
    """SSAM-F scoring its own batch needs that many examples in it (each process's slice under torchrun): one
    line here, not a traceback at the first mask refresh."""
    per_process = config.train.batch_size // config.train.replicas
    if hparams.get("mask") == "fisher" and hparams.get("fisher_data") == "batch" \
            and hparams.get("fisher_samples", 0) > per_process:
        where = f"each of {config.train.replicas} processes' {per_process}" if config.train.replicas > 1 else \
            f"the batch's {per_process}"
        raise UsageError(f"optimizer {config.optimizer}: fisher_samples={hparams['fisher_samples']} scores more "
                         f"examples than {where}; lower it or set fisher_data = \"train\"")


def load_data(args: argparse.Namespace, profile: Profile, train: TrainConfig):
    """The data set the runs train on: --data-dir, else the profile's data_dir, else $SUITE_DATA_DIR."""
    from suite.data import DataError, load_dataset

    data_dir = args.data_dir or (Path(profile.data_dir).expanduser() if profile.data_dir else None)
    try:
        return load_dataset(train.dataset, data_dir, args.download, image_size=train.image_size or None,
                            streaming=train.streaming)
    except DataError as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from suite import harness
    from suite.distributed import World

    profile, runs = plan(args)
    # under torchrun (docs/harness.md, "Several processes"): every process runs this command; the runs are
    # the same runs with their number of processes in their identity, and rank 0 alone writes
    world = args.world = World.from_env(runs[0].train.device if runs else "auto")
    try:
        if world.distributed:
            runs = [dataclasses.replace(r, train=with_overrides(r.train, replicas=world.size)) for r in runs]
        return _run_planned(args, profile, runs, world, harness)
    finally:
        world.leave()


def _run_planned(args: argparse.Namespace, profile: Profile, runs: list[RunConfig], world, harness) -> int:
    todo = [runs[k] for k in _from_rank_0(world, lambda: [runs.index(r) for r in _check_store(args, runs)])]
    if runs:
        # rank 0 decodes (or downloads) the data set and fills the cache; then the others read it
        dataset = _from_rank_0(world, lambda: load_data(args, profile, runs[0].train), keep=True)
        if dataset is None:
            dataset = load_data(args, profile, runs[0].train)
        check_constructs(runs, dataset)
        train_size = len(harness.subsets(dataset, runs[0].train)[0])
        if runs[0].train.batch_size > train_size:
            raise UsageError(f"batch_size {runs[0].train.batch_size} is larger than the training set ({train_size})")
    resuming = sum(store.checkpoint_path(args.results_dir, r.profile, r.run_id).exists() for r in todo)
    _say(args, f"profile {profile.name}: {len(runs)} runs ({len(runs) - len(todo)} already recorded, "
               f"{len(todo)} to run, {resuming} of them from a checkpoint) -> {args.results_dir}"
               + (f"; {world.size} processes" if world.distributed else ""))
    if todo:
        harness.warm_up(todo[0], dataset)
    at_end = profile.sharpness_at_end if args.sharpness is None else args.sharpness
    measuring = sharpness_setup(profile) if at_end else None
    code = _sweep(args, todo, dataset, measuring)
    if code == 0 and args.report and world.main:
        return cmd_report(args)
    return code


def _from_rank_0(world, compute, keep: bool = False):
    """``compute()`` on rank 0, its result (None with ``keep``: rank 0 keeps it to itself) on every rank; a
    bad input there is the same one-line error on every rank, rather than a rank waiting for ever."""
    from suite.distributed import broadcast_object

    if not world.distributed:
        return compute()
    value, error = None, None
    if world.main:
        try:
            value = compute()
        except (UsageError, ConfigError) as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error is not None:
        raise UsageError(error)
    shared = broadcast_object(None if keep else value)
    return value if world.main else shared


def _world(args: argparse.Namespace):
    """The processes this command runs in (set by ``cmd_run``; one process for everything else)."""
    from suite.distributed import ONE_PROCESS

    return getattr(args, "world", None) or ONE_PROCESS


def _say(args: argparse.Namespace, line: str) -> None:
    """A progress line on stderr, from rank 0 only under torchrun."""
    if _world(args).main:
        print(line, file=sys.stderr)


def _sweep(args: argparse.Namespace, todo: list[RunConfig], dataset, measuring=None) -> int:
    """Run what is to do, one claim at a time; Ctrl-C says what is saved and how to go on. ``measuring``:
    (sharpness settings, rho) where the profile measures each run's final model as it ends. Under torchrun
    rank 0 claims, and every rank learns from it whether to run."""
    from suite.distributed import broadcast_object

    main = _world(args).main
    t0, done, busy, current = time.monotonic(), 0, [], None
    try:
        for k, config in enumerate(todo, 1):
            claim = store.Claim(store.claim_path(args.results_dir, config.profile, config.run_id))
            if not broadcast_object(claim.acquire() if main else None):
                busy.append(config)
                _say(args, f"[{k}/{len(todo)}] {config.optimizer} seed {config.seed}: running in {claim.holder()}, "
                           "skipped")
                continue
            with claim if main else contextlib.nullcontext():
                current = config
                record = _run_one(args, config, dataset, claim, measuring)
                current = None
            if record is not None:
                done += 1
                if main:
                    _print_run(k, len(todo), config, record["metrics"],
                               (time.monotonic() - t0) / done * (len(todo) - k))
    except KeyboardInterrupt:
        _say(args, f"interrupted: {done} runs finished and recorded{_where(args, current)}. Run the same command "
                   "again to go on.")
        return 130
    if busy:
        _say(args, f"{len(busy)} runs were running in other processes; run the same command again once they end "
                   "to pick up any they left unfinished")
    return 0


def _run_one(args: argparse.Namespace, config: RunConfig, dataset, claim: store.Claim,
             measuring=None) -> dict | None:
    """One claimed run: trained (or resumed), its final weights kept (and measured, where the profile
    says), recorded, its checkpoint removed; None if another sweep finished it since we looked. Under
    torchrun every rank trains; rank 0 alone decides, measures and writes."""
    from suite import harness
    from suite.distributed import broadcast_object

    world = _world(args)
    path = store.record_path(args.results_dir, config.profile, config.run_id)
    ckpt = store.checkpoint_path(args.results_dir, config.profile, config.run_id)
    finished = None
    if world.main:
        finished = not args.force and path.exists()
        if path.exists() and ckpt.exists() and ckpt.stat().st_mtime_ns <= path.stat().st_mtime_ns:
            ckpt.unlink()  # left by a kill between writing the record and removing it: not a resume point
    if broadcast_object(finished):
        return None
    weights = store.weights_path(args.results_dir, config.profile, config.run_id)
    record = harness.run(config, dataset, progress=args.progress, checkpoint=ckpt, on_checkpoint=claim.refresh,
                         weights=weights, world=world)
    if not world.main:
        return record
    if measuring is not None and record["metrics"].get("status") == "finished":
        record = measure_sharpness(record, weights, dataset, *measuring)
        print(f"  {_sharpness_line(record)}", file=sys.stderr)
    store.write_record(path, record)
    ckpt.unlink(missing_ok=True)  # empty folders stay: removing them races other sweeps
    return record


def _where(args: argparse.Namespace, current: RunConfig | None) -> str:
    if current is None:
        return ""
    ckpt = store.checkpoint_path(args.results_dir, current.profile, current.run_id)
    if ckpt.exists():
        return f"; {current.optimizer} seed {current.seed} resumes from its checkpoint {ckpt}"
    return f"; {current.optimizer} seed {current.seed} had no checkpoint yet and starts over"


def _check_store(args: argparse.Namespace, runs: list[RunConfig]) -> list[RunConfig]:
    """The runs still to do. Before anything is written: the results directory must be writable, and
    every existing record and checkpoint of these runs must be readable."""
    results = args.results_dir
    _check_writable(results, "results directory")
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


def _check_writable(directory: Path, what: str) -> None:
    """``directory`` is, or can be made as, a writable directory: said before any work, not after it."""
    existing = next((p for p in [directory, *directory.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{what} {str(directory)!r}: {str(existing)!r} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {str(directory)!r}: {str(existing)!r} is not writable")


def _print_run(k: int, n: int, config: RunConfig, m: dict, eta: float) -> None:
    step = f"{m['time_per_step_s'] * 1000:.0f} ms/step" if m["time_per_step_s"] else "untimed"
    # streamed from disk: how much of training went to waiting for the loader
    data = f", waiting for data {100 * m['data_share']:.0f}%" if config.train.streaming and m.get("data_share") else ""
    print(f"[{k}/{n}] {config.optimizer} seed {config.seed}, {m['budget_kind']} budget "
          f"({m['budget_steps_run']} steps = {m['budget_epochs_run']:.2f} epochs): {m['status']}, "
          f"test acc {m['test_acc']:.4f}, {step}{data}, {m['flops_per_step'] / 1e9:.2f} GFLOP/step "
          f"(about {eta / 60:.1f} min left)", file=sys.stderr)


def cmd_cost(args: argparse.Namespace) -> int:
    """FLOPs and time per step of each optimizer of a profile, interleaved over repeats (suite/cost.py)."""
    from suite import cost, harness
    from suite.measure import environment

    if not 1 <= args.repeats <= MAX_REPEATS:
        raise UsageError(f"--repeats must be between 1 and {MAX_REPEATS}, got {args.repeats}")
    profile, runs = plan(args)
    _check_writable(args.out, "--out")
    first = (runs[0].seed, runs[0].train.budget)
    runs = [r for r in runs if (r.seed, r.train.budget) == first]  # one probe per optimizer
    env = environment(harness.resolve_device(runs[0].train.device))
    publishing = args.out.resolve() == Path(PUBLISHED).resolve()
    if publishing and not _clean_commit({"env": env}) and not args.allow_uncommitted:
        raise UsageError(f"--out {PUBLISHED}: the tree is not a clean commit ({env.get('git_commit')}); commit "
                         "first, or pass --allow-uncommitted")
    dataset = load_data(args, profile, runs[0].train)
    check_constructs(runs, dataset)
    print(f"profile {profile.name}: the cost of {len(runs)} optimizers, {args.repeats} repeats -> {args.out}",
          file=sys.stderr)
    harness.warm_up(runs[0], dataset)
    rows = cost.measure(runs, dataset, args.repeats, args.progress)
    summary = cost.summarise(rows, [r.optimizer for r in runs])
    train = runs[0].train
    names = "".join(f" --optimizer {n}" for n in args.optimizer or [])
    header = {"profile": profile.name, "model": train.model, "batch_size": train.batch_size,
              "device": env["device"], "machine": env.get("gpu") or env["processor"], "threads": env["torch_threads"],
              "torch": env["torch"], "commit": env["git_commit"], "repeats": args.repeats,
              "command": f"{_prog()} cost --profile {args.profile} --repeats {args.repeats}{names}"}
    for path in cost.write(args.out, rows, summary, header):
        print(f"wrote {path}", file=sys.stderr)
    return 0


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


def cmd_publish(args: argparse.Namespace) -> int:
    """Replace the published records of each named profile with the user's, then rebuild the report."""
    import shutil
    import tempfile

    staged = {}
    for profile in dict.fromkeys(args.profile):
        found = list(store.iter_records(args.source, profile))
        if not found:
            raise UsageError(f"no records of profile {profile!r} in {str(args.source)!r} "
                             f"(expected {args.source}/runs/{profile}/*.json)")
        unreadable = [str(p) for p, r in found if r is None]
        if unreadable:
            raise UsageError(f"unreadable record {unreadable[0]}: re-run it or remove it before publishing")
        unclean = [(p, r["env"].get("git_commit")) for p, r in found if not _clean_commit(r)]
        if unclean and not args.allow_uncommitted:
            raise UsageError(f"{len(unclean)} records of {profile!r} were not made from a clean commit (e.g. "
                             f"{unclean[0][0].name}: {unclean[0][1]}); commit and re-run, or pass "
                             "--allow-uncommitted")
        staged[profile] = [p for p, _ in found]
    runs = args.results_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for profile, paths in staged.items():
        tmp = Path(tempfile.mkdtemp(prefix=f".{profile}-", dir=runs))
        for path in paths:
            shutil.copy2(path, tmp / path.name)
        old = runs / profile
        if old.exists():
            shutil.rmtree(old)
        tmp.rename(old)
        kept = _publish_weights(args.source, args.results_dir, profile, [p.stem for p in paths])
        print(f"published {len(paths)} records of {profile} into {old} (final weights of {kept}, git-ignored)",
              file=sys.stderr)
    return cmd_report(args)


def _publish_weights(source: Path, results_dir: Path, profile: str, run_ids: list[str]) -> int:
    """The published runs' final weights beside them (results/weights/, git-ignored: for measurements
    made on this machine afterwards); the profile's earlier weights go. Returns how many were there."""
    import shutil

    target = results_dir / "weights" / profile
    if source.resolve() == results_dir.resolve():
        return sum(store.weights_path(results_dir, profile, r).exists() for r in run_ids)
    if target.exists():
        shutil.rmtree(target)
    kept = 0
    for run_id in run_ids:
        path = store.weights_path(source, profile, run_id)
        if path.exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
            kept += 1
    return kept


def sharpness_setup(profile: Profile | None, examples: int | None = None, iterations: int | None = None):
    """How a profile's runs are measured: its ``[sharpness]`` settings with the command line's
    overrides, and its rho (its ``[sharpness] rho``, else its SAM rho; None for a profile no longer
    shipped, whose records then say it)."""
    from suite.config import SharpnessSettings

    settings = profile.sharpness if profile else SharpnessSettings()
    changes = {k: v for k, v in (("examples", examples), ("iterations", iterations)) if v is not None}
    settings = dataclasses.replace(settings, **changes)
    if profile is None:
        return settings, None
    if profile.sharpness_rho is not None:
        return settings, float(profile.sharpness_rho)
    sam = resolve_hparams(registry.get("sam"), profile.train, profile_hparams(profile, "sam"))
    return settings, float(sam.get("rho", registry.get("sam").defaults().get("rho", 0.05)))


def measure_sharpness(record: dict, weights: Path, dataset, settings, rho: float) -> dict:
    """Measure one finished run's final model into its record (metrics and the ``sharpness`` details,
    with the commit that measured); the record, for the caller to write."""
    from suite import measure, sharpness

    state = store.load_weights(weights, record["run_id"])
    metrics, details = sharpness.measure_record(record, state, dataset, settings, rho)
    record["metrics"].update(metrics)
    record["sharpness"] = {**details, "git_commit": measure.git_commit()}
    return record


def cmd_sharpness(args: argparse.Namespace) -> int:
    """Measure what is missing, record by record (each written as soon as it is measured)."""
    from tqdm import tqdm

    from suite import sharpness
    from suite.data import DataError, load_dataset

    if args.rho is not None and not (math.isfinite(args.rho) and args.rho >= 0):
        raise UsageError(f"--rho must be a finite number >= 0, got {args.rho}")
    names, given = _named_profiles(args.profile)
    found = [pr for profile in names for pr in store.iter_records(args.results_dir, profile)]
    if not found:
        raise UsageError(f"no records in {str(args.results_dir)!r}" + (f" of profile {names[0]!r}"
                                                                      if args.profile else ""))
    unreadable = [str(p) for p, r in found if r is None]
    if unreadable:
        raise UsageError(f"unreadable record {unreadable[0]}: re-run it or remove it")
    setups = {}  # per profile: (settings, rho), every value checked before anything is measured
    for name in dict.fromkeys(r["config"]["profile"] for _, r in found):
        profile = given.get(name) or (load_profile(name) if name in available_profiles() else None)
        settings, rho = sharpness_setup(profile, args.examples, args.iterations)
        setups[name] = settings, args.rho if args.rho is not None else rho
    from_records = sharpness.reference_rho([r for _, r in found])
    chosen = [(p, r) for p, r in found if not args.optimizer or any(
        fnmatch.fnmatchcase(r["optimizer"]["name"], g) for g in args.optimizer)]
    if not chosen:
        raise UsageError(f"no records of optimizer {args.optimizer[0]!r} in {str(args.results_dir)!r}")
    todo = [(p, r) for p, r in chosen if args.force or sharpness.METRIC_KEYS[0] not in r["metrics"]]
    weights = {p: store.weights_path(args.results_dir, r["config"]["profile"], p.stem) for p, r in todo}
    unfinished = [p for p, r in todo if r["metrics"].get("status") != "finished"]
    missing = [p for p, _ in todo if p not in unfinished and not weights[p].exists()]
    todo = [(p, r) for p, r in todo if p not in missing and p not in unfinished]
    print(f"sharpness: {len(chosen)} runs, {len(chosen) - len(todo) - len(missing) - len(unfinished)} already "
          f"measured, {len(todo)} to measure" + (f", {len(unfinished)} diverged (left out)" if unfinished else "")
          + (f", {len(missing)} without final weights (made before runs kept them: re-run them with "
             "`run --force`)" if missing else ""), file=sys.stderr)
    if missing and not todo:
        raise UsageError(f"no final weights for {len(missing)} runs to measure (e.g. {missing[0].name}): re-run "
                         "them with `python -m suite run --force`")
    datasets: dict = {}
    bar = tqdm(todo, desc="sharpness", unit="run", disable=None if args.progress else True)
    for path, record in bar:
        cfg = sharpness.train_config(record)
        key = (cfg.dataset, cfg.image_size, cfg.streaming)
        if key not in datasets:
            try:
                datasets[key] = load_dataset(cfg.dataset, args.data_dir, args.download,
                                             image_size=cfg.image_size or None, streaming=cfg.streaming)
            except DataError as exc:
                raise UsageError(str(exc)) from None
        settings, rho = setups[record["config"]["profile"]]
        rho = from_records[record["config"]["profile"]] if rho is None else rho
        store.write_record(path, measure_sharpness(record, weights[path], datasets[key], settings, rho))
        bar.write(_sharpness_line(record), file=sys.stderr)
    return cmd_report(args) if args.report and todo else 0


def _named_profiles(given: list[str] | None) -> tuple[list[str], dict[str, Profile]]:
    """The profile names (globs) to look for, and the profiles named by their .toml file (measured with
    that file's [sharpness] settings)."""
    names, loaded = [], {}
    for name in given or ["*"]:
        if name.endswith(".toml"):
            profile = load_profile(name)
            loaded[profile.name] = profile
            name = profile.name
        names.append(name)
    return names, loaded


def _sharpness_line(record: dict) -> str:
    m, d = record["metrics"], record["sharpness"]
    return (f"{record['optimizer']['name']} seed {record['config']['seed']}: lambda_max "
            f"{m['sharpness_lambda_max']:.4g}, trace {m['sharpness_trace']:.4g}, m-sharpness "
            f"{m['sharpness_m']:.4g} (adaptive {m['sharpness_m_adaptive']:.4g}) at rho {d['rho']:g}; "
            f"{d['seconds']:.1f} s")


def _clean_commit(record: dict) -> bool:
    commit = record.get("env", {}).get("git_commit")
    return bool(commit) and not commit.endswith("-dirty")

