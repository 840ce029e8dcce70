"""pytest-benchmark: whether channels_last and ``torch.compile`` pay for an SGD and a SAM step on this CPU
(issue 12: "channels_last, torch.compile where it pays on this CPU (measure)"). ResNet-8, batch 128, the
same batch every step. Three ways to run the same step, interleaved round after round so drift hits all
alike; the ratios are of median step times:

- ``contiguous``: the model and batch in the default (NCHW) memory format, eager;
- ``channels_last``: what the harness does (``TrainConfig.channels_last``, default on), eager;
- ``compiled``: channels_last with the model under ``torch.compile`` (inductor; its compile time is
  reported on its own, outside the step times).

    tox -e bench -- -k memory_format        # prints the ratios and the compile time

Under the unit tests' default --benchmark-disable each eager way runs a step or two and the compiled one is
skipped (compiling takes about a minute on 2 cores).
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers import interleaved_medians

from baselines.core import ModelClosure
from suite import registry
from suite.models import build_model

ROUNDS = 7
STEPS = 5  # per round and way


def _way(name: str, memory_format: torch.memory_format, compiled: bool, steps: int = STEPS):
    torch.manual_seed(0)
    net = build_model("resnet8", 10).to(memory_format=memory_format)
    model = torch.compile(net) if compiled else net
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (128,))
    opt = registry.get(name).build(net.parameters(), {"model": net}, lr=0.05, momentum=0.9, weight_decay=5e-4)
    closure = ModelClosure(model, x, y)

    def run() -> None:
        for _ in range(steps):
            opt.step(closure)

    return run


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.parametrize("name", ["sgd", "sam"])
def test_channels_last_and_compile_against_contiguous_eager(benchmark, name):
    enabled = not benchmark.disabled
    steps = STEPS if enabled else 1
    ways = {"contiguous": _way(name, torch.contiguous_format, False, steps),
            "channels_last": _way(name, torch.channels_last, False, steps)}
    compile_s = None
    if enabled:
        ways["compiled"] = _way(name, torch.channels_last, True, steps)
        compile_s = _timed(ways["compiled"])  # the first steps compile (forward and backward graphs)
    rounds = ROUNDS if enabled else 1
    median = interleaved_medians(ways, steps, rounds)
    ratios = {w: round(median[w] / median["contiguous"], 3) for w in ways}
    benchmark.extra_info.update(step_time_over_contiguous=ratios, compile_seconds=compile_s, rounds=rounds)
    benchmark.group = f"memory format and compile: {name}"
    benchmark.pedantic(ways["channels_last"], rounds=rounds, iterations=1)
    words = ", ".join(f"{w} {r:.3f}" for w, r in ratios.items())
    print(f"\n{name}: step time / contiguous eager, median of {rounds} interleaved rounds: "
          f"{words}" + (f"; compiling took {compile_s:.0f} s" if compile_s is not None else ""))
    assert all(m > 0 for m in median.values())
