"""A full disk (shared cluster disks fill up) while a checkpoint, record, weights, lease or report file is
written: one ``error:`` line and exit status 2, the previous file intact, no temporary file left. Against a
real full file system: a 64 KiB tmpfs, mounted for each test (root only; skipped elsewhere)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_cli import profile, run_cli

from suite import store
from suite.lease import Lease

SIZE = 64 * 1024
SMALL = {"train_subset": "32", "test_subset": "16"}  # a step an epoch


@pytest.fixture
def disk(tmp_path: Path):
    """A directory on its own 64 KiB tmpfs, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"needs a small tmpfs to fill, and mounting one was refused (run as root, as CI does): "
                    f"{out.stderr.strip() or out.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Leave no byte free on ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def leftovers(disk: Path) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(disk) for n in names if n.endswith(".tmp")]


def one_line(message: str, path: Path) -> None:
    assert "\n" not in message and str(path) in message and "no space left on its disk" in message, message


def big_model() -> torch.nn.Module:
    return torch.nn.Linear(200, 200)  # 160 kB of weights


@pytest.mark.parametrize("kind", ["checkpoint", "weights", "record"])
def test_a_file_bigger_than_the_free_space_is_a_store_error_and_the_previous_file_stays(disk, kind):
    """torch.save (checkpoint, weights) and json.dump (record) into a disk too small: a StoreError of one
    line naming the file, the file written before it unchanged, no temporary file."""
    path = disk / "files" / ("r.json" if kind == "record" else "r.pt")
    if kind == "checkpoint":
        store.save_checkpoint(path, {"run_id": "r", "w": torch.arange(10.0)})
        with pytest.raises(store.StoreError) as err:
            store.save_checkpoint(path, {"run_id": "r", "w": torch.zeros(100_000)})
        assert torch.equal(store.load_checkpoint(path, "r")["w"], torch.arange(10.0))
    elif kind == "weights":
        store.save_weights(path, "r", torch.nn.Linear(2, 2))
        with pytest.raises(store.StoreError) as err:
            store.save_weights(path, "r", big_model())
        assert store.load_weights(path, "r")["weight"].shape == (2, 2)
    else:
        store.write_record(path, {"schema": store.SCHEMA, "metrics": {"a": 1}})
        with pytest.raises(store.StoreError) as err:
            store.write_record(path, {"schema": store.SCHEMA, "metrics": {"a": "x" * 100_000}})
        assert store.read_record(path)["metrics"] == {"a": 1}
    one_line(str(err.value), path)
    assert leftovers(disk) == []


def test_other_errors_on_a_full_disk_stay_what_they_are(disk):
    """Only a write that ran out of space is reported as a full disk: a RuntimeError of the writer, or an
    OSError of another kind, is raised as it was, even with the disk full; its temporary file goes too."""
    fill(disk)

    def fails(exc: Exception):
        def write(tmp: str) -> None:
            raise exc
        return write

    with pytest.raises(RuntimeError, match="boom") as err:
        store.atomic_write(disk / "x.pt", fails(RuntimeError("boom")))
    assert not isinstance(err.value, store.StoreError)
    with pytest.raises(PermissionError):
        store.atomic_write(disk / "x.pt", fails(PermissionError(errno.EACCES, "denied")))
    assert leftovers(disk) == []


def test_a_quota_is_named_as_such():
    exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    exc.__context__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert store._disk_full(exc) == errno.EDQUOT
    assert "quota" in store._full_message(Path("/x/r.pt"), errno.EDQUOT)


def test_a_lease_on_a_full_disk_is_a_store_error(disk):
    path = disk / "leases" / "p" / "r.lease"
    path.parent.mkdir(parents=True)
    fill(disk)
    with pytest.raises(store.StoreError) as err:
        Lease(path).acquire()
    one_line(str(err.value), path)
    assert not path.exists() and leftovers(disk) == []


def test_a_sweep_that_fills_the_disk_ends_with_one_line(disk, tmp_path, capsys):
    """`suite run` into a results directory that fills up with the first checkpoint: exit 2, one
    `error:` line naming it, no traceback, its lease released, nothing half-written; with space again,
    the same command runs it."""
    prof = profile(tmp_path, train={"epochs": "2", **SMALL}, top={"optimizers": '["sgd"]'})
    capsys.readouterr()
    assert run_cli("run", "--profile", prof, "--results-dir", str(disk), "--no-progress") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not write ") and "no space left on its disk" in err[-1], err
    assert not any("Traceback" in line for line in err), err
    assert leftovers(disk) == [] and list(disk.glob("leases/*/*.lease")) == []
    assert list(disk.glob("runs/*/*.json")) == []
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed: the same command
    assert run_cli("run", "--profile", prof, "--results-dir", str(disk), "--no-progress", "--no-report") == 0
    assert len(list(disk.glob("runs/*/*.json"))) == 1


def test_a_report_on_a_full_disk_ends_with_one_line(disk, tmp_path, capsys):
    """The report a run writes at its end (summary files and figures), with the disk full: one line."""
    out = tmp_path / "out"
    prof = profile(tmp_path, train=SMALL, top={"optimizers": '["sgd"]'})
    assert run_cli("run", "--profile", prof, "--results-dir", str(out), "--no-progress", "--no-report") == 0
    shutil.copytree(out / "runs", disk / "runs")
    fill(disk)
    capsys.readouterr()
    assert run_cli("report", "--results-dir", str(disk)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write ") and "no space left" in err[0], err
    assert leftovers(disk) == []
