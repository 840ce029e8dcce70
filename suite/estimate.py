"""How long a profile's sweep takes, read from records rather than typed: each planned run is priced by the
wall time of recorded runs with the same settings (optimizer, hyper-parameters, training settings; any
profile, any seed), and the runs are dealt out in the sweep's order to ``workers`` processes that each take
the next run when free. What a profile's description or the README says about duration and size comes from
here (``python -m suite list --profiles``, the README's generated lines), so it cannot go stale.

The estimate is as good as its records: made on another machine, or with another thread count per
process, it describes that machine. It leaves out what a sweep does besides training (decoding the data
set once, the report).
"""

from __future__ import annotations

import heapq
import json
import re
from dataclasses import dataclass
from pathlib import Path

from suite import tune
from suite.config import Profile, RunConfig
from suite.store import atomic_write, iter_records
from suite.sweep import runs_for


@dataclass(frozen=True)
class Estimate:
    runs: int  # the profile's planned runs
    optimizers: int
    priced: int  # of them, those that recorded runs with the same settings price
    seconds: float  # from the first run's start to the last one's end, ``workers`` at a time
    workers: int

    def minutes(self) -> int:
        return round(self.seconds / 60)

    def text(self) -> str:
        """'about 70 minutes with 2 workers (from the wall time of 28 recorded runs with these settings)'."""
        if not self.priced:
            return "no recorded run with these settings to estimate its duration from"
        span = f"{self.minutes()} minutes" if self.minutes() < 120 else f"{self.seconds / 3600:.1f} hours"
        part = "" if self.priced == self.runs else f", {self.runs - self.priced} of {self.runs} runs unpriced"
        return (f"about {span} with {self.workers} worker{'s' if self.workers > 1 else ''} (from the wall time "
                f"of recorded runs with these settings{part})")


def _settings(config: dict) -> str:
    """What makes two runs cost the same: the run's config without its profile's name and its seed."""
    return json.dumps({k: v for k, v in config.items() if k not in ("profile", "seed")}, sort_keys=True)


def recorded_seconds(results_dir: Path) -> dict[str, list[tuple[float, int]]]:
    """(wall seconds, runs the machine had room for side by side: its cores over the run's torch threads) of
    every readable record under ``results_dir``, by its settings."""
    seconds: dict[str, list[tuple[float, int]]] = {}
    for _, record in iter_records(results_dir):
        if record is not None and record.get("wall_seconds") is not None:
            env = record.get("env") or {}
            side_by_side = max(1, int(env.get("cpu_count") or 1) // max(1, int(env.get("torch_threads") or 1)))
            seconds.setdefault(_settings(record["config"]), []).append((float(record["wall_seconds"]), side_by_side))
    return seconds


def makespan(durations: list[float], workers: int) -> float:
    """The sweep's length when ``workers`` processes each take the next run in order as soon as they are free."""
    free = [0.0] * max(1, workers)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def estimate(runs: list[RunConfig], seconds: dict[str, list[tuple[float, int]]],
             workers: int | None = None) -> Estimate:
    """The planned ``runs``, priced by the mean wall time of the records with the same settings (``seconds``:
    ``recorded_seconds``, read once for any number of profiles), ``workers`` at a time (None: as many as the
    records' machines had room for, their cores over a run's threads)."""
    priced = [s for s in (seconds.get(_settings(json.loads(json.dumps(r.as_dict())))) for r in runs) if s]
    durations = [sum(d for d, _ in s) / len(s) for s in priced]
    if workers is None:
        room = sorted(n for s in priced for _, n in s)
        workers = room[len(room) // 2] if room else 1
    return Estimate(len(runs), len({r.optimizer for r in runs}), len(durations), makespan(durations, workers),
                    workers)


def profile_estimate(profile: Profile, seconds: dict[str, list[tuple[float, int]]],
                     workers: int | None = None) -> Estimate:
    return estimate(planned(profile), seconds, workers)


def planned(profile: Profile) -> list[RunConfig]:
    """What the profile's command runs: a tuning profile's trials (``python -m suite tune``), else its sweep."""
    return tune.plan(profile, check_device=False)[1] if profile.tune else runs_for(profile, check_device=False)


# The README's generated durations: "<!-- duration of PROFILE, N workers -->...<!-- end -->"
_DURATION = re.compile(r"(<!-- duration of (?P<profile>[\w.-]+), (?P<workers>\d+) workers? -->)(.*?)(<!-- end -->)")


def rewrite_durations(text: str, results_dir: Path, load) -> str:
    """``text`` with each generated duration block re-priced from ``results_dir`` (``load``: name -> Profile)."""
    seconds = recorded_seconds(results_dir)

    def price(m: re.Match) -> str:
        est = profile_estimate(load(m["profile"]), seconds, int(m["workers"]))
        return f"{m.group(1)}{est.text()}{m.group(5)}"
    return _DURATION.sub(price, text)


def update_durations(readme: Path, results_dir: Path, load) -> bool:
    """Rewrite ``readme``'s duration blocks in place (atomically) if any changed; whether it did."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    new = rewrite_durations(text, results_dir, load)
    if new != text:
        atomic_write(readme, lambda tmp: Path(tmp).write_text(new))
    return new != text


def described(profile: Profile, seconds: dict[str, list[tuple[float, int]]]) -> str:
    """A profile's description, then its size and duration as the planner and the records (``seconds``:
    ``recorded_seconds``) give them."""
    est = profile_estimate(profile, seconds)
    command = "tune" if profile.tune else "run"
    return (f"{profile.description or '(no description)'} [suite {command}: {est.runs} runs of {est.optimizers} "
            f"optimizers; {est.text()}]")
