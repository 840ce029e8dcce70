"""The one way hyper-parameters are checked: each helper returns the value or raises ``ValueError``
naming the parameter and the value, in the same words everywhere (optimizers and the suite's profiles)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _bound(x: float) -> str:
    return f"{x:g}"


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, high_open: bool = False,
) -> float:
    """A finite real number (not a bool) within [low, high]; ``low_open``/``high_open`` exclude the ends."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if ok:
        return value
    if low is not None and high is not None:
        what = f"a number in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    elif low is not None:
        what = f"a finite number {'>' if low_open else '>='} {_bound(low)}"
    elif high is not None:
        what = f"a finite number {'<' if high_open else '<='} {_bound(high)}"
    else:
        what = "a finite number"
    raise ValueError(f"{name} must be {what}, got {value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(choices)}")
    return value
