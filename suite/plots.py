"""The figures of a table (a profile, or one setting of it), declared in ``FIGURES`` and drawn from the
summary (the report writes each one whose data a table has, as ``<name>-<figure>.png``):

- ``comparison``: per budget, final test accuracy against training FLOPs and against training seconds, one
  panel per family (SAM and ESAM, SSAM-F, SSAM-D, the efficient-SAM field, others), each beside the references,
  with the Pareto front of the whole table;
- ``curves``: per budget, test accuracy per epoch, one panel per family;
- where the runs' final models were measured (``python -m suite sharpness``): ``sharpness``, per budget,
  final test accuracy against the Hessian's top eigenvalue, one panel per family; ``surfaces``, per budget,
  the training loss along one filter-normalised random direction (seed 0's, shared by every optimizer), one
  panel per family; ``surfaces-2d``, per budget, every optimizer's loss over two such directions, on one scale;
- where the table has "keeps SAM's accuracy" verdicts (``suite.claims``): ``frontier``, the user's question at a
  glance: final test accuracy against FLOPs per step as a multiple of SGD's (exact), one point per optimizer,
  SAM's mean and the margin below it drawn, the verdict of each marked.

An optimizer has one colour and marker in every figure (``style``), whatever else is drawn, read from its
registry entry: its family (``registry.FAMILIES``, which also picks its panel) and what it changes (SSAM's
pattern and form, the ascent fraction); no optimizer class is imported here. Error bars and
bands are said only where there are seeds to make them: with one seed the title says so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite import registry
from suite.frontier import STUDY
from suite.registry import ASCENT_FRACTIONS
from suite.stats import pareto_front
from suite.store import atomic_write

# (cost, scale, axis label, whether it is a time: its points taken under contention are marked)
COST_PANELS = (("budget_train_flops", 1e12, "training TFLOP", False),
               ("budget_train_seconds_at_timed_rate", 1.0, "training seconds (at the timed rate)", True))
CONTENDED_MARK = "†"  # beside a time taken under contention, as in the tables
# The panels, in order: (title, the registry families drawn in it, ``registry.FAMILIES``); an entry of any other
# family (SGD, where it is not a reference; an out-of-tree entry that names none) is drawn in OTHERS
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SAM and ESAM", ("SAM", "ESAM")),
    ("SSAM-F", ("SSAM-F",)),
    ("SSAM-D", ("SSAM-D",)),
    ("efficient-SAM field", ("field",)),
)
OTHERS = "others"
# SGD, SAM and ESAM as the registry builds them (nothing changed but, for SAM, the ascent fraction)
FAMILY_STYLE = {"SGD": ("#222222", "o", True), "SAM": ("#d62728", "D", True), "ESAM": ("#ff7f0e", "v", True)}
# SSAM: hue by pattern within the mask's colour ramp, filled marker = explicit, hollow = implicit,
# an X = implicit-masked
SSAM_COLOURS = {"SSAM-F": {"unstructured": "#08519c", "structured": "#3182bd", "structured-top": "#17becf",
                           "nm": "#6baed6"},
                "SSAM-D": {"unstructured": "#006d2c", "structured": "#31a354", "structured-top": "#a1d99b",
                           "nm": "#74c476"}}
SSAM_MARKERS = {"unstructured": "o", "structured": "s", "structured-top": "p", "nm": "^"}
SSAM_FORMS = ("explicit", "implicit", "implicit-masked")
# a cheaper-ascent variant keeps its base's colour, with its own marker per fraction: a plus for a quarter,
# a star for two fifths (a fraction added to the registry without a marker fails here, at import)
CHEAP_MARKERS = {fraction: marker for fraction, marker in zip(ASCENT_FRACTIONS.values(), ("P", "*"), strict=True)}
# the efficient-SAM field (issue 25), a colour and marker per method; the suite's periodic two-fifths ascent takes
# periodic SAM's colour (and the two-fifths star); K-SAM selects examples by loss as ESAM does: ESAM's marker
FIELD_STYLE = {"asam": ("#bcbd22", "H", True), "periodic-sam": ("#e6550d", "8", True),
               "looksam": ("#9467bd", "<", True), "rst": ("#7f7f7f", "d", True), "gsam": ("#8c564b", ">", True),
               "msam": ("#e377c2", "h", True), "sam-two-fifths-ascent-every-2": ("#e6550d", "8", True),
               "k-sam": ("#393b79", "v", True)}
BIG_MARKERS = {"*": 1.5}  # a star reads smaller than a disc of the same size
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
OTHER_MARKERS = "PXh*p<>"
Panel = tuple[str, list[str]]  # (title, optimizers)


@dataclass(frozen=True)
class _Entry:
    """What the figures read of a registered optimizer: its name, family, changes but the ascent fraction, and
    the ascent fraction (None: the whole batch)."""

    name: str
    family: str
    changes: Mapping[str, Any]
    fraction: float | None


def _entry(name: str) -> _Entry | None:
    """The registry entry of ``name``; None for a row label that names no entry (``"sam [rho=0.1]"``:
    hyper-parameters of its own make another optimizer)."""
    try:
        info = registry.get(name)
    except KeyError:
        return None
    changes = dict(info.changes)
    fraction = changes.pop("ascent_fraction", None)
    return _Entry(info.name, info.family, changes, fraction)


def _base_style(entry: _Entry) -> tuple[str, str, bool] | None:
    if entry.family in FAMILY_STYLE and not entry.changes:
        return FAMILY_STYLE[entry.family]
    if entry.family == "field":
        return FIELD_STYLE.get(entry.name)
    pattern, form = (entry.changes.get(k) for k in ("pattern", "form"))
    if entry.family in SSAM_COLOURS and pattern in SSAM_MARKERS and form in SSAM_FORMS:
        return SSAM_COLOURS[entry.family][pattern], "X" if form == "implicit-masked" else SSAM_MARKERS[pattern], \
            form != "implicit"
    return None


def style(name: str) -> tuple[str, str, bool]:
    """(colour, marker, filled) of an optimizer: a function of its registry entry (its family, what it changes;
    or, for a name the registry does not know, of the name) alone, so it is the same in every figure."""
    entry = _entry(name)
    base = _base_style(entry) if entry else None
    if base is not None and entry.fraction is None:
        return base
    if base is not None and entry.fraction in CHEAP_MARKERS:
        return base[0], CHEAP_MARKERS[entry.fraction], True
    h = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    return OTHER_COLOURS[h % len(OTHER_COLOURS)], OTHER_MARKERS[(h // 7) % len(OTHER_MARKERS)], True


def panel_of(name: str) -> str:
    """The panel an optimizer is drawn in, by its registry family; a row with hyper-parameters of its own
    (``"sam [rho=0.1]"``, ``report.label_tables``) in its optimizer's."""
    entry = _entry(name.split(" [")[0])
    return next((title for title, families in PANELS if entry and entry.family in families), OTHERS)


