"""Claims by declaration, and their verdicts from the records under a protocol a reviewer can check.

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

**The error rate.** A family is the comparisons a reader acts on together: a claim's subjects in one table, or
every claim that names the same ``family`` (the three keeps-SAM claims: the frontier ranks all their subjects,
so they are corrected as one). With m comparisons in a family, each side of each comparison is a one-sided
paired t-test (scipy) at α / (2m) (Bonferroni, both sides): the chance of any wrong verdict in the family, a
false *holds* or a false *fails*, is at most α (``tests/test_claims.py`` simulates it at the margin). The
bound shown is the one-sided bound at that same level, on the side that decided (the holds side where
nothing did): every bound of a family holds together with probability at least 1 − α, so "loses at most"
is simultaneous, and a bound excludes the threshold exactly where its verdict decides. Bonferroni rather
than Holm's step-down: Holm's levels vary with the other comparisons' p, so its bounds are not simultaneous
and a verdict would move when a seed of another method is dropped; its extra power comes only where many
comparisons are decided, which the families here rarely have.

**The margin.** δ of a ``keeps`` claim is declared before the data it judges: a number with its source (a
pilot table named by profile and commits, or a paper's table), in the study's ``[[margins]]`` for the
profiles it names. A claim's own ``margin`` (a share of the reference's gain in the same table) is computed
from the data it judges: allowed only on an exploratory table, and said so. A table is confirmatory when the
study lists its profile under ``confirmatory`` (fresh seeds planned from a pilot); every other is exploratory.

**Robustness beside every decided verdict**: the paired sign-flip (permutation) p at the same level, which
assumes no normality, where n ≥ ``SIGN_FLIP_FROM``; and leave-one-seed-out stability: the verdict with each
seed dropped in turn at the same level. A verdict that one dropped seed changes is *fragile*. For an
inconclusive one, ``seeds_needed`` is the n that gives 80% power (noncentral t) at the observed distance from
the threshold and paired spread, at the level the family tests at (None where no n up to 1000 would).

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

from suite import registry, stats, strata

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
MAX_SEEDS_SHOWN = stats.MAX_SEEDS  # beyond this, "seeds needed" says so rather than a number
SIGN_FLIP_FROM = 6  # seeds: below this the sign-flip p cannot go under 2^-5 and is not shown
EXPLORATORY, CONFIRMATORY = "exploratory", "confirmatory"


class MarginError(ValueError):
    """A keeps claim on a confirmatory table whose margin was not declared before its data."""


@dataclass(frozen=True)
class Margin:
    """δ of a ``keeps`` claim as the claim states it, in the metric's own units: a number (``at_least``, with
    no ``share``), or ``share`` of the reference's gain over ``over`` in the table judged (mean paired
    difference), but at least ``at_least``. The second is computed from the data it judges: the report takes
    it on an exploratory table only (a confirmatory one needs a declared margin, ``DeclaredMargin``)."""

    share: float = 0.0
    over: str | None = None
    at_least: float = 0.0
    why: str = ""

    @property
    def from_data(self) -> bool:
        return bool(self.share and self.over is not None)

    def value(self, rows: pd.DataFrame, metric: str, reference: str) -> float:
        gain = 0.0
        if self.from_data:
            d = paired(rows, metric, reference, self.over)
            gain = float(d.mean()) if len(d) else 0.0
        return max(self.share * gain, self.at_least)


@dataclass(frozen=True)
class DeclaredMargin:
    """δ for ``claims`` (names or globs) on the tables of ``on`` (profile names or globs), declared before any
    of their runs: ``value`` in the metric's units, ``source`` (where the number comes from: a pilot table by
    profile and commits, or a paper's table) and ``declared`` (when, at which commit)."""

    claims: tuple[str, ...]
    on: tuple[str, ...]
    value: float
    source: str
    declared: str

    def applies(self, claim: str, profile: str) -> bool:
        return (any(fnmatch.fnmatchcase(claim, g) for g in self.claims)
                and any(fnmatch.fnmatchcase(profile, g) for g in self.on))


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
    family: str = ""  # claims naming one family are corrected together in a table (default: the claim alone)

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"claim {self.name}: test must be one of {', '.join(TESTS)}, got {self.test!r}")
        if not self.subjects or not self.reference:
            raise ValueError(f"claim {self.name}: needs subjects and a reference")

    @property
    def family_name(self) -> str:
        return self.family or self.name


