"""The figures of a table (a profile, or one setting of it), drawn from the summary:

- ``<name>-comparison.png``: per budget, final test accuracy against training FLOPs and against training
  seconds, one panel per family (SAM-like, SSAM-F, SSAM-D, others), each beside SGD and SAM, with the
  Pareto front of the whole table;
- ``<name>-curves.png``: per budget, test accuracy per epoch, one panel per family.

An optimizer has one colour and marker in every figure (``style``), whatever else is drawn. Error bars
and bands are said only where there are seeds to make them: with one seed the title says so.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from suite.registry import ASCENT_SUFFIXES
from suite.report import pareto_front
from suite.store import atomic_write

COST_PANELS = (("budget_train_flops", 1e12, "training TFLOP"),
               ("budget_train_seconds_at_timed_rate", 1.0, "training seconds (at the timed rate)"))
FAMILIES = (("SAM and ESAM", ("sam", "esam")), ("SSAM-F", ("ssam-f",)), ("SSAM-D", ("ssam-d",)))
REFERENCE_STYLE = {"sgd": ("#222222", "o", True), "sam": ("#d62728", "D", True), "esam": ("#ff7f0e", "v", True)}
# SSAM: hue by pattern within the family's colour ramp, filled marker = explicit, hollow = implicit,
# an X = implicit-masked
SSAM_COLOURS = {"f": {"unstructured": "#08519c", "structured": "#3182bd", "structured-top": "#17becf",
                      "nm": "#6baed6"},
                "d": {"unstructured": "#006d2c", "structured": "#31a354", "structured-top": "#a1d99b",
                      "nm": "#74c476"}}
SSAM_MARKERS = {"unstructured": "o", "structured": "s", "structured-top": "p", "nm": "^"}
# a cheaper-ascent variant keeps its base's colour, with its own marker per fraction: a plus for a quarter,
# a star for two fifths (a fraction added to the registry without a marker fails here, at import)
CHEAP_MARKERS = {ASCENT_SUFFIXES[word]: marker for word, marker in
                 zip(ASCENT_SUFFIXES, ("P", "*"), strict=True)}
BIG_MARKERS = {"*": 1.5}  # a star reads smaller than a disc of the same size
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
OTHER_MARKERS = "PXh*p<>"


def style(name: str) -> tuple[str, str, bool]:
    """(colour, marker, filled) of an optimizer: a function of its name alone, so it is the same in
    every figure. A row label with hyper-parameters (``"sam [rho=0.1]"``) is styled as another optimizer."""
    for suffix, marker in CHEAP_MARKERS.items():
        if name.endswith(suffix) and name != suffix:
            colour, _, _ = style(name.removesuffix(suffix))
            return colour, marker, True
    if name in REFERENCE_STYLE:
        return REFERENCE_STYLE[name]
    m = re.fullmatch(r"ssam-([fd])-(unstructured|structured-top|structured|nm)-(explicit|implicit|implicit-masked)",
                     name)
    if m:
        marker = "X" if m[3] == "implicit-masked" else SSAM_MARKERS[m[2]]
        return SSAM_COLOURS[m[1]][m[2]], marker, m[3] != "implicit"
    h = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    return OTHER_COLOURS[h % len(OTHER_COLOURS)], OTHER_MARKERS[(h // 7) % len(OTHER_MARKERS)], True


def family(name: str) -> str:
    for suffix in CHEAP_MARKERS:
        name = name.removesuffix(suffix)
    for title, prefixes in FAMILIES:
        if name in prefixes or any(name.startswith(p + "-") for p in prefixes if p.startswith("ssam")):
            return title
    return "others"


def panels(names: list[str], references: tuple[str, ...] = ("sgd", "sam")) -> list[tuple[str, list[str]]]:
    """(title, optimizers) per panel: each family that is present, with the references beside it."""
    present = [n for n in names if n not in references]
    order = [t for t, _ in FAMILIES] + ["others"]
    out = []
    for title in order:
        members = [n for n in present if family(n) == title]
        if members or (title == order[0] and not present):
            out.append((title, [r for r in references if r in names] + members))
    return out


def comparison_figures(results_dir: Path, table: pd.DataFrame, epochs: pd.DataFrame) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    written = []
    for (profile, setting), t in table.groupby(["profile", "setting"], sort=False):
        curves = epochs[(epochs["profile"] == profile) & (epochs["setting"] == setting)]
        name = profile + (f"-{re.sub(r'[^A-Za-z0-9.]+', '-', setting).strip('-')}" if setting else "")
        title = f"{profile}" + (f" ({setting})" if setting else "")
        written.append(_cost_figure(results_dir / f"{name}-comparison.png", title, t))
        written.append(_curve_figure(results_dir / f"{name}-curves.png", title, t, curves))
    return written


def _seeds_note(t: pd.DataFrame, what: str) -> str:
    seeds = set(t["seeds"])
    if seeds <= {0, 1}:
        return "one seed each: no error bars" if what == "bars" else "one seed each: no band"
    spread = "± std over seeds" if what == "bars" else "band: ± std over seeds"
    many = f"{min(seeds)}" if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)}"
    return f"mean of {many} seeds, {spread}"


def _cost_figure(path: Path, title: str, t: pd.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    budgets = list(dict.fromkeys(t["budget"]))
    names = list(dict.fromkeys(t["optimizer"]))
    cols = panels(names)
    rows = [(b, c) for b in budgets for c in COST_PANELS]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(5.2 * len(cols), 4.2 * len(rows)), squeeze=False)
    for row, (budget, (x, scale, label)) in zip(axes, rows):
        g = t[t["budget"] == budget]
        ok = g[g[f"{x}_mean"].notna() & g["test_acc_mean"].notna()]
        # one step of the budget is its rounding: costs closer than that are equal
        steps = ok["budget_steps_run_mean"].min() if "budget_steps_run_mean" in ok else math.nan
        front = set(ok["optimizer"].iloc[pareto_front(ok[f"{x}_mean"], ok["test_acc_mean"],
                                                      tolerance=1.5 / steps if steps and steps > 0 else 0.0)])
        for ax, (panel, members) in zip(row, cols):
            _cost_panel(ax, ok[ok["optimizer"].isin(members)], x, scale, front)
            ax.set_xlabel(label)
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"{panel} — budget {budget}", fontsize="medium")
        _share_limits(row)
    fig.tight_layout()
    _legends(fig, axes, cols, extra=("ringed: on the Pareto front of the whole table (costs within one "
                                     "step of the budget count as equal)"))
    fig.suptitle(f"{title}: final test accuracy against cost ({_seeds_note(t, 'bars')})", y=1.06)
    return _save(fig, path)


def _cost_panel(ax: Any, g: pd.DataFrame, x: str, scale: float, front: set[str]) -> None:
    for r in g.itertuples():
        d = r._asdict()
        colour, marker, filled = style(r.optimizer)
        xerr, yerr = d[f"{x}_std"] / scale, 100 * r.test_acc_std
        ax.errorbar(d[f"{x}_mean"] / scale, 100 * r.test_acc_mean, xerr=0 if math.isnan(xerr) else xerr,
                    yerr=0 if math.isnan(yerr) else yerr, fmt=marker, capsize=3, color=colour,
                    markersize=8 * BIG_MARKERS.get(marker, 1),
                    markerfacecolor=colour if filled else "white", markeredgewidth=1.5)
        if r.optimizer in front:
            ax.scatter(d[f"{x}_mean"] / scale, 100 * r.test_acc_mean, s=260, facecolors="none",
                       edgecolors="black", linewidths=1, zorder=3)


def _curve_figure(path: Path, title: str, t: pd.DataFrame, curves: pd.DataFrame) -> Path:
    import matplotlib.pyplot as plt

    budgets = list(dict.fromkeys(t["budget"]))
    cols = panels(list(dict.fromkeys(t["optimizer"])))
    fig, axes = plt.subplots(len(budgets), len(cols), figsize=(5.2 * len(cols), 4.2 * len(budgets)), squeeze=False)
    for row, budget in zip(axes, budgets):
        c = curves[curves["budget"] == budget]
        for ax, (panel, members) in zip(row, cols):
            for name in members:
                per_epoch = c[c["optimizer"] == name].groupby("epochs_done")["test_acc"]
                mean, std = 100 * per_epoch.mean(), 100 * per_epoch.std()
                colour, marker, filled = style(name)
                ax.plot(mean.index, mean.values, marker=marker, color=colour, markersize=6 * BIG_MARKERS.get(marker, 1),
                        markerfacecolor=colour if filled else "white")
                if std.notna().any():
                    ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)
            ax.set_xlabel("epochs")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{panel} — budget {budget}", fontsize="medium")
        _share_limits(row)
    fig.tight_layout()
    _legends(fig, axes, cols)
    fig.suptitle(f"{title}: test accuracy per epoch ({_seeds_note(t, 'band')})", y=1.01)
    return _save(fig, path)


def _share_limits(row: Any) -> None:
    """The panels of a row on one scale, so that a family's points compare across panels."""
    for get, put in (("get_xlim", "set_xlim"), ("get_ylim", "set_ylim")):
        lows, highs = zip(*(getattr(ax, get)() for ax in row))
        for ax in row:
            getattr(ax, put)(min(lows), max(highs))


def _legends(fig: Any, axes: Any, cols: list[tuple[str, list[str]]], extra: str = "") -> None:
    """One legend per column, under the column's lowest panel, outside the axes: with every registered
    optimizer a panel holds a dozen entries, and a legend inside would cover points. ``extra`` goes
    under the title."""
    import matplotlib.pyplot as plt

    for ax, (_, members) in zip(axes[-1], cols):
        handles = []
        for name in members:
            colour, marker, filled = style(name)
            handles.append(plt.Line2D([], [], color=colour, marker=marker, linestyle="",
                                      markersize=7 * BIG_MARKERS.get(marker, 1),
                                      markerfacecolor=colour if filled else "white", label=name))
        ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  framealpha=0.8)
    if extra:
        import textwrap

        note = (extra + ". SSAM: colour = pattern, filled = explicit, hollow = implicit, X = implicit-masked "
                "(masked backward and masked e); a plus / star: the ascent gradient from a quarter / two fifths of "
                "the batch.")
        fig.text(0.5, 1.0, "\n".join(textwrap.wrap(note, 150)), ha="center", va="bottom", fontsize="small")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        # savefig picks the format from the name, so give it explicitly for the temporary file
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