def panels(names: list[str], references: tuple[str, ...]) -> list[Panel]:
    """(title, optimizers) per panel: each family that is present, with the references beside it; the title
    names what the panel draws (``panel_title``)."""
    present = [n for n in names if n not in references]
    order = [t for t, _ in PANELS] + [OTHERS]
    out = []
    for title in order:
        members = [n for n in present if panel_of(n) == title]
        if members or (title == order[0] and not present):
            drawn = [r for r in references if r in names] + members
            out.append((panel_title(title, drawn, references), drawn))
    return out


def panel_title(key: str, drawn: list[str], references: tuple[str, ...] = ()) -> str:
    """A panel titled by everything it draws: its family ("SAM and ESAM" only where both are drawn: a sweep
    without ESAM gets "SAM"), then the references beside it ("SSAM-F, with sgd and sam"); a panel of the
    references alone by their names. A reference is one of the panel's own where its family is (sam in SAM's),
    never among the others."""
    mine = [n for n in drawn if panel_of(n) == key and not (key == OTHERS and n in references)]
    beside = [n for n in drawn if n not in mine]
    if not mine:
        return " and ".join(drawn)
    if key == PANELS[0][0]:
        families = {entry.family for entry in (_entry(n.split(" [")[0]) for n in mine) if entry}
        key = " and ".join(f for f in PANELS[0][1] if f in families)
    return f"{key}, with {' and '.join(beside)}" if beside else key


