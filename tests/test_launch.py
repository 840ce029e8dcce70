"""Launchers without a cluster (suite/launch.py): --workers N lands the records the one-at-a-time sweep lands
with the same threads; a run that fails is reported while the others go on; `suite status` reads each run's
state from the results directory; bad launcher settings are one line. The Slurm path through a real Slurm is
tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from suite import harness, launch, store
from suite.cli import main
from suite.config import ConfigError, load_profile
from suite.lease import Lease, failure_path, write_failure
from suite.metrics import EPOCH_VARIES, varying_keys
from suite.sweep import runs_for

TINY = """seeds = 2
optimizers = ["sgd", "sam"]
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 1
batch_size = 32
train_subset = 64
test_subset = 32
"""


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def run(*args) -> int:
    return main(["run", "--no-progress", "--no-report", *map(str, args)])


def comparable(record: dict) -> tuple[dict, list[dict]]:
    metrics = {k: v for k, v in record["metrics"].items() if k not in varying_keys() | {"checkpoints"}}
    return metrics, [{k: v for k, v in e.items() if k not in EPOCH_VARIES} for e in record["epochs"]]


def records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "runs" / "tiny").glob("*.json"))}


def test_two_workers_land_the_records_of_one_at_a_time_with_the_same_threads(tiny, tmp_path, capsys):
    assert run("--profile", tiny, "--results-dir", tmp_path / "one", "--threads", "1") == 0
    assert run("--profile", tiny, "--results-dir", tmp_path / "two", "--workers", "2") == 0
    err = capsys.readouterr().err
    assert "4 runs on 2 workers, 1 torch threads each" in err and err.count("[4/4]") == 2
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 4
    for name in one:
        assert comparable(two[name]) == comparable(one[name]), name
        assert two[name]["env"]["torch_threads"] == 1
    assert not list((tmp_path / "two").rglob("*.lease"))
    assert not list((tmp_path / "two" / "checkpoints").rglob("*.pt"))
    assert run("--profile", tiny, "--results-dir", tmp_path / "two", "--workers", "2") == 0
    assert "4 already recorded, 0 to run" in capsys.readouterr().err


def test_a_failed_run_is_reported_and_kept_for_status_while_the_others_go_on(tiny, tmp_path, monkeypatch, capsys):
    """Locally (run_one, as every launcher calls it): the failure and its traceback's end are kept for
    `suite status`; the next attempt clears them."""
    real = harness.run

    def failing(config, *args, **kwargs):
        if config.optimizer == "sam" and config.seed == 1:
            raise FloatingPointError("the loss became a complex number")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(harness, "run", failing)
    with pytest.raises(FloatingPointError):
        run("--profile", tiny, "--results-dir", tmp_path)
    capsys.readouterr()
    assert main(["status", "--profile", str(tiny), "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    failed = [line for line in out if line.startswith("failed")]
    assert failed == ["failed      sam seed 1 (epochs): FloatingPointError: the loss became a complex number"]
    assert any("raise FloatingPointError" in line for line in out)  # the traceback's end, indented
    assert out[-1] == "4 runs: 3 done, 1 failed"
    monkeypatch.setattr(harness, "run", real)
    assert run("--profile", tiny, "--results-dir", tmp_path) == 0
    assert not list(tmp_path.rglob("*.failed"))


def test_status_reads_done_running_interrupted_and_pending_from_the_results_directory(tiny, tmp_path):
    runs = runs_for(load_profile(str(tiny)), check_device=False)
    done, running, interrupted, pending = runs
    store.write_record(store.record_path(tmp_path, "tiny", done.run_id),
                       {"schema": store.SCHEMA, "metrics": {"status": "finished", "test_acc": 0.25}})
    held = Lease.of(tmp_path, "tiny", running.run_id)
    assert held.acquire()  # this process holds it: a live lease
    ckpt = store.checkpoint_path(tmp_path, "tiny", interrupted.run_id)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"x")
    os.utime(ckpt, (time.time() - 300, time.time() - 300))
    rows = launch.run_states(runs, tmp_path)
    assert [r["state"] for r in rows] == ["done", "running", "interrupted", "pending"]
    assert rows[0]["detail"] == "finished, test acc 0.2500"
    assert rows[1]["detail"].startswith(f"pid {os.getpid()} on ") and "no checkpoint yet" in rows[1]["detail"]
    assert rows[2]["detail"] == "resumes from its checkpoint 5 min ago"
    held.release()
    assert launch.status_lines(rows)[-1] == "4 runs: 1 done, 1 running, 1 interrupted, 1 pending"


def old_lock(results: Path, run_id: str, pid: int) -> Path:
    """A run's lock as the suite wrote it before it was called a lease (issue 36): its path, its format."""
    import socket

    from suite import lease

    path = results / "claims" / "tiny" / f"{run_id}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "pid_ns": lease._pid_namespace(),
                                "process_start": lease._process_start(pid), "since": time.time() - 60, "job": None,
                                "step": None}))
    return path


