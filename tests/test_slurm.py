"""The Slurm launcher against a real Slurm (tools/slurm-single-node.sh; .ci/run starts one): a sweep
submitted through submitit lands the records a local sweep lands; a finished sweep submits nothing; a task
cancelled mid-run and resubmitted, and one requeued at its time limit, end bit-identical to an
uninterrupted run; a task whose node's slurmd is restarted runs on, and one whose results disk fills fails in one
line and resumes once there is space. Marker ``slurm`` (tox -e slurm): skipped where no Slurm answers, unless
SUITE_SLURM=required (CI), where that is a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_full_disk import fill, leftovers

from suite import launch, store
from suite.cli import main
from suite.config import load_profile
from suite.lease import failure_path, read_failure
from suite.metrics import EPOCH_VARIES, varying_keys
from suite.sweep import runs_for

pytestmark = pytest.mark.slurm

TIMING = varying_keys() | {"checkpoints"}


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


if not _slurm_answers():
    if os.environ.get("SUITE_SLURM") == "required":
        pytest.fail("SUITE_SLURM=required but no Slurm answers (start one: tools/slurm-single-node.sh)",
                    pytrace=False)
    pytest.skip("no Slurm here: start a single-node one with `sudo tools/slurm-single-node.sh`, then "
                "tox -e slurm", allow_module_level=True)

SHORT = """seeds = 1
optimizers = ["sgd", "sam"]
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 2
batch_size = 32
train_subset = 96
test_subset = 50
"""

# one run of 1.5-3 minutes on one thread, checkpointed every epoch (1.5-3 s). Slurm checks time limits
# periodically and sends the signal up to about 30 s before it is due: with a 2-minute limit and signal_s
# 75 it comes 15-45 s into a task, well before the run can end (20 epochs, 35 s, ended first on a fast CI
# machine: the signal never came)
LONG = """seeds = 1
optimizers = ["sgd"]
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 60
batch_size = 64
train_subset = 2048
test_subset = 64
[slurm]
cpus_per_run = 1
time_min = 2
signal_s = 75
requeues = 6
"""


def comparable(record: dict) -> tuple[dict, list[dict]]:
    metrics = {k: v for k, v in record["metrics"].items() if k not in TIMING}
    return metrics, [{k: v for k, v in e.items() if k not in EPOCH_VARIES} for e in record["epochs"]]


def records(results: Path, profile: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "runs" / profile).glob("*.json"))}


def run(*args: str) -> int:
    return main(["run", "--no-progress", "--no-report", *map(str, args)])


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("short") / "short.toml"
    path.write_text(SHORT)
    return path


def local_reference(tmp_path_factory, name: str, text: str) -> tuple[Path, dict]:
    """Profile ``text`` as ``name``.toml and its one run, uninterrupted, locally on one thread (a Slurm task's
    threads are its CPUs): what a task interrupted in any way must end bit-identical to."""
    root = tmp_path_factory.mktemp(name)
    path = root / f"{name}.toml"
    path.write_text(text)
    assert run("--profile", path, "--results-dir", root / "local", "--threads", "1") == 0
    (record,) = records(root / "local", name).values()
    return path, record


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> tuple[Path, dict]:
    return local_reference(tmp_path_factory, "long", LONG)


def test_a_slurm_sweep_lands_the_records_of_a_local_sweep(short, tmp_path, capsys):
    assert run("--profile", short, "--results-dir", tmp_path / "local", "--threads", "1") == 0
    assert run("--profile", short, "--results-dir", tmp_path / "slurm", "--launcher", "slurm",
               "--cpus-per-run", "1", "--time-min", "5", "--wait") == 0
    local, slurm = records(tmp_path / "local", "short"), records(tmp_path / "slurm", "short")
    assert sorted(local) == sorted(slurm) and len(local) == 2
    for name in local:
        assert comparable(slurm[name]) == comparable(local[name]), name
        assert slurm[name]["env"]["torch_threads"] == 1
    err = capsys.readouterr().err
    assert "submitted 2 runs as Slurm array job" in err and err.count(": finished, test acc") == 4  # 2 local, 2 tasks
    # a finished sweep submits nothing, and writes nothing new (test_a_sweep_submitted_twice_... : nor a queued one)
    jobs = (tmp_path / "slurm" / "slurm" / "short" / "jobs.json").read_text()
    assert run("--profile", short, "--results-dir", tmp_path / "slurm", "--launcher", "slurm") == 0
    assert "nothing to submit" in capsys.readouterr().err
    assert (tmp_path / "slurm" / "slurm" / "short" / "jobs.json").read_text() == jobs


def _wait(condition, timeout: float, what: str, poll: float = 1.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(poll)


def _queued(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", job.split("_")[0]], capture_output=True, text=True)
    return job in out.stdout.split()


def _submitted_and_checkpointed(path: Path, results: Path):
    """The long run submitted (without waiting), once its task has saved two epochs: its config and job."""
    assert run("--profile", path, "--results-dir", results, "--launcher", "slurm", "--time-min", "10") == 0
    (config,) = runs_for(load_profile(str(path)), check_device=False)
    ckpt = store.checkpoint_path(results, "long", config.run_id)
    _wait(lambda: ckpt.exists() and store.load_checkpoint(ckpt, config.run_id)["step"] >= 2 * 32, 120,
          "the task's second checkpoint")
    (job,) = json.loads((results / "slurm" / "long" / "jobs.json").read_text()).values()
    return config, job


def test_a_cancelled_task_resubmitted_resumes_from_its_checkpoint_bit_identical(long_reference, tmp_path, capsys):
    path, reference = long_reference
    results = tmp_path / "results"
    config, job = _submitted_and_checkpointed(path, results)
    assert [r["state"] for r in launch.run_states([config], results)] == ["running"]
    subprocess.run(["scancel", job], check=True)
    _wait(lambda: not _queued(job), 60, "the cancelled task to leave the queue")
    assert not store.record_path(results, "long", config.run_id).exists()
    assert [r["state"] for r in launch.run_states([config], results)] == ["interrupted"]
    capsys.readouterr()
    assert run("--profile", path, "--results-dir", results, "--launcher", "slurm", "--time-min", "10",
               "--wait") == 0
    assert "1 of them from a checkpoint" in capsys.readouterr().err
    (record,) = records(results, "long").values()
    assert record["resumed_after_epochs"], "the resubmitted task started over instead of resuming"
    assert comparable(record) == comparable(reference)


def test_a_task_requeued_by_slurm_as_preemption_does_resumes_bit_identical(long_reference, tmp_path):
    """`scontrol requeue` is what preemption with PreemptMode=REQUEUE does to a job: killed, queued again.
    The new attempt runs the same task, which resumes from the run's checkpoint."""
    path, reference = long_reference
    results = tmp_path / "results"
    config, job = _submitted_and_checkpointed(path, results)
    subprocess.run(["scontrol", "requeue", job], check=True)
    record = store.record_path(results, "long", config.run_id)
    _wait(record.exists, 900, "the requeued task's record", poll=2.0)
    (done,) = records(results, "long").values()
    assert done["resumed_after_epochs"], "the requeued task started over instead of resuming"
    assert comparable(done) == comparable(reference)