@dataclass(frozen=True)
class Study:
    """A study's choices (``suite/study.toml``, or the file ``SUITE_STUDY`` names): its claims, the family-wise
    error rate, the margins declared before the data, the tables that are confirmatory, the time goal of the
    frontier, the cost table that prices each profile's step, and the profiles a claim is not judged on unless
    it says otherwise."""

    claims: tuple[Claim, ...]
    alpha: float  # the chance of any wrong verdict (holds or fails) in a family, both sides together
    time_goal: float
    priced_by: dict[str, str]
    not_on: tuple[str, ...]
    confirmatory: tuple[str, ...] = ()  # profiles (globs) whose tables are confirmatory
    margins: tuple[DeclaredMargin, ...] = ()
    # profile glob -> its table's own time goal (the first that matches), where it differs from ``time_goal``
    time_goals: tuple[tuple[str, float], ...] = ()

    def goal_for(self, profile: str) -> float:
        """The time goal of ``profile``'s table: its own (``[time_goals]``), else the study's ``time_goal``."""
        return next((v for g, v in self.time_goals if fnmatch.fnmatchcase(profile, g)), self.time_goal)

    def kind(self, profile: str) -> str:
        return CONFIRMATORY if any(fnmatch.fnmatchcase(profile, g) for g in self.confirmatory) else EXPLORATORY

    def declared_margin(self, claim: str, profile: str) -> DeclaredMargin | None:
        return next((m for m in self.margins if m.applies(claim, profile)), None)


STUDY_KEYS = ("alpha", "claims", "confirmatory", "margins", "not_on", "priced_by", "time_goal", "time_goals")


def load_study(path: Path | str) -> Study:
    """A study file: ``alpha``, ``time_goal``, ``not_on``, ``confirmatory``, ``[priced_by]``, ``[[margins]]`` and
    ``[[claims]]`` (as ``load_claims`` reads them); a bad file is a ``ValueError`` naming what is wrong."""
    where = f"study file {str(path)!r}"
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(STUDY_KEYS)}")
    not_on, priced_by, goal = raw.get("not_on", []), raw.get("priced_by", {}), raw.get("time_goal", 1.0)
    alpha, confirmatory = raw.get("alpha", 0.05), raw.get("confirmatory", [])
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"{where}: alpha must be a number between 0 and 1, got {alpha!r}")
    for key, value in (("not_on", not_on), ("confirmatory", confirmatory)):
        if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise ValueError(f"{where}: {key} must be a list of profile names or globs, got {value!r}")
    if not (isinstance(priced_by, dict) and all(isinstance(v, str) for v in priced_by.values())):
        raise ValueError(f"{where}: [priced_by] must map profile = cost table, got {priced_by!r}")
    goals = raw.get("time_goals", {})
    for name, value in (("time_goal", goal), *((f"[time_goals] {k}", v) for k, v in
                                              (goals.items() if isinstance(goals, dict) else [("", None)]))):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{where}: {name} must be a number above 0, got {value!r}")
    claims = parse_claims(raw.get("claims"), where, not_on=tuple(not_on))
    margins = parse_margins(raw.get("margins", []), where)
    return Study(claims, float(alpha), float(goal), dict(priced_by), tuple(not_on), tuple(confirmatory), margins,
                 tuple((k, float(v)) for k, v in goals.items()))


