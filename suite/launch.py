"""Launchers: a sweep's runs several at a time — N worker processes on this machine (``--workers``), or one
Slurm array task per run through submitit (``--launcher slurm``). Every task does what the local sweep
does for one run (``run_task``): it takes the run's lease, runs ``sweep.run_one`` (resuming from the run's
checkpoint, writing its record into the shared results directory) and releases the lease. A task that
Slurm preempts or stops at its time limit is requeued by submitit and resumes from the last epoch's
checkpoint, bit for bit.

Slurm through submitit (the engine under benchopt's and Hydra's Slurm launchers) rather than our own
sbatch scripts: it writes the job scripts, pickles the task, requeues on the time-limit signal and
exports the distributed environment of a multi-task job; what is ours is only what a run needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from suite import probe, store
from suite.config import ConfigError, Profile, RunConfig, with_overrides
from suite.distributed import ONE_PROCESS, World
from suite.lease import Lease, failure_path, read_failure, write_failure
from suite.metrics import accuracy_said
from suite.sweep import Sweep, from_rank_0, load_data, load_data_on_every_rank, measuring_for, prepare, run_one

LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class SlurmSettings:
    """What each array task asks Slurm for (flags, or a profile's ``[slurm]`` table)."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_run: int = 0  # > 1: one process per GPU on one node, the run spread over them (DDP)
    processes_per_run: int = 0  # 0: one per GPU (one without GPUs); > 1 on CPUs: DDP over gloo
    cpus_per_run: int = 2  # per task; the run's torch threads
    time_min: int = 60  # each task's time limit; a run that needs longer is requeued and resumes
    at_once: int = 0  # most tasks running at once (0: as many as Slurm gives)
    signal_s: int = 90  # the time-limit signal comes this long before the limit: the task is requeued
    requeues: int = 3  # how many times a task may hit its time limit and be requeued

    def __post_init__(self) -> None:
        for name, low in (("gpus_per_run", 0), ("processes_per_run", 0), ("cpus_per_run", 1), ("time_min", 1),
                          ("at_once", 0), ("signal_s", 1), ("requeues", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"slurm {name} must be an integer >= {low}, got {value!r}")
        if self.gpus_per_run and self.processes_per_run not in (0, self.gpus_per_run):
            raise ConfigError(f"slurm processes_per_run must be 0 or gpus_per_run ({self.gpus_per_run}) with GPUs: one "
                              f"process per GPU, got {self.processes_per_run}")
        if self.signal_s >= self.time_min * 60:
            raise ConfigError(f"slurm signal_s ({self.signal_s}) must be shorter than the time limit "
                              f"({self.time_min} min)")

    @property
    def processes(self) -> int:
        return self.processes_per_run or max(self.gpus_per_run, 1)

    @staticmethod
    def of(table: dict[str, Any], **flags: Any) -> SlurmSettings:
        """A profile's ``[slurm]`` table with the command line's flags (None: the table's) on top."""
        known = {f.name for f in dataclasses.fields(SlurmSettings)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in [slurm]; allowed: {', '.join(sorted(known))}")
        return SlurmSettings(**{**table, **{k: v for k, v in flags.items() if v is not None}})


@dataclass(frozen=True)
class Task:
    """What a worker or an array task needs to run one run: pickled by submitit, by value."""

    profile: Profile
    config: RunConfig
    results_dir: Path
    data_dir: Path | None = None
    download: bool | None = None
    measuring: tuple | None = None
    threads: int = 0  # torch threads in the task (0: leave torch's default)


def run_task(task: Task, world: World = ONE_PROCESS, dataset: Any = None) -> str:
    """One run, as the local sweep runs it: under its lease (a run another task holds is left to it), run or
    resumed, recorded. Returns what became of it, in a few words."""
    import torch

    if task.threads:
        torch.set_num_threads(task.threads)
    config = task.config
    lease = Lease.of(task.results_dir, config.profile, config.run_id)
    if not from_rank_0(world, lease.acquire):
        return f"{config.optimizer} seed {config.seed}: running in {lease.holder()}, left to it"
    with lease if world.main else contextlib.nullcontext():
        if dataset is None:  # a Slurm task's; a local worker's is loaded once, in _start_worker
            dataset = load_data_on_every_rank(world, task.profile, config.train, task.data_dir, task.download)
        sweep = Sweep(task.results_dir, progress=False, world=world, measuring=task.measuring)
        record = run_one(sweep, config, dataset, lease if world.main else None)
    if record is None:
        return f"{config.optimizer} seed {config.seed}: already recorded"
    m = record["metrics"]
    return f"{config.optimizer} seed {config.seed}: {m['status']}, {accuracy_said(m)}"


class SlurmTask(submitit.helpers.Checkpointable):
    """One array task. Requeued on its time-limit signal (``Checkpointable``): the new attempt runs this
    same task again, which resumes from the run's own checkpoint — the suite's state is in the results
    directory, not in this object."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self) -> str:
        world = ONE_PROCESS
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            # one task per GPU: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as torchrun would set them
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            world = World.from_env(self.task.config.train.device)
        try:
            outcome = run_task(self.task, world)
        except Exception:  # a data set not mounted on the node, a bad unpickle: for `suite status` too
            if world.main:
                import traceback

                c = self.task.config
                with contextlib.suppress(store.StoreError):
                    write_failure(failure_path(self.task.results_dir, c.profile, c.run_id), traceback.format_exc())
            raise
        finally:
            world.leave()
        print(outcome, file=sys.stderr)
        return outcome


def check_slurm(settings: SlurmSettings) -> None:
    """Before anything is written or submitted: a Slurm to submit to, the partition, GPUs where asked."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise ConfigError("--launcher slurm: no Slurm here (sbatch and sinfo are not on PATH); run on a cluster's "
                          "login node, or start a single-node one with tools/slurm-single-node.sh")
    rows = [r.split(" ", 1) for r in _sinfo("%P %G")]
    partitions: dict[str, str] = {}
    for p, gres in rows:  # a partition's nodes may differ: one row each
        partitions[p.rstrip("*")] = ",".join(filter(None, (partitions.get(p.rstrip("*")), gres)))
    default = next((p.rstrip("*") for p, _ in rows if p.endswith("*")), None)
    partition = settings.partition or default
    if partition is None or partition not in partitions:
        raise ConfigError(f"--partition {settings.partition or '(default)'}: no such Slurm partition; known: "
                          f"{', '.join(sorted(partitions))}")
    if settings.gpus_per_run and "gpu" not in partitions[partition]:
        raise ConfigError(f"--gpus-per-run {settings.gpus_per_run}: partition {partition} has no GPUs "
                          f"(its generic resources: {partitions[partition]})")


def _sinfo(fields: str) -> list[str]:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", fields], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--launcher slurm: sinfo failed ({exc}); is slurmctld reachable?") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"--launcher slurm: Slurm is not reachable (sinfo: {last})")
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def slurm_folder(results_dir: Path, profile: str) -> Path:
    """Where a profile's job scripts, pickles and logs go: ``DIR/slurm/<profile>/``."""
    return results_dir / "slurm" / profile


