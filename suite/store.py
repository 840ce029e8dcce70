"""One immutable JSON record per run, written atomically: ``DIR/runs/<profile>/<run_id>.json``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SCHEMA = 2  # 2: flat metrics mapping, references, data fingerprint


def record_path(results_dir: Path, profile: str, run_id: str) -> Path:
    return results_dir / "runs" / profile / f"{run_id}.json"


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` fills a temporary file in ``path``'s directory, which is then renamed onto
    ``path``: readers see the old file or the whole new one, never half of it. A failed write
    leaves no temporary file behind; one that failed because the disk or the quota is full is a
    ``StoreError`` that says so (the previous file is left as it was)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, file_mode())
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc) is None:
            raise
        _remove(tmp)  # first, so that the message counts the space it held as free
        raise full_disk_error(path, exc) from None
    finally:
        _remove(tmp)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock``, which the kernel lets go of when the holder dies) while the
    block runs: for a read-modify-write of a file that several commands share. Others wait. The lock file is
    removed as the lock is released; whoever then holds the lock on the removed file sees that it is no longer
    at ``path`` and takes the lock again, so two never hold it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now, mine = _inode(path), os.fstat(fd)
            if now == (mine.st_dev, mine.st_ino):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def file_mode() -> int:
    """The mode ``open`` would give a new file (0o666 less the umask). ``mkstemp`` makes its file 0o600, which
    would leave records, tables and leases unreadable to the rest of a group sharing a results directory
    on a cluster. The umask can only be read by setting it, so it is set straight back."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _disk_full(exc: BaseException) -> int | None:
    """``errno.ENOSPC`` or ``errno.EDQUOT`` if ``exc`` is a write that ran out of disk or quota, else None.

    Judged by the errno along the exception chain, never by a message or by the free space: torch.save
    into an open Python file (every torch.save of the suite) raises the file's ``OSError``, or from its zip
    writer a ``RuntimeError`` ("[enforce fail at inline_container.cc] unexpected pos ...") whose context is
    that ``OSError`` (torch 2.14), so a full disk is recognised whichever write hit it, a quota too (which
    the free space does not show), and an unrelated ``RuntimeError`` is never taken for a full disk. (Given
    a path, torch.save writes through a C++ stream whose error, "basic_ios::clear: iostream error", carries
    no errno: write through a Python file.)"""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return cause.errno
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def full_disk_error(path: Path, exc: BaseException) -> StoreError | None:
    """The one-line error for a write to ``path`` that failed with ``exc`` because the disk or the quota is full;
    None for any other failure."""
    full = _disk_full(exc)
    return None if full is None else StoreError(_full_message(path, full))


def _full_message(path: Path, full: int) -> str:
    if full == errno.ENOSPC:
        free = _free(path.parent)
        why = "no space left on its disk" + ("" if free is None else f" ({_size(free)} free)")
    else:
        why = "the disk quota is exceeded"
    return (f"could not write {path}: {why}; nothing was half-written. Free some space there, or give the "
            "command another place to write (--results-dir for runs), then run the same command again: it goes on "
            "from what was saved")


