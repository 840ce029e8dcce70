"""Mask invariants: exact density per pattern, N:M in the weight's own layout, top scores kept, and
DST drop/grow that keeps the density and drops the smallest |g|."""

from __future__ import annotations

import re

import pytest
import torch

from ssam import masks as mk

SHAPES = [(8, 4, 3, 3), (8, 12), (8,), (5, 3, 2, 2), (6,)]  # conv, linear, bias, a stem-like conv, scale


def scores(seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) for s in shapes]


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.73, 1.0])
def test_unstructured_density_is_exact_and_keeps_the_largest(density):
    s = scores()
    masks = mk.project(s, "unstructured", density)
    total = sum(x.numel() for x in s)
    assert sum(int(m.sum()) for m in masks) == round(density * total)
    kept = torch.cat([x[m] for x, m in zip(s, masks)])
    dropped = torch.cat([x[~m] for x, m in zip(s, masks)])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()


@pytest.mark.parametrize("density", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_structured_takes_whole_tensors_by_mean_score_within_budget(density):
    s = scores(1)
    masks = mk.project(s, "structured", density)
    assert all(m.all() or not m.any() for m in masks), "the unit is a whole tensor"
    budget = round(density * sum(x.numel() for x in s))
    used = sum(int(m.sum()) for m in masks)
    assert used <= budget
    # replay the rule: in order of mean score, a tensor is taken exactly when it still fits
    running = 0
    for i in sorted(range(len(s)), key=lambda i: -s[i].mean().item()):
        fits = running + s[i].numel() <= budget
        assert bool(masks[i].all()) == fits
        running += s[i].numel() if fits else 0
    if 0 < density < 1:
        assert used > 0


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4), (1, 2), (4, 4)])
def test_nm_keeps_the_top_n_of_every_group_in_the_weights_own_layout(n, m):
    s = scores(2)
    masks = mk.project(s, "nm", 1 - n / m, n, m)
    for x, mask in zip(s, masks):
        if not mk.has_nm_groups(x, m):
            assert int(mask.sum()) == round(x.numel() * n / m)  # stated fallback: per-tensor top fraction
            continue
        # brute force over the weight's own index space: out, then in*kh*kw in row-major order
        for o in range(x.shape[0]):
            row, row_mask = x[o].flatten(), mask[o].flatten()
            for start in range(0, row.numel(), m):
                group, kept = row[start:start + m], row_mask[start:start + m]
                assert int(kept.sum()) == n
                assert set(torch.topk(group, n).indices.tolist()) == set(kept.nonzero().flatten().tolist())


