"""pytest-benchmark for SSAM's extra work (ResNet-8, batch 128, CPU):

- the Fisher scores of N_F examples, vectorised (``torch.func``) vs the paper's batch-of-one loop;
- one mask refresh (Fisher + projection, or drop/grow) next to one SSAM step, to amortise it over the
  default interval (one epoch).

    tox -e test -- tests/benchmarks/test_ssam_costs.py --benchmark-enable --benchmark-columns=mean,stddev

Quote ratios of rows from one run. Under the default --benchmark-disable each body runs once.
"""

from __future__ import annotations

import pytest
import torch

from baselines.core import ModelClosure
from ssam import SSAM
from ssam import masks as mk
from ssam.fisher import FISHER
from suite.models import build_model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = build_model("resnet8", 10).to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    return net, ModelClosure(net, x, torch.randint(0, 10, (128,)))


@pytest.mark.parametrize("n", [16, 128])
@pytest.mark.parametrize("impl", ["vmap", "loop"])
def test_fisher(benchmark, setup, impl, n):
    benchmark.group = f"fisher N_F={n}"
    net, closure = setup
    scores = benchmark.pedantic(FISHER[impl], args=(closure, list(net.parameters()), n), rounds=3, warmup_rounds=1)
    assert all(torch.isfinite(s).all() for s in scores)


@pytest.mark.parametrize("mask", ["fisher", "dynamic"])
def test_refresh_vs_step(benchmark, setup, mask):
    """One refresh of the mask alone; compare with test_step's SSAM rows (a refresh happens once per
    update_every steps, so its amortised share is refresh / (update_every * step))."""
    net, closure = setup
    opt = SSAM(net.parameters(), mask=mask, update_every=10**9, total_steps=10**9, lr=0.05)
    params = list(net.parameters())
    opt.step(closure)  # gradients in place for the drop criterion

    def refresh():
        if mask == "fisher":
            scores = FISHER["vmap"](closure, params, 16)
        else:
            scores = mk.dst_scores(opt.masks(), [p.grad for p in params], 0.5, "unstructured", opt.generator)
        return mk.project(scores, "unstructured", 0.5)

    benchmark.group = "refresh vs step"
    masks = benchmark.pedantic(refresh, rounds=5, warmup_rounds=1)
    assert mk.density(masks) == pytest.approx(0.5, abs=1e-4)


def test_ssam_step_without_refresh(benchmark, setup):
    net, closure = setup
    opt = SSAM(net.parameters(), update_every=10**9, lr=0.05)
    opt.step(closure)  # the one refresh, at step 0
    benchmark.group = "refresh vs step"
    benchmark.pedantic(opt.step, args=(closure,), rounds=5, warmup_rounds=1)
