"""Binary masks over a list of parameters: which weights SSAM perturbs.

``project(scores, pattern, density, n, m)`` turns per-weight scores into a mask of a pattern:

- ``unstructured``: global top-k over all weights, ``k = round(density * total)``: exact.
- ``structured``: the unit is a whole tensor (as in the paper's code). Tensors are ranked by mean
  score and each is taken if it still fits in ``k``: the density never exceeds the target. (The
  official code instead adds tensors until ``k`` is reached, overshooting by up to one tensor.)
- ``structured-top`` (this suite's extension, cost-aware): as ``structured``, but only among the
  tensors nearest the output — the shortest run at the end of the parameter list (forward order for
  the suite's models and torchvision's ResNets) that holds ``k`` weights. Every tensor below it stays
  unperturbed, so with ``normalise="masked"`` the first backward stops there (``SSAM.not_perturbed``).
- ``nm``: in every group of ``m`` consecutive weights along the reduction dimension, the ``n`` with
  the highest scores. A weight of shape ``(out, ...)`` is grouped along its own row-major layout of
  ``in * kh * kw`` (conv) or ``in`` (linear): no transposed view. Tensors without such groups — 1-D
  parameters (biases, norm scales) and weights whose reduction length is not a multiple of ``m``
  (a CIFAR ResNet's 3-channel stem: 3*3*3 = 27) — keep the top ``round(numel * n / m)`` entries of
  the tensor, so the density is ``n / m`` everywhere.

SSAM-D's drop-and-grow (``dst_scores``) is expressed as scores for the same projection, so every
pattern keeps its exact density after an update.
"""

from __future__ import annotations

import torch

from baselines.core import check_int

PATTERNS = ("unstructured", "structured", "structured-top", "nm")
Masks = list[torch.Tensor]


def has_nm_groups(p: torch.Tensor, m: int) -> bool:
    return p.dim() >= 2 and p[0].numel() % m == 0


def check_nm(params: list[torch.Tensor], n: int, m: int) -> list[int]:
    """N:M must be 0 < n <= m, and m must divide the reduction dimension of at least one weight.
    Returns the indices of the tensors that fall back to a per-tensor top fraction."""
    check_int("n", n)
    check_int("m", m)
    if n > m:
        raise ValueError(f"N:M needs n <= m, got n={n!r}, m={m!r}")
    weights = [p for p in params if p.dim() >= 2]
    if weights and not any(has_nm_groups(p, m) for p in weights):
        sizes = sorted({p[0].numel() for p in weights})
        raise ValueError(f"N:M with m={m} divides no weight's reduction dimension (sizes {sizes})")
    return [i for i, p in enumerate(params) if not has_nm_groups(p, m)]


def project(scores: list[torch.Tensor], pattern: str, density: float, n: int = 2, m: int = 4) -> Masks:
    if pattern == "unstructured":
        return _unstructured(scores, density)
    if pattern in ("structured", "structured-top"):
        return _structured(scores, density, top=pattern == "structured-top")
    if pattern == "nm":
        return [_nm(s, n, m) if has_nm_groups(s, m) else _top_fraction(s, n / m) for s in scores]
    raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def _unstructured(scores: list[torch.Tensor], density: float) -> Masks:
    flat = torch.cat([s.flatten().float() for s in scores])
    k = round(density * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    return _unflatten(keep, scores)


def _structured(scores: list[torch.Tensor], density: float, top: bool = False) -> Masks:
    budget = round(density * sum(s.numel() for s in scores))
    first, held = len(scores), 0
    while top and first > 0 and held < budget:  # the shortest run at the output end that holds the budget
        first -= 1
        held += scores[first].numel()
    unit = torch.stack([s.float().mean().cpu() for s in scores])
    keep, used = [False] * len(scores), 0
    for i in torch.argsort(unit, descending=True, stable=True).tolist():
        if i >= (first if top else 0) and used + scores[i].numel() <= budget:
            keep[i], used = True, used + scores[i].numel()
    return [torch.full_like(s, k, dtype=torch.bool) for s, k in zip(scores, keep)]


def _nm(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = score.reshape(score.shape[0], -1, m)  # the weight's own layout: rows, then groups of m
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, torch.topk(groups.float(), n, dim=-1).indices, True)
    return mask.reshape(score.shape)


def _top_fraction(score: torch.Tensor, fraction: float) -> torch.Tensor:
    return _unstructured([score], fraction)[0]


def _unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> Masks:
    out, start = [], 0
    for s in like:
        out.append(flat[start : start + s.numel()].view(s.shape))
        start += s.numel()
    return out


def dst_scores(
    masks: Masks, grads: list[torch.Tensor], drop_rate: float, pattern: str, gen: torch.Generator,
    growth: str = "random",
) -> list[torch.Tensor]:
    """Scores whose projection drops the weakest active weights and grows as many new ones.

    Active weights with the smallest ``|g|`` (units with the smallest mean ``|g|`` when structured)
    are dropped: a fraction ``drop_rate`` of the active ones. Kept ones score +inf, dropped -inf,
    inactive ones a random number (``growth="random"``) or their ``|g|`` (``"gradient"``), so the
    projection re-fills each group or budget from the inactive weights and a dropped weight comes
    back only where nothing else can fill its place.
    """
    mags = [torch.zeros_like(mk, dtype=torch.float) if g is None else g.abs().float() for g, mk in zip(grads, masks)]
    if pattern in ("structured", "structured-top"):
        active = [i for i, mk in enumerate(masks) if mk.all()]
        n_drop = round(drop_rate * len(active))
        ranked = sorted(active, key=lambda i: mags[i].mean().item())
        dropped_units = set(ranked[:n_drop])
        dropped = [torch.full_like(mk, i in dropped_units) for i, mk in enumerate(masks)]
    else:
        flat_mask = torch.cat([mk.flatten() for mk in masks])
        flat_mag = torch.cat([g.flatten() for g in mags])
        n_drop = round(drop_rate * int(flat_mask.sum()))
        candidates = torch.where(flat_mask, flat_mag, torch.full_like(flat_mag, float("inf")))
        flat_dropped = torch.zeros_like(flat_mask)
        if n_drop:
            flat_dropped[torch.topk(candidates, n_drop, largest=False, sorted=False).indices] = True
        dropped = _unflatten(flat_dropped, masks)
    out = []
    for mk, drop, mag in zip(masks, dropped, mags):
        grow = torch.rand(mk.shape, generator=gen).to(mk.device) if growth == "random" else mag
        score = torch.where(mk & ~drop, torch.full_like(mag, float("inf")), grow)
        out.append(torch.where(drop, torch.full_like(mag, float("-inf")), score))
    return out


def density(masks: Masks) -> float:
    total = sum(mk.numel() for mk in masks)
    return sum(int(mk.sum()) for mk in masks) / total if total else 0.0