def test_a_task_past_its_time_limit_is_requeued_and_finishes_bit_identical(long_reference, tmp_path):
    """A 2-minute limit with the signal 75 s before it (see LONG): the task is requeued (submitit's
    checkpoint), resumes, and ends as the uninterrupted run. Once the first requeue is seen, the limit is
    raised so that the resumed attempt ends in one go on a slow machine too."""
    path, reference = long_reference
    results = tmp_path / "results"
    assert run("--profile", path, "--results-dir", results, "--launcher", "slurm") == 0
    (config,) = runs_for(load_profile(str(path)), check_device=False)
    record = store.record_path(results, "long", config.run_id)
    (job,) = json.loads((results / "slurm" / "long" / "jobs.json").read_text()).values()

    def logs() -> str:
        return "".join(p.read_text() for p in (results / "slurm" / "long").glob("*_log.out"))

    _wait(lambda: "Requeued job" in logs() or record.exists(), 300, "Slurm's signal and the requeue", poll=2.0)
    assert not record.exists(), "the run ended before Slurm's time-limit signal: make LONG longer\n" + logs()[-3000:]
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
    _wait(record.exists, 900, "the requeued task's record", poll=2.0)
    (done,) = records(results, "long").values()
    assert done["resumed_after_epochs"], "the requeued task started over instead of resuming"
    assert comparable(done) == comparable(reference)