# ----- the table of figures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """What the figures of one table (a profile, or one setting of it) are drawn from."""

    title: str  # the profile, with the setting where its runs differ in one
    summary: pd.DataFrame  # its rows of the summary (``report.summarize``)
    epochs: pd.DataFrame  # its per-epoch rows (``report.epoch_rows``)
    surfaces: pd.DataFrame  # its runs' measured loss surfaces (``report.surface_rows``; empty where none)
    references: tuple[str, ...]  # the optimizers beside every family's panel (the profile's)
    # its claims' verdicts (``suite.claims.verdicts``, this table's rows; empty where none were judged)
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class Figure:
    name: str  # the file: <table>-<name>.png
    draw: Callable[[Shown], Any]  # the table -> a matplotlib figure
    needs: Callable[[Shown], bool] = lambda shown: True  # drawn only for the tables where this holds

    def write(self, path: Path, shown: Shown) -> Path:
        _theme()
        return _save(self.draw(shown), path)


def _theme() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def _seeds_note(t: pd.DataFrame, what: str) -> str:
    seeds = set(t["seeds"])
    if seeds <= {0, 1}:
        return "one seed each: no error bars" if what == "bars" else "one seed each: no band"
    spread = "± std over seeds" if what == "bars" else "band: ± std over seeds"
    many = f"{min(seeds)}" if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)}"
    return f"mean of {many} seeds, {spread}"


def _cost_figure(shown: Shown) -> Any:
    import matplotlib.pyplot as plt

    t = shown.summary
    budgets = list(dict.fromkeys(t["budget"]))
    names = list(dict.fromkeys(t["optimizer"]))
    cols = panels(names, shown.references)
    rows = [(b, c) for b in budgets for c in COST_PANELS]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(5.2 * len(cols), 4.2 * len(rows)), squeeze=False)
    for row, (budget, (x, scale, label, timed)) in zip(axes, rows):
        g = t[t["budget"] == budget]
        ok = g[g[f"{x}_mean"].notna() & g["test_acc_mean"].notna()]
        marked = set(ok.loc[ok["time_contended"] > 0, "optimizer"]) if timed and "time_contended" in ok else set()
        # one step of the budget is its rounding: costs closer than that are equal
        steps = ok["budget_steps_run_mean"].min() if "budget_steps_run_mean" in ok else math.nan
        # a front only where the cost is exact (FLOPs are counted): run times are not interleaved, and a drift
        # of the machine would ring what it favoured (python -m suite cost interleaves; its table is for time)
        front = set() if timed else set(ok["optimizer"].iloc[pareto_front(
            ok[f"{x}_mean"], ok["test_acc_mean"], tolerance=1.5 / steps if steps and steps > 0 else 0.0)])
        for ax, (panel, members) in zip(row, cols):
            _cost_panel(ax, ok[ok["optimizer"].isin(members)], x, scale, front, marked)
            ax.xaxis.set_major_locator(readable_ticks())  # an equal-FLOPs row spans a few thousandths
            ax.set_xlabel(label)
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"{panel} — budget {budget}", fontsize="medium")
        _share_limits(row)
    fig.tight_layout()
    contended = "time_contended" in t and bool((t["time_contended"] > 0).any())
    _legends(fig, axes, cols, f"{shown.title}: final test accuracy against cost ({_seeds_note(t, 'bars')})",
             extra="ringed: on the Pareto front of the whole table in FLOPs, which are counted exactly (costs "
                   "within one step of the budget count as equal); none in seconds, which are not interleaved "
                   "between optimizers (python -m suite cost is the measure of time)"
                   + (f". {CONTENDED_MARK}: training seconds taken under contention (another program used the "
                      "machine in at least one seed; summary.md says the threshold): not to be trusted"
                      if contended else ""))
    return fig


def _cost_panel(ax: Any, g: pd.DataFrame, x: str, scale: float, front: set[str],
                marked: set[str] = frozenset()) -> None:
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
        if r.optimizer in marked:
            ax.annotate(CONTENDED_MARK, (d[f"{x}_mean"] / scale, 100 * r.test_acc_mean), xytext=(7, 5),
                        textcoords="offset points", color=colour, fontsize="large", fontweight="bold")
    _room(ax)


# points: what is drawn in points around a point at the data's edge, a ring (radius about 9) and a † (5 above it,
# a line high), must stay inside the panel
RING_ROOM = 22


