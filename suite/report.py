"""Records -> tidy rows -> summary tables (CSV, Markdown) and figures (PNG). ``summarize`` is a pure
function of the records; ``write_report`` only adds the files.

The columns come from ``suite.metrics``: every numeric metric gets its mean and std over seeds in the
CSV; the Markdown table shows the labelled ones, with ratios to the references for those that ask
and, for interval metrics, a 95% interval and seed-paired differences to the references (``suite.stats``).
The sharpness measures (``table="sharpness"``) get a table of their own from the same summary of the
measured runs. The references (SGD and SAM unless the profile names others) come from the records. The
figures are the ones ``suite.plots.FIGURES`` declares, drawn for each table whose data they need.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from suite import claims, frontier, measure, metrics, plots, registry, strata, tune
from suite.config import BUDGETS, REFERENCES, ROOT, ConfigError, TrainConfig, available_profiles, load_profile
from suite.metrics import Metric, columns
from suite.stats import interval, paired_difference
from suite.store import atomic_write, iter_records

KEYS = ["profile", "setting", "budget", "optimizer", "seed"]
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
TABLE = ["profile", "setting", "budget"]  # one table each: runs that differ in the optimizer alone


# ----- tidy rows ----------------------------------------------------------------------------------------------
def _key(record: dict[str, Any]) -> dict[str, Any]:
    c = record["config"]
    return {"profile": c["profile"], "setting": record.get("_setting", ""), "budget": c["train"]["budget"],
            "optimizer": record.get("_label", c["optimizer"]), "seed": c["seed"]}


def _setting(record: dict[str, Any]) -> dict[str, Any]:
    """What a run shares with every other run of its table: the training settings (all but the budget,
    which splits tables anyway) and the data it read."""
    # a setting a record predates (added to TrainConfig since) reads as its default: label_noise absent = 0.0
    train = {**TRAIN_DEFAULTS, **record["config"]["train"]}
    train.pop("budget", None)
    return {**train, "data": record.get("data", {}).get("fingerprint")}


def _differing(dicts: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]


def label_tables(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records that say which table they belong to, so that no table mixes settings.

    Runs of one profile whose training settings differ (a sweep re-run with ``--epochs 2``) go to
    separate tables, each named by the settings that differ (``_setting``, e.g. "epochs=2"). Runs of one
    optimizer with different hyper-parameters in one table are separate rows, named by them (``_label``,
    e.g. "sam [rho=0.1]")."""
    records = [dict(r) for r in records]
    for group in _grouped(records, lambda r: r["config"]["profile"]).values():
        settings = [_setting(r) for r in group]
        differ = _readable(_differing(settings), settings)
        for r, s in zip(group, settings):
            r["_setting"] = ", ".join(f"{k}={_shown(k, s.get(k))}" for k in differ)
    for group in _grouped(records, lambda r: (r["config"]["profile"], r["_setting"], r["config"]["train"]["budget"],
                                              r["config"]["optimizer"])).values():
        differ = _differing([r["config"].get("hparams", {}) for r in group])
        for r in group:
            h = r["config"].get("hparams", {})
            r["_label"] = r["config"]["optimizer"] + (f" [{', '.join(f'{k}={h.get(k)}' for k in differ)}]"
                                                      if differ else "")
    return records


def _readable(differ: list[str], settings: list[dict[str, Any]]) -> list[str]:
    """The differing settings a table is named by, the data set's name first; the data's fingerprint (a
    hash) only where the other settings do not already tell the data apart (two copies of one data set,
    then named by the data set and the hash)."""
    rest = [k for k in differ if k != "data"]
    if "data" in differ and rest:
        fingerprints: dict[tuple, set] = {}
        for s in settings:
            fingerprints.setdefault(tuple(repr(s.get(k)) for k in rest), set()).add(s.get("data"))
        if all(len(f) == 1 for f in fingerprints.values()):
            differ = rest
    if "data" in differ and "dataset" not in differ:
        differ = [*differ, "dataset"]  # the copies of a data set: named by it, then told apart by the hash
    return sorted(differ, key=lambda k: (k != "dataset", k == "data", k))


def _shown(key: str, value: Any) -> Any:
    return value[:8] if key == "data" and isinstance(value, str) else value  # a tie-breaker, not a name


def _grouped(records: list[dict[str, Any]], key: Any) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


def run_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: its key, when it started, the machine it ran on (``strata.MACHINE_COLUMNS``, strings,
    from its ``env``: no metric) and its flat metrics."""
    return pd.DataFrame([{**_key(r), "started_at": r.get("started_at", ""), **strata.machine_of(r.get("env")),
                          **r["metrics"]} for r in records])


def epoch_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x evaluation (training curves)."""
    return pd.DataFrame([{**_key(r), **e} for r in records for e in r["epochs"]])


def latest_per_seed(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One record per table, optimizer (with its hyper-parameters) and seed: the latest started (two
    such records are copies of one run). Returns (kept, superseded), labelled by ``label_tables``."""
    kept: dict[tuple, dict[str, Any]] = {}
    superseded = []
    labelled = records if all("_label" in r for r in records) else label_tables(records)
    for r in sorted(labelled, key=lambda r: (r.get("started_at", ""), r.get("finished_at", ""))):
        key = tuple(_key(r).values())
        if key in kept:
            superseded.append(kept[key])
        kept[key] = r
    return list(kept.values()), superseded


def references(records: Iterable[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Per profile, the optimizers its report compares with (as its latest record says)."""
    refs: dict[str, tuple[str, ...]] = {}
    for r in sorted(records, key=lambda r: r.get("started_at", "")):
        refs[r["config"]["profile"]] = tuple(r.get("references") or REFERENCES)
    return refs


# ----- the summary: one row per profile, budget and optimizer ----------------------------------------------
def summarize(records: Iterable[dict[str, Any]], intervals: list[Metric] | None = None,
              refs: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """Per profile, budget and optimizer: seeds, every numeric metric's mean and std over the finished
    seeds, intervals and paired differences to the references for interval metrics (``intervals``;
    default: the main table's), ratios to the references for ratio metrics. ``refs``: per profile
    (default: as the records say, ``references``)."""
    records = latest_per_seed(records)[0]
    runs = run_rows(records)
    if runs.empty:
        return runs
    refs, numeric = refs or references(records), _numeric_metrics(runs)
    intervals = [m for m in columns() if m.interval] if intervals is None else intervals
    finished = runs[runs["status"] == "finished"]
    rows = [_summary_row(g, finished, numeric, refs[key[0]], intervals) for key, g in
            runs.groupby([*TABLE, "optimizer"], sort=False)]
    table = pd.DataFrame(rows)
    for m in (m for m in columns() if m.ratios and f"{m.key}_mean" in table):
        for (profile, setting), _ in table.groupby(["profile", "setting"], sort=False):
            same = (table["profile"] == profile) & (table["setting"] == setting)
            for ref in refs[profile]:
                ref_means = table[same & (table["optimizer"] == ref)].set_index("budget")[f"{m.key}_mean"]
                table.loc[same, f"{m.key}_ratio_{ref}"] = (
                    table.loc[same, f"{m.key}_mean"] / table.loc[same, "budget"].map(ref_means))
    return _ordered(table, runs, refs)


def _numeric_metrics(runs: pd.DataFrame) -> list[str]:
    """Metric columns whose values are numbers (None where they do not apply)."""
    skip = {*KEYS, "started_at", "status", *strata.MACHINE_COLUMNS}
    return [c for c in runs.columns if c not in skip and runs[c].map(
        lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))).all()
        and runs[c].notna().any()]