TWO = """seeds = 1
optimizers = ["sgd", "ssam-f-nm-explicit"]
[hparams."ssam-f*"]
fisher_samples = 4
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 2
batch_size = 16
train_subset = 48
test_subset = 16
eval_batch_size = 16
device = "cpu"
[slurm]
processes_per_run = 2
cpus_per_run = 2
time_min = 5
"""


def test_a_run_on_two_processes_in_one_job_is_the_torchrun_run(tmp_path):
    """processes_per_run = 2 (one per GPU where there are GPUs; gloo here): submitit exports the job's
    distributed environment to what the torchrun path reads, so the records are torchrun's."""
    import sys

    path = tmp_path / "two.toml"
    path.write_text(TWO)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "suite", "run", "--profile",
           str(path), "--results-dir", str(tmp_path / "torchrun"), "--no-progress", "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run("--profile", path, "--results-dir", tmp_path / "slurm", "--launcher", "slurm", "--wait") == 0
    local, slurm = records(tmp_path / "torchrun", "two"), records(tmp_path / "slurm", "two")
    assert sorted(local) == sorted(slurm) and len(local) == 2
    for name in local:
        assert slurm[name]["distributed"]["world_size"] == 2
        assert comparable(slurm[name]) == comparable(local[name]), name


@pytest.mark.parametrize(("flags", "message"), [
    (["--partition", "gpu-big"], "--partition gpu-big: no such Slurm partition; known: "),
    (["--gpus-per-run", "2"], "--gpus-per-run 2: partition "),
    (["--device", "cuda"], "the profile trains on cuda: ask for GPUs with --gpus-per-run"),
    (["--cpus-per-run", "512"], "--launcher slurm: sbatch refused the job: "),  # found by sbatch, not before
])
def test_bad_slurm_settings_are_one_line_exit_2_and_nothing_submitted(short, tmp_path, capsys, flags, message):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert run("--profile", short, "--results-dir", tmp_path / "out", "--launcher", "slurm", *flags) == 2
    err = capsys.readouterr().err.strip()
    if "sbatch" in message:  # after the sweep's plan line, and sbatch's own words
        assert "Traceback" not in err and err.count("error: --launcher") == 1, err
        err = err.splitlines()[-1]
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # at most empty folders
    # no new job (one of an earlier test may have left the queue meanwhile)
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert set(after.split()) <= set(before.split()), (before, after)


def test_a_sweep_submitted_twice_runs_each_run_once(short, tmp_path, capsys):
    """The second submission finds the runs queued or running (the job map, squeue, the leases) and submits
    nothing; each run is recorded once."""
    results = tmp_path / "results"
    assert run("--profile", short, "--results-dir", results, "--launcher", "slurm", "--cpus-per-run", "1") == 0
    assert run("--profile", short, "--results-dir", results, "--launcher", "slurm", "--cpus-per-run", "1") == 0
    err = capsys.readouterr().err
    assert err.count("submitted 2 runs") == 1 and "2 of them are running or queued elsewhere" in err
    assert "nothing to submit" in err
    jobs = json.loads((results / "slurm" / "short" / "jobs.json").read_text()).values()
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1  # one array, submitted once
    _wait(lambda: not any(_queued(j) for j in jobs), 120, "the tasks to end")
    assert len(records(results, "short")) == 2


