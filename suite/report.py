"""Records -> tidy rows -> summary tables (CSV, Markdown) and plots (PNG). ``summarize`` is a pure
function of the records; ``write_report`` only adds the files."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from suite.config import BUDGETS
from suite.store import atomic_write, iter_records

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal's 1.96.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
REFERENCE = "sgd"


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


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


def distinguishable(n: int, mean: float, half: float) -> bool:
    """The 95% interval of a paired difference excludes zero."""
    return n > 1 and not math.isnan(half) and abs(mean) > half


def pareto_front(costs: Iterable[float], accuracies: Iterable[float]) -> list[int]:
    """Indices of the points no other point beats (cost no higher and accuracy no lower, one strictly),
    ordered by cost."""
    points = list(zip(costs, accuracies))
    front = [
        i for i, (c, a) in enumerate(points)
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)
    ]
    return sorted(front, key=lambda i: points[i])


def run_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run."""
    rows = []
    for r in records:
        m, c = r["metrics"], r["config"]
        b = m.get("budget") or {}
        rows.append({
            "profile": c["profile"], "budget": c.get("train", {}).get("budget", "epochs"),
            "optimizer": c["optimizer"], "seed": c["seed"], "status": m["status"],
            "started_at": r.get("started_at", ""),
            "test_acc": m["test_acc"], "test_loss": m["test_loss"], "train_loss": m["train_loss"],
            "time_per_step_s": m["time_per_step_s"], "samples_per_s": m["samples_per_s"],
            "train_seconds": m["train_seconds"], "flops_per_step": m["flops_per_step"],
            "forward_passes_per_step": m["forward_passes_per_step"],
            "backward_passes_per_step": m["backward_passes_per_step"],
            "peak_memory_mb": m["peak_memory_mb"], "steps": m["steps"],
            "diverged_at_step": m.get("diverged_at_step"), "last_finite_loss": m.get("last_finite_loss"),
            "epochs_run": b.get("epochs_run", math.nan),
            "train_flops": _or_nan(b.get("train_flops")),
            "train_time_s": _or_nan(b.get("train_seconds_at_timed_rate")),
            "budget_spent_ratio": _or_nan(b.get("spent_ratio")),
        })
    return pd.DataFrame(rows)


def epoch_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x evaluation (training curves)."""
    rows = [
        {"profile": r["config"]["profile"], "budget": r["config"].get("train", {}).get("budget", "epochs"),
         "optimizer": r["config"]["optimizer"], "seed": r["config"]["seed"], "epochs_done": e["epoch"], **e}
        for r in records
        for e in r["epochs"]
    ]
    return pd.DataFrame(rows)


def summarize(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Per profile, budget and optimizer: seeds, accuracy mean/std/95% interval, paired differences to
    SGD and SAM with their intervals, cost and its ratio to SGD and SAM, what the budget allowed."""
    runs = run_rows(latest_per_seed(records)[0])
    if runs.empty:
        return runs
    # SGD first (the reference), then in the order the sweep ran them (the registry's order)
    first_start = runs.groupby("optimizer", sort=False)["started_at"].min()
    names = sorted(first_start.index, key=lambda n: (n != REFERENCE, first_start[n]))
    order = {name: i for i, name in enumerate(names)}
    finished = runs[runs["status"] == "finished"]
    out = []
    for (profile, budget, optimizer), g in runs.groupby(["profile", "budget", "optimizer"], sort=False):
        ok = g[g["status"] == "finished"]
        n, mean, std, half = interval(ok["test_acc"])
        row = {
            "profile": profile, "budget": budget, "optimizer": optimizer, "seeds": n,
            "diverged": int((g["status"] != "finished").sum()),
            "diverged_runs": "; ".join(
                f"seed {d.seed} at step {int(d.diverged_at_step)} (last finite loss {_num(d.last_finite_loss, 3)})"
                for d in g[g["status"] != "finished"].itertuples()),
            "test_acc_mean": mean, "test_acc_std": std, "test_acc_ci95": half,
        }
        accs = dict(zip(ok["seed"], ok["test_acc"]))
        for reference in (REFERENCE, "sam"):
            ref = finished[(finished["profile"] == profile) & (finished["budget"] == budget)
                           & (finished["optimizer"] == reference)]
            dn, dmean, _, dhalf = paired_difference(accs, dict(zip(ref["seed"], ref["test_acc"])))
            row.update({f"diff_{reference}_seeds": dn, f"diff_{reference}_mean": dmean,
                        f"diff_{reference}_ci95": dhalf,
                        f"diff_{reference}_distinguishable": distinguishable(dn, dmean, dhalf)})
        for col in ("epochs_run", "steps", "time_per_step_s", "samples_per_s", "flops_per_step", "train_flops",
                    "train_time_s", "budget_spent_ratio", "forward_passes_per_step", "backward_passes_per_step",
                    "peak_memory_mb"):
            row[col] = ok[col].mean()
        row["train_flops_std"], row["train_time_s_std"] = ok["train_flops"].std(), ok["train_time_s"].std()
        out.append(row)
    table = pd.DataFrame(out)
    key = table["profile"] + "\x00" + table["budget"]
    for reference in (REFERENCE, "sam"):
        for col, ratio in (("time_per_step_s", "time_ratio"), ("flops_per_step", "flops_ratio")):
            ref = table[table["optimizer"] == reference].set_index(key[table["optimizer"] == reference])[col]
            table[f"{ratio}_{reference}"] = table[col] / key.map(ref)
    table["_order"] = table["optimizer"].map(order)
    table["_budget"] = table["budget"].map({b: i for i, b in enumerate(BUDGETS)})
    return table.sort_values(["profile", "_budget", "_order"]).drop(columns=["_order", "_budget"]).reset_index(
        drop=True)