def test_a_results_directory_written_before_keeps_its_locks_and_failure_notes(tiny, tmp_path, capsys):
    """Locks and failure notes in ``claims/`` (before issue 36) are read as leases and notes: a live lock holds
    its run (skipped, `status` says running), a dead process's lock is taken over, an old note is shown until
    the run's next attempt clears it."""
    import subprocess
    import sys

    runs = runs_for(load_profile(str(tiny)), check_device=False)
    live, dead, failed, _ = runs
    held = old_lock(tmp_path, live.run_id, os.getpid())  # this process: alive
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = old_lock(tmp_path, dead.run_id, gone)
    note = tmp_path / "claims" / "tiny" / f"{failed.run_id}.failed"
    note.write_text(json.dumps({"error": "Traceback\nValueError: before the lease", "job": None}))
    rows = launch.run_states(runs, tmp_path)
    assert [r["state"] for r in rows] == ["running", "pending", "failed", "pending"]
    assert rows[0]["detail"].startswith(f"pid {os.getpid()} on ")
    assert rows[2]["detail"] == "ValueError: before the lease"
    capsys.readouterr()
    assert run("--profile", tiny, "--results-dir", tmp_path) == 0
    assert f"sgd seed 0: running in pid {os.getpid()} on " in capsys.readouterr().err
    assert sorted(records(tmp_path)) == sorted(r.run_id for r in runs[1:])
    assert held.exists() and not stale.exists() and not note.exists()
    assert not list(tmp_path.rglob("*.lease"))
    held.unlink()
    assert run("--profile", tiny, "--results-dir", tmp_path) == 0 and len(records(tmp_path)) == 4


def test_a_task_loads_its_data_set_once_whatever_the_data_set_says_of_its_truth(tiny, tmp_path, monkeypatch):
    """A Slurm task loads the data on each of its processes, rank 0 first: a data set that is falsy (empty, or
    one whose ``__len__`` is 0 until it streams) is not loaded a second time."""
    from suite import sweep

    class Falsy:
        def __len__(self) -> int:
            return 0

    loads = []
    monkeypatch.setattr(sweep, "load_data", lambda *args: loads.append(args) or Falsy())
    monkeypatch.setattr(launch, "load_data", sweep.load_data)
    profile = load_profile(str(tiny))
    config = runs_for(profile, check_device=False)[0]
    store.write_record(store.record_path(tmp_path, "tiny", config.run_id),
                       {"schema": store.SCHEMA, "metrics": {"status": "finished", "test_acc": 0.25}})
    assert launch.run_task(launch.Task(profile, config, tmp_path)).endswith("already recorded")
    assert len(loads) == 1


class FakeSlurm:
    """What ``launch`` reaches of Slurm, to race two submissions in threads: sbatch (submitit's executor) takes
    half a second, each submission's first look at squeue waits (up to a second) until the other's comes, so
    that without a lock both decide what to submit from the same empty queue, and a read of the job map takes
    a moment (a shared disk), so that without a lock both write back what they read before the other wrote."""

    def __init__(self) -> None:
        import itertools
        import threading

        self.queue: set[str] = set()
        self.submitted: list[str] = []
        self.arrays = itertools.count(41)
        self.meet = threading.Barrier(2, timeout=1.0)

    def squeue(self) -> set[str]:
        import threading

        try:
            self.meet.wait()
        except threading.BrokenBarrierError:  # the other is held off (by the lock), or has been already
            pass
        return set(self.queue)

    def executor(self, folder, max_num_timeout):
        import contextlib
        from types import SimpleNamespace

        fake, jobs = self, []

        @contextlib.contextmanager
        def batch():
            yield
            time.sleep(0.5)
            array = next(fake.arrays)
            for k, job in enumerate(jobs):
                job.job_id = f"{array}_{k}"
                fake.queue.add(job.job_id)
                fake.submitted.append(job.task.task.config.run_id)

        def submit(task):
            jobs.append(SimpleNamespace(job_id=None, task=task))
            return jobs[-1]

        return SimpleNamespace(update_parameters=lambda **kw: None, batch=batch, submit=submit)