@pytest.mark.parametrize("split", [False, True], ids=["the-same-runs", "one-optimizer-each"])
def test_two_submissions_at_once_run_each_run_once_and_keep_every_job_in_the_map(short, tmp_path, split):
    """Two `run --launcher slurm` started together take turns with the job map (a lock beside ``jobs.json``):
    of the same runs, one submits them and the other finds them queued; of different runs, both land in the
    map. Each run is submitted and recorded once, and the map names the job of every run."""
    import sys

    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "suite", "run", "--profile", str(short), "--results-dir", str(results),
           "--launcher", "slurm", "--cpus-per-run", "1", "--no-progress", "--no-report"]
    cmds = [[*cmd, "--optimizer", "sgd"], [*cmd, "--optimizer", "sam"]] if split else [cmd, cmd]
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    said = "".join(errs)
    if split:
        assert said.count("submitted 1 runs") == 2, errs
    else:
        assert said.count("submitted 2 runs") == 1 and "2 of them are running or queued elsewhere" in said, errs
    job_map = json.loads((results / "slurm" / "short" / "jobs.json").read_text())
    runs = runs_for(load_profile(str(short)), check_device=False)
    assert sorted(job_map) == sorted(r.run_id for r in runs), job_map
    _wait(lambda: not any(_queued(j) for j in job_map.values()), 180, "the tasks to end")
    assert sorted(records(results, "short")) == sorted(job_map)
    outcomes = [(results / "slurm" / "short" / f"{j}_0_log.out").read_text() for j in job_map.values()]
    assert all(": finished, test acc" in log for log in outcomes), outcomes  # each job ran its run itself
    assert not list((results / "slurm" / "short").glob("*.lock"))


# one run of 8-20 s on one thread, 16 epochs of 16 steps, checkpointed every epoch (1 s at most): long enough to
# restart a daemon or fill a disk between two checkpoints
MID = """seeds = 1
optimizers = ["sgd"]
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 16
batch_size = 64
train_subset = 1024
test_subset = 64
[slurm]
cpus_per_run = 1
time_min = 10
"""
MID_STEPS = 16  # per epoch


@pytest.fixture(scope="module")
def mid_reference(tmp_path_factory) -> tuple[Path, dict]:
    return local_reference(tmp_path_factory, "mid", MID)


def _as_root(what: str) -> None:
    """What only root may do to this machine (restart slurmd, mount a disk): CI is root, where it must happen."""
    if os.environ.get("SUITE_SLURM") == "required":
        pytest.fail(f"SUITE_SLURM=required, but {what} (run as root, as CI does)", pytrace=False)
    pytest.skip(f"{what} (run as root, with tools/slurm-single-node.sh's Slurm)")


def _local_slurmd() -> int:
    """The pid of this machine's slurmd (the node the tasks run on: tools/slurm-single-node.sh)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    pid_file = next((line.split("=", 1)[1].strip() for line in config.splitlines()
                     if line.split("=", 1)[0].strip() == "SlurmdPidFile"), "/run/slurmd.pid")
    try:
        pid = int(Path(pid_file).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError) as exc:
        _as_root(f"no slurmd of this machine to restart ({pid_file}: {exc})")
    if os.geteuid() != 0:
        _as_root("restarting slurmd needs root")
    return pid


def _restart_slurmd(sig: int) -> None:
    """Stop this machine's slurmd with ``sig`` and start it again as tools/slurm-single-node.sh starts it."""
    pid = _local_slurmd()
    try:
        os.kill(pid, sig)
        _wait(lambda: _ended(pid), 60, "slurmd to stop", poll=0.1)
    finally:
        subprocess.run(["slurmd"], check=True, timeout=60)


