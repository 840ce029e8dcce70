"""pytest-benchmark: one process against two on this CPU (issue 14: "1- vs 2-process throughput on this CPU").
A global step of 128 examples (ResNet-8, channels_last) of SGD and of SAM, either in one process with both
cores' threads or in two gloo processes (DistributedDataParallel, as `torchrun --nproc_per_node=2` runs the
harness) with one thread each and 64 examples apiece; the two ways interleaved round after round, each
round a fresh start of the processes, ratios of the median step times.

    tox -e bench -- -k processes        # prints the ratios

It starts processes for every round, so the unit tests (--benchmark-disable) skip it; tests/test_distributed.py
checks what the two-process path computes.
"""

from __future__ import annotations

import statistics

import pytest
from ddp_worker import spawn

ROUNDS = 5
STEPS = 10


@pytest.mark.parametrize("name", ["sgd", "sam"])
def test_two_processes_against_one(benchmark, tmp_path, name):
    if benchmark.disabled:
        pytest.skip("starts processes every round: tox -e bench -- -k processes")
    seconds = {1: [], 2: []}
    for r in range(ROUNDS):
        for size in ((1, 2) if r % 2 == 0 else (2, 1)):  # which goes first alternates
            seconds[size].append(spawn([name, STEPS], tmp_path / f"{r}-{size}", size=size, task="time_steps")[0])
    median = {size: statistics.median(s) for size, s in seconds.items()}
    ratio = round(median[2] / median[1], 3)
    benchmark.extra_info.update(two_over_one_step_time=ratio, rounds=ROUNDS, seconds=median)
    benchmark.group = f"processes: {name}"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\n{name}: a global step of 128 in 2 processes / in 1 process, median of {ROUNDS} interleaved rounds: "
          f"{ratio:.3f} ({median[1] * 1e3:.0f} ms and {median[2] * 1e3:.0f} ms)")
    assert all(m > 0 for m in median.values())
