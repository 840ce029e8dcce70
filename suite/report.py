"""Records -> tidy rows -> summary tables (CSV, Markdown) and plots (PNG). ``summarize`` is a pure
function of the records; ``write_report`` only adds the files."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from suite.store import atomic_write, iter_records

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal's 1.96.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
REFERENCE = "sgd"


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def run_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run."""
    rows = []
    for r in records:
        m, c = r["metrics"], r["config"]
        rows.append({
            "profile": c["profile"], "optimizer": c["optimizer"], "seed": c["seed"], "status": m["status"],
            "started_at": r.get("started_at", ""),
            "test_acc": m["test_acc"], "test_loss": m["test_loss"], "train_loss": m["train_loss"],
            "time_per_step_s": m["time_per_step_s"], "samples_per_s": m["samples_per_s"],
            "train_seconds": m["train_seconds"], "flops_per_step": m["flops_per_step"],
            "forward_passes_per_step": m["forward_passes_per_step"],
            "backward_passes_per_step": m["backward_passes_per_step"],
            "peak_memory_mb": m["peak_memory_mb"], "steps": m["steps"],
        })
    return pd.DataFrame(rows)


def epoch_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x epoch (training curves)."""
    rows = [
        {"profile": r["config"]["profile"], "optimizer": r["config"]["optimizer"], "seed": r["config"]["seed"], **e}
        for r in records
        for e in r["epochs"]
    ]
    return pd.DataFrame(rows)


def summarize(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Per profile and optimizer: seeds, accuracy mean/std/95% interval, cost and its ratio to SGD."""
    runs = run_rows(records)
    if runs.empty:
        return runs
    # SGD first (the reference), then in the order the sweep ran them (the registry's order)
    first_start = runs.groupby("optimizer", sort=False)["started_at"].min()
    names = sorted(first_start.index, key=lambda n: (n != REFERENCE, first_start[n]))
    order = {name: i for i, name in enumerate(names)}
    out = []
    for (profile, optimizer), g in runs.groupby(["profile", "optimizer"], sort=False):
        ok = g[g["status"] == "finished"]
        n = len(ok)
        std = ok["test_acc"].std(ddof=1) if n > 1 else math.nan
        out.append({
            "profile": profile, "optimizer": optimizer, "seeds": n, "diverged": int((g["status"] != "finished").sum()),
            "test_acc_mean": ok["test_acc"].mean(), "test_acc_std": std,
            "test_acc_ci95": t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan,
            "time_per_step_s": ok["time_per_step_s"].mean(), "samples_per_s": ok["samples_per_s"].mean(),
            "flops_per_step": ok["flops_per_step"].mean(),
            "forward_passes_per_step": ok["forward_passes_per_step"].mean(),
            "backward_passes_per_step": ok["backward_passes_per_step"].mean(),
            "peak_memory_mb": ok["peak_memory_mb"].mean(),
        })
    table = pd.DataFrame(out)
    for reference in (REFERENCE, "sam"):
        for col, ratio in (("time_per_step_s", "time_ratio"), ("flops_per_step", "flops_ratio")):
            ref = table[table["optimizer"] == reference].set_index("profile")[col]
            table[f"{ratio}_{reference}"] = table[col] / table["profile"].map(ref)
    table["_order"] = table["optimizer"].map(order)
    return table.sort_values(["profile", "_order"]).drop(columns="_order").reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """One Markdown table per profile."""
    parts = []
    for profile, g in table.groupby("profile", sort=False):
        lines = [
            f"### Profile `{profile}`",
            "",
            "| optimizer | seeds | test acc % (mean ± std) | 95% CI | ms/step | time × SGD | time × SAM | GFLOP/step "
            "| FLOPs × SGD | FLOPs × SAM | fwd/bwd passes | peak MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g.itertuples():
            div = f" ({r.diverged} diverged)" if r.diverged else ""
            lines.append(
                f"| {r.optimizer} | {r.seeds}{div} | {_pct(r.test_acc_mean)} ± {_pct(r.test_acc_std)} | "
                f"± {_pct(r.test_acc_ci95)} | {_num(r.time_per_step_s * 1000, 1)} | {_num(r.time_ratio_sgd, 2)} | "
                f"{_num(r.time_ratio_sam, 2)} | {_num(r.flops_per_step / 1e9, 2)} | {_num(r.flops_ratio_sgd, 2)} | "
                f"{_num(r.flops_ratio_sam, 2)} | "
                f"{_num(r.forward_passes_per_step, 2)}/{_num(r.backward_passes_per_step, 2)} | "
                f"{_num(r.peak_memory_mb, 0)} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _num(x: float, digits: int) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def write_report(results_dir: Path) -> tuple[list[Path], list[Path]]:
    """Write summary.csv, summary.md and per-profile plots; returns (written, skipped records)."""
    records, skipped = [], []
    for path, record in iter_records(results_dir):
        (records.append(record) if record is not None else skipped.append(path))
    table = summarize(records)
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    _atomic_write(written[0], table.to_csv(index=False))
    header = "# Summary\n\nGenerated by `python -m suite report` from the records in `runs/`.\n\n"
    _atomic_write(written[1], header + (to_markdown(table) if not table.empty else "No records.\n"))
    if not table.empty:
        written += _plots(results_dir, table, run_rows(records), epoch_rows(records))
    return written, skipped


def _plots(results_dir: Path, table: pd.DataFrame, runs: pd.DataFrame, epochs: pd.DataFrame) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    written = []
    for profile, g in table.groupby("profile", sort=False):
        palette = sns.color_palette("tab10" if len(g) <= 10 else "husl", n_colors=len(g))
        colors = dict(zip(g["optimizer"], palette))  # one distinct colour per optimizer, in every plot
        markers = dict(zip(g["optimizer"], "osD^v<>pPX*hH8d" * 2))
        for x, label, name in (("flops_per_step", "GFLOP per step", "accuracy-vs-flops"),
                               ("time_per_step_s", "seconds per step", "accuracy-vs-time")):
            fig, ax = plt.subplots(figsize=(6.5, 4.5))
            scale = 1e9 if x == "flops_per_step" else 1.0
            for r in g.itertuples():
                ax.errorbar(getattr(r, x) / scale, 100 * r.test_acc_mean,
                            yerr=0 if math.isnan(r.test_acc_std) else 100 * r.test_acc_std,
                            fmt=markers[r.optimizer], capsize=4, color=colors[r.optimizer], label=r.optimizer)
            ax.set_xlabel(label)
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"{profile}: accuracy vs {label.split()[0]} (mean ± std over seeds)")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
            written.append(_save(fig, results_dir / f"{profile}-{name}.png"))
        curves = epochs[epochs["profile"] == profile]
        if not curves.empty:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            style = dict(hue="optimizer", hue_order=list(colors), palette=colors, marker="o")
            sns.lineplot(curves, x="epoch", y="train_loss", ax=axes[0], **style)
            sns.lineplot(curves.assign(test_acc=100 * curves["test_acc"]), x="epoch", y="test_acc", ax=axes[1],
                         **style)
            for ax in axes:
                ax.xaxis.get_major_locator().set_params(integer=True)
            axes[0].set_ylabel("train loss (epoch mean)")
            axes[1].set_ylabel("test accuracy (%)")
            axes[0].get_legend().remove()
            axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
            fig.suptitle(f"{profile}: training curves (band: 95% interval over seeds)")
            written.append(_save(fig, results_dir / f"{profile}-curves.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        # savefig picks the format from the name, so give it explicitly for the temporary file
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