def _summary_row(g: pd.DataFrame, finished: pd.DataFrame, numeric: list[str], refs: tuple[str, ...],
                 intervals: list[Metric]) -> dict:
    profile, setting, budget, optimizer = g.iloc[0][[*TABLE, "optimizer"]]
    ok = g[g["status"] == "finished"]
    bad = g[g["status"] != "finished"]
    row: dict[str, Any] = {
        "profile": profile, "setting": setting, "budget": budget, "optimizer": optimizer, "seeds": len(ok),
        "diverged": len(bad),
        "diverged_runs": "; ".join(f"seed {d.seed} at step {int(d.diverged_at_step)} (last finite loss "
                                   f"{_num(d.last_finite_loss, '{:.3f}')})" for d in bad.itertuples()),
    }
    for key in numeric:
        values = pd.to_numeric(ok[key], errors="coerce")
        row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std()
    same = finished[(finished["profile"] == profile) & (finished["setting"] == setting)
                    & (finished["budget"] == budget)]
    for m in (m for m in intervals if m.key in numeric):
        row[f"{m.key}_ci95"] = interval(ok[m.key])[3]
        values = dict(zip(ok["seed"], ok[m.key]))
        for ref in refs:
            r = same[same["optimizer"] == ref]
            n, mean, _, half = paired_difference(values, dict(zip(r["seed"], r[m.key])))
            row.update({f"diff_{ref}_{m.key}_seeds": n, f"diff_{ref}_{m.key}_mean": mean,
                        f"diff_{ref}_{m.key}_ci95": half})
    # the finished seeds whose time figures were taken under contention, and those that did not measure it
    # (records made before it was measured: unknown, not contended)
    flags = ok["time_contended"] if "time_contended" in ok else pd.Series([None] * len(ok), dtype=object)
    row["time_contended"] = int(sum(v is True for v in flags))
    row["time_unmeasured"] = int(sum(not isinstance(v, bool) for v in flags))
    return row


def _ordered(table: pd.DataFrame, runs: pd.DataFrame, refs: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Profiles, then budgets in their declared order, then the references first and the other
    optimizers in the order the profile's sweep first ran them (the registry's order): each profile's own
    runs decide it, so records published into one table do not reorder another."""
    first_start = runs.groupby(["profile", "optimizer"], sort=False)["started_at"].min()

    def rank(row: pd.Series) -> tuple:
        ref = refs[row["profile"]]
        return (ref.index(row["optimizer"]) if row["optimizer"] in ref else len(ref),
                first_start[(row["profile"], row["optimizer"])])

    budget_rank = {b: i for i, b in enumerate(BUDGETS)}
    order = sorted(table.index, key=lambda i: (table.at[i, "profile"], table.at[i, "setting"],
                                                budget_rank.get(table.at[i, "budget"], 99), rank(table.loc[i])))
    return table.loc[order].reset_index(drop=True)


# ----- summary.csv: the summary in the Markdown's units, each named; its columns are in results/README.md ------
# metrics another column gives already: budget_steps_run is steps; budget_spent is budget_epochs_run,
# budget_train_flops or budget_train_seconds_at_timed_rate, as the budget says
REDUNDANT = ("budget_steps_run", "budget_spent")


def csv_table(table: pd.DataFrame) -> pd.DataFrame:
    """summary.csv from the summary (``summarize``): without the columns another already gives
    (``REDUNDANT``), and with every accuracy, and every metric the Markdown shows in percent, in percent and
    named so (``csv_name``: ``test_acc_pct_mean``, ``diff_sgd_test_acc_pct_ci95``); its paired seeds and its
    ratios are renamed, not scaled. The summary itself keeps the records' units, for the figures."""
    out = table.drop(columns=[f"{k}_{stat}" for k in REDUNDANT for stat in ("mean", "std") if f"{k}_{stat}" in table])
    keys = [c[: -len("_mean")] for c in out.columns if c.endswith("_mean") and not c.startswith("diff_")]
    for key in filter(_in_percent, keys):
        column = re.compile(rf"(diff_.+_)?{re.escape(key)}_(mean|std|ci95|seeds|ratio_.+)")
        for c in [c for c in out.columns if column.fullmatch(c)]:
            prefix, stat = column.fullmatch(c).groups()
            if stat in ("mean", "std", "ci95"):
                out[c] = pd.to_numeric(out[c], errors="coerce") * 100
            out = out.rename(columns={c: f"{prefix or ''}{csv_name(key)}_{stat}"})
    return out


def _in_percent(key: str) -> bool:
    metric = next((m for m in metrics.METRICS if m.key == key), None)
    return on_accuracy(key) or (metric is not None and metric.scale == 100)


