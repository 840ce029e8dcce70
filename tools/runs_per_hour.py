"""Runs per hour of a sweep run one at a time (all cores as threads of one run) against N workers (the cores
shared out, one run each): the same runs, each mode into a fresh results directory, the modes alternated
(A B B A ...) so a drifting machine touches both alike. Issue 24, item 5.

    python tools/runs_per_hour.py --data-dir /path/to/cifar10                    # cpu-noise, 3 epochs, 8 runs
    python tools/runs_per_hour.py --data-dir D --profile cpu --epochs 1 --rounds 4

Prints each timed sweep and the ratio of the medians; the machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_OPTIMIZERS = ("sgd", "sam", "esam", "ssam-f-unstructured-explicit")


def sweep(args: argparse.Namespace, workers: int, out: Path) -> float:
    """Seconds one sweep of the runs takes with ``workers`` (1: one at a time, on every core)."""
    names = [f"--optimizer={n}" for n in args.optimizer or DEFAULT_OPTIMIZERS]
    cmd = [sys.executable, "-m", "suite", "run", "--profile", args.profile, "--epochs", str(args.epochs),
           "--seeds", str(args.seeds), *names, "--results-dir", str(out), "--no-report", "--no-progress",
           "--workers", str(workers)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu-noise")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--optimizer", action="append")
    p.add_argument("--workers", type=int, default=2, help="the parallel mode's workers (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="A B B A pairs (default 2)")
    p.add_argument("--data-dir", type=Path)
    args = p.parse_args(argv)
    runs = args.seeds * len(args.optimizer or DEFAULT_OPTIMIZERS)
    times: dict[int, list[float]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for workers in ((1, args.workers) if k % 2 == 0 else (args.workers, 1)):
                seconds = sweep(args, workers, Path(tmp) / f"{k}-{workers}")
                times[workers].append(seconds)
                print(f"round {k + 1}, {workers} worker(s): {runs} runs in {seconds:.1f} s "
                      f"= {3600 * runs / seconds:.0f} runs/hour", flush=True)
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(f"median: 1 worker {3600 * runs / one:.0f} runs/hour, {args.workers} workers "
          f"{3600 * runs / many:.0f} runs/hour; {args.workers} workers / 1 = {one / many:.2f}x "
          f"({args.profile}, {args.epochs} epochs, {runs} runs per sweep, {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
