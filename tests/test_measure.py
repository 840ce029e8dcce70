"""FLOP counting: a grouped convolution's backward is priced per group, so vmap's per-example
gradients cost what the batch-of-one loop costs."""

from __future__ import annotations

import torch
from helpers import tiny_model, toy_batch

from baselines.core import ModelClosure
from ssam.fisher import FISHER
from suite.measure import flop_counter


def backward_flops(groups: int) -> int:
    conv = torch.nn.Conv2d(8, 8, 3, groups=groups, bias=False)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = conv(x)
    with flop_counter() as counter:
        out.sum().backward()
    return counter.get_total_flops()


def test_grouped_convolution_backward_is_counted_per_group():
    forward = 2 * 2 * 8 * 8 * 3 * 3 * 4 * 4  # 2 per multiply-add x batch x c_out x c_in x kernel x output pixels
    assert backward_flops(1) == 2 * forward  # input- and weight-gradient, each what the forward costs
    assert backward_flops(4) == 2 * forward // 4


def test_vectorised_fisher_costs_what_the_loop_costs():
    model = tiny_model()
    closure = ModelClosure(model, *toy_batch(n=8))
    counts = []
    for impl in ("vmap", "loop"):
        with flop_counter() as counter:
            FISHER[impl](closure, list(model.parameters()), 8)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_the_commit_is_read_once_per_process_so_a_checkout_moving_mid_sweep_does_not_relabel_runs(monkeypatch):
    from suite import measure

    first = measure.git_commit()

    def read_again(*args, **kwargs):
        raise AssertionError("git read again")

    monkeypatch.setattr(measure.subprocess, "run", read_again)
    assert measure.git_commit() == first
