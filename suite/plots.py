"""The comparison figure of a profile, drawn from the summary table: a row per budget — accuracy vs
training FLOPs and vs training seconds (mean ± std over seeds, with the Pareto front), and test
accuracy per epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from suite.report import pareto_front
from suite.store import atomic_write

COST_PANELS = (("budget_train_flops", 1e12, "training TFLOP"),
               ("budget_train_seconds_at_timed_rate", 1.0, "training seconds (at the timed rate)"))


def comparison_figures(results_dir: Path, table: pd.DataFrame, epochs: pd.DataFrame) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return [_profile_figure(results_dir, profile, p, epochs[epochs["profile"] == profile])
            for profile, p in table.groupby("profile", sort=False)]


def _profile_figure(results_dir: Path, profile: str, p: pd.DataFrame, epochs: pd.DataFrame) -> Path:
    import matplotlib.pyplot as plt
    import seaborn as sns

    names = list(dict.fromkeys(p["optimizer"]))
    palette = sns.color_palette("tab10" if len(names) <= 10 else "husl", n_colors=len(names))
    style = {"colors": dict(zip(names, palette)), "markers": dict(zip(names, "osD^v<>pPX*hH8d" * 3))}
    budgets = list(dict.fromkeys(p["budget"]))
    fig, axes = plt.subplots(len(budgets), 3, figsize=(19, 5 * len(budgets)), squeeze=False)
    for row, budget in zip(axes, budgets):
        g = p[p["budget"] == budget]
        for ax, (x, scale, label) in zip(row[:2], COST_PANELS):
            _cost_panel(ax, g, x, scale, style)
            ax.set_xlabel(label)
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"budget {budget}: accuracy vs {label.split()[1]}")
        curves = epochs[epochs["budget"] == budget]
        sns.lineplot(curves.assign(test_acc=100 * curves["test_acc"]), x="epochs_done", y="test_acc", ax=row[2],
                     hue="optimizer", hue_order=names, palette=style["colors"], marker="o", legend=False)
        row[2].set_xlabel("epochs")
        row[2].set_ylabel("test accuracy (%)")
        row[2].set_title(f"budget {budget}: test accuracy per epoch (band: 95% interval)")
    handles = [plt.Line2D([], [], color=style["colors"][n], marker=style["markers"][n], linestyle="", label=n)
               for n in names]
    handles.append(plt.Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                              markersize=11, label="Pareto front"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize="small")
    fig.suptitle(f"{profile}: mean ± std over seeds")
    fig.tight_layout()
    return _save(fig, results_dir / f"{profile}-comparison.png")


def _cost_panel(ax: Any, g: pd.DataFrame, x: str, scale: float, style: dict) -> None:
    ok = g[g[f"{x}_mean"].notna() & g["test_acc_mean"].notna()]
    for r in ok.itertuples():
        d = r._asdict()
        xerr, yerr = d[f"{x}_std"] / scale, 100 * r.test_acc_std
        ax.errorbar(d[f"{x}_mean"] / scale, 100 * r.test_acc_mean, xerr=0 if math.isnan(xerr) else xerr,
                    yerr=0 if math.isnan(yerr) else yerr, fmt=style["markers"][r.optimizer], capsize=3,
                    color=style["colors"][r.optimizer])
    front = pareto_front(ok[f"{x}_mean"], ok["test_acc_mean"])
    if front:
        fx, fy = ok[f"{x}_mean"].iloc[front] / scale, 100 * ok["test_acc_mean"].iloc[front]
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, zorder=0)
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=1, zorder=3)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        # savefig picks the format from the name, so give it explicitly for the temporary file
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
