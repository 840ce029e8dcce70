"""Runs that survive: resume after SIGKILL or Ctrl-C bit-identical, atomic checkpoints, leases that keep
two sweeps off each other's runs, stale leases taken over, locks of results directories written before."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_config

from suite import harness, lease, store
from suite.config import RunConfig, TrainConfig
from suite.data import synthetic_dataset
from suite.lease import Lease
from suite.metrics import EPOCH_VARIES, varying_keys
from suite.registry import get

TIMING = varying_keys() | {"checkpoints"}
PROFILE = """seeds = 1
optimizers = {optimizers}
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 8
batch_size = 32
train_subset = 160
test_subset = 64
eval_batch_size = 64
"""


def comparable(record: dict) -> tuple:
    """Everything but wall-clock figures."""
    metrics = {k: v for k, v in record["metrics"].items() if k not in TIMING}
    epochs = [{k: v for k, v in e.items() if k not in EPOCH_VARIES} for e in record["epochs"]]
    return metrics, epochs, record["config"]


# ----- in process: interrupt right after a checkpoint, then resume ------------------------------------------
@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n_train=200, n_test=64)


def config(name: str, **hparams) -> RunConfig:
    train = TrainConfig(dataset="synthetic", model="resnet8", epochs=3, batch_size=32, train_subset=96,
                        test_subset=64, eval_batch_size=64)
    return run_config(name, train, profile="t", **hparams)


class Stop(Exception):
    pass


def interrupter(after: int):
    """An on_checkpoint callback that stops the run right after its ``after``-th checkpoint."""
    seen = []

    def interrupt() -> None:
        seen.append(1)
        if len(seen) == after:
            raise Stop

    return interrupt


@pytest.mark.parametrize("name", ["sgd", "sam", "esam", "ssam-f-nm-implicit", "ssam-d-structured-explicit",
                                  "ssam-f-train-examples", "ae-sam", "late-sam"])
def test_resume_from_each_checkpoint_is_bit_identical(name, dataset, tmp_path):
    # ssam-f-train-examples: SSAM-F drawing its Fisher examples from the training data every step (its own RNG
    # stream); ae-sam and late-sam: schedules over the run's total_steps (late-sam switches at step 8 of 9, after
    # both checkpoints), so a resumed run must get the same T and continue from its saved step count
    cfg = config("ssam-f-unstructured-explicit", fisher_data="train", fisher_samples=8, update_every=1) \
        if name == "ssam-f-train-examples" else config(name)
    whole = harness.run(cfg, dataset, progress=False)
    for stop_after in (1, 2):  # the run saves after epochs 1 and 2 (not after the last)
        ckpt = tmp_path / f"{stop_after}.pt"
        with pytest.raises(Stop):
            harness.run(cfg, dataset, progress=False, checkpoint=ckpt, on_checkpoint=interrupter(stop_after))
        torch.manual_seed(12345)  # a resumed process starts from other global RNG state
        resumed = harness.run(cfg, dataset, progress=False, checkpoint=ckpt)
        assert comparable(resumed) == comparable(whole)
        assert resumed["resumed_after_epochs"] == [stop_after]
        assert resumed["metrics"]["checkpoints"] == 2


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    store.save_checkpoint(path, {"run_id": "r", "step": 1})

    def torn(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        store.save_checkpoint(path, {"run_id": "r", "step": 2})
    monkeypatch.undo()
    assert store.load_checkpoint(path, "r")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_corrupt_or_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(store.StoreError, match="c.pt is unreadable"):
        store.load_checkpoint(path, "r")
    store.save_checkpoint(path, {"run_id": "other"})
    with pytest.raises(store.StoreError, match="does not belong to run r"):
        store.load_checkpoint(path, "r")


# ----- leases ------------------------------------------------------------------------------------------------
def test_a_lease_is_exclusive_and_released(tmp_path):
    a, b = Lease(tmp_path / "x.lease"), Lease(tmp_path / "x.lease")
    assert a.acquire() and not b.acquire()
    assert f"pid {os.getpid()}" in b.holder()
    a.release()
    assert b.acquire()
    b.release()
    assert not (tmp_path / "x.lease").exists()


def same_host_lease(path: Path, pid: int, process_start) -> None:
    import socket

    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "pid_ns": lease._pid_namespace(),
                                "process_start": process_start, "since": 0}))


def test_a_lease_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "x.lease"
    same_host_lease(path, int(dead.stdout), 123)
    held = Lease(path)
    assert held.acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_reused_pid_does_not_keep_a_dead_lease_alive(tmp_path):
    """A crashed sweep's pid now belongs to another live process (here: this one, started at another time)."""
    path = tmp_path / "x.lease"
    same_host_lease(path, os.getpid(), lease._process_start(os.getpid()) - 1)
    assert Lease(path).acquire()
    same_host_lease(path, os.getpid(), lease._process_start(os.getpid()))
    assert not Lease(path).acquire(), "the same process, same start time: alive"


def test_release_and_refresh_leave_a_lease_taken_over_by_another_alone(tmp_path):
    path = tmp_path / "x.lease"
    mine = Lease(path)
    assert mine.acquire()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))  # taken over meanwhile
    mine.refresh()
    mine.release()
    assert json.loads(path.read_text())["host"] == "elsewhere"
    path.unlink()
    mine.held = True
    mine.refresh()  # the file is gone: a refresh is no reason to stop training