def submit_slurm(tasks: list[Task], settings: SlurmSettings, say=print) -> list[Any]:
    """One array job, a task per run not recorded and not running; returns submitit's jobs."""
    if not tasks:
        say("nothing to submit: every run is recorded or running")
        return []
    first = tasks[0]
    folder = slurm_folder(first.results_dir, first.config.profile)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.requeues)
    gpus, processes = settings.gpus_per_run, settings.processes
    threads = max(1, settings.cpus_per_run // processes)  # each process's share, as its torch threads
    executor.update_parameters(
        job_name=f"suite-{first.config.profile}", partition=settings.partition, time=settings.time_min,
        nodes=1, ntasks_per_node=processes, gpus_per_node=gpus or None, cpus_per_task=threads,
        signal_delay_s=settings.signal_s, array_parallelism=settings.at_once or len(tasks), stderr_to_stdout=True)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        with executor.batch():
            jobs = [executor.submit(SlurmTask(dataclasses.replace(t, threads=threads))) for t in tasks]
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused (time limit, account, resources...)
        for leftover in set(folder.iterdir()) - before:
            leftover.unlink(missing_ok=True)
        lines = [line for line in str(exc).splitlines() if line.strip()]
        errors = [line.strip() for line in lines if "error" in line.lower()] or lines or ["no message"]
        refusal = errors[-1]
        raise ConfigError(f"--launcher slurm: sbatch refused the job: {refusal}") from None
    # for `suite status`: which job runs which run (launch holds the map's lock: no submission is lost)
    job_map = _job_map(first.results_dir, first.config.profile)
    job_map.update({t.config.run_id: job.job_id for t, job in zip(tasks, jobs, strict=True)})
    store.atomic_write(folder / "jobs.json", lambda tmp: Path(tmp).write_text(json.dumps(job_map, indent=1)))
    say(f"submitted {len(jobs)} runs as Slurm array job {jobs[0].job_id.split('_')[0]} "
        f"({settings.cpus_per_run} CPUs, {gpus} GPUs, {processes} processes, {settings.time_min} min each"
        + (f", at most {settings.at_once} at once" if settings.at_once else "") + f"); logs in {folder}")
    return jobs


def wait_slurm(jobs: list[Any], say=print, poll_s: float = 2.0, notes: dict[str, Path] | None = None) -> int:
    """Wait for ``jobs``; say how each ended. Returns 0 when every one finished without an error. Done is
    read from the result file submitit writes and from ``squeue`` (not submitit's ``sacct`` polling: a
    cluster without accounting has no sacct). ``notes``: each job's run's failure note, said for a job that
    left no result: on a full disk submitit may find no room for its result, while the task's note, small and
    written once its lease is released, still fits."""
    pending, failed, misses = list(jobs), 0, 0
    while pending:
        try:
            queued = _queued()
            misses = 0
        except ConfigError:
            misses += 1
            if misses > 30:  # a minute of squeue failing: say so rather than wait for ever
                raise
            time.sleep(poll_s)
            continue
        for job in [j for j in pending if _finished(j) or j.job_id not in queued]:
            pending.remove(job)
            if not _finished(job):
                failed += 1
                note = read_failure(notes[job.job_id]) if notes and job.job_id in notes else None
                if note is not None and note.get("job") == job.job_id:  # this job's, not an earlier attempt's
                    last = (note["error"].strip().splitlines() or ["no message"])[-1]
                    say(f"  job {job.job_id} failed: {last} (log: {job.paths.stdout})")
                else:
                    say(f"  job {job.job_id} ended without a result (cancelled, killed or out of requeues); log: "
                        f"{job.paths.stdout}")
                continue
            try:
                say(f"  job {job.job_id}: {job.results()[0]}")  # process 0's, which decides and writes
            except Exception as exc:  # noqa: BLE001 - a failed task is reported, the others still waited for
                failed += 1
                last = str(exc).strip().splitlines()[-1:] or ["no message"]
                say(f"  job {job.job_id} failed: {last[0]} (log: {job.paths.stdout})")
        if pending:
            time.sleep(poll_s)
    return 1 if failed else 0


def _finished(job: Any) -> bool:
    """Every process of ``job`` left its result (or its error) in submitit's folder."""
    return all(job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks))


