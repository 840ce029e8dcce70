"""One immutable JSON record per run, written atomically: ``DIR/runs/<profile>/<run_id>.json``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SCHEMA = 1


def record_path(results_dir: Path, profile: str, run_id: str) -> Path:
    return results_dir / "runs" / profile / f"{run_id}.json"


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` fills a temporary file in ``path``'s directory, which is then renamed onto
    ``path``: readers see the old file or the whole new one, never half of it. A failed write
    leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_record(path: Path, record: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """Every record under ``results_dir/runs``; an unreadable file yields ``(path, None)``."""
    for path in sorted((results_dir / "runs").glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            yield path, None
            continue
        ok = isinstance(record, dict) and record.get("schema") == SCHEMA and "metrics" in record
        yield path, record if ok else None
