"""The frontier: what each method costs per step beside its verdict on keeping SAM's accuracy, cheapest first,
and whether one meets the study's time goal — SAM's accuracy at no more than ``TIME_GOAL`` × SGD's time.

Generated into ``summary.md`` by the report from the same verdicts as its verdict table (``suite.claims``), so
the answer to "which cheaper SAM keeps SAM's accuracy?" is never written by hand. Costs:

- FLOPs × SGD: the table's own runs, counted exactly (the mean over its seeds; the periodic work amortised).
- time × SGD: the cost command's interleaved repeats (``cost-repeats.csv``; the median of the within-repeat
  ratios, with their range), and only for a profile whose step that table prices (``PRICED_BY``): the
  training runs' own times were not interleaved, and a machine's drift over a sweep would rank them.

FLOPs and time then come from two sources, so the frontier compares the step the cost table timed
(``suite.cost.step``) with its runs' (``run_step``) and, where they differ or the table does not say, says so
under the table (``step_note``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from suite import cost, tune
from suite.claims import STUDY, verdict_columns
from suite.config import ConfigError, load_profile

# The study's choices (suite/study.toml): the goal, × SGD's time per step, for a cheaper SAM that keeps SAM's
# accuracy; the profiles whose step the cost table in a results directory's top level prices
TIME_GOAL = STUDY.time_goal
PRICED_BY = STUDY.priced_by
BUDGET = "epochs"  # the frontier's rows: every optimizer at the epochs budget


def keeps_sam(judged: pd.DataFrame, claims: Iterable[Any]) -> pd.DataFrame:
    """The verdicts of every claim that a method keeps SAM's accuracy (test ``keeps``, reference SAM)."""
    names = {c.name for c in claims if c.test == "keeps" and c.reference == "sam" and c.metric == "test_acc"}
    if judged is None or not len(judged):
        return pd.DataFrame()
    return judged[judged["claim"].isin(names)]


def time_ratios(repeats: pd.DataFrame | None) -> pd.DataFrame:
    """Per optimizer, the median (lowest, highest) of its within-repeat time ratio to SGD; empty without SGD."""
    if repeats is None or not len(repeats) or "sgd" not in set(repeats["optimizer"]):
        return pd.DataFrame(columns=["optimizer", "time_x_sgd", "time_min", "time_max", "repeats"])
    per_repeat = repeats.pivot_table(index="repeat", columns="optimizer", values="time_per_step_s")
    ratio = per_repeat.div(per_repeat["sgd"], axis=0)
    return pd.DataFrame({"optimizer": ratio.columns, "time_x_sgd": ratio.median().values,
                         "time_min": ratio.min().values, "time_max": ratio.max().values,
                         "repeats": ratio.count().values})