def parse_margins(tables: Any, where: str) -> tuple[DeclaredMargin, ...]:
    """``[[margins]]`` tables: ``claims`` and ``on`` (lists of names or globs), ``value`` (a number above 0),
    ``source`` and ``declared`` (non-empty text: a margin without its source is not declared)."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: expected [[margins]] tables")
    out, known = [], set(DeclaredMargin.__dataclass_fields__)
    for t in tables:
        unknown, missing = sorted(set(t) - known), sorted(known - set(t))
        if unknown or missing:
            wrong = f"unknown key {unknown[0]!r}" if unknown else f"needs {missing[0]!r}"
            raise ValueError(f"{where}: [[margins]] {wrong}; fields: {', '.join(sorted(known))}")
        value = t["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{where}: [[margins]] value must be a number above 0, got {value!r}")
        lists = [t[k] for k in ("claims", "on")]
        if not all(isinstance(x, list) and x and all(isinstance(g, str) for g in x) for x in lists):
            raise ValueError(f"{where}: [[margins]] claims and on must be lists of names or globs")
        if not all(isinstance(t[k], str) and t[k].strip() for k in ("source", "declared")):
            raise ValueError(f"{where}: [[margins]] source and declared must say where the number comes from and when")
        out.append(DeclaredMargin(tuple(t["claims"]), tuple(t["on"]), float(value), t["source"], t["declared"]))
    return tuple(out)


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


# ----- the pairs ------------------------------------------------------------------------------------------------
def paired(rows: pd.DataFrame, metric: str, subject: str, reference: str) -> pd.Series:
    """subject − reference per seed, over the seeds both have a finite value for."""
    if metric not in rows:
        return pd.Series(dtype=float)
    wide = rows.pivot_table(index="seed", columns="optimizer", values=metric, aggfunc="last")
    if subject not in wide or reference not in wide:
        return pd.Series(dtype=float)
    d = (wide[subject] - wide[reference]).dropna()
    return d[d.map(math.isfinite)]


def _log_ratio(rows: pd.DataFrame, metric: str, subject: str, reference: str) -> pd.Series:
    logged = rows.assign(**{metric: rows[metric].map(lambda v: math.log(v) if v and v > 0 else math.nan)})
    return paired(logged, metric, subject, reference)


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


# ----- verdicts -------------------------------------------------------------------------------------------
def margin_of(claim: Claim, rows: pd.DataFrame, profile: str, study: Study) -> tuple[float, str]:
    """(δ, where it comes from) of a keeps claim on a table of ``profile``: the study's declared margin for it
    there; else, on an exploratory table, the claim's own (computed from this table when it is a share of a
    gain). A confirmatory table without a declared margin is a ``MarginError``."""
    declared = study.declared_margin(claim.name, profile)
    if declared is not None:
        return declared.value, f"declared {declared.declared}: {declared.source}"
    if claim.margin.from_data and study.kind(profile) == CONFIRMATORY:
        raise MarginError(f"claim {claim.name} on the confirmatory table {profile}: its margin would be computed "
                          "from the table it judges; declare one for it in the study's [[margins]]")
    said = claim.margin.why or "the claim's margin"
    return (claim.margin.value(rows, claim.metric, claim.reference),
            f"computed from this table's data ({said}), which an exploratory table alone may do"
            if claim.margin.from_data else said)


def judge(claim: Claim, rows: pd.DataFrame, alpha: float = ALPHA, profile: str = "",
          study: Study | None = None) -> list[dict[str, Any]]:
    """One claim's verdicts on one table's runs, as a family of its own (``judge_family``)."""
    return judge_family([claim], rows, alpha, profile, study)


def judge_family(members: list[Claim], rows: pd.DataFrame, alpha: float = ALPHA, profile: str = "",
                 study: Study | None = None) -> list[dict[str, Any]]:
    """The verdicts of a family's claims on one table's runs (``rows``: one row per optimizer and seed, with
    the metric), one per subject present beside its reference, each side tested at α / (2m) for the family's
    m comparisons; [] where no claim applies."""
    study = study or STUDY
    names = list(dict.fromkeys(rows["optimizer"])) if len(rows) else []
    exact, compared = [], []
    for claim in members:
        subjects = subjects_of(claim, names)
        if claim.reference not in names or not subjects:
            continue
        if claim.test == "costs_less" and claim.metric == "flops_per_step":
            exact += [_exact_cost(claim, rows, s) for s in subjects]
            continue
        delta, source = margin_of(claim, rows, profile, study) if claim.test == "keeps" else (0.0, "")
        pair = _log_ratio if claim.test == "costs_less" else paired  # time: the log ratio per repeat
        compared += [(claim, s, d, delta, source) for s in subjects
                     if len(d := pair(rows, claim.metric, s, claim.reference))]
    m = len(compared)
    return exact + [_decide(claim, s, d, delta, source, alpha, m, study.kind(profile))
                    for claim, s, d, delta, source in compared]


def _sides(claim: Claim) -> tuple[str, str]:
    """The alternatives that support the claim and that refute it."""
    return ("greater", "less") if claim.test in ("keeps", "beats") else ("less", "greater")


def side_level(alpha: float, m: int) -> float:
    """The level each side of each comparison of a family of ``m`` is tested at: α / (2m)."""
    return alpha / (2 * m)


def decision(d: Iterable[float], shift: float, level: float, sides: tuple[str, str]) -> str:
    """holds, fails or inconclusive: mean(d) + shift shown on the supporting side (``sides[0]``) at ``level``, or
    on the refuting side."""
    d = list(d)
    if stats.one_sided_p(d, shift, sides[0]) < level:
        return "holds"
    return "fails" if stats.one_sided_p(d, shift, sides[1]) < level else "inconclusive"


def _decide(claim: Claim, subject: str, d: pd.Series, delta: float, source: str, alpha: float, m: int,
            kind: str) -> dict[str, Any]:
    """One comparison of a family of ``m``: its verdict at α / (2m) per side, its simultaneous bound, the
    robustness of a decided verdict and the seeds an undecided one needs."""
    level = side_level(alpha, m)
    shift = delta if claim.test == "keeps" else 0.0
    sides = _sides(claim)
    raw = [stats.one_sided_p(d, shift, side) for side in sides]
    p_hold, p_fail = (min(1.0, 2 * m * p) for p in raw)
    verdict = "holds" if raw[0] < level else "fails" if raw[1] < level else "inconclusive"  # as ``decision``
    mean, n = float(d.mean()), len(d)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    failing = verdict == "fails"  # its bound is the one on the failing side
    side = sides[1] if failing else sides[0]
    decided = verdict != "inconclusive"
    flips = (min(1.0, 2 * m * stats.sign_flip_p(d, shift, side)) if decided and n >= SIGN_FLIP_FROM
             else math.nan)
    kept = (sum(decision(d.drop(d.index[i]), shift, level, sides) == verdict for i in range(n))
            if decided and n >= 3 else None)
    needed = stats.seeds_for_power(mean + shift, sd, level) if not decided and n > 1 else None
    return {"claim": claim.name, "subject": subject, "reference": claim.reference, "metric": claim.metric,
            "test": claim.test, "n": n, "mean": mean, "sd": sd, "margin": delta, "margin_source": source,
            "bound": stats.bound(d, level, lower=(side == "greater")), "bound_side": "fails" if failing else "holds",
            "p_holds": p_hold, "p_fails": p_fail, "family": m, "level": level, "verdict": verdict,
            "p_sign_flip": flips, "drops_kept": kept, "fragile": kept is not None and kept < n,
            "seeds_needed": needed, "kind": kind}


def _exact_cost(claim: Claim, rows: pd.DataFrame, subject: str) -> dict[str, Any]:
    own = rows.loc[rows["optimizer"] == subject, claim.metric].median()
    ref = rows.loc[rows["optimizer"] == claim.reference, claim.metric].median()
    ratio = own / ref
    return {"claim": claim.name, "subject": subject, "reference": claim.reference, "metric": claim.metric,
            "test": "costs_less (exact)", "n": 1, "mean": math.log(ratio), "sd": 0.0, "margin": 0.0,
            "margin_source": "", "bound": math.nan, "bound_side": "holds", "p_holds": math.nan,
            "p_fails": math.nan, "family": 1, "level": math.nan, "verdict": "holds" if ratio < 1 else "fails",
            "p_sign_flip": math.nan, "drops_kept": None, "fragile": False, "seeds_needed": None,
            "kind": ""}


def judged_on(claim: Claim, profile: str) -> bool:
    if claim.on and not any(fnmatch.fnmatchcase(profile, g) for g in claim.on):
        return False
    return not any(fnmatch.fnmatchcase(profile, g) for g in claim.not_on)


def families(claims: Iterable[Claim]) -> dict[str, list[Claim]]:
    """The claims by family, in declaration order."""
    out: dict[str, list[Claim]] = {}
    for c in claims:
        out.setdefault(c.family_name, []).append(c)
    return out


def verdicts(runs: pd.DataFrame, cost: dict[str, pd.DataFrame] | None = None,
             claims: Iterable[Claim] = CLAIMS, alpha: float | None = None, study: Study | None = None
             ) -> pd.DataFrame:
    """Every claim on every table it applies to, corrected within its family there. ``runs``: one row per run
    (``report.run_rows`` of the latest record per seed) with profile, setting, budget, optimizer, seed and the
    metrics; ``cost``: the cost command's repeats (``cost-repeats.csv``) by the name the table is shown under;
    ``study``: whose margins and confirmatory tables (default: ``STUDY``), and α (default: its own)."""
    study = study or STUDY
    alpha = study.alpha if alpha is None else alpha
    rows = []
    claims = list(claims)
    if len(runs):
        finished = runs[runs.get("status", "finished") == "finished"] if "status" in runs else runs
        for (profile, setting, budget), table in finished.groupby(["profile", "setting", "budget"], sort=False):
            mine = [c for c in claims if c.budget == budget and judged_on(c, profile)]
            dropped = strata.mixed_blocks(table) if study.kind(profile) == CONFIRMATORY else []
            table = table[~table["seed"].isin(dropped)]  # a confirmatory seed block on two machines: out, whole
            for members in families(mine).values():
                rows += [{"table": profile, "setting": setting, **v, "dropped_seeds": tuple(dropped)}
                         for v in judge_family(members, table, alpha, profile, study)]
    for name, repeats in (cost or {}).items():
        table = repeats.rename(columns={"repeat": "seed"})
        mine = [c for c in claims
                if c.budget == "cost" and (not c.on or any(fnmatch.fnmatchcase(name, g) for g in c.on))]
        for members in families(mine).values():
            rows += [{"table": name, "setting": "", **v, "kind": ""}  # a measurement of time, not a sample of seeds
                 for v in judge_family(members, table, alpha, name, study)]
    return pd.DataFrame(rows)


# ----- the verdict table ----------------------------------------------------------------------------------
def _fmt(claim: Claim, value: float, ratio: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if ratio:
        return f"×{math.exp(value):.3f}"
    return f"{value * claim.scale:+.2f}" if claim.scale != 1.0 else f"{value:+.3g}"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def robustness(v: pd.Series) -> tuple[str, str]:
    """(sign-flip p, leave-one-seed-out) of a verdict as shown: "–" where it does not apply."""
    flips = "–" if _missing(v.get("p_sign_flip")) else f"{v['p_sign_flip']:.3f}"
    kept = v.get("drops_kept")
    if _missing(kept):
        return flips, "–"
    n = int(v["n"])
    return flips, f"{int(kept)}/{n}" if int(kept) == n else f"{int(kept)}/{n}: fragile"


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
    flips, drops = robustness(v)
    said = v["verdict"] if v["verdict"] == "inconclusive" else f"**{v['verdict']}**"
    if v.get("fragile") is True:
        said += " (fragile)"
    return {"claim": f"`{claim.name}`", "optimizer": f"`{v['subject']}`", "against": f"`{v['reference']}`",
            "n": str(int(v["n"])), "m": str(int(v["family"])), "Δ (mean)": _fmt(claim, v["mean"], ratio),
            "bound": bound,
            "δ": f"{v['margin'] * claim.scale:.2f}" if claim.test == "keeps" else "–",
            "p": "exact" if "exact" in v["test"] else "–" if math.isnan(p) else f"{p:.3f}",
            "sign-flip p": flips, "drop one seed": drops, "verdict": said,
            "n for 80% power": "" if v["verdict"] != "inconclusive" else "no spread at n = 1" if v["n"] < 2 else
            (f"{int(needed)}" if needed is not None and not pd.isna(needed) else f"> {MAX_SEEDS_SHOWN} or never")}


def _margins_said(g: pd.DataFrame, by_name: dict[str, Claim]) -> list[str]:
    """A line per distinct margin of a table's keeps claims: its value and where it comes from."""
    keeps = g[g["test"] == "keeps"]
    out = []
    for (source, value), h in keeps.groupby(["margin_source", "margin"], sort=False):
        c = by_name[h["claim"].iloc[0]]
        names = ", ".join(f"`{n}`" for n in dict.fromkeys(h["claim"]))
        out.append(f"δ of {names}: {value * c.scale:.2f}{c.unit}, {source}.")
    return out