def _free(directory: Path) -> int | None:
    """Bytes free to this user on the disk that holds ``directory`` (or its nearest existing parent)."""
    existing = next((p for p in [directory, *directory.parents] if p.exists()), None)
    try:
        return None if existing is None else shutil.disk_usage(existing).free
    except OSError:
        return None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def write_record(path: Path, record: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def iter_records(results_dir: Path, profile: str = "*") -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """Every record under ``results_dir/runs`` (of one profile, if named); an unreadable file yields
    ``(path, None)``."""
    for path in sorted((Path(results_dir) / "runs").glob(f"{profile}/*.json")):
        try:
            yield path, read_record(path)
        except StoreError:
            yield path, None


# ----- resumable runs: a checkpoint per unfinished run (suite/lease.py: who runs it) ----------------
class StoreError(RuntimeError):
    """A file of the store cannot be used; the message names it and says what to do."""


def checkpoint_path(results_dir: Path, profile: str, run_id: str) -> Path:
    return results_dir / "checkpoints" / profile / f"{run_id}.pt"


def weights_path(results_dir: Path, profile: str, run_id: str) -> Path:
    """A finished run's final model (weights and buffers), kept for measurements made afterwards
    (sharpness, issue 13); git-ignored under results/, like checkpoints."""
    return results_dir / "weights" / profile / f"{run_id}.pt"


def save_weights(path: Path, run_id: str, model: Any) -> None:
    """Atomically, on the CPU, with the run it belongs to."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    save_checkpoint(path, {"run_id": run_id, "model": state})


def load_weights(path: Path, run_id: str) -> dict[str, Any] | None:
    """A run's final ``state_dict`` if it was kept, else None; unreadable or another run's is a StoreError."""
    state = load_checkpoint(path, run_id)
    return None if state is None else state["model"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a kill during the write leaves the previous checkpoint."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any] | None:
    """The checkpoint of ``run_id`` if there is one; a file that cannot be read is a ``StoreError``."""
    import pickle
    import zipfile

    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise StoreError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start that run "
                         "over") from None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        raise StoreError(f"checkpoint {path} does not belong to run {run_id}; delete it to start that run over")
    return state


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, None if there is none; a file that is not a record is a ``StoreError``."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"record {path} is unreadable ({type(exc).__name__}); delete it, or re-run with --force") \
            from None
    if not (isinstance(record, dict) and record.get("schema") == SCHEMA and "metrics" in record):
        raise StoreError(f"record {path} is not a schema-{SCHEMA} record; delete it, or re-run with --force")
    return record


def check_writable(directory: Path, what: str) -> None:
    """``directory`` is, or can be made as, a writable directory: said before any work, not after it."""
    directory = Path(directory)
    existing = next((p for p in [directory, *directory.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise StoreError(f"{what} {str(directory)!r}: {str(existing)!r} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{what} {str(directory)!r}: {str(existing)!r} is not writable")


# ----- publishing: a user's records of a profile replace the published ones ------------------------------
def clean_commit(record: dict[str, Any]) -> bool:
    """Whether the record was made from a clean commit: its code and the profile files it read are that commit's
    (a commit, not ``-dirty``, nothing in ``env["git_dirty_files"]``: ``measure.git_state``)."""
    env = record.get("env", {})
    commit = env.get("git_commit")
    return bool(commit) and not commit.endswith("-dirty") and not env.get("git_dirty_files")


def provenance(env: dict[str, Any]) -> str:
    """The commit of ``env`` and what of the run was not that commit's, for a message (a few files)."""
    dirty = [f"{path} {why}" for path, why in (env.get("git_dirty_files") or {}).items()]
    more = f" and {len(dirty) - 3} more" if len(dirty) > 3 else ""
    return f"{env.get('git_commit')}" + (f": {', '.join(dirty[:3])}{more}" if dirty else "")


def publish(source: Path, target: Path, profiles: list[str], allow_uncommitted: bool = False) -> list[str]:
    """Replace the published records of each profile in ``target`` with those in ``source`` (every one
    checked first: readable, and made from a clean commit unless ``allow_uncommitted``), each profile's
    folder swapped in whole; the runs' final weights go beside them (``target/weights``, git-ignored).
    Returns a line per profile for the user."""
    import shutil

    staged = {}
    for profile in dict.fromkeys(profiles):
        found = list(iter_records(source, profile))
        if not found:
            raise StoreError(f"no records of profile {profile!r} in {str(source)!r} "
                             f"(expected {source}/runs/{profile}/*.json)")
        unreadable = [str(p) for p, r in found if r is None]
        if unreadable:
            raise StoreError(f"unreadable record {unreadable[0]}: re-run it or remove it before publishing")
        unclean = [(p, provenance(r.get("env", {}))) for p, r in found if not clean_commit(r)]
        if unclean and not allow_uncommitted:
            raise StoreError(f"{len(unclean)} records of {profile!r} were not made from a clean commit (e.g. "
                             f"{unclean[0][0].name}: {unclean[0][1]}); commit and re-run, or pass "
                             "--allow-uncommitted")
        staged[profile] = [p for p, _ in found]
    runs = Path(target) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    said = []
    for profile, paths in staged.items():
        tmp = Path(tempfile.mkdtemp(prefix=f".{profile}-", dir=runs))
        for path in paths:
            shutil.copy2(path, tmp / path.name)
        old = runs / profile
        if old.exists():
            shutil.rmtree(old)
        tmp.rename(old)
        kept = _publish_weights(Path(source), Path(target), profile, [p.stem for p in paths])
        said.append(f"published {len(paths)} records of {profile} into {old} (final weights of {kept}, git-ignored)")
    return said


def _publish_weights(source: Path, target: Path, profile: str, run_ids: list[str]) -> int:
    """The published runs' final weights beside them (for measurements made on this machine afterwards);
    the profile's earlier weights go. Returns how many were there."""
    import shutil

    folder = target / "weights" / profile
    if source.resolve() == target.resolve():
        return sum(weights_path(target, profile, r).exists() for r in run_ids)
    if folder.exists():
        shutil.rmtree(folder)
    kept = 0
    for run_id in run_ids:
        path = weights_path(source, profile, run_id)
        if path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / path.name)
            kept += 1
    return kept