def rows(summary: pd.DataFrame, keeps: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """One table's frontier: every optimizer at the epochs budget with its FLOPs and time × SGD and its
    keeps-SAM verdict (NaN for SGD and SAM), ordered by time × SGD (those the cost table lacks last, by FLOPs)."""
    t = summary[summary["budget"] == BUDGET]
    sgd = t.loc[t["optimizer"] == "sgd", "flops_per_step_mean"]
    base = float(sgd.iloc[0]) if len(sgd) else math.nan
    out = t[["optimizer"]].assign(flops_x_sgd=(t["flops_per_step_mean"] / base).values)
    out = out.merge(times, on="optimizer", how="left")
    wanted = ["subject", "verdict", "fragile", "family"]
    verdicts = (keeps.reindex(columns=wanted) if len(keeps) else pd.DataFrame(columns=wanted))
    out = out.merge(verdicts.rename(columns={"subject": "optimizer"}), on="optimizer", how="left")
    return out.sort_values(["time_x_sgd", "flops_x_sgd"], na_position="last", kind="stable").reset_index(drop=True)


def goal(table: pd.DataFrame, timed: bool, profile: str = "") -> str:
    """Whether a method keeps SAM's accuracy at ≤ the time goal of ``profile``'s table × SGD's time here
    (``Study.goal_for``), and if none does, which come closest: those under the goal with their verdicts, and the
    cheapest that keeps it."""
    limit = STUDY.goal_for(profile)
    if not timed:
        return (f"Time goal (≤ {limit:g}× SGD's time per step): not judged here, no interleaved cost table "
                "prices this profile's step.")
    judged = table[table["verdict"].notna()]
    under = judged[judged["time_x_sgd"] <= limit]
    met = under[under["verdict"] == "holds"]
    family = (f"; one family of {int(judged['family'].max())} comparisons, every method with a verdict here"
              if "family" in judged and judged["family"].notna().any() else "")
    said = f"Time goal (keeps SAM's accuracy at ≤ {limit:g}× SGD's time per step{family}): "
    if len(met):
        return said + "met by " + ", ".join(f"`{r.optimizer}` ({r.time_x_sgd:.2f}×{_fragile(r)})"
                                            for r in met.itertuples()) + "."
    within = ", ".join(f"`{r.optimizer}` ({r.time_x_sgd:.2f}×, {r.verdict}{_fragile(r)})" for r in under.itertuples())
    holds = judged[(judged["verdict"] == "holds") & judged["time_x_sgd"].notna()]
    cheapest = (f"the cheapest that keeps it is `{holds.iloc[0].optimizer}` at {holds.iloc[0].time_x_sgd:.2f}×"
                + _fragile(holds.iloc[0]) if len(holds) else "no method's verdict holds here")
    return said + "not met. " + (f"Within it: {within}; " if within else "No method is within it; ") + cheapest + "."


def _fragile(r: Any) -> str:
    """", fragile" for a verdict that one dropped seed changes."""
    return ", fragile: one dropped seed changes it" if getattr(r, "fragile", False) is True else ""


def markdown(summary: pd.DataFrame, judged: pd.DataFrame, claims: Iterable[Any],
             cost_repeats: dict[str, pd.DataFrame], records: Iterable[dict[str, Any]] = (),
             cost_steps: dict[str, dict[str, Any] | None] | None = None) -> str:
    """The frontier section of ``summary.md``: per table with keeps-SAM verdicts, its frontier and the goal.
    ``records``: the runs behind ``summary`` (labelled, one per seed: ``report.latest_per_seed``), and
    ``cost_steps`` the step each cost table timed (``cost_steps``): a priced table whose cost table timed
    another step than its runs, or does not say, is marked (``step_note``); without records nothing is compared."""
    records = list(records)
    claims = list(claims)
    tables = frontiers(summary, judged, claims, cost_repeats)
    if not tables:
        return ""
    lines = ["## Frontier: cost per step against keeping SAM's accuracy", "",
             "Every method of a table at the epochs budget, cheapest first. FLOPs × SGD: counted exactly on the "
             "table's runs (mean over seeds). Time × SGD: the median (lowest–highest) of the within-repeat ratios "
             "of the cost command's interleaved repeats (`cost.md`), where that table prices the profile's step; "
             "otherwise –; where it timed another step than the table's runs ran (another processor, thread count, "
             "commit, ...) or does not say, a sentence under the table names what differs. Δ vs SAM (points, "
             "optimizer − SAM, mean over n paired seeds), bound and verdict: the keeps-SAM claims of the verdict "
             "table above. Their family is every method ranked here, corrected as one (each side at α / 2m, m the "
             "methods with a verdict), since \"the cheapest that keeps SAM's accuracy\" acts on all of them.", ""]
    for (name, setting), (table, verdicts, source, repeats) in tables.items():
        shown = [_shown(r, verdicts.get(r.optimizer), claims) for r in table.itertuples()]
        tuned = tuning(name)
        mine = [r for r in records if _of_table(r, name, setting)]
        if tuned:
            shown = [{**row, "tuned": _tuned_value(r.optimizer, tuned[1], mine)} for row, r in
                     zip(shown, table.itertuples())]
        where = f"`{name}`" + (f" with {setting}" if setting else "")
        flag, note = step_note(source, (cost_steps or {}).get(source), mine) if repeats and mine else ("", "")
        priced = f" (time: the `{source}` table, {repeats} repeats{flag})" if repeats else ""
        lines += [f"### Frontier — {where}{priced}", "",
                  pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True), "",
                  *([note, ""] if note else []), *([tuning_note(*tuned), ""] if tuned else []),
                  goal(table, bool(repeats), name), ""]
    return "\n".join(lines)


def tuning(profile: str) -> tuple[str, dict[str, tuple[str, tuple[Any, ...]]], int] | None:
    """Where ``profile`` names the tuning its [hparams] took (``tuned_by``): that tuning profile, each tuned
    optimizer's (parameter, grid) and the seeds per value; None where it names none, or where its files do not
    load from this checkout (a published table of a profile since removed or changed past reading)."""
    try:
        tuned_by = load_profile(profile).tuned_by
        settings = tune.settings(load_profile(tuned_by)) if tuned_by else None
    except (ConfigError, ValueError, OSError):
        return None
    if settings is None:
        return None
    return tuned_by, {g.optimizer: (g.param, g.values) for g in settings.grids}, settings.seeds