def _queued() -> set[str]:
    """The jobs Slurm still has (pending, running, requeued), an array's as ``ARRAY_TASK``. squeue failing is
    a ``ConfigError``: an empty answer would read as every job gone."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"squeue failed ({exc}); is slurmctld reachable?") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"squeue failed: {last}")
    return set(out.stdout.split())


# ----- several runs at once on this machine ------------------------------------------------------------
_WORKER: dict[str, Any] = {}  # a worker process's data set, loaded once by its initializer


def _start_worker(threads: int, task: Task) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["dataset"] = load_data(task.profile, task.config.train, task.data_dir, task.download)
    _WORKER["warm"] = False


def _work(task: Task) -> str:
    try:
        if not _WORKER["warm"]:  # as the one-at-a-time sweep does: the first run's first steps are not colder
            probe.warm_up(task.config, _WORKER["dataset"])
            _WORKER["warm"] = True
        return run_task(task, dataset=_WORKER["dataset"])
    except KeyboardInterrupt:
        return f"{task.config.optimizer} seed {task.config.seed}: interrupted (its checkpoint stays)"


def run_workers(tasks: list[Task], workers: int, say=print) -> int:
    """``tasks`` on ``workers`` processes at once (spawned: no state shared but the results directory),
    each with its share of the cores as torch threads (``Task.threads``). A run that fails is reported and
    the others go on; returns 1 if any failed, 130 on Ctrl-C."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if not tasks:
        return 0
    threads = tasks[0].threads or max(1, available_cores() // workers)
    say(f"{len(tasks)} runs on {workers} workers, {threads} torch threads each")
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads, tasks[0]))
    failed, t0 = 0, time.monotonic()
    try:
        futures = {pool.submit(_work, dataclasses.replace(t, threads=threads)): t for t in tasks}
        for k, future in enumerate(as_completed(futures), 1):
            task = futures[future]
            try:
                outcome = future.result()
            except (store.StoreError, ConfigError):  # a full disk, a missing data set: every run would fail alike
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                raise ConfigError("a worker process died (killed by the system: out of memory?); finished runs are "
                                  "recorded, the others keep their checkpoints: run the same command again, perhaps "
                                  "with fewer --workers") from None
            except Exception as exc:  # noqa: BLE001 - one failed run is reported; the others go on
                failed += 1
                note = read_failure(failure_path(task.results_dir, task.config.profile, task.config.run_id))
                outcome = (f"{task.config.optimizer} seed {task.config.seed}: failed ({type(exc).__name__}: {exc})"
                           + ("; `python -m suite status` shows its traceback" if note else ""))
            left = (time.monotonic() - t0) / k * (len(tasks) - k)
            say(f"[{k}/{len(tasks)}] {outcome} (about {left / 60:.1f} min left)")
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        say("interrupted: finished runs are recorded and unfinished ones keep their checkpoints. Run the same "
            "command again to go on.")
        return 130
    pool.shutdown()
    return 1 if failed else 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_flags(args: Any) -> None:
    """The command line's launch flags (``run``, ``tune``) fit together: one line where they do not."""
    flags = ("partition", "gpus_per_run", "cpus_per_run", "time_min", "at_once", "wait")
    slurm_only = [f for f in flags if getattr(args, f) not in (None, False)]
    if args.threads < 0 or args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 and --threads >= 0, got {args.workers} and {args.threads}")
    if args.launcher == "local" and slurm_only:
        raise ConfigError(f"--{slurm_only[0].replace('_', '-')} is a Slurm setting: add --launcher slurm")
    if args.launcher == "slurm" and (args.threads or args.workers > 1):
        raise ConfigError("--threads/--workers are for this machine: a Slurm run's threads are its --cpus-per-run")
    if (args.launcher == "slurm" or args.workers > 1) and (args.force or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise ConfigError("--workers/--launcher run whole runs at once: not with --force (re-run recorded runs one "
                          "at a time) nor under torchrun")


def launch(profile: Profile, runs: list[RunConfig], sweep: Sweep, *, data_dir: Path | None = None,
           download: bool | None = None, sharpness_at_end: bool | None = None, launcher: str = "local",
           workers: int = 2, threads: int = 0, slurm: SlurmSettings | None = None, wait: bool = False) -> int:
    """A profile's runs through a launcher: on ``workers`` local processes, or as a Slurm array. What is
    recorded is skipped; what another process or job holds is left to it. Returns an exit status.

    Slurm submissions of one profile into one results directory take turns (a lock beside ``jobs.json``): each
    decides what to submit from the job map and squeue as the one before left them, so two at once submit
    each run once and the job map keeps every submission."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    if launcher == "slurm":
        slurm = slurm or SlurmSettings()
        check_slurm(slurm)  # before anything is written
        if slurm.gpus_per_run == 0 and any(r.train.device == "cuda" for r in runs):
            raise ConfigError("the profile trains on cuda: ask for GPUs with --gpus-per-run (or [slurm] gpus_per_run)")
    elif workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    sweep = dataclasses.replace(sweep, results_dir=sweep.results_dir.resolve())
    runs = launched_runs(runs, slurm if launcher == "slurm" else None)
    todo, _ = prepare(profile, runs, sweep, data_dir, download)
    measuring = measuring_for(profile, sharpness_at_end)

    def tasks(left: list[RunConfig]) -> list[Task]:
        return [Task(profile, r, sweep.results_dir, data_dir.resolve() if data_dir else None, download, measuring,
                     threads) for r in left]

    if launcher == "local":
        return run_workers(tasks(_not_held(todo, sweep, {}, None)), workers, sweep.say)
    with store.locked(slurm_folder(sweep.results_dir, profile.name) / "jobs.json.lock"):
        job_map, queued = _jobs_and_queue(sweep.results_dir, [profile.name], required=True)
        submitted = tasks(_not_held(todo, sweep, job_map, queued))
        jobs = submit_slurm(submitted, slurm, sweep.say)
    if wait:
        return wait_slurm(jobs, sweep.say, notes={j.job_id: failure_path(sweep.results_dir, t.config.profile,
                                                                         t.config.run_id)
                                                  for j, t in zip(jobs, submitted, strict=True)})
    if jobs:
        sweep.say(f"`python -m suite status --profile {profile.name} --results-dir {sweep.results_dir}` says where "
                  "they stand; the same command again submits only what is neither recorded nor running")
    return 0


def _not_held(todo: list[RunConfig], sweep: Sweep, job_map: dict[str, str], queued: set[str] | None) -> list[RunConfig]:
    """The runs of ``todo`` that nobody runs: one that a live lease holds, or that was submitted as a job Slurm
    still has, is left to it (and said)."""
    held = [r for r in todo if job_map.get(r.run_id) in (queued or ())
            or Lease.of(sweep.results_dir, r.profile, r.run_id, slurm_jobs=queued).info()]
    if held:
        sweep.say(f"{len(held)} of them are running or queued elsewhere (e.g. {held[0].optimizer} seed "
                  f"{held[0].seed}) and are left to it")
    return [r for r in todo if r not in held]


def launched_runs(runs: list[RunConfig], slurm: SlurmSettings | None) -> list[RunConfig]:
    """The runs as a launcher runs them: a Slurm run on several processes has them in its identity, as
    under torchrun (``replicas``)."""
    if slurm is None or slurm.processes == 1:
        return runs
    return [dataclasses.replace(r, train=with_overrides(r.train, replicas=slurm.processes)) for r in runs]


# ----- where a sweep stands ------------------------------------------------------------------------------
STATES = ("done", "running", "failed", "interrupted", "queued", "pending")


def run_states(runs: list[RunConfig], results_dir: Path) -> list[dict[str, Any]]:
    """Each run's state, read from the results directory (records, leases, failure notes, checkpoints, the
    Slurm job map) and, where there is one, squeue: the same for local and Slurm sweeps."""
    results_dir = Path(results_dir)
    jobs, queued = _jobs_and_queue(results_dir, {r.profile for r in runs})
    return [{"optimizer": r.optimizer, "seed": r.seed, "budget": r.train.budget, "run_id": r.run_id,
             **_state(r, results_dir, jobs.get(r.run_id), queued)} for r in runs]


def _state(r: RunConfig, results_dir: Path, job: str | None, queued: set[str] | None) -> dict[str, Any]:
    now = time.time()
    try:
        record = store.read_record(store.record_path(results_dir, r.profile, r.run_id))
    except store.StoreError as exc:
        return {"state": "failed", "detail": str(exc), "error": str(exc)}
    if record is not None:
        m = record["metrics"]
        return {"state": "done", "detail": f"{m['status']}, {accuracy_said(m)}"}
    saved = _saved(store.checkpoint_path(results_dir, r.profile, r.run_id), now)
    holder = Lease.of(results_dir, r.profile, r.run_id, slurm_jobs=queued).info()
    if holder is not None:
        who = f"job {holder['job']}" if holder.get("job") else f"pid {holder['pid']}"
        return {"state": "running", "detail": f"{who} on {holder['host']} for {_ago(now - holder['since'], '')}, "
                                              f"{saved or 'no checkpoint yet'}"}
    if job is not None and queued is not None and job in queued:
        return {"state": "queued", "detail": f"Slurm job {job}, {saved or 'no checkpoint yet'}"}
    failure = read_failure(failure_path(results_dir, r.profile, r.run_id))
    log = _log(results_dir, r.profile, failure.get("job") if failure else job)
    if failure is not None:
        last = (failure["error"].splitlines() or ["?"])[-1]
        return {"state": "failed", "detail": last + (f" (log: {log})" if log else ""), "error": failure["error"]}
    ended = f"; its Slurm job {job} ended, its log's last line: {_last_line(log)}" if log else ""
    if saved:
        return {"state": "interrupted", "detail": f"resumes from its {saved}{ended}"}
    return {"state": "pending", "detail": ended.lstrip("; ")}


def _saved(ckpt: Path, now: float) -> str:
    try:
        return f"checkpoint {_ago(now - ckpt.stat().st_mtime)}"
    except FileNotFoundError:  # none, or removed as its run finished a moment ago
        return ""


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(unreadable)"
    return lines[-1][:200] if lines else "(empty)"


def status_lines(rows: list[dict[str, Any]], tail: int = 5, labels: dict[str, str] | None = None) -> list[str]:
    """``suite status``'s table: a line per run (only those not done, past 20 runs), the last ``tail`` lines
    of each failed run's traceback, and the counts. ``labels``: a run's name where the optimizer alone does not
    tell it apart (a tuning trial's: ``sam rho=0.1``), by run id."""
    lines = []
    for row in rows:
        if row["state"] != "done" or len(rows) <= 20:
            name = (labels or {}).get(row["run_id"], row["optimizer"])
            lines.append(f"{row['state']:<12}{name} seed {row['seed']} ({row['budget']})"
                         + (f": {row['detail']}" if row["detail"] else ""))
        if row["state"] == "failed" and tail:
            lines += [f"    {line}" for line in row["error"].splitlines()[-tail:]]
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "done"))
    return lines