def test_a_lease_from_another_host_is_stale_only_when_old(tmp_path):
    path = tmp_path / "x.lease"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
    assert not Lease(path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    assert Lease(path, stale_after=60).acquire()


def test_an_old_lock_from_another_host_holds_the_run_until_it_is_stale(tmp_path):
    """A lock of the suite before issue 36 (``claims/<profile>/<run>.claim``) is a lease of the same run: a
    fresh one holds the run, an old one is taken away before the lease is taken."""
    old = lease.old_lock_path(tmp_path, "p", "r")
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"pid": 1, "host": "elsewhere", "job": None, "since": 0}))
    mine = Lease.of(tmp_path, "p", "r")
    mine.stale_after = mine.old.stale_after = 60
    assert not mine.acquire() and mine.holder() == "pid 1 on elsewhere" and mine.info()["host"] == "elsewhere"
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert mine.acquire() and not old.exists() and mine.path == lease.lease_path(tmp_path, "p", "r")
    assert mine.info()["pid"] == os.getpid()
    mine.release()
    assert list(tmp_path.rglob("*.*")) == []


# ----- the real thing: processes killed, interrupted, and running side by side ---------------------------------
def suite_cmd(profile: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suite", "run", "--profile", str(profile), "--results-dir", str(results),
            "--no-progress", "--no-report", *extra]


def write_profile(tmp_path: Path, optimizers: list[str]) -> Path:
    path = tmp_path / "resume.toml"
    path.write_text(PROFILE.format(optimizers=json.dumps(optimizers)))
    return path


def records(results: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((results / "runs" / "resume").glob("*.json"))}


def wait_for(path_glob, root: Path, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if list(root.glob(path_glob)):
            return True
        time.sleep(0.02)
    return False


def wait_for_checkpoints(count: int, results: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the run has written ``count`` checkpoints (each save renames a new file into place)."""
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline and proc.poll() is None:
        for path in results.glob("checkpoints/resume/*.pt"):
            try:
                st = path.stat()
                seen.add((st.st_ino, st.st_mtime_ns))
            except FileNotFoundError:
                pass
        time.sleep(0.002)


# The two below start, kill and restart whole command-line runs (tens of seconds each): tox -e e2e runs them.
@pytest.mark.e2e
@pytest.mark.parametrize("name", ["sgd", "sam", "ssam-d-unstructured-explicit"])
def test_sigkill_at_a_random_moment_then_the_same_command_resumes_bit_identically(name, tmp_path):
    profile = write_profile(tmp_path, [name])
    reference = tmp_path / "reference"
    subprocess.run(suite_cmd(profile, reference), check=True, capture_output=True)
    results = tmp_path / "killed"
    rng = random.Random(name)
    for _ in range(5):  # until a kill lands mid-run (after the first checkpoint, before the record)
        proc = subprocess.Popen(suite_cmd(profile, results), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_checkpoints(rng.randint(1, 6), results, proc)  # of the 7 the run writes
        time.sleep(rng.uniform(0.0, 0.05))  # then somewhere inside the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not records(results):
            break
        for p in (results / "runs").rglob("*.json"):
            p.unlink()
    assert proc.returncode == -signal.SIGKILL and not records(results), "the kill never landed mid-run"
    assert list((results / "leases").rglob("*.lease")), "a killed run leaves its lease behind"
    out = subprocess.run(suite_cmd(profile, results), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1 of them from a checkpoint" in out.stderr
    [resumed], [whole] = records(results).values(), records(reference).values()
    assert comparable(resumed) == comparable(whole)
    assert resumed["resumed_after_epochs"]
    assert not list((results / "checkpoints").rglob("*.pt")), "a finished run's checkpoint is removed"
    assert not list((results / "leases").rglob("*.lease"))


@pytest.mark.e2e
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path):
    profile = write_profile(tmp_path, ["sam"])
    results = tmp_path / "out"
    # a shell without job control starts background jobs with SIGINT ignored, and Python then installs no
    # handler: give the sweep the default disposition, as a terminal would, whatever started pytest
    proc = subprocess.Popen(suite_cmd(profile, results), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert wait_for("checkpoints/resume/*.pt", results, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: 0 runs finished") and "resumes from its checkpoint" in last
    assert "Run the same command again" in last
    [ckpt] = list((results / "checkpoints").rglob("*.pt"))
    assert store.load_checkpoint(ckpt, ckpt.stem) is not None
    assert not list((results / "leases").rglob("*.lease")), "Ctrl-C releases the lease"
    subprocess.run(suite_cmd(profile, results), check=True, capture_output=True)
    reference = tmp_path / "reference"
    subprocess.run(suite_cmd(profile, reference), check=True, capture_output=True)
    assert comparable(*records(results).values()) == comparable(*records(reference).values())


def test_two_sweeps_on_one_directory_share_the_runs_without_overlap(tmp_path):
    names = ["sgd", "sam", "esam", "ssam-f", "ssam-d"]
    profile = write_profile(tmp_path, names)
    profile.write_text(profile.read_text().replace("epochs = 8", "epochs = 2"))
    results = tmp_path / "shared"
    procs = [subprocess.Popen(suite_cmd(profile, results), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    ran = [{line.split("] ")[1].split(" seed")[0] for line in err.splitlines() if "GFLOP/step" in line} for err in errs]
    assert ran[0] | ran[1] == {get(n).name for n in names}  # an alias runs as its target
    assert not ran[0] & ran[1], f"a run ran twice: {ran}"
    assert len(records(results)) == len(names)
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("*.lease"))