def _room(ax: Any, points: float = RING_ROOM) -> None:
    """Margins of at least ``points`` on every side of the data: autoscaling fits the data alone, and a ring or †
    drawn around the highest point stood half outside the panel (msam's in smoke-comparison.png)."""
    box = ax.get_window_extent()
    pad = points * ax.get_figure().dpi / 72
    ax.margins(x=max(0.05, pad / max(box.width - 2 * pad, 1.0)), y=max(0.05, pad / max(box.height - 2 * pad, 1.0)))


def _family_grid(frame: pd.DataFrame, draw: Any, xlabel: str, ylabel: str, references: tuple[str, ...],
                 share_x: bool = True, like: pd.DataFrame | None = None) -> tuple[Any, Any, list[Panel]]:
    """A row of panels per budget, a column per family (``panels``), in the order of ``like``'s rows (default:
    ``frame``'s): ``draw(ax, frame's rows of the budget, the panel's optimizers)`` fills each; labels, titles
    and each row's shared scale are set here."""
    import matplotlib.pyplot as plt

    like = frame if like is None else like
    budgets = list(dict.fromkeys(like["budget"]))
    cols = panels(list(dict.fromkeys(like["optimizer"])), references)
    fig, axes = plt.subplots(len(budgets), len(cols), figsize=(5.2 * len(cols), 4.2 * len(budgets)), squeeze=False)
    for row, budget in zip(axes, budgets):
        for ax, (panel, members) in zip(row, cols):
            draw(ax, frame[frame["budget"] == budget], members)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{panel} — budget {budget}", fontsize="medium")
        _share_limits(row, x=share_x)
    fig.tight_layout()
    return fig, axes, cols


def _curve_figure(shown: Shown) -> Any:
    t = shown.summary

    def draw(ax: Any, c: pd.DataFrame, members: list[str]) -> None:
        for name in members:
            per_epoch = c[c["optimizer"] == name].groupby("epochs_done")["test_acc"]
            mean, std = 100 * per_epoch.mean(), 100 * per_epoch.std()
            colour, marker, filled = style(name)
            ax.plot(mean.index, mean.values, marker=marker, color=colour, markersize=6 * BIG_MARKERS.get(marker, 1),
                    markerfacecolor=colour if filled else "white")
            if std.notna().any():
                ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)

    fig, axes, cols = _family_grid(shown.epochs, draw, "epochs", "test accuracy (%)", shown.references, like=t)
    _legends(fig, axes, cols, f"{shown.title}: test accuracy per epoch ({_seeds_note(t, 'band')})")
    return fig


SHARPNESS_X = "sharpness_lambda_max"


def _measured(shown: Shown) -> bool:
    t = shown.summary
    return f"{SHARPNESS_X}_mean" in t and bool(t[f"{SHARPNESS_X}_mean"].notna().any())


def _sharpness_figure(shown: Shown) -> Any:
    """Final test accuracy against λmax, per budget and family (log scale where it can be: the optimizers
    differ by factors); the optimizers that were not measured are left out."""
    t = shown.summary
    t = t[t[f"{SHARPNESS_X}_mean"].notna() & t["test_acc_mean"].notna()]
    # log where every value is positive (a model near its initialisation can have a negative top eigenvalue)
    log = bool((t[f"{SHARPNESS_X}_mean"] - t[f"{SHARPNESS_X}_std"].fillna(0) > 0).all())

    def draw(ax: Any, g: pd.DataFrame, members: list[str]) -> None:
        _cost_panel(ax, g[g["optimizer"].isin(members)], SHARPNESS_X, 1.0, set())
        if log:
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)

    # y shared only: ESAM's λmax, a sixth of the others', would crowd the SSAM panels on a shared x
    fig, axes, cols = _family_grid(t, draw, f"top Hessian eigenvalue λmax{' (log scale)' if log else ''}; "
                                   "flatter to the left", "final test accuracy (%)", shown.references, share_x=False)
    _legends(fig, axes, cols, f"{shown.title}: final test accuracy against sharpness ({_seeds_note(t, 'bars')})",
             extra="λmax of the training loss on fixed training examples, BatchNorm in eval mode")
    return fig


def _first_seed(s: pd.DataFrame) -> pd.DataFrame:
    """Per budget and optimizer, the run of the lowest measured seed: the directions are drawn from the
    run's seed, so only runs of one seed share them."""
    seed = s["seed"].min()
    return s[s["seed"] == seed]