def _jobs_and_queue(results_dir: Path, profiles, required: bool = False) -> tuple[dict[str, str], set[str] | None]:
    """What ``launch`` and ``run_states`` read of Slurm: the job each run of ``profiles`` was submitted as (their
    ``jobs.json``), and the jobs Slurm still has (squeue). ``required``: squeue failing is a ``ConfigError``;
    else, without squeue or an answer, None, and leases are judged as without Slurm."""
    jobs: dict[str, str] = {}
    for profile in profiles:
        jobs.update(_job_map(results_dir, profile))
    if required:
        return jobs, _queued()
    if shutil.which("squeue"):
        with contextlib.suppress(ConfigError):
            return jobs, _queued()
    return jobs, None


def _job_map(results_dir: Path, profile: str) -> dict[str, str]:
    try:
        return json.loads((slurm_folder(results_dir, profile) / "jobs.json").read_text())
    except (OSError, ValueError):
        return {}


def _log(results_dir: Path, profile: str, job: str | None) -> Path | None:
    """submitit's log of process 0 of ``job`` (``ARRAY_TASK`` or a plain job id)."""
    if not job:
        return None
    path = slurm_folder(results_dir, profile) / f"{job}_0_log.out"
    return path if path.exists() else None


def _ago(seconds: float, suffix: str = " ago") -> str:
    seconds = max(0.0, seconds)
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h") + suffix
