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


# ----- the tests a verdict rests on (suite.claims) -------------------------------------------------------------
MAX_SEEDS = 1000  # the most seeds a power analysis proposes; beyond it, "more than" is the answer
POWER = 0.8  # the power a proposed n reaches, at the observed distance and paired spread
SIGN_FLIP_EXACT_UP_TO = 16  # seeds: up to here every sign pattern (2^16); beyond, 2^16 seeded random flips


def one_sided_p(d: Iterable[float], shift: float, alternative: str) -> float:
    """p of a one-sided one-sample t-test that mean(d) + shift is > 0 (``"greater"``) or < 0 (``"less"``);
    with no spread, 0 or 1 by the sign; with fewer than 2 values, 1 (nothing shown)."""
    x = [float(v) + shift for v in d]
    if len(x) < 2:
        return 1.0
    if max(x) == min(x):
        return 0.0 if (x[0] > 0 if alternative == "greater" else x[0] < 0) else 1.0
    return float(stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue)


def bound(d: Iterable[float], level: float, lower: bool) -> float:
    """One-sided confidence bound of the mean of ``d`` at confidence 1 − level (nan with fewer than 2 values)."""
    x = [float(v) for v in d]
    n = len(x)
    if n < 2:
        return math.nan
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = float(stats.t.ppf(1 - level, n - 1)) * sd / math.sqrt(n)
    return mean - half if lower else mean + half


def seeds_for_power(distance: float, sd: float, level: float, power: float = POWER) -> int | None:
    """The smallest n at which a one-sided one-sample t-test at ``level`` shows a true mean ``distance`` from
    its threshold with probability ``power``, at paired standard deviation ``sd`` (the noncentral t, through
    statsmodels' ``TTestPower``); 2 with no spread; None where no n up to ``MAX_SEEDS`` would (a distance of 0)."""
    from statsmodels.stats.power import TTestPower

    if not math.isfinite(distance) or distance == 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    effect = abs(distance) / sd
    import numpy as np

    n = np.arange(2, MAX_SEEDS + 1)
    reached = TTestPower().power(effect_size=effect, nobs=n, alpha=level, alternative="larger")
    return next((int(k) for k, p in zip(n, reached) if p >= power), None)


def sign_flip_p(d: Iterable[float], shift: float, alternative: str) -> float:
    """p of the paired permutation (sign-flip) test that mean(d) + shift is > 0 (``"greater"``) or < 0: the
    share of sign patterns whose mean is at least as extreme (scipy's ``permutation_test``; every pattern up to
    ``SIGN_FLIP_EXACT_UP_TO`` values, else 2^16 seeded random ones). It assumes only that a difference is as
    likely to be +x as −x under the null, not normality; its smallest p is 2^−n."""
    import numpy as np

    x = np.asarray([float(v) + shift for v in d])
    if len(x) < 2:
        return 1.0
    exact = len(x) <= SIGN_FLIP_EXACT_UP_TO
    result = stats.permutation_test((x,), lambda s, axis: np.mean(s, axis=axis), vectorized=True,
                                    permutation_type="samples", alternative=alternative,
                                    n_resamples=np.inf if exact else 2 ** 16, rng=None if exact else 0)
    return float(result.pvalue)
