"""The frontier: what each method costs per step beside its verdict on keeping SAM's accuracy, cheapest first,
and whether one meets the study's time goal — SAM's accuracy at no more than ``TIME_GOAL`` × SGD's time.

Generated into ``summary.md`` by the report from the same verdicts as its verdict table (``suite.claims``), so
the answer to "which cheaper SAM keeps SAM's accuracy?" is never written by hand. Costs:

- FLOPs × SGD: the table's own runs, counted exactly (the mean over its seeds; the periodic work amortised).
- time × SGD: the cost command's interleaved repeats (``cost-repeats.csv``; the median of the within-repeat
  ratios, with their range), and only for a profile whose step that table prices (``PRICED_BY``): the
  training runs' own times were not interleaved, and a machine's drift over a sweep would rank them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from suite.claims import STUDY, verdict_columns

# The study's choices (suite/study.toml): the goal, × SGD's time per step, for a cheaper SAM that keeps SAM's
# accuracy; the profiles whose step the cost table in a results directory's top level prices
TIME_GOAL = STUDY.time_goal
PRICED_BY = STUDY.priced_by


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
    t = summary[summary["budget"] == "epochs"]
    sgd = t.loc[t["optimizer"] == "sgd", "flops_per_step_mean"]
    base = float(sgd.iloc[0]) if len(sgd) else math.nan
    out = t[["optimizer"]].assign(flops_x_sgd=(t["flops_per_step_mean"] / base).values)
    out = out.merge(times, on="optimizer", how="left")
    verdicts = (keeps[["subject", "verdict"]] if len(keeps) else pd.DataFrame(columns=["subject", "verdict"]))
    out = out.merge(verdicts.rename(columns={"subject": "optimizer"}), on="optimizer", how="left")
    return out.sort_values(["time_x_sgd", "flops_x_sgd"], na_position="last", kind="stable").reset_index(drop=True)


def goal(table: pd.DataFrame, timed: bool) -> str:
    """Whether a method keeps SAM's accuracy at ≤ ``TIME_GOAL`` × SGD's time here, and if none does, which
    come closest: those under the goal with their verdicts, and the cheapest that keeps it."""
    if not timed:
        return (f"Time goal (≤ {TIME_GOAL:g}× SGD's time per step): not judged here, no interleaved cost table "
                "prices this profile's step.")
    judged = table[table["verdict"].notna()]
    under = judged[judged["time_x_sgd"] <= TIME_GOAL]
    met = under[under["verdict"] == "holds"]
    said = f"Time goal (keeps SAM's accuracy at ≤ {TIME_GOAL:g}× SGD's time per step): "
    if len(met):
        return said + "met by " + ", ".join(f"`{r.optimizer}` ({r.time_x_sgd:.2f}×)" for r in met.itertuples()) + "."
    within = ", ".join(f"`{r.optimizer}` ({r.time_x_sgd:.2f}×, {r.verdict})" for r in under.itertuples())
    holds = judged[(judged["verdict"] == "holds") & judged["time_x_sgd"].notna()]
    cheapest = (f"the cheapest that keeps it is `{holds.iloc[0].optimizer}` at {holds.iloc[0].time_x_sgd:.2f}×"
                if len(holds) else "no method's verdict holds here")
    return said + "not met. " + (f"Within it: {within}; " if within else "No method is within it; ") + cheapest + "."


def markdown(summary: pd.DataFrame, judged: pd.DataFrame, claims: Iterable[Any],
             cost_repeats: dict[str, pd.DataFrame]) -> str:
    """The frontier section of ``summary.md``: per table with keeps-SAM verdicts, its frontier and the goal."""
    claims = list(claims)
    tables = frontiers(summary, judged, claims, cost_repeats)
    if not tables:
        return ""
    lines = ["## Frontier: cost per step against keeping SAM's accuracy", "",
             "Every method of a table at the epochs budget, cheapest first. FLOPs × SGD: counted exactly on the "
             "table's runs (mean over seeds). Time × SGD: the median (lowest–highest) of the within-repeat ratios "
             "of the cost command's interleaved repeats (`cost.md`), where that table prices the profile's step; "
             "otherwise –. Δ vs SAM (points, optimizer − SAM, mean over n paired seeds), bound and verdict: the "
             "keeps-SAM claims of the verdict table above. Their family is every method ranked here, corrected as one "
             "(each side at α / 2m, m the methods with a verdict), since \"the cheapest that keeps SAM's accuracy\" "
             "acts on all of them together.", ""]
    for (name, setting), (table, verdicts, source, repeats) in tables.items():
        shown = [_shown(r, verdicts.get(r.optimizer), claims) for r in table.itertuples()]
        where = f"`{name}`" + (f" with {setting}" if setting else "")
        priced = f" (time: the `{source}` table, {repeats} repeats)" if repeats else ""
        lines += [f"### Frontier — {where}{priced}", "",
                  pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True), "",
                  goal(table, bool(repeats)), ""]
    return "\n".join(lines)


def goals(summary: pd.DataFrame, judged: pd.DataFrame, claims: Iterable[Any],
          cost_repeats: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The goal's sentence per table (profiles without a setting) that a cost table prices: for the README."""
    return {name: goal(table, True) for (name, setting), (table, _, _, repeats)
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
    out = {}
    for path in sorted(Path(results_dir).rglob("cost-repeats.csv")):
        folder = path.parent.relative_to(results_dir)
        if "runs" not in folder.parts:
            out["cost" if str(folder) == "." else str(folder)] = pd.read_csv(path)
    return out