def _tuned_value(optimizer: str, grids: dict[str, tuple[str, tuple[Any, ...]]], records: list[dict[str, Any]]) -> str:
    """"rho = 0.2 (of 0.05, 0.1, 0.2, 0.4)": the value the table's runs of ``optimizer`` ran at, beside its grid;
    "–" for one not tuned; the values, where its runs disagree (they should not)."""
    if optimizer not in grids:
        return "–"
    param, values = grids[optimizer]
    ran = sorted({_value(r["config"]["hparams"].get(param)) for r in records if r["config"]["optimizer"] == optimizer})
    return f"{param} = {' / '.join(ran) or '?'} (of {', '.join(_value(v) for v in values)})"


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)


def tuning_note(tuned_by: str, grids: dict[str, tuple[str, tuple[Any, ...]]], seeds: int) -> str:
    """The sentence under a tuned table's frontier: which tuning chose the settings, and on what."""
    sizes = sorted({len(values) for _, values in grids.values()})
    return (f"Tuned: each method's main setting (column \"tuned\") was chosen in `{tuned_by}`, the same budget for "
            f"every method: {'/'.join(map(str, sizes))} values × {seeds} seeds, scored on a validation split of the "
            f"training data, never the test set (`python -m suite tune --profile {tuned_by} --choose`; "
            "docs/tuning.md). –: not tuned (SGD has no such setting).")


