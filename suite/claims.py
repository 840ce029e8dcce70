"""Claims by declaration, and their verdicts from the records with corrected statistics.

A claim is data (``[[claims]]`` in ``suite/study.toml``, this study's choices; ``CLAIMS`` here): the statement
and who made it, the metric, the comparison (each subject against one reference, on seed-paired runs of one
table), the direction, and the test. The verdict of every comparison is one of *holds*, *fails* or
*inconclusive*, with its bound:

- ``keeps`` (keeps or beats): non-inferiority with a margin δ. Holds when the paired differences
  (subject − reference) are shown above −δ, fails when they are shown below −δ, else inconclusive.
- ``beats``: shown above 0 (higher is better); fails when shown below 0.
- ``flatter``: shown below 0 (lower is better: sharpness); fails when shown above 0.
- ``costs_less`` on time: the log of the time ratio per interleaved repeat of the cost command, shown below
  0; on FLOPs (counted exactly, not sampled): holds when fewer, fails otherwise, no test.

"Shown" is a one-sided paired t-test (scipy) at α = 0.05 whose p-values are adjusted by Holm's method
(statsmodels) within the claim's family — the claim's subjects in one table — so the chance of any false
"holds" or "fails" in a family stays at most α. Holm rather than Benjamini–Hochberg: a verdict is a
statement a reader acts on one by one, so the error to bound is any wrong verdict (the family-wise rate),
not the share of wrong ones; the families are small (1 to 19 comparisons), where Holm loses little power.
The bound shown is the simultaneous one (Bonferroni, one-sided at α / family size): "loses at most" the
negated lower bound. Where a verdict is inconclusive, ``seeds_needed`` is the n at which the observed mean
and paired standard deviation would decide it at that level (None where no n would: a mean on the margin).

A user's own claims: a TOML file of ``[[claims]]`` tables with the fields of ``Claim`` (``subjects`` a list
of optimizer names), given to ``python -m suite report --claims FILE``.
"""

from __future__ import annotations

import fnmatch
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TESTS = ("keeps", "beats", "flatter", "costs_less")
# subject groups, by registry origin: every SSAM variant as in the paper's code; every published method of the
# efficient-SAM field (issue 25); every variant this suite adds (cheaper ascents, other masks and forms)
PAPER_SSAM = "paper-ssam"
PUBLISHED = "published"
EXTENSIONS = "extensions"
GROUPS = (PAPER_SSAM, PUBLISHED, EXTENSIONS)
MAX_SEEDS_SHOWN = 1000  # beyond this, "seeds needed" says so rather than a number


@dataclass(frozen=True)
class Margin:
    """δ of a ``keeps`` claim, in the metric's own units: ``share`` of the reference's gain over ``over`` in
    the table (mean paired difference), but at least ``at_least`` (a gain that is negative or small leaves
    the floor)."""

    share: float = 0.0
    over: str | None = None
    at_least: float = 0.0
    why: str = ""

    def value(self, rows: pd.DataFrame, metric: str, reference: str) -> float:
        gain = 0.0
        if self.share and self.over is not None:
            d = _paired(rows, metric, reference, self.over)
            gain = float(d.mean()) if len(d) else 0.0
        return max(self.share * gain, self.at_least)


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    source: str  # who claims it (a paper), or "user"
    metric: str  # a key of the records' metrics; for costs_less: "time_per_step_s" or "flops_per_step"
    test: str  # one of TESTS
    subjects: tuple[str, ...]  # optimizer names, or GROUPS
    reference: str
    margin: Margin = field(default_factory=Margin)  # keeps only
    budget: str = "epochs"  # the table it is judged on (costs_less: the cost command's table)
    not_on: tuple[str, ...] = ()  # profiles it is not judged on (fnmatch globs); a study file says its default
    on: tuple[str, ...] = ()  # only these profiles (globs); a claim declared in a profile is judged on it alone
    scale: float = 1.0  # for display (test_acc: 100, points)
    unit: str = ""

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"claim {self.name}: test must be one of {', '.join(TESTS)}, got {self.test!r}")
        if not self.subjects or not self.reference:
            raise ValueError(f"claim {self.name}: needs subjects and a reference")


@dataclass(frozen=True)
class Study:
    """A study's choices (``suite/study.toml``, or the file ``SUITE_STUDY`` names): its claims, the time goal
    of the frontier, the cost table that prices each profile's step, and the profiles a claim is not judged on
    unless it says otherwise."""

    claims: tuple[Claim, ...]
    alpha: float  # each one-sided test's level, before Holm's correction within a family
    time_goal: float
    priced_by: dict[str, str]
    not_on: tuple[str, ...]