def _surface_figure(shown: Shown) -> Any:
    from matplotlib.ticker import MaxNLocator

    s = _first_seed(shown.surfaces)

    def draw(ax: Any, g: pd.DataFrame, members: list[str]) -> None:
        for r in g[g["optimizer"].isin(members)].itertuples():
            colour, marker, filled = style(r.optimizer)
            ax.plot(r.line, r.line_loss, color=colour, marker=marker, markevery=5,
                    markersize=6 * BIG_MARKERS.get(marker, 1), markerfacecolor=colour if filled else "white")
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # -1, -0.5, 0, 0.5, 1: a narrow panel has no room for more

    fig, axes, cols = _family_grid(s, draw, "step along the direction (1 = the filters' own norm)",
                                   "training loss (log scale)", shown.references)
    _legends(fig, axes, cols, f"{shown.title}: the training loss around each final model",
             extra=(f"seed {s['seed'].min()}: one filter-normalised Gaussian direction, the same draw for every "
                    "optimizer, on the fixed training examples in eval mode"))
    return fig


def _plane_figure(shown: Shown) -> Any:
    """Every optimizer's 2-D surface, a grid of small panels per budget, on one colour scale (log loss)."""
    import textwrap

    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    s = _first_seed(shown.surfaces)
    budgets = list(dict.fromkeys(s["budget"]))
    names = [n for _, members in panels(list(dict.fromkeys(s["optimizer"])), shown.references) for n in members]
    names = list(dict.fromkeys(names))  # the references once, then each family's members
    ncol = min(6, len(names))
    nrow = math.ceil(len(names) / ncol)
    losses = np.concatenate([np.asarray(v, dtype=float).ravel() for v in s["plane_loss"]])
    low, high = max(np.nanmin(losses), 1e-6), np.nanmax(losses)
    levels = np.geomspace(low, high, 13) if high > low else None
    fig, axes = plt.subplots(nrow * len(budgets), ncol, figsize=(2.9 * ncol, 3.2 * nrow * len(budgets)),
                             squeeze=False, layout="constrained")
    image = None
    for b, budget in enumerate(budgets):
        g = s[s["budget"] == budget].set_index("optimizer")
        for k, name in enumerate(names):
            ax = axes[b * nrow + k // ncol][k % ncol]
            label = "\n".join(textwrap.wrap(name.replace("-", "- "), 26)).replace("- ", "-")  # break at hyphens
            ax.set_title(f"{label}\n({budget})" if len(budgets) > 1 else label, fontsize="x-small")
            ax.set_xticks([])
            ax.set_yticks([])
            if name not in g.index:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", fontsize="small", transform=ax.transAxes)
                continue
            r = g.loc[name]
            grid = np.asarray(r["plane"], dtype=float)
            z = np.asarray(r["plane_loss"], dtype=float)
            image = ax.contourf(grid, grid, z.T, levels=levels, norm=LogNorm(low, high), cmap="viridis")
            ax.plot(0, 0, marker="+", color="white")
            ax.set_aspect("equal")
        for k in range(len(names), nrow * ncol):
            axes[b * nrow + k // ncol][k % ncol].set_axis_off()
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="training loss (log scale)")
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    fig.suptitle(f"{shown.title}: the training loss over two filter-normalised directions (seed {s['seed'].min()}, "
                 "the same draws for every optimizer; axes from −1 to 1, + the final model)", fontsize="medium")
    return fig


def _surveyed(shown: Shown) -> bool:
    return not shown.surfaces.empty


# What the report draws for each table, in this order. Add a figure: one entry whose ``draw`` returns a
# matplotlib figure of the table (``Shown``) and, where it needs data not every table has, a ``needs``.
KEEPS_SAM = "keep"  # the "keeps SAM's accuracy" claims: names with "keep", reference sam, metric test_acc
VERDICT_MARKS = {"holds": ("black", "kept SAM's accuracy (holds)"),
                 "fails": ("#d62728", "lost more than the margin (fails)"),
                 "inconclusive": ("#bbbbbb", "inconclusive at these seeds")}


def _keeps_verdicts(shown: Shown) -> pd.DataFrame:
    v = shown.verdicts
    if v.empty or "claim" not in v:
        return v
    return v[v["claim"].str.contains(KEEPS_SAM) & (v["reference"] == "sam") & (v["metric"] == "test_acc")]


def spread_sideways(xs: list[float], step: float = 0.012) -> list[float]:
    """``xs`` moved apart so that no two are closer than ``step``, each group that had to move centred on its
    own mean (the usual dodge: clusters merged left to right while they overlap), in the order given within
    a group. Twenty SSAM variants at 2× SGD's FLOPs would otherwise be drawn on one spot; matplotlib has no
    dodge for a numeric axis and seaborn's is for categories, hence this."""
    clusters: list[list[int]] = []  # indices, left to right; each laid out around the mean of its xs
    for i in sorted(range(len(xs)), key=lambda i: xs[i]):
        clusters.append([i])
        while len(clusters) > 1 and _left(clusters[-1], xs, step) - _right(clusters[-2], xs, step) < step - 1e-12:
            last = clusters.pop()
            clusters[-1] = sorted(clusters[-1] + last)
    out = list(xs)
    for c in clusters:
        left = _left(c, xs, step)
        for rank, j in enumerate(c):
            out[j] = left + rank * step
    return out


def _left(cluster: list[int], xs: list[float], step: float) -> float:
    return sum(xs[j] for j in cluster) / len(cluster) - (len(cluster) - 1) * step / 2


def _right(cluster: list[int], xs: list[float], step: float) -> float:
    return _left(cluster, xs, step) + (len(cluster) - 1) * step


FRONTIER_BUDGET = "epochs"  # the table the keeps-SAM verdicts are judged on (a claim's default budget)
SPREAD_SAID = 0.005  # a sideways move smaller than this (× SGD's FLOPs) prints as 0.00: the caption leaves it out


def _frontier_figure(shown: Shown) -> Any:
    """Accuracy against FLOPs per step (× SGD's, counted exactly) at the epochs budget: SAM's mean and the
    non-inferiority margin below it as a band, every optimizer a point, its keeps-SAM verdict as a ring."""
    import matplotlib.pyplot as plt

    t = shown.summary[shown.summary["budget"] == FRONTIER_BUDGET]
    t = t[t["flops_per_step_mean"].notna() & t["test_acc_mean"].notna()]
    sgd = t.loc[t["optimizer"] == "sgd", "flops_per_step_mean"]
    keeps = _keeps_verdicts(shown)
    verdict = dict(zip(keeps["subject"], keeps["verdict"]))
    fig, ax = plt.subplots(figsize=(13, 6.5))
    base = float(sgd.iloc[0]) if len(sgd) else float(t["flops_per_step_mean"].min())
    sam = t[t["optimizer"] == "sam"]
    margin = 100 * float(keeps["margin"].iloc[0]) if len(sam) else math.nan
    if len(sam):
        mean = 100 * float(sam["test_acc_mean"].iloc[0])
        ax.axhspan(mean - margin, mean, color="#d62728", alpha=0.08, zorder=0)
        ax.axhline(mean, color="#d62728", linewidth=1, linestyle="--", zorder=0)
    exact = list(t["flops_per_step_mean"] / base)
    handles, xs = [], spread_sideways(exact)
    for r, x in zip(t.itertuples(), xs):
        colour, marker, filled = style(r.optimizer)
        y, yerr = 100 * r.test_acc_mean, 100 * r.test_acc_std
        ax.errorbar(x, y, yerr=0 if math.isnan(yerr) else yerr, fmt=marker, capsize=3, color=colour,
                    markersize=8 * BIG_MARKERS.get(marker, 1), markerfacecolor=colour if filled else "white",
                    markeredgewidth=1.5)
        if r.optimizer in verdict:
            ax.scatter(x, y, s=300, facecolors="none", edgecolors=VERDICT_MARKS[verdict[r.optimizer]][0],
                       linewidths=1.6, zorder=3)
        handles.append(plt.Line2D([], [], color=colour, marker=marker, linestyle="", markersize=7,
                                  markerfacecolor=colour if filled else "white", label=r.optimizer))
    rings = [plt.Line2D([], [], marker="o", linestyle="", markersize=13, markerfacecolor="none",
                        markeredgecolor=c, label=words) for c, words in VERDICT_MARKS.values()]
    limit = STUDY.goal_for(shown.title.split(" ")[0])  # the profile's own goal (its title may name a setting)
    goal = _time_goal(ax, limit)
    ax.legend(handles=handles + rings + [goal], fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 + len(handles) // 24)
    ax.set_xlabel("FLOPs per step (× SGD's; counted exactly)")
    ax.set_ylabel("final test accuracy (%)")
    _room(ax)
    fig.tight_layout()
    shift = max((abs(a - b) for a, b in zip(xs, exact)), default=0.0)
    note = _frontier_note(t, margin, shift, limit)
    fig.text(0.5, 1.0, "\n".join(note), ha="center", va="bottom", fontsize="small")
    _title(fig, f"{shown.title}: accuracy against cost per step, budget {FRONTIER_BUDGET}",
           above_inches=0.2 * len(note) + 0.1)
    return fig


TIME_GOAL_STYLE = {"color": "black", "linewidth": 1.6, "linestyle": (0, (6, 2, 1, 2))}  # dash-dot: not a gridline


def _time_goal(ax: Any, limit: float) -> Any:
    """The time goal's vertical line, drawn over the grid in a style no gridline has (it fell on the x grid's
    1.2 and read as one), labelled at the top; its legend entry."""
    import matplotlib.pyplot as plt

    ax.axvline(limit, zorder=1.5, **TIME_GOAL_STYLE)
    ax.annotate(f"{limit:g}× SGD: the time goal", (limit, 1.0), xycoords=("data", "axes fraction"),
                xytext=(4, -4), textcoords="offset points", rotation=90, ha="left", va="top", fontsize="x-small")
    return plt.Line2D([], [], label=f"time goal: {limit:g}× SGD's FLOPs", **TIME_GOAL_STYLE)


def _frontier_note(t: pd.DataFrame, margin: float, shift: float, limit: float) -> list[str]:
    """The frontier's caption, wrapped: the seeds, SAM's band, the rings, the time goal's line and, where points
    had to move apart, by how much."""
    import textwrap

    parts = [_seeds_note(t, "bars")]
    if not math.isnan(margin):
        parts.append(f"shaded: SAM's mean (dashed) down to the margin δ = {margin:.2f} points, within which a method "
                     "keeps SAM's accuracy")
    parts.append(f"ring: the keeps-SAM verdict; dash-dotted: {limit:g}× SGD's FLOPs (the time "
                 "goal of summary.md's frontier)")
    if shift >= SPREAD_SAID:
        parts.append(f"points of nearly equal cost moved sideways, by up to {shift:.2f}× SGD's FLOPs, so that each "
                     "shows")
    return textwrap.wrap("; ".join(parts), 110)


FIGURES: list[Figure] = [
    Figure("comparison", _cost_figure),
    Figure("curves", _curve_figure),
    Figure("sharpness", _sharpness_figure, needs=_measured),
    Figure("surfaces", _surface_figure, needs=_surveyed),
    Figure("surfaces-2d", _plane_figure, needs=_surveyed),
    Figure("frontier", _frontier_figure, needs=lambda shown: not _keeps_verdicts(shown).empty),
]


def _share_limits(row: Any, x: bool = True) -> None:
    """The panels of a row on one scale, so that a family's points compare across panels (``x=False``:
    the y axis only, where one optimizer far off in x would crowd every other panel's points)."""
    for get, put in (("get_xlim", "set_xlim"), ("get_ylim", "set_ylim"))[0 if x else 1:]:
        lows, highs = zip(*(getattr(ax, get)() for ax in row))
        for ax in row:
            getattr(ax, put)(min(lows), max(highs))


MARKER_KEY = ("SSAM: colour = pattern, filled = explicit, hollow = implicit, X = implicit-masked (masked backward "
              "and masked ε); a plus / star: the ascent gradient from a quarter / two fifths of the batch.")


def _legends(fig: Any, axes: Any, cols: list[Panel], title: str, extra: str = "") -> None:
    """One legend per column, above the column's top panel, outside the axes: a reader meets the key before
    the panels, and with every registered optimizer a column holds a dozen entries (one under the lowest of
    four stacked panels was far from the others, and a legend inside would cover points). Above the legends,
    ``extra`` and the key to the markers, wrapped to the figure's width, and the title above them."""
    import textwrap

    import matplotlib.pyplot as plt

    fig.canvas.draw()  # where the top panels' titles ended up after the layout
    renderer = fig.canvas.get_renderer()
    to_figure = fig.transFigure.inverted()
    width, height = fig.get_size_inches()
    for ax, (_, members) in zip(axes[0], cols):
        handles = []
        for name in members:
            colour, marker, filled = style(name)
            handles.append(plt.Line2D([], [], color=colour, marker=marker, linestyle="",
                                      markersize=7 * BIG_MARKERS.get(marker, 1),
                                      markerfacecolor=colour if filled else "white", label=name))
        box = ax.get_position()
        top = ax.title.get_window_extent(renderer).transformed(to_figure).y1
        ax.legend(handles=handles, fontsize="small", loc="lower center", framealpha=0.8,
                  bbox_to_anchor=((box.x0 + box.x1) / 2, top + 0.05 / height), bbox_transform=fig.transFigure)
    fig.canvas.draw()
    legends = [ax.get_legend() for ax in axes[0] if ax.get_legend() is not None]
    base = max((leg.get_window_extent(renderer).transformed(to_figure).y1 for leg in legends), default=1.0)
    key = MARKER_KEY if any(_keyed(n) for _, members in cols for n in members) else ""
    lines = textwrap.wrap(". ".join(filter(None, (extra, key))), max(60, int(width * 16)))
    fig.text(0.5, base + 0.08 / height, "\n".join(lines), ha="center", va="bottom", fontsize="small")
    _title(fig, title, above_inches=0.2 * len(lines) + 0.15, base=base)


def _keyed(name: str) -> bool:
    """Whether the key to the markers says something of ``name``'s: an SSAM pattern and form, an ascent fraction."""
    entry = _entry(name.split(" [")[0])
    return entry is not None and (entry.family in SSAM_COLOURS or entry.fraction is not None)


def _title(fig: Any, title: str, above_inches: float = 0.1, base: float = 1.0) -> None:
    """The figure's title, ``above_inches`` above ``base`` (a height in the figure's fraction: by default the
    panels' top; room for a note between them)."""
    fig.suptitle(title, y=base + above_inches / fig.get_size_inches()[1], va="bottom")


def readable_ticks() -> Any:
    """matplotlib's own ticks, fewer where their labels would touch. Its automatic count assumes labels about
    three characters wide: an equal-FLOPs row spans a few thousandths of a TFLOP, and its ticks every 0.0025
    ("1.4075", "1.4100", …) ran together into one string."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path
    from matplotlib.ticker import MaxNLocator

    class ReadableTicks(MaxNLocator):
        def __call__(self) -> Any:
            vmin, vmax = self.axis.get_view_interval()
            self.set_params(nbins="auto")
            ticks = self.tick_values(vmin, vmax)
            for nbins in range(len(ticks) - 1, 0, -1):
                if self._fits(ticks, vmin, vmax):
                    break
                self.set_params(nbins=nbins)
                ticks = self.tick_values(vmin, vmax)
            return self.raise_if_exceeds(ticks)

        def _fits(self, ticks: Any, vmin: float, vmax: float) -> bool:
            """Whether neighbouring labels, centred on their ticks, stay half an em apart on the axis."""
            low, high = sorted((vmin, vmax))
            shown = [t for t in ticks if low <= t <= high]
            if len(shown) < 2 or high <= low:
                return True
            prop = FontProperties(size=rcParams[f"{self.axis.axis_name}tick.labelsize"])
            px = self.axis.get_figure(root=True).dpi / 72
            widths = [text_to_path.get_text_width_height_descent(label, prop, ismath=False)[0] * px
                      for label in self.axis.get_major_formatter().format_ticks(shown)]
            span = self.axis.axes.bbox.width if self.axis.axis_name == "x" else self.axis.axes.bbox.height
            at = [(t - low) / (high - low) * span for t in shown]
            gap = 0.5 * prop.get_size_in_points() * px
            return all(b - a >= (wa + wb) / 2 + gap for a, b, wa, wb in zip(at, at[1:], widths, widths[1:]))

    return ReadableTicks(nbins="auto", steps=[1, 2, 2.5, 5, 10])


def _plain_log_axis(axis: Any) -> None:
    """Log-scale ticks as plain numbers (20, 50, 100), not 2 × 10^1, and no crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        # savefig picks the format from the name, so give it explicitly for the temporary file
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
