"""Run sharpness-aware optimizers through one harness and compare them: list the registry, run a
profile's sweep into your own results directory, report it, and publish it into results/.

The commands parse their arguments and hand them to the module that does the work (``suite.sweep``,
``suite.cost``, ``suite.sharpness``, ``suite.report``, ``suite.store``). Bad input is one line on stderr
and exit 2, found before anything is written."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

from suite import cost, estimate, launch, registry, sharpness, store, sweep, tune
from suite.claims import load_claims
from suite.config import BUDGETS, ConfigError, SharpnessSettings, available_profiles, load_profile
from suite.distributed import World

EXIT_USAGE = 2
MY_RESULTS = Path("my-results")  # a user's own runs: never the published results/ (git-ignored)
PUBLISHED = Path("results")
MAX_REPEATS = 100  # timed repeats of the cost command

UsageError = ConfigError  # anything the user can fix; printed as one line


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, store.StoreError, registry.PluginError) as exc:
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


# ----- options several commands share, declared once ------------------------------------------------------
def _options(*adders) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path,
                   help="data directory (default: the profile's data_dir, else $SUITE_DATA_DIR, else ./data)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="download the data set if missing (default: only into the default ./data)")


def _dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", metavar="NAME",
                   help="override the profile's data set: cifar10, cifar100, synthetic or any ImageFolder's name")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the profile's device")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")


def _results_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=MY_RESULTS,
                   help=f"where records, tables and plots are (default: ./{MY_RESULTS}; publish them into "
                        f"{PUBLISHED}/ with the publish command)")


def _optimizers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimizer", action="append", metavar="NAME", help="only these (repeatable)")


def _claims(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claims", type=Path, metavar="FILE",
                   help="a TOML file of your own [[claims]], judged beside the study's (suite/study.toml)")


def _report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write the summary tables and plots afterwards (default: yes)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_prog(), description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="the registered optimizers; --profile NAME: what each runs with there; "
                                     "--profiles: the shipped profiles")
    ls.add_argument("--profiles", action="store_true", help="the shipped profiles and what each is for")
    ls.add_argument("--profile", metavar="NAME", help="the values each optimizer of this profile (a name or a .toml "
                                                      "path) runs with")
    ls.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a profile's sweep and write one record per run",
                         parents=[_options(_optimizers, _results_dir, _dataset, _data, _device, _report, _progress)])
    run.add_argument("--profile", default="cpu", help=f"a name ({', '.join(available_profiles())}) or a .toml path")
    _selection(run)
    run.add_argument("--force", action="store_true", help="re-run runs that already have a record")
    run.add_argument("--sharpness", action=argparse.BooleanOptionalAction, default=None,
                     help="measure each run's final model as it ends, as `suite sharpness` does (default: the "
                          "profile's [sharpness] at_end; off in the shipped CPU profiles, see docs/sharpness.md)")
    _launch_options(run)
    run.set_defaults(func=cmd_run)

    cost = sub.add_parser("cost", help="FLOPs and time per step of a profile's optimizers, no training -> "
                                       "cost.csv, cost.md", parents=[_options(_optimizers, _dataset, _data, _device,
                                                                               _progress)])
    cost.add_argument("--profile", default="cost", help="a name or a .toml path (default: cost, every optimizer)")
    cost.add_argument("--repeats", type=int, default=5, help="timed repeats, optimizers interleaved (default: 5)")
    cost.add_argument("--out", type=Path, default=MY_RESULTS,
                      help=f"where cost.csv, cost-repeats.csv and cost.md go (default: ./{MY_RESULTS}; "
                           f"--out {PUBLISHED} publishes, from a clean commit)")
    cost.add_argument("--allow-uncommitted", action="store_true",
                      help=f"write into {PUBLISHED}/ from a tree with uncommitted changes")
    cost.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, one per core); the "
                                                                 "runs it prices ran with their env.torch_threads")
    cost.set_defaults(func=cmd_cost)

    tune.add_parser(sub, [_options(_optimizers, _results_dir, _data, _report, _progress)], _launch_options, cmd_tune)
    _add_sharpness_parser(sub)
    _add_status_parser(sub)

    rep = sub.add_parser("report", help="records -> summary.csv, summary.md (verdicts first) and plots",
                         parents=[_options(_results_dir, _claims)])
    rep.set_defaults(func=cmd_report)

    _add_plan_parser(sub)

    pub = sub.add_parser("publish", help=f"copy a profile's records into {PUBLISHED}/, rebuild its report and the "
                                         "README's findings", parents=[_options(_claims)])
    pub.add_argument("--profile", action="append", required=True, metavar="NAME",
                     help="the profile whose records to publish (repeatable); its published records are replaced")
    pub.add_argument("--from", dest="source", type=Path, default=MY_RESULTS, help=f"default: ./{MY_RESULTS}")
    pub.add_argument("--to", dest="results_dir", type=Path, default=PUBLISHED, help=f"default: ./{PUBLISHED}")
    pub.add_argument("--allow-uncommitted", action="store_true",
                     help="publish records whose code was not a clean commit (say why in results/README.md)")
    pub.set_defaults(func=cmd_publish)
    return p


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the profile's)")
    p.add_argument("--epochs", type=int, help="override the profile's epoch count")
    p.add_argument("--budget", action="append", choices=BUDGETS,
                   help="what every optimizer gets the same of (repeatable; default: the profile's budgets): "
                        "epochs, or the training FLOPs / seconds the reference (sgd) spends in those epochs")


def _add_plan_parser(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("plan", help="seeds per optimizer for a confirmatory profile, from a pilot table's records "
                                     "(80%% power at its declared margins)", parents=[_options(_results_dir, _claims)])
    pl.add_argument("--pilot", required=True, metavar="NAME", help="the pilot table's profile (RESULTS_DIR/runs/NAME)")
    pl.add_argument("--profile", required=True, help="the confirmatory profile to plan (a name or a .toml path)")
    pl.add_argument("--max-seeds", type=int, default=30, help="the most seeds one optimizer gets (default: 30)")
    pl.add_argument("--out", type=Path, help="also write the plan (Markdown, with its [optimizer_seeds]) here")
    pl.set_defaults(func=cmd_plan)


def _add_status_parser(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="where a sweep stands, local or Slurm: each run done, running, failed (its "
                        "traceback's end), interrupted, queued or pending", parents=[_options(
                            _optimizers, _results_dir, _dataset, _device)])
    st.add_argument("--profile", default="cpu", help="the profile, as given to run (with the same --seeds/--epochs)")
    _selection(st)
    st.add_argument("--launcher", choices=("local", "slurm"), default="local", help="as given to run")
    st.add_argument("--gpus-per-run", type=int, help="as given to run (several processes per run change its id)")
    st.set_defaults(func=cmd_status)


def _add_sharpness_parser(sub: argparse._SubParsersAction) -> None:
    d = SharpnessSettings()
    sh = sub.add_parser("sharpness", help="measure each recorded run's final model (Hessian's top eigenvalue and "
                                          "trace, m-sharpness, loss surfaces) into its record",
                        parents=[_options(_results_dir, _data, _report, _progress)])
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
                                               "its SAM rho, else SAM's registered default)")
    sh.set_defaults(func=cmd_sharpness)


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


# ----- the commands ----------------------------------------------------------------------------------------
WIDTH = 100  # a terminal's lines: the listings wrap to it
NAME_WIDTH = 28  # a longer name stands on its own line


def cmd_list(args: argparse.Namespace) -> int:
    if args.profiles:
        seconds = estimate.recorded_seconds(PUBLISHED)  # every record read once, for every profile
        rows = [(name, estimate.described(load_profile(name), seconds)) for name in available_profiles()]
    elif args.profile:
        rows = load_profile(args.profile).settings_rows()
    else:
        rows = [(name, f"{registry.get(name).provenance}; {registry.get(name).passes_per_step} passes/step; "
                       f"{registry.get(name).description}"
                       + (f" (also: {', '.join(registry.get(name).aliases)})" if registry.get(name).aliases else ""))
                for name in registry.names()]
    width = min(max(len(name) for name, _ in rows), NAME_WIDTH)
    for name, text in rows:
        lines = textwrap.wrap(text, WIDTH - 2 - width) or [""]
        if len(name) > width:  # a long name on a line of its own, its text below
            print(name)
            name = ""
        print(f"{name:<{width}}  {lines[0]}".rstrip())
        for line in lines[1:]:
            print(f"{'':<{width}}  {line}")
    return 0


def _runs(args: argparse.Namespace, check_device: bool = True):
    profile = load_profile(args.profile)
    return profile, sweep.runs_for(profile, optimizers=args.optimizer, seeds=getattr(args, "seeds", None),
                                   epochs=getattr(args, "epochs", None), budgets=getattr(args, "budget", None),
                                   device=getattr(args, "device", None), dataset=getattr(args, "dataset", None),
                                   check_device=check_device)


def _launch_options(run: argparse.ArgumentParser) -> None:
    g = run.add_argument_group("several runs at once (docs/launch.md)")
    g.add_argument("--workers", type=int, default=1, help="runs at once on this machine, the cores shared out")
    g.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / workers)")
    g.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="slurm: one array task per run through submitit (settings: the flags below, else the "
                        "profile's [slurm] table)")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    g.add_argument("--gpus-per-run", type=int, help="GPUs per run (more than 1: one process per GPU, DDP)")
    g.add_argument("--cpus-per-run", type=int, help="CPUs per run (default 2; its torch threads)")
    g.add_argument("--time-min", type=int, help="each task's time limit in minutes (default 60; requeued at it)")
    g.add_argument("--at-once", type=int, help="most tasks running at once (default: no limit)")
    g.add_argument("--wait", action="store_true", help="wait for the Slurm tasks to end (then write the report)")


def cmd_run(args: argparse.Namespace) -> int:
    return _sweep(args, *_runs(args, check_device=args.launcher != "slurm"))  # tasks run where the GPUs are


def cmd_tune(args: argparse.Namespace) -> int:
    """A profile's [tune] grid: its trials run as `run` runs a sweep; --choose: the values chosen from their
    records (suite/tune.py)."""
    if args.choose:
        return tune.write_choice(load_profile(args.profile), args.results_dir, args.optimizer, _prog())
    return _sweep(args, *tune.plan(load_profile(args.profile), args.optimizer, args.launcher != "slurm"))


def _sweep(args: argparse.Namespace, profile, runs) -> int:
    launch.check_flags(args)
    if args.launcher == "slurm" or args.workers > 1:
        return _launch(args, profile, runs)
    if args.threads:
        torch.set_num_threads(args.threads)
    # under torchrun (docs/harness.md, "Several processes"): every process runs this command, rank 0 alone writes
    world = World.from_env(runs[0].train.device if runs else "auto")
    try:
        engine = sweep.Sweep(args.results_dir, force=args.force, progress=args.progress, world=world)
        code = sweep.run_profile(profile, runs, engine, args.data_dir, args.download, args.sharpness)
        if code == 0 and args.report and world.main:
            return cmd_report(args)
        return code
    finally:
        world.leave()


def _slurm(args: argparse.Namespace, profile):
    if getattr(args, "launcher", "local") != "slurm":
        return None
    flags = {f: getattr(args, f, None) for f in ("partition", "gpus_per_run", "cpus_per_run", "time_min", "at_once")}
    return launch.SlurmSettings.of(profile.slurm, **flags)


def _launch(args: argparse.Namespace, profile, runs) -> int:
    slurm = _slurm(args, profile)
    engine = sweep.Sweep(args.results_dir, progress=False)
    code = launch.launch(profile, runs, engine, data_dir=args.data_dir, download=args.download,
                         sharpness_at_end=args.sharpness, launcher=args.launcher, workers=args.workers,
                         threads=args.threads, slurm=slurm, wait=args.wait)
    if code == 0 and args.report and (args.launcher == "local" or args.wait):
        return cmd_report(args)
    return code


def cmd_status(args: argparse.Namespace) -> int:
    profile, runs = _runs(args, check_device=False)
    runs = tune.plan(profile, args.optimizer, False)[1] if profile.tune else runs  # a tuning profile's: its trials
    runs = launch.launched_runs(runs, _slurm(args, profile))
    labels = tune.labels(profile, runs) if profile.tune else None
    for line in launch.status_lines(launch.run_states(runs, args.results_dir), labels=labels):
        print(line)
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """FLOPs and time per step of each optimizer of a profile, interleaved over repeats (suite/cost.py)."""
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise UsageError(f"--repeats must be between 1 and {MAX_REPEATS}, got {args.repeats}")
    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0, got {args.threads}")
    profile, runs = _runs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = "".join(f" --optimizer {n}" for n in args.optimizer or [])
    threads = f" --threads {args.threads}" if args.threads else ""
    command = f"{_prog()} cost --profile {args.profile} --repeats {args.repeats}{threads}{names}"
    publishing = args.out.resolve() == PUBLISHED.resolve()
    for path in cost.measure_profile(profile, runs, args.repeats, args.out, command, data_dir=args.data_dir,
                                     download=args.download, progress=args.progress,
                                     must_be_clean=publishing and not args.allow_uncommitted):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from suite.report import write_report  # matplotlib and seaborn (1.5 s): only for the commands that draw

    if not (args.results_dir / "runs").is_dir():
        raise UsageError(f"no records in {str(args.results_dir)!r}: expected {args.results_dir}/runs/<profile>/*.json")
    written, skipped, superseded = write_report(args.results_dir, _user_claims(args))
    for path in skipped:
        print(f"warning: skipped unreadable record {path}", file=sys.stderr)
    for path in superseded:
        print(f"warning: left out {path}: a later run has the same profile, budget, optimizer and seed "
              "(another setting under one profile name? use another --results-dir)", file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _user_claims(args: argparse.Namespace) -> tuple:
    """The claims of ``--claims FILE`` (none without it); a bad file is one line."""
    if getattr(args, "claims", None) is None:
        return ()
    try:
        return load_claims(args.claims)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_plan(args: argparse.Namespace) -> int:
    """Seeds per optimizer of a confirmatory profile from a pilot's records (suite/plan.py)."""
    from suite import plan  # pandas, scipy and the report's plots: only when asked

    command = (f"{_prog()} plan --pilot {args.pilot} --profile {args.profile} --results-dir {args.results_dir} "
               f"--max-seeds {args.max_seeds}")
    print(text := plan.from_records(args.results_dir, args.pilot, load_profile(args.profile), args.max_seeds,
                                    _user_claims(args), command))
    if args.out is not None:
        store.atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Replace each named profile's published records with the user's; rebuild the report and both READMEs."""
    from suite.report import update_readme  # matplotlib and seaborn (1.5 s): only for the commands that draw

    _user_claims(args)  # a bad claims file is one line before anything is replaced
    for line in store.publish(args.source, args.results_dir, args.profile, args.allow_uncommitted):
        print(line, file=sys.stderr)
    code = cmd_report(args)
    for readme in (args.results_dir.resolve().parent / "README.md", args.results_dir.resolve() / "README.md"):
        if code == 0 and update_readme(readme, args.results_dir):
            print(f"wrote the findings of {readme}", file=sys.stderr)
    readme = args.results_dir.resolve().parent / "README.md"  # the main job's duration beside its command
    if code == 0 and estimate.update_durations(readme, args.results_dir, load_profile):
        print(f"wrote the durations of {readme}", file=sys.stderr)
    return code


def cmd_sharpness(args: argparse.Namespace) -> int:
    request = sharpness.Request(profiles=args.profile, optimizers=args.optimizer, force=args.force,
                                examples=args.examples, iterations=args.iterations, rho=args.rho,
                                data_dir=args.data_dir, download=args.download, progress=args.progress)
    measured = sharpness.measure_results(args.results_dir, request)
    return cmd_report(args) if args.report and measured else 0
