"""Who runs a run: a lease on it, ``DIR/leases/<profile>/<run_id>.lease`` — the lock, its path, the process and
the Slurm job it names — and, beside it, why the run's last attempt failed (``<run_id>.failed``).

A results directory written before the lease had its name (issue 36) keeps its locks and notes in
``DIR/claims/<profile>/`` as ``<run_id>.claim`` and ``<run_id>.failed``, in the same format: such a lock is read
as a lease (a live one is honoured, a stale one taken over) and such a note as a failure note. The lock of
an older version of the suite still running on the same directory is honoured when it is there first; that
version does not see a lease, so do not run both on one directory at once.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from suite import store

DEFAULT_STALE_S = 6 * 3600


def lease_path(results_dir: Path, profile: str, run_id: str) -> Path:
    return Path(results_dir) / "leases" / profile / f"{run_id}.lease"


def old_lock_path(results_dir: Path, profile: str, run_id: str) -> Path:
    """Where the suite kept a run's lock before it was called a lease (``DIR/claims/<profile>/<run_id>.claim``)."""
    return Path(results_dir) / "claims" / profile / f"{run_id}.claim"


def failure_path(results_dir: Path, profile: str, run_id: str) -> Path:
    """Why a run's last attempt failed: ``DIR/leases/<profile>/<run_id>.failed`` (JSON), until one starts again."""
    return Path(results_dir) / "leases" / profile / f"{run_id}.failed"


def _old_failure_path(path: Path) -> Path:
    """The note of ``path``'s run where the suite kept it before (``DIR/claims/<profile>/``)."""
    return path.parents[2] / "claims" / path.parent.name / path.name


def _stale_after() -> float:
    # SUITE_CLAIM_STALE_SECONDS: the variable's name before issue 36, still honoured
    value = os.environ.get("SUITE_LEASE_STALE_SECONDS", os.environ.get("SUITE_CLAIM_STALE_SECONDS"))
    return float(value) if value is not None else DEFAULT_STALE_S


