"""Seeds from a power analysis: how many seeds each optimizer of a confirmatory profile runs, planned from a
pilot table (``python -m suite plan --pilot cpu-noise --profile cpu-noise-confirm``).

For every comparison a claim makes on the planned profile (its optimizers, its declared margins, its families as
``suite.claims`` forms them there), the pilot gives the paired mean and standard deviation; the n planned is the
one at which the test the confirmatory table will run (one-sided t at α / (2m), m the comparisons of its family
there) reaches ``stats.POWER`` (80%) at the pilot's distance from the threshold and spread, through the
noncentral t (``stats.seeds_for_power``). An optimizer runs the most any of its comparisons needs, as subject or
as reference, at least ``claims.SIGN_FLIP_FROM`` (so a sign-flip p can be shown) and at most ``max_seeds``.
Where the pilot's mean sits on the threshold no n decides: the row says so and the optimizer gets
``max_seeds``. The observed mean stands in for the true one: a pilot of 3 seeds plans loosely, and the plan
says each row's pilot n.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from suite import claims, report, stats, store, sweep
from suite.config import ConfigError, Profile


def from_records(results_dir: Path, pilot: str, target: Profile, max_seeds: int, extra: tuple = (),
                 command: str = "") -> str:
    """The plan (``markdown``) of ``target`` from the records of the pilot table ``pilot`` under ``results_dir``
    (the latest per seed, as shipped), with the study's claims, ``extra`` and the target's own; bad input is a
    ``ConfigError`` of one line."""
    if not 1 <= max_seeds <= sweep.MAX_SEEDS:
        raise ConfigError(f"--max-seeds must be between 1 and {sweep.MAX_SEEDS}, got {max_seeds}")
    records = [r for _, r in store.iter_records(results_dir, pilot) if r is not None]
    if not records:
        raise ConfigError(f"no records of the pilot {pilot!r} under {results_dir}/runs/{pilot}")
    latest, _ = report.latest_per_seed(report.label_tables(records))
    rows = report.run_rows(latest)
    rows = rows[(rows["profile"] == pilot) & (rows["setting"] == "") & (rows["budget"] == "epochs")]
    optimizers = [r.optimizer for r in sweep.runs_for(target, check_device=False) if r.seed == target.first_seed]
    try:
        table = comparisons(rows, target, optimizers, [*claims.CLAIMS, *extra, *target.claims], claims.STUDY)
    except claims.MarginError as exc:
        raise ConfigError(str(exc)) from None
    return markdown(table, seeds(table, optimizers, max_seeds), pilot, target, claims.STUDY.alpha, max_seeds, command)


def comparisons(pilot: pd.DataFrame, target: Profile, optimizers: list[str], declared: list[Any],
                study: claims.Study) -> pd.DataFrame:
    """One row per comparison the target profile's table will judge: pilot n, mean, sd, δ, m, the level of each
    side, and the n for 80% power (None: no n decides)."""
    rows = []
    mine = [c for c in declared if c.budget == "epochs" and claims.judged_on(c, target.name) and c.metric in pilot]
    for members in claims.families(mine).values():
        compared = [(c, s) for c in members if c.reference in optimizers
                    for s in claims.subjects_of(c, optimizers)]
        level = claims.side_level(study.alpha, len(compared)) if compared else math.nan
        for c, s in compared:
            delta, source = claims.margin_of(c, pilot, target.name, study) if c.test == "keeps" else (0.0, "")
            d = claims.paired(pilot, c.metric, s, c.reference)
            sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
            distance = float(d.mean()) + delta if len(d) else math.nan
            needed = stats.seeds_for_power(distance, sd, level) if len(d) > 1 else None
            rows.append({"claim": c.name, "subject": s, "reference": c.reference, "pilot_n": len(d),
                         "pilot_mean": float(d.mean()) if len(d) else math.nan, "pilot_sd": sd, "margin": delta,
                         "margin_source": source, "family": len(compared), "level": level, "needed": needed,
                         "scale": c.scale})
    return pd.DataFrame(rows)


def seeds(table: pd.DataFrame, optimizers: list[str], max_seeds: int) -> dict[str, tuple[int, str]]:
    """Per optimizer of the profile: (seeds, why) — the most its comparisons need, floored and capped."""
    floor = claims.SIGN_FLIP_FROM
    out = {}
    for name in optimizers:
        mine = table[(table["subject"] == name) | (table["reference"] == name)] if len(table) else table
        if not len(mine):
            out[name] = (floor, "no comparison of its own: the floor")
            continue
        missing = mine[mine["pilot_n"] < 2]
        never = mine[(mine["pilot_n"] >= 2) & mine["needed"].isna()]
        known = [int(x) for x in mine["needed"].dropna()]
        if len(missing) or len(never):
            why = ("no pilot pairs" if len(missing) else "a pilot mean on the threshold: no n decides") + ", the cap"
            out[name] = (max_seeds, why)
        else:
            n = max(known)
            why = "the most its comparisons need" + (", the cap" if n > max_seeds else
                                                      ", the floor" if n < floor else "")
            out[name] = (min(max(n, floor), max_seeds), why)
    return out


def markdown(table: pd.DataFrame, planned: dict[str, tuple[int, str]], pilot: str, target: Profile,
             alpha: float, max_seeds: int, command: str) -> str:
    """The plan as committed beside the profile: the comparisons, the seeds per optimizer, the TOML block."""
    lines = [f"# Seeds for `{target.name}`, planned from the pilot `{pilot}`", "",
             f"Made with `{command}`. Each comparison's n gives {stats.POWER:.0%} power to a one-sided paired t-test "
             f"at α / (2m) (α = {alpha}, m the comparisons of its family on `{target.name}`) at the pilot's mean "
             "distance from the threshold (Δ + δ for keeps, Δ otherwise) and paired sd (noncentral t). An optimizer "
             f"runs the most any of its comparisons needs (as subject or reference), at least "
             f"{claims.SIGN_FLIP_FROM} and at most {max_seeds}.", ""]
    shown = []
    for r in table.itertuples():
        shown.append({"claim": f"`{r.claim}`", "optimizer": f"`{r.subject}`", "against": f"`{r.reference}`",
                      "pilot n": str(r.pilot_n), "pilot Δ": _num(r.pilot_mean * r.scale),
                      "pilot sd": _num(r.pilot_sd * r.scale).lstrip("+"),
                      "δ": _num(r.margin * r.scale).lstrip("+") if r.margin else "–",
                      "m": str(r.family), "level a side": f"{r.level:.4f}",
                      "n for 80% power": "never" if r.needed is None or pd.isna(r.needed) else str(int(r.needed))})
    if shown:
        lines += [pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True), ""]
    sources = sorted({s for s in table.get("margin_source", []) if s})
    lines += [f"δ: {s}." for s in sources] + ([""] if sources else [])
    lines += ["| optimizer | seeds | why |", "|---|---:|---|"]
    lines += [f"| `{name}` | {n} | {why} |" for name, (n, why) in planned.items()]
    lines += ["", "```toml", "[optimizer_seeds]"] + [f'"{name}" = {n}' for name, (n, _) in planned.items()]
    return "\n".join(lines + ["```", ""])


def _num(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"