BUDGET_TITLES = {
    "epochs": "every optimizer trains the same number of epochs",
    "flops": "every optimizer gets the training FLOPs the reference spends in the epochs",
    "time": "every optimizer gets the training seconds the reference spends in the epochs",
}


def to_markdown(table: pd.DataFrame) -> str:
    """One Markdown table per profile and budget."""
    parts = []
    for (profile, budget), g in table.groupby(["profile", "budget"], sort=False):
        lines = [
            f"### Profile `{profile}`, budget `{budget}`: {BUDGET_TITLES.get(budget, budget)}",
            "",
            "| optimizer | seeds | epochs | test acc % (mean ± std) | 95% CI | Δ vs SGD (paired, 95% CI) "
            "| Δ vs SAM (paired, 95% CI) | time × SGD | time × SAM | FLOPs × SGD | FLOPs × SAM | ms/step "
            "| GFLOP/step | train TFLOP | budget spent | fwd/bwd passes | peak MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g.itertuples():
            div = f" ({r.diverged} diverged)" if r.diverged else ""
            lines.append(
                f"| {r.optimizer} | {r.seeds}{div} | {_num(r.epochs_run, 2)} | {_pct(r.test_acc_mean)} ± "
                f"{_pct(r.test_acc_std)} | ± {_pct(r.test_acc_ci95)} | {_diff(r, 'sgd')} | {_diff(r, 'sam')} | "
                f"{_num(r.time_ratio_sgd, 2)} | {_num(r.time_ratio_sam, 2)} | {_num(r.flops_ratio_sgd, 2)} | "
                f"{_num(r.flops_ratio_sam, 2)} | {_num(r.time_per_step_s * 1000, 1)} | "
                f"{_num(r.flops_per_step / 1e9, 2)} | {_num(r.train_flops / 1e12, 2)} | "
                f"{_num(100 * r.budget_spent_ratio, 0)}% | "
                f"{_num(r.forward_passes_per_step, 2)}/{_num(r.backward_passes_per_step, 2)} | "
                f"{_num(r.peak_memory_mb, 0)} |"
            )
        diverged = [f"- {r.optimizer}: {r.diverged_runs}" for r in g.itertuples() if r.diverged]
        if diverged:
            lines += ["", "Diverged runs (loss NaN/inf; not in the means):", *diverged]
        lines += ["", "Δ: mean over seeds of (this optimizer − the reference) in accuracy points, same seed = same "
                  "initial weights and batch order; **bold** where the 95% interval excludes 0."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _diff(r: Any, reference: str) -> str:
    if r.optimizer == reference or getattr(r, f"diff_{reference}_seeds") == 0:
        return "–"
    mean, half = getattr(r, f"diff_{reference}_mean"), getattr(r, f"diff_{reference}_ci95")
    text = f"{100 * mean:+.2f} ± {_pct(half)}"
    return f"**{text}**" if getattr(r, f"diff_{reference}_distinguishable") else text


def _or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def latest_per_seed(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One record per (profile, budget, optimizer, seed): the latest started. Two records with one key
    come from different settings under one profile name (e.g. an ``--epochs`` override); pooling
    them would mix settings and pair a seed with only one of its runs. Returns (kept, superseded)."""
    kept: dict[tuple, dict[str, Any]] = {}
    superseded = []
    for r in sorted(records, key=lambda r: (r.get("started_at", ""), r.get("finished_at", ""))):
        c = r["config"]
        key = (c["profile"], c.get("train", {}).get("budget", "epochs"), c["optimizer"], c["seed"])
        if key in kept:
            superseded.append(kept[key])
        kept[key] = r
    return list(kept.values()), superseded


def write_report(results_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Write summary.csv, summary.md and per-profile plots; returns (written, unreadable records,
    records superseded by a later run of the same profile, budget, optimizer and seed)."""
    records, skipped, path_of = [], [], {}
    for path, record in iter_records(results_dir):
        if record is None:
            skipped.append(path)
        else:
            records.append(record)
            path_of[id(record)] = path
    records, superseded = latest_per_seed(records)
    table = summarize(records)
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    _atomic_write(written[0], table.to_csv(index=False))
    header = "# Summary\n\nGenerated by `python -m suite report` from the records in `runs/`.\n\n"
    _atomic_write(written[1], header + (to_markdown(table) if not table.empty else "No records.\n"))
    if not table.empty:
        written += _plots(results_dir, table, run_rows(records), epoch_rows(records))
    return written, skipped, [path_of[id(r)] for r in superseded]


def _plots(results_dir: Path, table: pd.DataFrame, runs: pd.DataFrame, epochs: pd.DataFrame) -> list[Path]:
    """One figure per profile; a row per budget: accuracy vs training FLOPs and vs training time with
    the Pareto front, and test accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    written = []
    for profile, p in table.groupby("profile", sort=False):
        names = list(dict.fromkeys(p["optimizer"]))
        palette = sns.color_palette("tab10" if len(names) <= 10 else "husl", n_colors=len(names))
        colors = dict(zip(names, palette))  # one colour and marker per optimizer, in every panel
        markers = dict(zip(names, "osD^v<>pPX*hH8d" * 3))
        budgets = list(dict.fromkeys(p["budget"]))
        fig, axes = plt.subplots(len(budgets), 3, figsize=(19, 5 * len(budgets)), squeeze=False)
        for row, budget in zip(axes, budgets):
            g = p[p["budget"] == budget]
            for ax, x, scale, label in ((row[0], "train_flops", 1e12, "training TFLOP"),
                                        (row[1], "train_time_s", 1.0, "training seconds (at the timed rate)")):
                _cost_panel(ax, g, x, scale, colors, markers)
                ax.set_xlabel(label)
                ax.set_ylabel("final test accuracy (%)")
                ax.set_title(f"budget {budget}: accuracy vs {label.split()[1]}")
            curves = epochs[(epochs["profile"] == profile) & (epochs["budget"] == budget)]
            sns.lineplot(curves.assign(test_acc=100 * curves["test_acc"]), x="epochs_done", y="test_acc", ax=row[2],
                         hue="optimizer", hue_order=names, palette=colors, marker="o", legend=False)
            row[2].set_xlabel("epochs")
            row[2].set_ylabel("test accuracy (%)")
            row[2].set_title(f"budget {budget}: test accuracy per epoch (band: 95% interval)")
        handles = [plt.Line2D([], [], color=colors[n], marker=markers[n], linestyle="", label=n) for n in names]
        handles.append(plt.Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                                  markersize=11, label="Pareto front"))
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize="small")
        fig.suptitle(f"{profile}: mean ± std over seeds")
        fig.tight_layout()
        written.append(_save(fig, results_dir / f"{profile}-comparison.png"))
    return written


def _cost_panel(ax: Any, g: pd.DataFrame, x: str, scale: float, colors: dict, markers: dict) -> None:
    ok = g[g[x].notna() & g["test_acc_mean"].notna()]
    for r in ok.itertuples():
        xerr, yerr = getattr(r, f"{x}_std") / scale, 100 * r.test_acc_std
        ax.errorbar(getattr(r, x) / scale, 100 * r.test_acc_mean, xerr=0 if math.isnan(xerr) else xerr,
                    yerr=0 if math.isnan(yerr) else yerr, fmt=markers[r.optimizer], capsize=3,
                    color=colors[r.optimizer])
    front = pareto_front(ok[x], ok["test_acc_mean"])
    if front:
        fx, fy = ok[x].iloc[front] / scale, 100 * ok["test_acc_mean"].iloc[front]
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, zorder=0)
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=1, zorder=3)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        # savefig picks the format from the name, so give it explicitly for the temporary file
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