def markdown(table: pd.DataFrame, claims: Iterable[Claim] = CLAIMS, alpha: float = ALPHA) -> str:
    """The verdicts as Markdown: a table per results table, labelled exploratory or confirmatory with where its
    margins come from, then what each claim and column means."""
    if table is None or not len(table):
        return ""
    by_name = {c.name: c for c in claims}
    lines = ["## Verdicts", ""]
    for (name, setting), g in table.groupby(["table", "setting"], sort=False):
        where = f"`{name}`" + (f" with {setting}" if setting else "")
        kind = g["kind"].iloc[0] if "kind" in g else ""
        lines += [f"### Verdicts{f' ({kind})' if kind else ''} — {where}", "",
                  pd.DataFrame([verdict_columns(by_name[v["claim"]], v) for _, v in g.iterrows()])
                  .to_markdown(index=False, disable_numparse=True), ""]
        lines += [*_margins_said(g, by_name), ""] if (g["test"] == "keeps").any() else []
        if kind == CONFIRMATORY:
            dropped = g["dropped_seeds"].iloc[0] if "dropped_seeds" in g else ()
            lines += [f"Seed blocks dropped as a whole, their runs on more than one machine: "
                      f"{strata.seed_ranges(dropped)}." if dropped else
                      "Every seed block ran on one machine (processor kind, threads, commit).", ""]
    used = [c for c in claims if c.name in set(table["claim"])]
    lines += [f"Each claim is tested on seed-paired runs of one table (n: the seeds both optimizers have; for time, "
              "the cost command's interleaved repeats). A family is the comparisons corrected together (m of them): "
              "a claim's optimizers in that table, or every claim of one declared family (the keeps-SAM claims are "
              "one, the frontier's). Each side of each comparison is a one-sided paired t-test at α / (2m) "
              "(Bonferroni over both sides), so the chance of any wrong verdict, holds or fails, in a family is at "
              f"most α = {alpha}. "
              "p: the deciding side's p × 2m (the holds side where nothing decided); a verdict is decided where it is "
              "below α. Bound: the one-sided confidence bound of the mean difference (optimizer − reference; for "
              "time, of the ratio) at α / (2m), on the side that decided: the bounds of a family hold together with "
              "probability at least 1 − α, and a bound excludes the claim's threshold exactly where the verdict is "
              "holds or fails. **Robustness** of a decided verdict: sign-flip p, the exact paired permutation test "
              f"(no normality assumed) on the same side, × 2m, where n ≥ {SIGN_FLIP_FROM} (its smallest p is 2^−n, "
              "so it can confirm only at enough seeds); drop one seed: in how many of the n drops of one seed the "
              "verdict stays, at the same level; **fragile** where one drop changes it. n for 80% power (inconclusive "
              "ones): the seeds a t-test at that level needs to decide with 80% power at the observed distance from "
              "the threshold and paired spread (noncentral t). A table is **confirmatory** when its seeds were "
              "planned from a pilot and run fresh, with every margin declared before they ran; **exploratory** "
              "otherwise: its verdicts suggest, a confirmatory table tests. FLOPs are counted, not sampled: exact.", ""]
    for c in used:
        what = {"keeps": "non-inferiority: holds when the difference is shown above −δ, fails when shown below −δ",
                "beats": "holds when the difference is shown above 0, fails when shown below 0",
                "flatter": "holds when the difference is shown below 0 (flatter), fails when shown above 0",
                "costs_less": "holds when the time ratio is shown below 1 (FLOPs: when fewer), fails when above",
                }[c.test]
        family = f" Family: `{c.family}`." if c.family else ""
        lines.append(f"- `{c.name}` ({c.source}): {c.statement}. Metric `{c.metric}`, {what}.{family}")
    return "\n".join(lines) + "\n"


