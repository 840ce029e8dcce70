"""The statistics of the report, in one place: Student-t intervals of a mean and of seed-paired differences
(descriptive: what decides a claim is its verdict, ``suite.claims``), and the Pareto front of cost against
accuracy. Pure functions of numbers; the report (tables) and the plots (figures) both read them."""

from __future__ import annotations

import math
from collections.abc import Iterable

from scipy import stats


def t975(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(0.975, df))


def interval(values: Iterable[float]) -> tuple[int, float, float, float]:
    """(n, mean, sample std, half-width of the two-sided 95% t-interval of the mean); nan where undefined."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    mean = sum(v) / n
    if n == 1:
        return 1, mean, math.nan, math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return n, mean, std, t975(n - 1) * std / math.sqrt(n)


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> tuple[int, float, float, float]:
    """``interval`` of the per-seed differences ``values[s] - reference[s]`` over the seeds both have.

    Pairing removes what a seed does to every optimizer alike (initial weights, batch order), so a
    difference can be distinguishable from noise when the two unpaired intervals overlap."""
    return interval(values[s] - reference[s] for s in sorted(values) if s in reference)


def pareto_front(costs: Iterable[float], accuracies: Iterable[float], tolerance: float = 0.0) -> list[int]:
    """Indices of the points no other point beats, ordered by cost. A point beats another when its cost
    is no higher and its accuracy no lower, one strictly. Costs within ``tolerance`` (relative) of each
    other count as equal: a budget rounded to whole steps leaves runs of one budget a step apart, and
    stopping a step short must not put a run on the front."""
    points = list(zip(costs, accuracies))

    def cheaper(c2: float, c: float) -> bool:
        return c2 < c - tolerance * max(abs(c), abs(c2))

    def no_dearer(c2: float, c: float) -> bool:
        return c2 <= c + tolerance * max(abs(c), abs(c2))

    front = [
        i for i, (c, a) in enumerate(points)
        if not any(no_dearer(c2, c) and a2 >= a and (cheaper(c2, c) or a2 > a) for c2, a2 in points)
    ]
    return sorted(front, key=lambda i: points[i])