def load_study(path: Path | str) -> Study:
    """A study file: ``alpha``, ``time_goal``, ``not_on``, ``[priced_by]`` and ``[[claims]]`` (as ``load_claims`` reads
    them); a bad file is a ``ValueError`` naming what is wrong."""
    where = f"study file {str(path)!r}"
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    unknown = sorted(set(raw) - {"alpha", "time_goal", "not_on", "priced_by", "claims"})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: alpha, claims, not_on, priced_by, time_goal")
    not_on, priced_by, goal = raw.get("not_on", []), raw.get("priced_by", {}), raw.get("time_goal", 1.0)
    alpha = raw.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"{where}: alpha must be a number between 0 and 1, got {alpha!r}")
    if not (isinstance(not_on, list) and all(isinstance(x, str) for x in not_on)):
        raise ValueError(f"{where}: not_on must be a list of profile names or globs, got {not_on!r}")
    if not (isinstance(priced_by, dict) and all(isinstance(v, str) for v in priced_by.values())):
        raise ValueError(f"{where}: [priced_by] must map profile = cost table, got {priced_by!r}")
    if isinstance(goal, bool) or not isinstance(goal, (int, float)) or goal <= 0:
        raise ValueError(f"{where}: time_goal must be a number above 0, got {goal!r}")
    claims = parse_claims(raw.get("claims"), where, not_on=tuple(not_on))
    return Study(claims, float(alpha), float(goal), dict(priced_by), tuple(not_on))


