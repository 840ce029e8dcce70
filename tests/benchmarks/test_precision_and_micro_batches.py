"""pytest-benchmark: what bf16 autocast and micro-batches cost an SGD and a SAM step on this CPU (issue 14:
"bf16 vs fp32 step time on CPU"). ResNet-8, batch 128, channels_last as the harness runs it, the same batch
every step; three ways, interleaved round after round so drift hits all alike, ratios of median step times:

- ``fp32``: what the harness does by default;
- ``bf16``: the forward passes under ``torch.autocast(bfloat16)`` (``[train] precision = "bf16"``);
- ``fp32, 4 micro-batches``: ``[train] accumulate = 4`` (the same gradient, a quarter of the activations).

    tox -e bench -- -k precision        # prints the ratios

Under the unit tests' default --benchmark-disable each way runs one step.
"""

from __future__ import annotations

import pytest
import torch
from helpers import interleaved_medians

from baselines.core import ModelClosure
from suite import registry
from suite.models import build_model

ROUNDS = 7
STEPS = 5  # per round and way
WAYS = {"fp32": dict(), "bf16": dict(autocast=torch.bfloat16), "fp32, 4 micro-batches": dict(accumulate=4)}


def _way(name: str, steps: int, **closure_options):
    torch.manual_seed(0)
    net = build_model("resnet8", 10).to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    opt = registry.get(name).build(net.parameters(), {"model": net}, lr=0.05, momentum=0.9, weight_decay=5e-4)
    closure = ModelClosure(net, x, y, **closure_options)

    def run() -> None:
        for _ in range(steps):
            opt.step(closure)

    return run


@pytest.mark.parametrize("name", ["sgd", "sam"])
def test_bf16_and_micro_batches_against_fp32(benchmark, name):
    enabled = not benchmark.disabled
    steps = STEPS if enabled else 1
    ways = {w: _way(name, steps, **options) for w, options in WAYS.items()}
    rounds = ROUNDS if enabled else 1
    median = interleaved_medians(ways, steps, rounds)
    ratios = {w: round(median[w] / median["fp32"], 3) for w in ways}
    benchmark.extra_info.update(step_time_over_fp32=ratios, rounds=rounds)
    benchmark.group = f"precision and micro-batches: {name}"
    benchmark.pedantic(ways["bf16"], rounds=rounds, iterations=1)
    words = ", ".join(f"{w} {r:.3f}" for w, r in ratios.items())
    print(f"\n{name}: step time / fp32, median of {rounds} interleaved rounds: {words}")
    assert all(m > 0 for m in median.values())