@pytest.mark.parametrize("split", [False, True], ids=["the-same-runs", "half-each"])
def test_two_slurm_submissions_at_once_submit_each_run_once_and_keep_every_job_in_the_map(tiny, tmp_path, monkeypatch,
                                                                                          split):
    """Two `run --launcher slurm` of one profile at once (tests/test_slurm.py has it against the real Slurm):
    they take turns with the job map, so the same runs are submitted once, and two halves both land in it."""
    from concurrent.futures import ThreadPoolExecutor

    from suite.sweep import Sweep

    fake = FakeSlurm()
    monkeypatch.setattr(launch, "check_slurm", lambda settings: None)
    monkeypatch.setattr(launch, "_queued", fake.squeue)
    monkeypatch.setattr(launch.submitit, "SlurmExecutor", fake.executor)
    read = launch._job_map
    monkeypatch.setattr(launch, "_job_map", lambda *args: (read(*args), time.sleep(0.3))[0])
    profile = load_profile(str(tiny))
    runs = runs_for(profile, check_device=False)
    parts = [runs[:2], runs[2:]] if split else [runs, runs]

    def submit(part):
        return launch.launch(profile, part, Sweep(tmp_path, progress=False), launcher="slurm",
                             slurm=launch.SlurmSettings())

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(submit, parts)) == [0, 0]
    assert sorted(fake.submitted) == sorted(r.run_id for r in runs)  # each run once
    job_map = json.loads((launch.slurm_folder(tmp_path, "tiny") / "jobs.json").read_text())
    assert sorted(job_map) == sorted(r.run_id for r in runs) and set(job_map.values()) == fake.queue
    assert [p.name for p in launch.slurm_folder(tmp_path, "tiny").iterdir()] == ["jobs.json"]  # the lock gone