def csv_name(key: str) -> str:
    """A percent metric's name in summary.csv: ``test_acc`` -> ``test_acc_pct``, ``budget_spent_ratio`` ->
    ``budget_spent_pct`` (a fraction of the budget, now in percent)."""
    return (key[: -len("_ratio")] if key.endswith("_ratio") else key) + "_pct"


# ----- Markdown ------------------------------------------------------------------------------------------------
BUDGET_TITLES = {
    "epochs": "every optimizer trains the same number of epochs",
    "flops": "every optimizer gets the training FLOPs the reference spends in the epochs",
    "time": "every optimizer gets the training seconds the reference spends in the epochs",
}


# the one rule of the Δ cells, said under every table that has them
DIFF_RULE = ("Δ: mean over seeds of (this optimizer − the reference), same seed = same initial weights and batch "
             "order, ± the half-width of its two-sided 95% interval (uncorrected: it describes, it decides nothing). "
             "**Bold**, with the verdict and its bound, where a claim's verdict above decides the comparison: "
             "one-sided and corrected within its family (α / 2m a side), so its bound, not the ± interval, is what "
             "decides, and a bold interval "
             "may include 0; plain where no verdict decides it.")


def to_markdown(table: pd.DataFrame, refs: dict[str, tuple[str, ...]] | None = None,
                verdicts: dict[tuple, list[dict[str, Any]]] | None = None) -> str:
    """One Markdown table per profile, setting and budget, its columns from ``suite.metrics``; a Δ cell is
    marked where one of ``verdicts`` (``decided``) decides it."""
    parts = []
    for (profile, setting, budget), g in table.groupby(TABLE, sort=False):
        ref_names = (refs or {}).get(profile, REFERENCES)
        contended = {r.optimizer for r in g.itertuples() if getattr(r, "time_contended", 0) > 0}
        shown = _present(g)
        display = pd.DataFrame([_display_row(r, ref_names, contended, verdicts or {}, shown) for _, r in g.iterrows()])
        where = f"Profile `{profile}`" + (f" with {setting}" if setting else "")
        lines = [f"### {where}, budget `{budget}`: {BUDGET_TITLES.get(budget, budget)}", "",
                 display.to_markdown(index=False, disable_numparse=True,
                                     colalign=("left",) + ("right",) * (display.shape[1] - 1))]
        diverged = [f"- {r.optimizer}: {r.diverged_runs}" for r in g.itertuples() if r.diverged]
        if diverged:
            lines += ["", "Diverged runs (loss NaN/inf; not in the means):", *diverged]
        lines += ["", f"{DIFF_RULE} × REF: the ratio of the means.", "", time_note(g)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


CONTENDED_MARK = plots.CONTENDED_MARK  # one mark in the tables and the figures


def time_note(g: pd.DataFrame) -> str:
    """Which time figures of a table to trust: those taken under contention are marked (``CONTENDED_MARK``),
    what the mark means and its thresholds (``suite.measure``); runs that did not measure it are unknown."""
    runs = int((g["seeds"]).sum())
    unmeasured = int(g["time_unmeasured"].sum()) if "time_unmeasured" in g else runs
    contended = sorted(r.optimizer for r in g.itertuples() if getattr(r, "time_contended", 0) > 0)
    rule = (f"a run's threads waited for a core for {measure.CONTENDED_WAIT_SHARE:.0%} or more of the time they "
            f"were ready to run (where the kernel does not say: its process had under "
            f"{measure.CONTENDED_CPU_SHARE:.0%} of its threads' CPU time, or the load average exceeded "
            f"{measure.CONTENDED_LOAD_PER_CORE:g} × its cores)")
    authority = "The interleaved repeats of `python -m suite cost` are the authority for time."
    if not contended and unmeasured >= runs:
        return ("Time: these runs were recorded before the suite measured contention (unknown, not contended): "
                f"their times and time ratios are unchecked. {authority}")
    if contended:
        text = (f"{CONTENDED_MARK}: time taken under contention — another program was using the machine: {rule} in "
                f"at least one seed ({', '.join(contended)}). Such an ms/step, and every time ratio marked "
                f"{CONTENDED_MARK} (its optimizer's or its reference's), is not to be trusted; the time ratios "
                f"without {CONTENDED_MARK} are.")
    else:
        text = f"Time: no measured run was taken under contention ({rule} in none), so the time ratios hold."
    if unmeasured:
        text += (f" {unmeasured} of the {runs} runs were recorded before the suite measured contention: theirs "
                 "are unknown.")
    return f"{text} {authority}"


def _present(g: pd.DataFrame) -> list[Metric]:
    """The columns of a table: every labelled metric, but an accuracy of a split its runs were not scored on
    (a tuning table, scored on a validation split, has no test columns; any other table no validation ones)."""
    def has(split: str) -> bool:
        keys = [f"{m.key}_mean" for m in columns() if m.split == split]
        return any(k in g and pd.to_numeric(g[k], errors="coerce").notna().any() for k in keys)
    on = "val" if has("val") else "test"  # a table whose every run diverged keeps its (empty) test columns
    return [m for m in columns() if m.split in (None, on)]


def _display_row(r: pd.Series, refs: tuple[str, ...], contended: set[str] = frozenset(),
                 verdicts: dict[tuple, list[dict[str, Any]]] | None = None,
                 shown: list[Metric] | None = None) -> dict[str, str]:
    row = {"optimizer": r["optimizer"], "seeds": f"{r['seeds']}" + (f" ({r['diverged']} diverged)"
                                                                    if r["diverged"] else "")}
    shown = [m for m in columns() if m.split in (None, "test")] if shown is None else shown
    intervals = [m for m in shown if m.interval]
    for m in shown:
        prefix = f"{m.label}: " if len(intervals) > 1 and m.interval else ""
        if m.interval:
            row[f"{m.label} (mean ± std)"] = f"{_value(m, r, 'mean')} ± {_spread(m, r, 'std')}"
            row[f"{prefix}95% CI"] = f"± {_spread(m, r, 'ci95')}"
            for ref in refs:
                row[f"{prefix}Δ vs {ref.upper()} (paired, 95% CI)"] = _diff(m, r, ref, _deciding(verdicts, r, ref, m))
        else:
            row[m.label] = _value(m, r, "mean") + _mark(m, r["optimizer"] in contended)
        for ref in refs if m.ratios else ():
            ratio = _num(r.get(f"{m.key}_ratio_{ref}"), "{:.2f}")
            flagged = ratio != "–" and r["optimizer"] != ref and bool({r["optimizer"], ref} & contended)
            row[f"{m.ratios} × {ref.upper()}"] = ratio + _mark(m, flagged)
    return row


def _mark(m: Metric, contended: bool) -> str:
    return f" {CONTENDED_MARK}" if m.timing and contended else ""


def _value(m: Metric, r: pd.Series, stat: str, fmt: str | None = None) -> str:
    value = r.get(f"{m.key}_{stat}")
    return _num(None if value is None else value * m.scale, fmt or m.fmt)


def _spread(m: Metric, r: pd.Series, stat: str) -> str:
    """A ± value of the metric (std, half-width), in its ``spread_fmt``."""
    return _value(m, r, stat, m.spread_fmt)


def _diff(m: Metric, r: pd.Series, ref: str, verdicts: list[dict[str, Any]] = ()) -> str:
    """The seed-paired difference to ``ref`` ± its two-sided 95% half-width, which describes it; **bold**, with
    each verdict and its bound, where ``verdicts`` (those that decide this comparison: ``decided``) say."""
    n = r.get(f"diff_{ref}_{m.key}_seeds")
    if r["optimizer"] == ref or not n or (isinstance(n, float) and math.isnan(n)):
        return "–"
    mean, half = r[f"diff_{ref}_{m.key}_mean"] * m.scale, r[f"diff_{ref}_{m.key}_ci95"] * m.scale
    text = f"{_num(mean, _signed(m))} ± {_num(half, m.spread_fmt or m.fmt)}"
    if not verdicts:
        return text
    return f"**{text} {'; '.join(_verdict_said(m, v, named=len(verdicts) > 1) for v in verdicts)}**"


def _signed(m: Metric) -> str:
    return m.diff_fmt or m.fmt.replace("{:", "{:+")


def _verdict_said(m: Metric, v: dict[str, Any], named: bool) -> str:
    """A verdict in a Δ cell: "fails (≤ -1.12)" — its one-sided bound, on the side that decided, in the cell's
    units; the claim named where more than one decides the cell."""
    lower = (v["test"] in ("keeps", "beats")) != (v["bound_side"] == "fails")
    bound = _num(v["bound"] * m.scale, _signed(m))
    return (f"`{v['claim']}` " if named else "") + v["verdict"] + (
        "" if bound == "–" else f" ({'≥' if lower else '≤'} {bound})")


def decided(judged: pd.DataFrame | None, declared: Iterable[Any] = ()) -> dict[tuple, list[dict[str, Any]]]:
    """The verdicts that decide a comparison (holds or fails) by the cell of the comparison tables they
    decide: (profile, setting, budget, optimizer, reference, metric); a claim names the budget it is judged
    on. The tables mark these and nothing else, so a table and the verdicts never disagree."""
    budget_of = {c.name: c.budget for c in declared}
    out: dict[tuple, list[dict[str, Any]]] = {}
    if judged is None or not len(judged):
        return out
    for v in judged[judged["verdict"] != "inconclusive"].to_dict("records"):
        key = (v["table"], v["setting"], budget_of.get(v["claim"]), v["subject"], v["reference"], v["metric"])
        out.setdefault(key, []).append(v)
    return out


def _deciding(verdicts: dict[tuple, list[dict[str, Any]]] | None, r: pd.Series, ref: str,
              m: Metric) -> list[dict[str, Any]]:
    return (verdicts or {}).get((r["profile"], r["setting"], r["budget"], r["optimizer"], ref, m.key), [])


def _num(x: Any, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


# ----- sharpness (python -m suite sharpness): a table of its own, where records have the measures ------------
def sharpness_markdown(records: list[dict[str, Any]], refs: dict[str, tuple[str, ...]],
                       order: pd.DataFrame | None = None,
                       verdicts: dict[tuple, list[dict[str, Any]]] | None = None) -> str:
    """Per profile, setting and budget whose runs were measured: the summary (``summarize``) of the measured
    runs, each sharpness measure (``columns("sharpness")``) as mean ± 95% interval beside the test accuracy,
    then its seed-paired difference to each reference, and what measuring cost against the runs' training;
    "" where nothing was measured. ``records``: one per seed (``latest_per_seed``), labelled; ``order``: the
    main summary, whose row order the table keeps; ``verdicts``: as ``to_markdown``'s."""
    measures = columns("sharpness")
    measured = [r for r in records if measures[0].key in r["metrics"] and r["metrics"].get("status") == "finished"]
    if not measured:
        return ""
    shown = [metrics.get("test_acc"), *measures]
    table = summarize(measured, intervals=shown, refs=refs)
    if order is not None:
        table = _in_order_of(table, order)
    parts = []
    for (profile, setting, budget), g in table.groupby(TABLE, sort=False):
        ref_names = [ref for ref in refs.get(profile, REFERENCES) if ref in set(g["optimizer"])]
        values = pd.DataFrame([{"optimizer": r["optimizer"], "seeds": str(r["seeds"]),
                                **{m.label: f"{_value(m, r, 'mean')} ± {_spread(m, r, 'ci95')}" for m in shown}}
                               for _, r in g.iterrows()])
        diffs = pd.DataFrame([{"optimizer": r["optimizer"],
                               **{f"{m.label} Δ {ref.upper()}": _diff(m, r, ref, _deciding(verdicts, r, ref, m))
                                  for m in measures for ref in ref_names}} for _, r in g.iterrows()])
        where = f"Profile `{profile}`" + (f" with {setting}" if setting else "")
        parts.append("\n".join([f"### Sharpness — {where}, budget `{budget}`", "",
                                 values.to_markdown(index=False, disable_numparse=True), ""]
                                + (["Seed-paired differences (optimizer − reference):", "",
                                    diffs.to_markdown(index=False, disable_numparse=True)] if ref_names else [])))
    return ("## Sharpness of the final models\n\n`python -m suite sharpness` (docs/sharpness.md): the training "
            "loss's Hessian (top eigenvalue, trace) and m-sharpness on fixed training examples, BatchNorm in eval "
            "mode; mean ± 95% interval over the measured seeds, Δ paired by seed ± its 95% interval (it describes), "
            "**bold** with the verdict and its bound where a claim's verdict decides it, as in the tables above. "
            "Lower is flatter.\n\n" + _sharpness_cost(measured) + "\n\n" + "\n\n".join(parts) + "\n")


def _in_order_of(table: pd.DataFrame, order: pd.DataFrame) -> pd.DataFrame:
    """``table``'s rows in the order of the same profile, setting, budget and optimizer in ``order``; rows
    it does not have last."""
    key = [*TABLE, "optimizer"]
    rank = {k: i for i, k in enumerate(order[key].itertuples(index=False, name=None))}
    ranks = [rank.get(k, len(rank) + i) for i, k in enumerate(table[key].itertuples(index=False, name=None))]
    return table.iloc[sorted(range(len(table)), key=ranks.__getitem__)].reset_index(drop=True)


def _sharpness_cost(records: list[dict[str, Any]]) -> str:
    """What measuring took, against the measured runs' own wall clock (training and evaluation, as recorded),
    one line per profile: profiles run on different machines, so one sum over them would mean nothing."""
    lines = []
    for profile in sorted({r["config"].get("profile", "") for r in records}):
        mine = [r for r in records if r["config"].get("profile", "") == profile]
        spent = sum(r.get("sharpness", {}).get("seconds", 0.0) for r in mine)
        trained = sum(r.get("wall_seconds", 0.0) for r in mine)
        share = (f", {100 * spent / trained:.0f}% of the {trained / 60:.0f} min the runs themselves took"
                 if trained else "")
        lines.append(f"Measuring the {len(mine)} runs of `{profile}` took {spent / 60:.1f} min "
                     f"({spent / len(mine):.0f} s a run{share}).")
    return "\n".join(f"- {line}" for line in lines) if len(lines) > 1 else lines[0]


def surface_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per measured run: its key and its loss surfaces (coordinates and values, 1-D and 2-D)."""
    rows = []
    for r in records:
        s = r.get("sharpness", {})
        if "surface_1d" in s and r["metrics"].get("status") == "finished":
            rows.append({**_key(r), "line": s["surface_1d"]["coordinates"], "line_loss": s["surface_1d"]["loss"],
                         "plane": s["surface_2d"]["coordinates"], "plane_loss": s["surface_2d"]["loss"]})
    return pd.DataFrame(rows)


# ----- files ----------------------------------------------------------------------------------------------------
def write_report(results_dir: Path, extra: Iterable[Any] | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """Write summary.csv, summary.md (opening with the claims' verdicts: ``suite.claims``, the study's
    claims and ``extra``) and each table's figures; returns (written, unreadable records, records
    superseded by a later run of the same profile, budget, optimizer and seed)."""
    records, skipped, paths = [], [], []
    for path, record in iter_records(results_dir):
        if record is None:
            skipped.append(path)
        else:
            records.append(record)
            paths.append(path)
    records = label_tables(records)
    path_of = {id(r): p for r, p in zip(records, paths)}
    records, superseded = latest_per_seed(records)
    refs = references(records)
    table = summarize(records, refs=refs)
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    _atomic_write(written[0], csv_table(table).to_csv(index=False))
    profiles = record_profiles(records)
    declared, judged = verdicts(results_dir, records, extra, profiles)
    changed = as_run(records, profiles)
    _atomic_write(written[1], headings_say(summary_markdown(results_dir, table, records, refs, declared, judged),
                                           heading_notes(changed, records, results_dir)))
    figures = write_figures(results_dir, table, records, refs, judged, changed) if not table.empty else []
    remove_stale_figures(results_dir, figures, {r["config"]["profile"] for r in records})
    return written + figures, skipped, [path_of[id(r)] for r in superseded]


def summary_markdown(results_dir: Path, table: pd.DataFrame, records: list[dict[str, Any]],
                     refs: dict[str, tuple[str, ...]], declared: list[Any], judged: pd.DataFrame) -> str:
    """summary.md: the verdicts, the frontier, the comparison tables (their Δ cells marked where a verdict
    decides them) and the sharpness tables."""
    header = "# Summary\n\nGenerated by `python -m suite report` from the records in `runs/`.\n\n"
    said = claims.markdown(judged, declared)
    if table.empty:
        return header + (said + "\n" if said else "") + "No records.\n"
    said = stratified_markdown(said, run_rows(records), judged, declared, table)
    marks = decided(judged, declared)
    front = frontier.markdown(table, judged, declared, frontier.cost_tables(results_dir), records,
                              frontier.cost_steps(results_dir))
    sharp = sharpness_markdown(records, refs, table, marks)
    return (header + "".join(part + "\n" for part in (said, front) if part) + to_markdown(table, refs, marks)
            + ("\n" + sharp if sharp else ""))


# ----- blocks on one machine (suite/strata.py): under a table's verdicts, what crossed machines --------------------
# the verdict table's columns a stratum's table keeps (it adds what the verdict above says on all pairs)
STRATUM_COLUMNS = ("claim", "optimizer", "against", "n", "m", "Δ (mean)", "bound", "δ", "p", "drop one seed", "verdict")


def stratified_markdown(said: str, runs: pd.DataFrame, judged: pd.DataFrame | None, declared: Iterable[Any],
                        order: pd.DataFrame | None = None) -> str:
    """The verdicts' Markdown (``said``: ``claims.markdown``) with, under each table whose seed pairs cross
    machines (``strata.crossing``): which runs ran where (``strata.note``), which comparisons rest on pairs that
    cross and how many, and for each machine (``strata.strata``) the crossing accuracy comparisons with
    ``strata.MIN_STRATUM_PAIRS`` or more pairs there, judged (``claims.verdicts``) on that machine's runs alone.
    ``runs``: ``run_rows`` of the judged records; ``order``: the summary, whose optimizer order the note keeps."""
    if not said or judged is None or not len(judged) or runs.empty:
        return said
    by_name = {c.name: c for c in declared}
    lines = said.split("\n")
    for (name, setting), g in judged.groupby(["table", "setting"], sort=False):
        budgets = {by_name[c].budget for c in set(g["claim"])}
        table = runs[(runs["profile"] == name) & (runs["setting"] == setting) & runs["budget"].isin(budgets)]
        shown = [] if order is None or order.empty else list(
            order.loc[(order["profile"] == name) & (order["setting"] == setting), "optimizer"])
        block = _machine_block(table, g, by_name, shown)
        kind = g["kind"].iloc[0] if "kind" in g and g["kind"].iloc[0] else ""
        heading = f"### Verdicts{f' ({kind})' if kind else ''} — `{name}`" + (f" with {setting}" if setting else "")
        if block and heading in lines:
            at = lines.index(heading) + 1
            while at < len(lines) and not lines[at].startswith("|"):
                at += 1
            while at < len(lines) and lines[at].startswith("|"):
                at += 1
            while at + 1 < len(lines) and lines[at + 1].startswith(("δ of ", "Seed blocks ", "Every seed block ")):
                at += 2  # the table's own lines (its margins, its dropped seed blocks) stay beside it
            lines[at + 1:at + 1] = [*block, ""]
    return "\n".join(lines)


def _machine_block(table: pd.DataFrame, judged: pd.DataFrame, by_name: dict[str, Any], order: list[str]) -> list[str]:
    """The lines under one table's verdicts (``judged``) where its runs (``table``) crossed machines; []
    where they did not."""
    said = strata.note(table, order)
    if not said:
        return []
    crossing: dict[tuple[str, str], tuple[int, int, str, str]] = {}  # (claim, subject): crossed, n, against, verdict
    for v in judged.itertuples():
        k, n = strata.crossed(table[table["budget"] == by_name[v.claim].budget], v.subject, v.reference, v.metric)
        if k:
            crossing[v.claim, v.subject] = (k, n, v.reference, v.verdict)
    lines = [said, ""]
    if not crossing:
        return lines + ["Yet no pair of the comparisons above crosses: each lies on one machine."]
    groups: dict[str, dict[tuple[int, int], list[str]]] = {}
    for (_, subject), (k, n, reference, _) in crossing.items():
        names = groups.setdefault(reference, {}).setdefault((k, n), [])
        names += [] if subject in names else [subject]
    lines += ["Comparisons above whose pairs cross: " + "; ".join(
        f"against {reference}, " + "; ".join(
            (f"every pair of {', '.join(names)} ({k} of {n})" if k == n else
             f"{k} of the {n} pairs of {', '.join(names)}") for (k, n), names in counts.items())
        for reference, counts in groups.items()) + ". Every other comparison's pairs each lie on one machine.", ""]
    accuracy = {key for key in crossing if on_accuracy(by_name[key[0]].metric)}
    if not accuracy:
        return lines[:-1]
    # the claims of the crossing accuracy comparisons, δ as the table above decided it (a keeps margin taken
    # as a share of a gain in the table would otherwise be the share of the stratum's gain)
    wanted = [dataclasses.replace(by_name[c], margin=claims.Margin(
        at_least=float(judged.loc[judged["claim"] == c, "margin"].iloc[0]), why=by_name[c].margin.why))
        if by_name[c].test == "keeps" else by_name[c] for c in dict.fromkeys(c for c, _ in accuracy)]
    tables = []
    for machine, rows in strata.strata(table):
        enough = rows.groupby(["budget", "optimizer"])["seed"].transform("nunique") >= strata.MIN_STRATUM_PAIRS
        rows = rows[enough]
        within = claims.verdicts(rows, claims=wanted) if len(rows) else pd.DataFrame()
        if not len(within):
            continue
        crosses = pd.Series([(c, s) in accuracy for c, s in zip(within["claim"], within["subject"])], within.index)
        within = within[crosses & (within["n"] >= strata.MIN_STRATUM_PAIRS)]
        if not len(within):
            continue
        cells = []
        for _, v in within.iterrows():
            k, n, _, verdict = crossing[v["claim"], v["subject"]]
            columns = claims.verdict_columns(by_name[v["claim"]], v)
            cells.append({**{c: columns[c] for c in STRATUM_COLUMNS},
                          "all pairs (above)": f"{verdict}, {k} of {n} cross"})
        tables += [f"#### Within {machine} ({strata.seeds_said(rows['seed'])})", "",
                   pd.DataFrame(cells).to_markdown(index=False, disable_numparse=True), ""]
    if not tables:
        return lines + [f"No machine has {strata.MIN_STRATUM_PAIRS} or more pairs of a crossing accuracy comparison, "
                        "so none is judged within one machine here: runs of the reference's seeds on the subject's "
                        "machine would let it be."]
    return lines + [f"Each crossing accuracy comparison with {strata.MIN_STRATUM_PAIRS} or more pairs on one machine, "
                    "judged on that machine's runs alone: a check of its verdict above on pairs that do not cross, "
                    "not a replacement. δ as above; m: the comparisons of its family on that machine, corrected "
                    "together there (each side at α / 2m); all pairs (above): its verdict above, and how many of its "
                    "pairs cross.", "",
                    *tables[:-1]]


def verdicts(results_dir: Path, records: list[dict[str, Any]], extra: Iterable[Any] | None = None,
             profiles: dict[str, Any] | None = None):
    """(the declared claims with ``extra``, their verdicts on these records and on the cost command's tables
    under ``results_dir``: each ``cost-repeats.csv``, named by its folder). ``profiles``: the records'
    profiles (``record_profiles``); one that declares ``accuracy_claims = false`` (``smoke``: a pipeline
    check) gets no verdict on an accuracy metric."""
    profiles = record_profiles(records) if profiles is None else profiles
    declared = [*claims.CLAIMS, *(extra or ()), *(c for p in profiles.values() for c in p.claims)]
    judged = claims.verdicts(run_rows(records), frontier.cost_tables(results_dir), declared)
    silent = {name for name, p in profiles.items() if not p.accuracy_claims}
    if silent and len(judged):
        said = judged["table"].isin(silent) & judged["metric"].map(on_accuracy)
        judged = judged[~said].reset_index(drop=True)
    return declared, judged


def on_accuracy(metric: str) -> bool:
    """Whether a claim's metric is an accuracy (``test_acc``, ``best_test_acc_on_test_set``)."""
    return "acc" in metric.split("_")


def record_profiles(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per profile the records name, that profile as its file says now: the file its records name (a path
    relative to the checkout), else the shipped profile of that name; left out where neither can be read
    (a bad file: a warning says why). Its claims are judged on its tables, its declarations honoured, and
    its tables compared with it (``as_run``)."""
    found, shipped = {}, set(available_profiles())
    named = {r["config"]["profile"]: tuple((r.get("profile") or {}).get("files") or ()) for r in records}
    for name, files in named.items():
        path = Path(files[0]) if files else None
        path = ROOT / path if path is not None and not path.is_absolute() else path
        try:
            if path is not None and path.is_file():
                found[name] = load_profile(str(path))
            elif name in shipped:
                found[name] = load_profile(name)
        except ConfigError as exc:
            print(f"warning: profile {name} was not read (its claims are not judged): {exc}", file=sys.stderr)
    return found


# ----- the records against their profile as shipped --------------------------------------------------------
# where and under which budget a run ran: a profile runs under each of its budgets, on any device, under
# torchrun or not, so these are no change of it
PLACED = ("budget", "device", "replicas")
SUBSETS = ("train_subset", "test_subset")  # 0: the whole set


def as_run(records: list[dict[str, Any]], profiles: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Per table (profile, setting) whose runs differ from their profile as shipped (``record_profiles``) — in
    a training setting, or fewer seeds than it gives an optimizer — how, as the table's headings and figures
    say it: "shortened: 2 epochs, 2 seeds" where every change is a cut (fewer epochs or seeds, a smaller
    subset), else "not as shipped: dataset synthetic, 2 seeds". ``records``: labelled (``label_tables``)."""
    out = {}
    for (name, setting), group in _grouped(records, lambda r: (r["config"]["profile"], r.get("_setting", ""))).items():
        if name not in profiles:
            continue
        shipped = _as_planned(profiles[name])
        changes = [*_train_changes(group[0], shipped.train), *_seed_changes(group, shipped)]
        if changes:
            word = "shortened" if all(cut for _, cut in changes) else "not as shipped"
            out[name, setting] = f"{word}: {', '.join(said for said, _ in changes)}"
    return out


def _as_planned(profile: Any) -> Any:
    """A tuning profile as its trials run (``tune.plan``: its [tune] validation split and seeds); any other as is."""
    if not profile.tune:
        return profile
    try:
        return tune.plan(profile, check_device=False)[0]
    except ConfigError:  # a [tune] table that no longer checks: its trials are compared with the file as it is
        return profile


def _train_changes(record: dict[str, Any], shipped: TrainConfig) -> list[tuple[str, bool]]:
    """(a training setting the run changed of its profile's, as said; whether it is a cut), epochs first. The
    runs of one table share their settings (``label_tables``), so one record speaks for them."""
    ran = {**TRAIN_DEFAULTS, **record["config"]["train"]}
    ships = dataclasses.asdict(shipped)
    keys = sorted((k for k in ships if k not in PLACED and ran.get(k) != ships[k]), key=lambda k: (k != "epochs", k))
    return [(_counted(ran[k], "epoch") if k == "epochs" else f"{k} {ran.get(k)}", _cut(k, ran.get(k), ships[k]))
            for k in keys]


def _cut(key: str, ran: Any, ships: Any) -> bool:
    if not (isinstance(ran, int) and isinstance(ships, int)):
        return False
    if key in SUBSETS:
        return ran > 0 and (ships == 0 or ran < ships)
    return key == "epochs" and ran < ships


def _seed_changes(group: list[dict[str, Any]], profile: Any) -> list[tuple[str, bool]]:
    """"2 seeds" where an optimizer of the table ran fewer seeds than its profile gives it (a cut); more is
    no change of the experiment, and the table's seeds column says it."""
    seeds: dict[tuple, set] = {}
    for r in group:
        c = r["config"]
        seeds.setdefault((c["train"]["budget"], r.get("_label", c["optimizer"]), c["optimizer"]), set()).add(c["seed"])
    short = sorted({len(s) for (_, _, name), s in seeds.items() if len(s) < profile.seeds_of(name, _aliases(name))})
    if not short:
        return []
    return [((f"{short[0]}–{short[-1]} seeds" if len(short) > 1 else _counted(short[0], "seed")), True)]


def _aliases(name: str) -> tuple[str, ...]:
    try:
        return registry.get(name).aliases
    except KeyError:  # an optimizer registered when the run was made, not now
        return ()


def _counted(n: Any, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def heading_notes(changed: dict[tuple[str, str], str], records: list[dict[str, Any]],
                  where: Path) -> dict[tuple[str, str], str]:
    """What summary.md's headings say after a table's name: how its runs differ from their profile as shipped
    (``changed``: ``as_run``), and where their provenance is incomplete (``provenance_gaps``)."""
    gaps = provenance_gaps(records, where)
    return {k: "; ".join(s for s in (changed.get(k), gaps.get(k)) if s) for k in {*changed, *gaps}}


def provenance_gaps(records: list[dict[str, Any]], where: Path) -> dict[tuple[str, str], str]:
    """Per table whose records' commit does not hold the profile file they were configured from (an uncommitted
    profile, published with --allow-uncommitted), as its headings say it: "provenance incomplete: commit 036f71d
    holds no suite/profiles/gpu-cost.toml". Asked of git in the checkout at ``where``; where git cannot tell
    (no checkout, an unknown commit), nothing is said."""
    out = {}
    for key, group in _grouped(records, lambda r: (r["config"]["profile"], r.get("_setting", ""))).items():
        commits = [(r, (r.get("env") or {}).get("git_commit")) for r in group]
        read = {(commit.removesuffix("-dirty"), file) for r, commit in commits if commit
                for file in ((r.get("profile") or {}).get("files") or [f"suite/profiles/{key[0]}.toml"])}
        missing = sorted((c[:7], f) for c, f in read if measure.commit_holds(where, c, f) is False)
        if missing:
            out[key] = "provenance incomplete: " + "; ".join(f"commit {c} holds no {f}" for c, f in missing)
    return out


def headings_say(text: str, changed: dict[tuple[str, str], str]) -> str:
    """Markdown ``text`` whose every heading that names a table ("`cpu`", "`cpu` with epochs=2": the
    verdicts', the frontier's, the summary's and the sharpness tables' alike) goes on to say how its runs
    differ from their profile as shipped (``as_run``): "`cpu`, shortened: 2 epochs, 2 seeds"."""
    if not changed:
        return text
    # the table's name, not the start of another's: "`cpu`" is not "`cpu` with ...", nor "`cpu` with
    # epochs=2" the start of "`cpu` with epochs=2, label_noise=0.4"
    names = [(re.compile(re.escape(f"`{p}`" + (f" with {s}" if s else "")) + r"(?! with |, [\w.-]+=)"), said)
             for (p, s), said in changed.items()]

    def heading(line: str) -> str:
        for name, said in names:
            line = name.sub(lambda m, said=said: f"{m.group(0)}, {said}", line)
        return line

    return "\n".join(heading(line) if line.startswith("#") else line for line in text.split("\n"))


FINDINGS = ("<!-- findings: generated by `python -m suite publish` from results/; do not edit -->",
            "<!-- end of findings -->")
# a block of one results table's findings: "<!-- findings of cpu-noise: generated ... -->"
_BLOCK = re.compile(r"(<!-- findings(?: of (?P<table>[^:>]+))?: generated[^>]*-->\n)(.*?)(<!-- end of findings -->)",
                    re.S)


def readme_findings(results_dir: Path, only: str | None = None) -> str:
    """The findings a README beside ``results_dir`` carries between the ``FINDINGS`` markers (of every
    results table, or of ``only``)."""
    records, _ = latest_per_seed(label_tables([r for _, r in iter_records(results_dir) if r is not None]))
    declared, table = verdicts(results_dir, records)
    goals = frontier.goals(summarize(records), table, declared, frontier.cost_tables(results_dir)) if records else {}
    if only is not None and len(table):
        table = table[table["table"] == only]
    return claims.findings(table, declared, goals)


def findings_blocks(text: str) -> list[tuple[str | None, str]]:
    """(table or None for all, the block's text) of each findings block in a README's text."""
    return [(m.group("table"), m.group(3)) for m in _BLOCK.finditer(text)]


def update_readme(readme: Path, results_dir: Path) -> bool:
    """Rewrite every findings block of ``readme`` from ``results_dir``'s records; False where it has none."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if not _BLOCK.search(text):
        return False
    _atomic_write(readme, _BLOCK.sub(lambda m: m.group(1) + readme_findings(results_dir, m.group("table"))
                                     + m.group(4), text))
    return True


def write_figures(results_dir: Path, table: pd.DataFrame, records: list[dict[str, Any]],
                  refs: dict[str, tuple[str, ...]], judged: pd.DataFrame | None = None,
                  changed: dict[tuple[str, str], str] | None = None) -> list[Path]:
    """Per table of the summary (a profile, or one setting of it), each figure of ``plots.FIGURES`` whose
    data the table has, as ``<profile>[-<setting>]-<figure>.png`` (``figure_stem``); its title says how the
    table's runs differ from their profile as shipped (``changed``: ``as_run``)."""
    epochs, surfaces = epoch_rows(records), surface_rows(records)
    written = []
    tables = list(table.groupby(["profile", "setting"], sort=False))
    stems = figure_stems([key for key, _ in tables])
    for (profile, setting), t in tables:
        if "test_acc_mean" not in t or t["test_acc_mean"].isna().all():
            continue  # a tuning table (scored on a validation split): the figures plot test accuracy
        mine = judged[(judged["table"] == profile) & (judged["setting"] == setting)] \
            if judged is not None and len(judged) else pd.DataFrame()
        title = f"{profile}" + (f" ({setting})" if setting else "")
        title += f", {changed[profile, setting]}" if (profile, setting) in (changed or {}) else ""
        shown = plots.Shown(title, t, _of(epochs, profile, setting), _of(surfaces, profile, setting), refs[profile],
                            mine)
        written += [figure.write(results_dir / f"{stems[profile, setting]}-{figure.name}.png", shown)
                    for figure in plots.FIGURES if figure.needs(shown)]
    return written


def figure_stems(tables: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Per (profile, setting), the start of its figures' names: the profile, then the setting as a person
    reads it — the data set by its name (``cpu-cifar10``), any other setting as ``key-value``
    (``cpu-epochs-2``); a short hash of the setting only where two tables would otherwise share a name."""
    def stem(profile: str, setting: str) -> str:
        words = re.sub(r"(^|, )dataset=", r"\1", setting)
        return profile + (f"-{re.sub(r'[^A-Za-z0-9.]+', '-', words).strip('-')}" if setting else "")

    stems = {key: stem(*key) for key in tables}
    tied = {s for s in stems.values() if list(stems.values()).count(s) > 1}
    return {key: s + (f"-{zlib.crc32(key[1].encode()):08x}" if s in tied else "") for key, s in stems.items()}


FIGURE_MANIFEST = ".report-figures"  # the figures the last report wrote into a results directory


def remove_stale_figures(results_dir: Path, written: list[Path], profiles: set[str]) -> list[Path]:
    """Remove the figures this report no longer makes (a table renamed when a second data set joined its
    profile, a profile whose records are gone) — only files the report itself writes: those the last report
    listed in ``FIGURE_MANIFEST``, and a present profile's figures under the name a profile without settings
    gets (``<profile>-<figure>.png``, written before the manifest existed). Any other file stays. Returns
    the removed ones; ``FIGURE_MANIFEST`` then lists ``written``."""
    manifest = results_dir / FIGURE_MANIFEST
    listed = set(manifest.read_text().split("\n")) - {""} if manifest.is_file() else set()
    ours = listed | {f"{p}-{figure.name}.png" for p in profiles for figure in plots.FIGURES}
    keep = {p.name for p in written}
    removed = []
    for name in sorted(ours - keep):
        path = results_dir / name
        if "/" not in name and path.suffix == ".png" and path.is_file():
            path.unlink()
            removed.append(path)
    if written or manifest.exists():
        _atomic_write(manifest, "".join(f"{name}\n" for name in sorted(keep)))
    return removed


def _of(rows: pd.DataFrame, profile: str, setting: str) -> pd.DataFrame:
    return rows[(rows["profile"] == profile) & (rows["setting"] == setting)] if not rows.empty else rows


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