def _official_transposed_nm(x: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The official conv N:M mask: top-n per m on the transposed (in*kh*kw, out) view, then reshaped
    back to (out, in, kh, kw) without transposing."""
    t = x.reshape(x.shape[0], -1).t()
    groups = t.reshape(t.shape[0], -1, m)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, torch.topk(groups, n, dim=-1).indices, True)
    return mask.reshape(t.shape).reshape(x.shape)


def test_nm_conv_mask_differs_from_the_official_transposed_one():
    x = scores(5, [(8, 4, 3, 3)])[0]
    ours = mk.project([x], "nm", 0.5, 2, 4)[0]
    theirs = _official_transposed_nm(x, 2, 4)
    assert not torch.equal(ours, theirs)
    # both keep 2 of every 4 consecutive entries in memory, but only ours keeps each group's top 2 scores
    groups, top2 = x.reshape(8, -1, 4), torch.topk(x.reshape(8, -1, 4), 2, dim=-1).indices
    best = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top2, True)
    assert torch.equal(ours.reshape(8, -1, 4), best)
    assert not torch.equal(theirs.reshape(8, -1, 4), best)


def test_the_nm_mask_is_2_4_along_the_forward_reduction_not_the_backward_one():
    """docs/ssam.md ("2:4 kernels and the implicit form"): a linear weight (out, in) is grouped along `in`,
    the reduction of the forward F.linear(x, W*M); the masked backward dX = dY @ (W*M) reduces over `out`,
    along which the mask is not 2:4, so a semi-structured kernel cannot serve that product."""
    mask = mk.project(scores(3, [(16, 32)]), "nm", 0.5, 2, 4)[0]
    along_in = mask.reshape(16, 8, 4).sum(-1)
    along_out = mask.t().reshape(32, 4, 4).sum(-1)
    assert (along_in == 2).all()
    assert not (along_out <= 2).all()


def test_bad_nm_is_refused():
    params = [torch.zeros(4, 3, 3, 3)]
    for n, m, message in [(3, 2, "n <= m, got n=3, m=2"), (0, 4, "n must be an integer >= 1, got 0"),
                          (-1, 4, "got -1"), (2, 0, "m must be an integer >= 1, got 0"), (2.0, 4, "got 2.0")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            mk.check_nm(params, n, m)
    with pytest.raises(ValueError, match="divides no weight's reduction dimension"):
        mk.check_nm(params, 2, 4)  # 27 is not a multiple of 4
    assert mk.check_nm([torch.zeros(4, 3, 3, 3), torch.zeros(8, 16), torch.zeros(8)], 2, 4) == [0, 2]


def test_structured_top_takes_whole_tensors_by_score_among_the_shortest_run_at_the_output_end():
    sizes = [40, 10, 30, 20, 5, 15]  # 120 weights; density 0.4 -> 48: the run from the end is 15+5+20+30 = 70
    means = [9.0, 8.0, 1.0, 3.0, 2.0, 4.0]  # the two best tensors lie below the run: never taken
    masks = mk.project([torch.full((n,), m) for n, m in zip(sizes, means)], "structured-top", 0.4)
    assert [bool(m.all()) for m in masks] == [False, False, False, True, True, True]  # 15 + 20 + 5 = 40 <= 48
    assert all(m.all() or not m.any() for m in masks)
    plain = mk.project([torch.full((n,), m) for n, m in zip(sizes, means)], "structured", 0.4)
    assert [bool(m.all()) for m in plain] == [True, False, False, False, True, False]  # 40 + 5: by score anywhere


@pytest.mark.parametrize("pattern", mk.PATTERNS)
@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_dst_keeps_the_pattern_and_density_and_drops_the_smallest_gradients(pattern, growth):
    density = 0.5
    gen = torch.Generator().manual_seed(0)
    masks = mk.project(scores(3), pattern, density)
    grads = scores(4)
    new = mk.project(mk.dst_scores(masks, grads, 0.4, pattern, gen, growth), pattern, density)
    assert sum(int(m.sum()) for m in new) == sum(int(m.sum()) for m in masks)
    if pattern == "nm":
        for m_old, m_new in zip(masks, new):
            if mk.has_nm_groups(m_old, 4):
                assert (m_new.reshape(m_new.shape[0], -1, 4).sum(-1) == 2).all()
    if pattern in ("structured", "structured-top"):
        assert all(m.all() or not m.any() for m in new)
        return
    old_flat, new_flat = torch.cat([m.flatten() for m in masks]), torch.cat([m.flatten() for m in new])
    mag = torch.cat([g.flatten() for g in grads])
    dropped, stayed = old_flat & ~new_flat, old_flat & new_flat
    assert dropped.any() and stayed.any()
    if pattern == "unstructured":
        assert int(dropped.sum()) == round(0.4 * int(old_flat.sum()))
        assert mag[dropped].max() <= mag[stayed].min()


def test_dst_growth_is_random_but_reproducible():
    masks = mk.project(scores(3), "unstructured", 0.5)
    grads = scores(4)
    a = mk.dst_scores(masks, grads, 0.3, "unstructured", torch.Generator().manual_seed(7))
    b = mk.dst_scores(masks, grads, 0.3, "unstructured", torch.Generator().manual_seed(7))
    c = mk.dst_scores(masks, grads, 0.3, "unstructured", torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_density_helper():
    assert mk.density([torch.tensor([True, False]), torch.tensor([True, True])]) == 0.75