def goals(summary: pd.DataFrame, judged: pd.DataFrame, claims: Iterable[Any],
          cost_repeats: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The goal's sentence per table (profiles without a setting) that a cost table prices: for the README."""
    return {name: goal(table, True, name) for (name, setting), (table, _, _, repeats)
            in frontiers(summary, judged, claims, cost_repeats).items() if repeats and not setting}


def frontiers(summary: pd.DataFrame, judged: pd.DataFrame, claims: Iterable[Any],
              cost_repeats: dict[str, pd.DataFrame]) -> dict[tuple[str, str], tuple[pd.DataFrame, dict, str, int]]:
    """Per (table, setting) with keeps-SAM verdicts: its frontier (``rows``), its verdicts by optimizer, the
    cost table that prices it (or None) and that table's repeats (0: not priced)."""
    keeps = keeps_sam(judged, list(claims))
    if not len(keeps) or summary is None or not len(summary):
        return {}
    out = {}
    for (name, setting), g in keeps.groupby(["table", "setting"], sort=False):
        mine = summary[(summary["profile"] == name) & (summary["setting"] == setting)]
        source = PRICED_BY.get(name) if not setting else None
        times = time_ratios(cost_repeats.get(source) if source else None)
        out[name, setting] = (rows(mine, g, times), {v["subject"]: v for _, v in g.iterrows()}, source,
                              int(times["repeats"].max()) if len(times) else 0)
    return out


def _shown(r: Any, verdict: pd.Series | None, claims: list[Any]) -> dict[str, str]:
    """A frontier row as shown: its costs, then its verdict's columns as the verdict table shows them."""
    time = "–" if pd.isna(r.time_x_sgd) else f"{r.time_x_sgd:.2f} ({r.time_min:.2f}–{r.time_max:.2f})"
    row = {"optimizer": f"`{r.optimizer}`", "FLOPs × SGD": "–" if pd.isna(r.flops_x_sgd) else f"{r.flops_x_sgd:.2f}",
           "time × SGD": time}
    if verdict is None:
        return {**row, "Δ vs SAM": "reference" if r.optimizer == "sam" else "–", "bound": "–", "n": "–",
                "verdict": "–", "claim": "–"}
    said = verdict_columns(next(c for c in claims if c.name == verdict["claim"]), verdict)
    return {**row, "Δ vs SAM": said["Δ (mean)"], **{k: said[k] for k in ("bound", "n", "verdict", "claim")}}


def cost_tables(results_dir: Path) -> dict[str, pd.DataFrame]:
    """The cost command's repeats under ``results_dir``, by the name a table is shown under (``cost`` at the top)."""
    return {name: pd.read_csv(folder / "cost-repeats.csv") for name, folder in _cost_folders(results_dir).items()}


def cost_steps(results_dir: Path) -> dict[str, dict[str, Any] | None]:
    """The step each cost table under ``results_dir`` timed (``suite.cost.step``; None: unknown), named as
    ``cost_tables`` names them."""
    return {name: cost.step(folder) for name, folder in _cost_folders(results_dir).items()}


def _cost_folders(results_dir: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(Path(results_dir).rglob("cost-repeats.csv")):
        folder = path.parent.relative_to(results_dir)
        if "runs" not in folder.parts:
            out["cost" if str(folder) == "." else str(folder)] = path.parent
    return out


# ----- the step a cost table timed against its runs' ------------------------------------------------------------
def run_step(record: dict[str, Any]) -> dict[str, Any]:
    """A training record's step, as a cost table says its own (``suite.cost.STEP``): model, batch, precision and
    compile mode (the run's settings; precision and compile are left out of a record at their defaults), and
    the machine, torch threads, torch and commit it ran on (its ``env``)."""
    train, env = record["config"]["train"], record.get("env") or {}
    return {"model": train.get("model"), "batch_size": train.get("batch_size"),
            "precision": train.get("precision", "fp32"), "compile": train.get("compile", "none"),
            "machine": env.get("gpu") or env.get("processor"), "threads": env.get("torch_threads"),
            "torch": env.get("torch"), "commit": env.get("git_commit")}


def _said(key: str, value: Any) -> str:
    """One value of a step as a reader reads it: "2 threads", "commit `08f4d61`", "batch 128"."""
    if value is None:
        return f"{cost.STEP_WORDS[key]} unknown"
    if key == "threads":
        return f"{value} thread" + ("" if value == 1 else "s")
    if key == "commit":
        clean = str(value).removesuffix("-dirty")
        return f"commit `{clean[:7]}{str(value)[len(clean):]}`"
    return {"batch_size": f"batch {value}", "torch": f"torch {value}",
            "compile": "eager" if value == "none" else f"torch.compile ({value})"}.get(key, str(value))


def step_note(source: str, step: dict[str, Any] | None, records: list[dict[str, Any]]) -> tuple[str, str]:
    """(what the frontier's heading adds after "the `cost` table, 5 repeats", the sentence under its table)
    where the cost table ``source`` timed another step than ``records`` (a table's runs at the frontier's budget)
    ran — another model, batch, precision, compile mode, processor, thread count, torch or commit — naming what
    differs, the runs grouped by the values they differ in; where it does not say its step (``step`` None, or
    keys of it None), that it is unknown. ("", "") where every run ran the step it timed."""
    if step is None:
        return (", its step unknown: below",
                f"The `{source}` table does not say which step it timed (no `{cost.STEP_FILE}` beside it and no header "
                "in its `cost.md` to read it from): whether its times are of these runs' step is unknown.")
    runs = [run_step(r) for r in records]
    differ = [k for k in cost.STEP if step.get(k) is not None and {r[k] for r in runs} != {step[k]}]
    unstated = [cost.STEP_WORDS[k] for k in cost.STEP if step.get(k) is None]
    said = []
    if differ:
        groups = Counter(tuple(r[k] for k in differ) for r in runs)
        theirs = "; ".join(", ".join(_said(k, v) for k, v in zip(differ, values))
                           + f" ({_runs(n, values, differ, records)})"
                           for values, n in sorted(groups.items(), key=lambda g: (-g[1], str(g[0]))))
        said.append(f"Time and FLOPs here are of different steps: the `{source}` table's step: "
                    + ", ".join(_said(k, step[k]) for k in differ) + f"; these runs': {theirs}.")
    if unstated:
        said.append(f"The `{source}` table does not state its {' or '.join(unstated)} (its `cost.md` predates "
                    f"`{cost.STEP_FILE}`): whether {'they match' if len(unstated) > 1 else 'it matches'} these "
                    "runs' is unknown.")
    if not said:
        return "", ""
    return (", another step: below" if differ else ", its step partly unknown: below"), " ".join(said)


def _runs(n: int, values: tuple, keys: list[str], records: list[dict[str, Any]]) -> str:
    """"21 runs", naming the optimizers where they are a few (at most 8, at most half of the table's) whose every
    run is among them: "21 runs: `asam`, …"."""
    mine = {_name(r) for r in records if tuple(run_step(r)[k] for k in keys) == values}
    whole = all(tuple(run_step(r)[k] for k in keys) == values for r in records if _name(r) in mine)
    every = {_name(r) for r in records}
    names = f": {', '.join(f'`{o}`' for o in sorted(mine))}" if whole and len(mine) <= min(8, len(every) / 2) else ""
    return f"{n} run" + ("" if n == 1 else "s") + names


def _name(record: dict[str, Any]) -> str:
    return record.get("_label") or record["config"]["optimizer"]  # as the table's rows name it


def _of_table(record: dict[str, Any], name: str, setting: str) -> bool:
    c = record["config"]
    return c["profile"] == name and record.get("_setting", "") == setting and c["train"]["budget"] == BUDGET