def findings(table: pd.DataFrame, claims: Iterable[Claim] = CLAIMS, after: dict[str, str] | None = None) -> str:
    """The README's findings block: a line per results table (labelled exploratory or confirmatory), and per
    claim how many of its comparisons hold, fail and are inconclusive (and how many decided ones are fragile),
    at which n, with the seeds that would decide the inconclusive ones at 80% power and how many no n decides;
    ``after``: a sentence to end a table's line with (the frontier's time goal). Generated from the records by
    ``publish``; a test compares the README with it."""
    if table is None or not len(table):
        return "No published verdicts yet.\n"
    by_name = {c.name: c for c in claims}
    lines = []
    for name in sorted(set(table["table"])):
        parts, mine = [], table[table["table"] == name]
        for claim_name, g in mine.groupby("claim", sort=False):
            c, counts = by_name[claim_name], g["verdict"].value_counts()
            said = ", ".join(f"{counts[v]}/{len(g)} {w}" for v, w in (("holds", "hold"), ("fails", "fail"),
                                                                        ("inconclusive", "inconclusive"))
                             if counts.get(v, 0))
            fragile = int(g["fragile"].fillna(False).astype(bool).sum()) if "fragile" in g else 0
            decided = int((g["verdict"] != "inconclusive").sum())
            said += f"; {fragile} of the {decided} decided fragile" if fragile else ""
            ns = sorted(set(g["n"].astype(int)))
            n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
            margin = f", δ {g['margin'].iloc[0] * c.scale:.2f}{c.unit}" if c.test == "keeps" else ""
            open_ = g[(g["verdict"] == "inconclusive") & (g["n"] > 1)]  # at n = 1: no spread to plan from
            needed = [int(x) for x in open_["seeds_needed"].dropna()]
            never = len(open_) - len(needed)
            decide = "" if not needed else f"; {min(needed)}" + (f"–{max(needed)}" if max(needed) > min(needed)
                                                                   else "") + " seeds would decide at 80% power"
            decide += f"; {never} that no n up to {MAX_SEEDS_SHOWN} decides" if never else ""
            parts.append(f"`{claim_name}` {said} ({n}{margin}{decide})")
        kind = mine["kind"].iloc[0] if "kind" in mine else ""
        lines.append(f"- `{name}`{f' ({kind})' if kind else ''}: " + "; ".join(parts) + "."
                     + (f" {after[name]}" if name in (after or {}) else ""))
    return "\n".join(lines) + "\n"
