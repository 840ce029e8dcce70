"""One immutable JSON record per run, written atomically: ``DIR/runs/<profile>/<run_id>.json``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = 1


def record_path(results_dir: Path, profile: str, run_id: str) -> Path:
    return results_dir / "runs" / profile / f"{run_id}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