class Lease:
    """A run's lease: ``path``, created exclusively (hard link of a filled temporary file), holding pid, host
    and start time. ``acquire`` returns False while another live process holds it. A lease is stale, and is
    taken over, when its process is gone: on the same host and pid namespace, no process with its pid and
    start time (a pid reused after a crash or a container restart does not keep a dead lease alive);
    elsewhere, when it was not refreshed for ``stale_after`` seconds — the holder refreshes it at every
    checkpoint. ``old``: the run's lock as the suite wrote it before (``old_lock_path``), read as a lease of
    the same run — live, it holds the run; stale, it is taken away first."""

    def __init__(self, path: Path, stale_after: float | None = None, slurm_jobs: set[str] | None = None,
                 old: Path | None = None) -> None:
        self.path = Path(path)
        # the Slurm jobs squeue still has, where the caller asked it: a lease naming another job is stale
        self.slurm_jobs = slurm_jobs
        self.stale_after = stale_after if stale_after is not None else _stale_after()
        self.old = Lease(old, self.stale_after, slurm_jobs) if old is not None else None
        self.held = False
        self._text = ""  # what this process wrote: refresh and release touch the lease only if it is ours

    @staticmethod
    def of(results_dir: Path, profile: str, run_id: str, slurm_jobs: set[str] | None = None) -> Lease:
        """The lease of a run of a results directory (an old lock of the run read as one)."""
        return Lease(lease_path(results_dir, profile, run_id), slurm_jobs=slurm_jobs,
                     old=old_lock_path(results_dir, profile, run_id))

    def acquire(self) -> bool:
        """Take the lease: True if this process holds it now. A file that cannot be written (a full disk, a
        folder that is not one or not ours) is a ``StoreError`` that says so."""
        try:
            if self.old is not None and not self.old._gone():
                return False
            return self._acquire()
        except OSError as exc:  # one line, as for every other file of the store
            full = store.full_disk_error(self.path, exc)
            where = f" ({exc.filename})" if exc.filename and exc.filename != str(self.path) else ""
            raise full or store.StoreError(f"could not take the lease {self.path}: {exc.strerror or exc}{where}") \
                from None

    def _acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        mine = {"pid": pid, "host": socket.gethostname(), "pid_ns": _pid_namespace(),
                "process_start": _process_start(pid), "since": time.time(), "job": slurm_job(),
                "step": os.environ.get("SLURM_STEP_ID")}
        self._text = json.dumps(mine)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, store.file_mode())
            with os.fdopen(fd, "w") as f:
                f.write(self._text)
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # atomic, and fails if the lease exists
                    self.held = True
                    return True
                except FileExistsError:
                    stale = self._stale()
                    if stale is None or not self._take_away(stale, f"{tmp}.stale"):
                        return False
            return False
        finally:
            os.unlink(tmp)

    def _gone(self) -> bool:
        """No live process holds this lock: there is none, or the stale one was taken away."""
        stale = self._stale()
        if stale is None:
            return False
        return stale == "" or self._take_away(stale, str(self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}"))

    def refresh(self) -> None:
        if self.held and self._ours():
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._ours():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass

    def _ours(self) -> bool:
        try:
            return self.path.read_text() == self._text
        except OSError:
            return False

    def holder(self) -> str:
        """Who holds the run, in a few words (an old lock's holder if that is what holds it)."""
        if self.old is not None and self.old.info() is not None:
            return self.old.holder()
        try:
            info = json.loads(self.path.read_text())
            where = f"pid {info['pid']} on {info['host']}"
            return f"Slurm job {info['job']} ({where})" if info.get("job") else where
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def info(self) -> dict[str, Any] | None:
        """What the lease says (pid, host, job, since) while a live process holds it (or an old lock of the
        run); None otherwise."""
        if self.path.exists() and self._stale() is None:
            try:
                info = json.loads(self.path.read_text())
                return info if isinstance(info, dict) else None
            except (OSError, ValueError):
                return None
        return self.old.info() if self.old is not None else None

    def _stale(self) -> str | None:
        """The text of the lease if it is stale ("" if there is none), else None."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return ""
        try:
            info = json.loads(text)
            pid, host = int(info["pid"]), info["host"]
        except (ValueError, KeyError, TypeError):
            return text  # a lease nobody can read protects nothing
        job = info.get("job")
        # Slurm runs one attempt of a job at a time: a lease of this very job step is an earlier attempt's, killed
        # (preempted, requeued) without releasing it, perhaps on another node; so is one of a job Slurm no
        # longer has
        this_step = job == slurm_job() and info.get("step") == os.environ.get("SLURM_STEP_ID")
        if job and (this_step or (self.slurm_jobs is not None and job not in self.slurm_jobs)):
            return text
        if host == socket.gethostname() and info.get("pid_ns") == _pid_namespace():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return text
            except PermissionError:
                pass  # alive, someone else's
            started = info.get("process_start")
            return text if started is not None and started != _process_start(pid) else None
        return text if age > self.stale_after else None

    def _take_away(self, stale: str, aside: str) -> bool:
        """Move the stale lease aside. Of several processes that judged it stale, one moves it; if what
        was moved is a fresh lease (another process took over in between), it is put back."""
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        try:
            if Path(aside).read_text() != stale:
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                return False
            return True
        finally:
            os.unlink(aside)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def slurm_job() -> str | None:
    """The Slurm job this process runs in (``ARRAY_TASK`` for an array task), None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def write_failure(path: Path, error: str) -> None:
    """Say that a run failed, and the end of its traceback (``suite status`` shows it)."""
    tail = error.strip().splitlines()[-20:]
    info = {"error": "\n".join(tail), "host": socket.gethostname(), "pid": os.getpid(), "job": slurm_job(),
            "when": time.time()}
    store.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(info)))


def read_failure(path: Path) -> dict[str, Any] | None:
    """The failure note at ``path`` (or where the suite kept it before), None if there is none."""
    for where in (path, _old_failure_path(path)):
        try:
            info = json.loads(where.read_text())
            return info if isinstance(info, dict) else None
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return {"error": f"(unreadable {where.name})"}
    return None


def clear_failure(path: Path) -> None:
    """A new attempt starts: the last one's note (and one where the suite kept it before) goes."""
    for where in (path, _old_failure_path(path)):
        where.unlink(missing_ok=True)


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