def _ended(pid: int) -> bool:
    """No process ``pid``, or only its zombie (a container's first process may not reap the daemons)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _nothing_half_written(results: Path, config) -> None:
    """No temporary file, lease, checkpoint or failure note of the run is left once it is recorded."""
    assert leftovers(results) == []
    assert list(results.glob("leases/*/*.lease")) == []
    assert not store.checkpoint_path(results, config.profile, config.run_id).exists()
    assert read_failure(failure_path(results, config.profile, config.run_id)) is None
    assert [s["state"] for s in launch.run_states([config], results)] == ["done"]


def test_a_task_runs_on_through_restarts_of_its_nodes_slurmd_bit_identical(mid_reference, tmp_path):
    """slurmd stopped (SIGTERM, as a restart does, then SIGKILL, as a crash does) and started again while a task
    trains: the task's processes are slurmstepd's, not slurmd's, so it runs on, is recorded once, bit-identical to
    the uninterrupted run, and the job map, squeue and `suite status` agree that it is done."""
    path, reference = mid_reference
    _local_slurmd()  # before anything is submitted: root and a local slurmd, or nothing to test
    results = tmp_path / "results"
    assert run("--profile", path, "--results-dir", results, "--launcher", "slurm") == 0
    (config,) = runs_for(load_profile(str(path)), check_device=False)
    ckpt, record = (store.checkpoint_path(results, "mid", config.run_id),
                    store.record_path(results, "mid", config.run_id))
    (job,) = json.loads((results / "slurm" / "mid" / "jobs.json").read_text()).values()
    def saved_epochs() -> float:
        try:
            saved = store.load_checkpoint(ckpt, config.run_id)
        except store.StoreError:  # removed as the run ended, between its check and its reading
            saved = None
        return saved["step"] / MID_STEPS if saved else 0

    for epochs, sig in ((1, signal.SIGTERM), (3, signal.SIGKILL)):
        _wait(lambda e=epochs: record.exists() or saved_epochs() >= e, 120, f"the task's checkpoint of epoch {epochs}",
              poll=0.1)
        _restart_slurmd(sig)
        assert not record.exists(), "the run ended before slurmd was restarted: make MID longer"
        assert _queued(job) and launch.run_states([config], results)[0]["state"] == "running"
    _wait(lambda: not _queued(job), 300, "the task to end", poll=0.5)
    (done,) = records(results, "mid").values()
    assert not done["resumed_after_epochs"], "the task was stopped and requeued, not left running"
    assert comparable(done) == comparable(reference)
    assert json.loads((results / "slurm" / "mid" / "jobs.json").read_text()) == {config.run_id: job}
    assert "sgd seed 0: finished, test acc" in (results / "slurm" / "mid" / f"{job}_0_log.out").read_text()
    _nothing_half_written(results, config)


def _small_disk(where: Path, size: str) -> Path:
    """A directory on its own tmpfs of ``size`` (as tests/test_full_disk.py mounts one)."""
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        _as_root(f"mounting a small tmpfs to fill was refused: {out.stderr.strip() or out.returncode}")
    return where


def test_a_results_disk_that_fills_mid_run_is_one_line_and_a_resubmission_resumes_bit_identical(
        mid_reference, tmp_path, capsys):
    """The results directory (records, checkpoints, leases, submitit's folder) on a 4 MiB tmpfs, filled to the
    last byte while the task trains: its next checkpoint cannot be written. The task fails, saying so in one line
    (what `--wait` says of the job, the run's line in `suite status`, its failure note), its last checkpoint
    intact and nothing half-written. With the space freed, the same command resubmits it, and it resumes from that
    checkpoint and ends bit-identical to the uninterrupted run."""
    path, reference = mid_reference
    disk = _small_disk(tmp_path / "disk", "4m")
    cmd = [sys.executable, "-m", "suite", "run", "--profile", str(path), "--results-dir", str(disk),
           "--launcher", "slurm", "--wait", "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        (config,) = runs_for(load_profile(str(path)), check_device=False)
        ckpt = store.checkpoint_path(disk, "mid", config.run_id)
        _wait(lambda: ckpt.exists() or proc.poll() is not None, 120, "the task's first checkpoint", poll=0.1)
        fill(disk)
        err = proc.communicate(timeout=300)[1]
        assert proc.returncode == 1, err
        said = [line for line in err.splitlines() if "no space left on its disk" in line]
        assert len(said) == 1 and said[0].lstrip().startswith("job ") and str(ckpt) in said[0], err
        assert not store.record_path(disk, "mid", config.run_id).exists(), "the run ended before the disk filled"
        assert store.load_checkpoint(ckpt, config.run_id)["step"] >= MID_STEPS  # the last one, intact
        assert leftovers(disk) == [] and list(disk.glob("leases/*/*.lease")) == []
        note = read_failure(failure_path(disk, "mid", config.run_id))
        assert note is not None and "no space left on its disk" in note["error"].splitlines()[-1], note
        capsys.readouterr()
        assert main(["status", "--profile", str(path), "--results-dir", str(disk)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("failed ") and "no space left on its disk" in lines[0], lines
        assert lines[-1] == "1 runs: 0 done, 1 failed", lines

        (disk / "filler").unlink()  # space freed: the same command goes on
        assert run("--profile", path, "--results-dir", disk, "--launcher", "slurm", "--wait") == 0
        assert "1 of them from a checkpoint" in capsys.readouterr().err
        (done,) = records(disk, "mid").values()
        assert done["resumed_after_epochs"], "the resubmitted task started over instead of resuming"
        assert comparable(done) == comparable(reference)
        _nothing_half_written(disk, config)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)