def load_claims(path: Path | str) -> tuple[Claim, ...]:
    """A user's claims: ``[[claims]]`` tables in a TOML file (``margin`` a number, or a table with the
    fields of ``Margin``). A bad file is a ``ValueError`` naming what is wrong."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"claims file {str(path)!r}: {exc}") from None
    return parse_claims(raw.get("claims"), f"claims file {str(path)!r}")


def parse_claims(tables: Any, where: str, on: tuple[str, ...] = (), not_on: tuple[str, ...] | None = None
                 ) -> tuple[Claim, ...]:
    """``[[claims]]`` tables (from a claims file, or a profile's: then ``on`` names the profile, and they are
    judged on its tables alone). A table without ``not_on`` gets ``not_on`` (None: the study's). Bad tables are
    a ``ValueError`` naming ``where`` and what is wrong."""
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: expected [[claims]] tables")
    known = set(Claim.__dataclass_fields__) - {"on"}
    claims = []
    for t in tables:
        unknown = sorted(set(t) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} in [[claims]]; allowed: {', '.join(sorted(known))}")
        t = dict(t, source=t.get("source", "user"), subjects=tuple(t.get("subjects", ())), on=on)
        default = () if on else (not_on if not_on is not None else STUDY.not_on)
        t["not_on"] = tuple(t.get("not_on", default))
        margin = t.get("margin", 0.0)
        try:
            t["margin"] = Margin(**margin) if isinstance(margin, dict) else Margin(at_least=float(margin))
            claims.append(Claim(**t))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(claims)


# The study the report judges unless told otherwise: this suite's (suite/study.toml), or the file SUITE_STUDY names
STUDY_FILE = Path(os.environ.get("SUITE_STUDY") or Path(__file__).with_name("study.toml"))
try:
    STUDY = load_study(STUDY_FILE)
except ValueError as exc:  # a bad SUITE_STUDY is bad input: one line and exit 2, before any command starts
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
CLAIMS: tuple[Claim, ...] = STUDY.claims
ALPHA = STUDY.alpha


# ----- the statistics -----------------------------------------------------------------------------------------
def _paired(rows: pd.DataFrame, metric: str, subject: str, reference: str) -> pd.Series:
    """subject − reference per seed, over the seeds both have a finite value for."""
    if metric not in rows:
        return pd.Series(dtype=float)
    wide = rows.pivot_table(index="seed", columns="optimizer", values=metric, aggfunc="last")
    if subject not in wide or reference not in wide:
        return pd.Series(dtype=float)
    d = (wide[subject] - wide[reference]).dropna()
    return d[d.map(math.isfinite)]


def one_sided_p(d: Iterable[float], shift: float, alternative: str) -> float:
    """p of a one-sided one-sample t-test that mean(d) + shift is > 0 (``"greater"``) or < 0 (``"less"``);
    with no spread, 0 or 1 by the sign; with fewer than 2 values, 1 (nothing shown)."""
    from scipy import stats

    x = [v + shift for v in d]
    if len(x) < 2:
        return 1.0
    if max(x) == min(x):
        return 0.0 if (x[0] > 0 if alternative == "greater" else x[0] < 0) else 1.0
    return float(stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue)


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    return list(multipletests(pvalues, alpha=alpha, method="holm")[1]) if pvalues else []


def holm_levels(pvalues: list[float], alpha: float = ALPHA) -> list[float]:
    """The level each comparison is tested at in Holm's step-down: α / (m − k + 1) at its rank k where it is
    rejected; for the rest, the level of the first step not rejected. A one-sided bound at that level
    excludes the threshold exactly when Holm rejects, so a verdict and its bound never disagree."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    levels, stop = [0.0] * m, None
    for k, i in enumerate(order):
        step = alpha / (m - k)
        if stop is None and pvalues[i] >= step:
            stop = step
        levels[i] = stop if stop is not None else step
    return levels


def bound(d: pd.Series, level: float, lower: bool) -> float:
    """One-sided confidence bound of mean(d) at confidence 1 − level (nan with fewer than 2 values)."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return math.nan
    half = float(stats.t.ppf(1 - level, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return float(d.mean()) - half if lower else float(d.mean()) + half


def seeds_needed(mean: float, sd: float, level: float) -> int | None:
    """The n at which a one-sided t-test of a mean this far from its threshold, at this paired spread,
    decides at ``level``; None where no n would (a mean on the threshold)."""
    from scipy import stats

    if mean == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS_SHOWN + 1):
        if float(stats.t.ppf(1 - level, n - 1)) * sd / math.sqrt(n) < abs(mean):
            return n
    return None


# ----- verdicts -------------------------------------------------------------------------------------------
def subjects_of(claim: Claim, present: Iterable[str]) -> list[str]:
    """The claim's subjects among the optimizers of a table, in table order: a group by the registry's fields
    (``paper-ssam``: family SSAM-F or SSAM-D as in the paper's code; ``published``, ``extensions``: by origin)."""
    present = list(present)
    wanted = set()
    for s in claim.subjects:
        if s == PAPER_SSAM:
            wanted |= {n for n in present
                       if _entry(n, "family") in ("SSAM-F", "SSAM-D") and _entry(n, "origin") == "paper"}
        elif s == PUBLISHED:
            wanted |= {n for n in present if _entry(n, "origin") == "published"}
        elif s == EXTENSIONS:
            wanted |= {n for n in present if _entry(n, "origin") == "extension"}
        else:
            wanted.add(s)
    return [n for n in present if n in wanted and n != claim.reference]


def _entry(name: str, field: str) -> str:
    """A registry entry's field; "" for a name not registered now (a record of an optimizer since removed)."""
    try:
        return getattr(registry.get(name), field)
    except KeyError:
        return ""


def judge(claim: Claim, rows: pd.DataFrame, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """The claim's verdicts on one table's runs (``rows``: one row per optimizer and seed, with the
    metric), one per subject present beside the reference; [] where the claim does not apply."""
    names = list(dict.fromkeys(rows["optimizer"])) if len(rows) else []
    subjects = subjects_of(claim, names)
    if claim.reference not in names or not subjects:
        return []
    if claim.test == "costs_less" and claim.metric == "flops_per_step":
        return [_exact_cost(claim, rows, s) for s in subjects]
    delta = claim.margin.value(rows, claim.metric, claim.reference) if claim.test == "keeps" else 0.0
    pair = _log_ratio if claim.test == "costs_less" else _paired  # time: the log ratio per repeat
    diffs = {s: d for s in subjects if len(d := pair(rows, claim.metric, s, claim.reference))}
    if not diffs:  # the metric was not measured here (sharpness of unmeasured runs)
        return []
    higher = claim.test in ("keeps", "beats")  # the direction that supports the claim
    shift = delta if claim.test == "keeps" else 0.0
    raw_hold = [one_sided_p(d, shift, "greater" if higher else "less") for d in diffs.values()]
    raw_fail = [one_sided_p(d, shift, "less" if higher else "greater") for d in diffs.values()]
    p_hold, p_fail = holm(raw_hold, alpha), holm(raw_fail, alpha)
    hold_levels, fail_levels = holm_levels(raw_hold, alpha), holm_levels(raw_fail, alpha)
    out = []
    for k, (s, d) in enumerate(diffs.items()):
        verdict = "holds" if p_hold[k] < alpha else "fails" if p_fail[k] < alpha else "inconclusive"
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        failing = verdict == "fails"  # its bound is the one on the failing side
        level = fail_levels[k] if failing else hold_levels[k]
        needed = seeds_needed(mean + shift, sd, level) if verdict == "inconclusive" and len(d) > 1 else None
        out.append({"claim": claim.name, "subject": s, "reference": claim.reference, "metric": claim.metric,
                    "test": claim.test, "n": len(d), "mean": mean, "sd": sd, "margin": delta,
                    "bound": bound(d, level, lower=higher != failing), "bound_side": "fails" if failing else "holds",
                    "p_holds": p_hold[k], "p_fails": p_fail[k], "family": len(diffs), "verdict": verdict,
                    "seeds_needed": needed})
    return out


def _log_ratio(rows: pd.DataFrame, metric: str, subject: str, reference: str) -> pd.Series:
    logged = rows.assign(**{metric: rows[metric].map(lambda v: math.log(v) if v and v > 0 else math.nan)})
    return _paired(logged, metric, subject, reference)


def _exact_cost(claim: Claim, rows: pd.DataFrame, subject: str) -> dict[str, Any]:
    own = rows.loc[rows["optimizer"] == subject, claim.metric].median()
    ref = rows.loc[rows["optimizer"] == claim.reference, claim.metric].median()
    ratio = own / ref
    return {"claim": claim.name, "subject": subject, "reference": claim.reference, "metric": claim.metric,
            "test": "costs_less (exact)", "n": 1, "mean": math.log(ratio), "sd": 0.0, "margin": 0.0,
            "bound": math.nan, "bound_side": "holds", "p_holds": math.nan, "p_fails": math.nan, "family": 1,
            "verdict": "holds" if ratio < 1 else "fails", "seeds_needed": None}


def _judged_on(claim: Claim, profile: str) -> bool:
    if claim.on and not any(fnmatch.fnmatchcase(profile, g) for g in claim.on):
        return False
    return not any(fnmatch.fnmatchcase(profile, g) for g in claim.not_on)


def verdicts(runs: pd.DataFrame, cost: dict[str, pd.DataFrame] | None = None,
             claims: Iterable[Claim] = CLAIMS, alpha: float = ALPHA) -> pd.DataFrame:
    """Every claim on every table it applies to. ``runs``: one row per run (``report.run_rows`` of the
    latest record per seed) with profile, setting, budget, optimizer, seed and the metrics; ``cost``: the
    cost command's repeats (``cost-repeats.csv``) by the name the table is shown under."""
    rows = []
    claims = list(claims)
    if len(runs):
        finished = runs[runs.get("status", "finished") == "finished"] if "status" in runs else runs
        for (profile, setting, budget), table in finished.groupby(["profile", "setting", "budget"], sort=False):
            for claim in claims:
                if claim.budget == budget and _judged_on(claim, profile):
                    rows += [{"table": profile, "setting": setting, **v} for v in judge(claim, table, alpha)]
    for name, repeats in (cost or {}).items():
        table = repeats.rename(columns={"repeat": "seed"})
        for claim in claims:
            if claim.budget == "cost" and (not claim.on or any(fnmatch.fnmatchcase(name, g) for g in claim.on)):
                rows += [{"table": name, "setting": "", **v} for v in judge(claim, table, alpha)]
    return pd.DataFrame(rows)


# ----- the verdict table ----------------------------------------------------------------------------------
def _fmt(claim: Claim, value: float, ratio: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if ratio:
        return f"×{math.exp(value):.3f}"
    return f"{value * claim.scale:+.2f}" if claim.scale != 1.0 else f"{value:+.3g}"


def verdict_columns(claim: Claim, v: pd.Series) -> dict[str, str]:
    """One verdict as the verdict table (and the frontier) shows it."""
    ratio = claim.test == "costs_less"
    side = "≥" if (claim.test in ("keeps", "beats")) == (v["bound_side"] == "holds") else "≤"
    bound = _fmt(claim, v["bound"], ratio)
    if claim.test == "keeps" and v["bound_side"] == "holds" and not math.isnan(v["bound"]):  # what it may lose
        lost = max(0.0, -v["bound"]) * claim.scale
        bound = f"{side} {bound} (loses at most {lost:.2f})"
    elif bound != "–":
        bound = f"{side} {bound}"
    p = v["p_fails"] if v["verdict"] == "fails" else v["p_holds"]
    needed = v["seeds_needed"]
    return {"claim": f"`{claim.name}`", "optimizer": f"`{v['subject']}`", "against": f"`{v['reference']}`",
            "n": str(int(v["n"])), "m": str(int(v["family"])), "Δ (mean)": _fmt(claim, v["mean"], ratio),
            "bound": bound,
            "δ": f"{v['margin'] * claim.scale:.2f}" if claim.test == "keeps" else "–",
            "p (Holm)": "exact" if "exact" in v["test"] else "–" if math.isnan(p) else f"{p:.3f}",
            "verdict": f"**{v['verdict']}**" if v["verdict"] != "inconclusive" else "inconclusive",
            "n to decide": "" if v["verdict"] != "inconclusive" else "no spread at n = 1" if v["n"] < 2 else
            (f"{int(needed)}" if needed is not None and not pd.isna(needed) else f"> {MAX_SEEDS_SHOWN} or never")}


def markdown(table: pd.DataFrame, claims: Iterable[Claim] = CLAIMS, alpha: float = ALPHA) -> str:
    """The verdicts as Markdown: a table per results table, then what each claim and column means."""
    if table is None or not len(table):
        return ""
    by_name = {c.name: c for c in claims}
    lines = ["## Verdicts", ""]
    for (name, setting), g in table.groupby(["table", "setting"], sort=False):
        where = f"`{name}`" + (f" with {setting}" if setting else "")
        lines += [f"### Verdicts — {where}", "",
                  pd.DataFrame([verdict_columns(by_name[v["claim"]], v) for _, v in g.iterrows()])
                  .to_markdown(index=False, disable_numparse=True), ""]
    used = [c for c in claims if c.name in set(table["claim"])]
    lines += [f"Each claim is tested on seed-paired runs of one table (n: the seeds both optimizers have; for time, "
              f"the cost command's interleaved repeats; m: the comparisons in the claim's family there) "
              f"with a one-sided t-test at α = {alpha}, its p-values adjusted "
              "by Holm's method within the claim's family (its optimizers in that table), so the chance of any wrong "
              "verdict in a family is at most α. **holds** / **fails**: shown at that level; inconclusive: neither, "
              "with the seeds (or repeats) that would decide it at the observed mean and paired spread. Bound: the "
              "one-sided confidence bound of the mean difference (optimizer − reference; for time, of the ratio) at "
              "the level Holm tested it at (α / the comparisons left at its step), on the side that decided: it "
              "excludes the claim's threshold exactly where the verdict is holds or fails. FLOPs are counted, not "
              "sampled: exact.", ""]
    for c in used:
        what = {"keeps": "non-inferiority: holds when the difference is shown above −δ, fails when shown below −δ",
                "beats": "holds when the difference is shown above 0, fails when shown below 0",
                "flatter": "holds when the difference is shown below 0 (flatter), fails when shown above 0",
                "costs_less": "holds when the time ratio is shown below 1 (FLOPs: when fewer), fails when above",
                }[c.test]
        margin = f" δ: {c.margin.why}." if c.test == "keeps" and c.margin.why else ""
        lines.append(f"- `{c.name}` ({c.source}): {c.statement}. Metric `{c.metric}`, {what}.{margin}")
    return "\n".join(lines) + "\n"


def findings(table: pd.DataFrame, claims: Iterable[Claim] = CLAIMS, after: dict[str, str] | None = None) -> str:
    """The README's findings block: a line per results table, and per claim how many of its comparisons
    hold, fail and are inconclusive, at which n, with the seeds that would decide the inconclusive ones;
    ``after``: a sentence to end a table's line with (the frontier's time goal). Generated from the records
    by ``publish``; a test compares the README with it."""
    if table is None or not len(table):
        return "No published verdicts yet.\n"
    by_name = {c.name: c for c in claims}
    lines = []
    for name in sorted(set(table["table"])):
        parts = []
        for claim_name, g in table[table["table"] == name].groupby("claim", sort=False):
            c, counts = by_name[claim_name], g["verdict"].value_counts()
            said = ", ".join(f"{counts[v]}/{len(g)} {w}" for v, w in (("holds", "hold"), ("fails", "fail"),
                                                                        ("inconclusive", "inconclusive"))
                             if counts.get(v, 0))
            ns = sorted(set(g["n"].astype(int)))
            n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
            margin = f", δ {g['margin'].iloc[0] * c.scale:.2f}{c.unit}" if c.test == "keeps" else ""
            needed = [int(x) for x in g.loc[g["verdict"] == "inconclusive", "seeds_needed"].dropna()]
            decide = "" if not needed else f"; {min(needed)}" + (f"–{max(needed)}" if max(needed) > min(needed)
                                                                   else "") + " would decide"
            parts.append(f"`{claim_name}` {said} ({n}{margin}{decide})")
        lines.append(f"- `{name}`: " + "; ".join(parts) + "." + (f" {after[name]}" if name in (after or {}) else ""))
    return "\n".join(lines) + "\n"