def test_launcher_slurm_without_slurm_is_one_line_exit_2_and_nothing_written(tiny, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert run("--profile", tiny, "--results-dir", tmp_path / "out", "--launcher", "slurm") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --launcher slurm: no Slurm here") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "table", "message"), [
    (["--workers", "0"], "", "--workers must be >= 1"),
    (["--workers", "2", "--force"], "", "not with --force (re-run recorded runs one at a time)"),
    (["--launcher", "slurm", "--time-min", "0"], "", "slurm time_min must be an integer >= 1, got 0"),
    (["--launcher", "slurm"], "[slurm]\nqueue = \"a\"\n", "unknown key 'queue' in [slurm]; allowed: at_once,"),
    (["--launcher", "slurm", "--time-min", "1"], "[slurm]\nsignal_s = 90\n",
     "slurm signal_s (90) must be shorter than the time limit (1 min)"),
    (["--launcher", "slurm"], "slurm = 3\n", "[slurm] must be a table, got 3"),
])
def test_bad_launcher_settings_are_one_line_exit_2(tmp_path, capsys, flags, table, message):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("[train]", table + "[train]") if table.startswith("slurm") else TINY + table)
    assert run("--profile", path, "--results-dir", tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_slurm_settings_take_the_flags_over_the_profile_table():
    settings = launch.SlurmSettings.of({"cpus_per_run": 4, "time_min": 30}, time_min=90, partition=None)
    assert (settings.cpus_per_run, settings.time_min, settings.partition) == (4, 90, None)
    assert launch.SlurmSettings(gpus_per_run=4).processes == 4 and launch.SlurmSettings().processes == 1
    with pytest.raises(ConfigError, match="gpus_per_run must be an integer >= 0"):
        launch.SlurmSettings(gpus_per_run=True)
    with pytest.raises(ConfigError, match="processes_per_run must be 0 or gpus_per_run"):
        launch.SlurmSettings(gpus_per_run=2, processes_per_run=4)


def test_a_lease_of_this_slurm_job_step_or_of_a_job_slurm_no_longer_has_is_stale(tmp_path, monkeypatch):
    """A preempted or requeued task is SIGKILLed (submitit ignores SIGTERM) and its lease stays; its next
    attempt may land on another node, where the pid cannot be checked: the job step names it."""
    path = tmp_path / "run.lease"

    def held_by(job: str, step: str) -> None:
        path.write_text(json.dumps({"pid": 1, "host": "node07", "job": job, "step": step, "since": time.time()}))

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    held_by("41_3", "0")  # this task's earlier attempt
    held = Lease(path)
    assert held.acquire() and json.loads(path.read_text())["job"] == "41_3"
    held.release()
    held_by("41_3", "1")  # another step of this job, running on node07 now
    assert not Lease(path).acquire()
    held_by("41_2", "0")  # another task, fresh
    assert not Lease(path).acquire() and Lease(path).info() is not None
    assert Lease(path, slurm_jobs={"41_3"}).info() is None  # ... which squeue no longer has


def test_status_says_queued_before_failed_an_unreadable_record_and_how_a_gone_jobs_log_ends(tiny, tmp_path,
                                                                                           monkeypatch):
    runs = runs_for(load_profile(str(tiny)), check_device=False)
    broken, gone, queued, _ = runs
    path = store.record_path(tmp_path, "tiny", broken.run_id)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    folder = launch.slurm_folder(tmp_path, "tiny")
    folder.mkdir(parents=True)
    (folder / "jobs.json").write_text(json.dumps({gone.run_id: "41_1", queued.run_id: "41_2"}))
    (folder / "41_1_0_log.out").write_text("training...\nslurmstepd: error: Detected 1 oom_kill event\n\n")
    write_failure(failure_path(tmp_path, "tiny", queued.run_id), "Traceback\nValueError: earlier")
    monkeypatch.setattr(launch, "_queued", lambda: {"41_2"})
    monkeypatch.setattr(launch.shutil, "which", lambda name: "/usr/bin/" + name)
    rows = launch.run_states(runs, tmp_path)
    assert [r["state"] for r in rows] == ["failed", "pending", "queued", "pending"]
    assert "is unreadable" in rows[0]["detail"]
    assert rows[1]["detail"] == ("its Slurm job 41_1 ended, its log's last line: slurmstepd: error: Detected 1 "
                                 "oom_kill event")


def test_wait_says_why_a_job_that_left_no_result_failed_from_its_own_failure_note(tmp_path, monkeypatch):
    """On a full disk submitit finds no room for a task's result, while the run's failure note fits: `--wait`
    says the note's last line for the job that wrote it; a job without one (or with an earlier job's) ended
    without a result, as before (test_slurm.py fills a real disk)."""
    from types import SimpleNamespace

    def job(job_id: str) -> SimpleNamespace:
        paths = SimpleNamespace(stdout=tmp_path / f"{job_id}_0_log.out", result_pickle=tmp_path / f"{job_id}.pkl")
        return SimpleNamespace(job_id=job_id, num_tasks=1, paths=paths, task=lambda k: SimpleNamespace(paths=paths))

    notes = {j: tmp_path / f"{j}.failed" for j in ("41_0", "41_1", "41_2")}
    for job_id, error in (("41_0", "StoreError: could not write x.pt: no space left on its disk"),
                          ("40_1", "ValueError: an earlier job's")):
        monkeypatch.setenv("SLURM_ARRAY_JOB_ID", job_id.split("_")[0])
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", job_id.split("_")[1])
        write_failure(notes[f"41_{job_id[-1]}"], f"Traceback (most recent call last):\n{error}\n")
    monkeypatch.setattr(launch, "_queued", lambda: set())
    said: list[str] = []
    assert launch.wait_slurm([job(j) for j in notes], said.append, poll_s=0, notes=notes) == 1
    assert said[0] == f"  job 41_0 failed: StoreError: could not write x.pt: no space left on its disk (log: " \
                      f"{tmp_path / '41_0_0_log.out'})"
    assert all(line.startswith(f"  job 41_{k} ended without a result") for k, line in ((1, said[1]), (2, said[2])))


@pytest.mark.parametrize(("flags", "env", "message"), [
    (["--partition", "gpu"], {}, "--partition is a Slurm setting: add --launcher slurm"),
    (["--wait"], {}, "--wait is a Slurm setting"),
    (["--launcher", "slurm", "--workers", "2"], {}, "--threads/--workers are for this machine"),
    (["--workers", "2"], {"WORLD_SIZE": "2"}, "nor under torchrun"),
])
def test_launcher_flags_that_do_not_go_together_are_one_line(tiny, tmp_path, monkeypatch, capsys, flags, env,
                                                             message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert run("--profile", tiny, "--results-dir", tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_and_leases_are_written_with_the_umasks_mode_for_a_group_sharing_the_directory(tmp_path, umask,
                                                                                               mode):
    """A results directory on a cluster is shared: a record or lease gets the mode ``open`` would give it,
    not ``mkstemp``'s 0o600."""
    before = os.umask(umask)
    try:
        record = store.atomic_write(tmp_path / "runs" / "r.json", lambda tmp: Path(tmp).write_text("{}"))
        held = Lease(tmp_path / "leases" / "r.lease")
        assert held.acquire()
        leased = held.path.stat().st_mode & 0o777
        held.release()
    finally:
        os.umask(before)
    assert record.stat().st_mode & 0o777 == mode
    assert leased == mode
