"""The figures as a reader meets them: tick labels that can be read, panel titles that name what is drawn,
file names a person reads, and no figure left behind that the report no longer makes."""

from __future__ import annotations

import re

import matplotlib
import pandas as pd
import pytest

from suite import plots, report
from suite.store import SCHEMA, record_path, write_record

matplotlib.use("Agg")


def record(optimizer, seed, acc, tflop, budget="flops", profile="p", dataset="cifar10", fingerprint="88ebae7912848140",
           **metrics):
    return {
        "schema": SCHEMA,
        "config": {"profile": profile, "optimizer": optimizer, "seed": seed,
                   "train": {"budget": budget, "dataset": dataset}},
        "data": {"name": dataset, "fingerprint": fingerprint},
        "references": ["sgd", "sam"],
        "started_at": f"2026-01-01T00:00:0{seed}",
        "metrics": {"status": "finished", "test_acc": acc, "time_per_step_s": 0.1, "flops_per_step": 1e9,
                    "budget_train_flops": tflop * 1e12, "budget_train_seconds_at_timed_rate": 14.0 + seed,
                    "budget_steps_run": 100, "budget_epochs_run": 3.0, **metrics},
        "epochs": [{"epoch": 1, "epochs_done": 1, "test_acc": acc, "train_seconds": 1.0}],
    }


def shown(records: list[dict]) -> plots.Shown:
    records = report.label_tables(records)
    return plots.Shown("p", report.summarize(records), report.epoch_rows(records), pd.DataFrame(), ("sgd", "sam"))


def overlapping_tick_labels(fig) -> list[tuple[str, list[str]]]:
    """Per panel, the x tick labels (those inside the axis) whose rendered boxes touch a neighbour's."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        labels = [t for t, at in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= at <= high and t.get_text()]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        if any(a.x1 + 2 > b.x0 for a, b in zip(boxes, boxes[1:])):
            bad.append((ax.get_title(), [t.get_text() for t in labels]))
    return bad


@pytest.mark.parametrize("span", [0.002, 0.01, 0.03])
def test_the_tflop_tick_labels_of_an_equal_flops_row_do_not_run_together(span):
    """The issue's case: every run of a flops budget spends about the same TFLOP, and ticks every 0.0025
    ("1.40751.41001.4125…") ran together; at a span of 0.01 they did before the fix."""
    import matplotlib.pyplot as plt

    names = ("sgd", "sam", "sam-quarter-ascent")
    records = [record(name, seed, 0.4 - 0.03 * k, 1.40 + span * k) for seed in range(2)
               for k, name in enumerate(names)]
    plots._theme()
    fig = plots._cost_figure(shown(records))
    try:
        assert overlapping_tick_labels(fig) == []
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert len(labels) == len(set(labels)) >= 3, labels  # distinct, and still a scale to read
    finally:
        plt.close(fig)


def test_a_panel_is_titled_by_what_it_draws():
    """ESAM not run: the panel of the SAM family says SAM, not "SAM and ESAM"; with ESAM it says both. The
    references drawn beside a family are in its title too (the issue: "SSAM-F" over SGD's and SAM's points)."""
    refs = ("sgd", "sam")
    assert plots.panels(["sgd", "sam", "sam-quarter-ascent", "ssam-f-nm-explicit"], refs) == [
        ("SAM, with sgd", ["sgd", "sam", "sam-quarter-ascent"]),
        ("SSAM-F, with sgd and sam", ["sgd", "sam", "ssam-f-nm-explicit"])]
    assert plots.panels(["sgd", "sam", "esam"], refs)[0][0] == "SAM and ESAM, with sgd"
    assert plots.panels(["sgd", "esam", "ssam-f-nm-explicit"], refs)[0] == ("ESAM, with sgd", ["sgd", "esam"])
    assert plots.panels(["sgd", "sam"], refs) == [("SAM, with sgd", ["sgd", "sam"])]
    assert plots.panels(["sgd"], ("sgd",)) == [("sgd", ["sgd"])]  # the references alone: their names
    # the drawn figure's panels say it too
    import matplotlib.pyplot as plt

    plots._theme()
    fig = plots._cost_figure(shown([record(n, 0, 0.4, 1.4) for n in ("sgd", "sam", "sam-quarter-ascent")]))
    try:
        assert {ax.get_title() for ax in fig.axes} == {"SAM, with sgd — budget flops"}
    finally:
        plt.close(fig)


def write(results, records) -> None:
    for r in records:
        c = r["config"]
        write_record(record_path(results, c["profile"], f"{c['optimizer']}-{r['data']['fingerprint']}-s{c['seed']}"), r)


def test_two_data_sets_under_one_profile_have_names_a_person_reads_and_old_figures_go(tmp_path):
    """The issue's case: CIFAR-10 first, then a second data set under the same profile. The tables and figures
    are named by the data sets (no hash), the CIFAR figures of the first report are removed, a file the
    report did not write is kept."""
    cifar = [record(n, s, 0.4, 1.4, budget="epochs") for n in ("sgd", "sam") for s in range(2)]
    write(tmp_path, cifar)
    first = {p.name for p in report.write_report(tmp_path)[0]}
    assert {"p-comparison.png", "p-curves.png"} <= first
    (tmp_path / "notes.png").write_bytes(b"mine")  # a user's own files, one named like the report's
    (tmp_path / "p-mine.png").write_bytes(b"mine")
    write(tmp_path, [record(n, s, 0.9, 0.1, budget="epochs", dataset="digits", fingerprint="0123456789abcdef")
                     for n in ("sgd", "sam") for s in range(2)])
    written = {p.name for p in report.write_report(tmp_path)[0] if p.suffix == ".png"}
    assert {"p-cifar10-comparison.png", "p-cifar10-curves.png", "p-digits-comparison.png",
            "p-digits-curves.png"} <= written
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert "p-comparison.png" not in pngs and "p-curves.png" not in pngs  # the report no longer makes them
    assert {"notes.png", "p-mine.png"} <= pngs and (tmp_path / "notes.png").read_bytes() == b"mine"
    assert pngs == written | {"notes.png", "p-mine.png"}
    md = (tmp_path / "summary.md").read_text()
    assert "### Profile `p` with dataset=cifar10, budget `epochs`" in md
    assert "### Profile `p` with dataset=digits, budget `epochs`" in md
    assert "88ebae79" not in md and "0123456789" not in md
    # the digits records gone: their figures go too, the rest stay
    for path in (tmp_path / "runs" / "p").glob("*0123456789abcdef*"):
        path.unlink()
    assert {p.name for p in report.write_report(tmp_path)[0] if p.suffix == ".png"} == {"p-comparison.png",
                                                                                          "p-curves.png"}
    assert {p.name for p in tmp_path.glob("*.png")} == {"p-comparison.png", "p-curves.png", "notes.png", "p-mine.png"}


def test_a_hash_names_a_table_only_to_break_a_real_tie(tmp_path):
    """Two copies of one data set (same name, different files) under one profile: the fingerprint tells them
    apart, shortened; the data set's name comes first."""
    write(tmp_path, [record(n, 0, 0.4, 1.4, budget="epochs", fingerprint=fp) for n in ("sgd", "sam")
                     for fp in ("88ebae7912848140", "0123456789abcdef")])
    written = {p.name for p in report.write_report(tmp_path)[0]}
    assert {"p-cifar10-data-88ebae79-comparison.png", "p-cifar10-data-01234567-comparison.png"} <= written
    md = (tmp_path / "summary.md").read_text()
    assert "### Profile `p` with dataset=cifar10, data=88ebae79, budget" in md
    assert "88ebae7912848140" not in md
    assert report.figure_stems([("p", "epochs=1"), ("p", "epochs=1.0"), ("p", "a=b c"), ("p", "a=b-c")]) == {
        ("p", "epochs=1"): "p-epochs-1", ("p", "epochs=1.0"): "p-epochs-1.0",
        ("p", "a=b c"): "p-a-b-c-" + format(__import__("zlib").crc32(b"a=b c"), "08x"),
        ("p", "a=b-c"): "p-a-b-c-" + format(__import__("zlib").crc32(b"a=b-c"), "08x")}


def test_a_pareto_front_is_ringed_on_exact_flops_only(monkeypatch):
    """Run times are not interleaved between optimizers, so a drift of the machine would ring what it
    favoured: the seconds panels ring nothing; the FLOPs panels (counted exactly) ring the front."""
    from pathlib import Path

    from suite.store import iter_records

    calls = []
    real = plots._cost_panel

    def spy(ax, g, x, scale, front, marked=frozenset()):
        calls.append((x, set(front)))
        return real(ax, g, x, scale, front, marked)

    monkeypatch.setattr(plots, "_cost_panel", spy)
    results = Path(__file__).resolve().parent.parent / "results"
    kept, _ = report.latest_per_seed(report.label_tables([r for _, r in iter_records(results, "cpu-noise") if r]))
    refs = report.references(kept)
    shown = plots.Shown("cpu-noise", report.summarize(kept, refs=refs), report.epoch_rows(kept), pd.DataFrame(),
                        refs["cpu-noise"])
    plots._cost_figure(shown)
    assert any(front for x, front in calls if x == "budget_train_flops")
    assert calls and all(not front for x, front in calls if x != "budget_train_flops")


def test_the_frontier_draws_every_optimizer_and_rings_each_by_its_keeps_sam_verdict():
    """Every registered optimizer a point and a legend entry; a ring per keeps-SAM verdict in its colour; SAM's
    band; drawn only where a table has such verdicts."""
    import dataclasses

    import numpy as np
    from matplotlib.colors import to_hex

    from suite import claims, registry

    names = registry.names()
    noise = np.random.default_rng(0).normal(0, 0.002, (len(names), 3))
    # SGD 40%, SAM 44% (a margin of 2 points), the others level with SAM or 6 points below it, by turns
    level = {n: 0.40 if n == "sgd" else 0.44 if n == "sam" or i % 2 else 0.38 for i, n in enumerate(names)}
    records = [record(n, s, level[n] + noise[i, s], 1.0, budget="epochs", flops_per_step=1e9 * (1 + i / 20))
               for i, n in enumerate(names) for s in range(3)]
    base = shown(records)
    assert not plots.FIGURES[-1].needs(base)  # no verdicts, no figure
    judged = claims.verdicts(report.run_rows(report.label_tables(records)))
    keeps = judged[judged["claim"].str.contains("keep")]
    assert {"holds", "fails"} <= set(keeps["verdict"])
    fig = plots._frontier_figure(dataclasses.replace(base, verdicts=judged))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(names) <= set(labels)
    rings = [to_hex(c.get_edgecolor()[0]) for c in ax.collections
             if hasattr(c, "get_sizes") and c.get_sizes().size and c.get_sizes()[0] == 300]
    expected = [to_hex(plots.VERDICT_MARKS[v][0]) for v in keeps["verdict"]]
    assert sorted(rings) == sorted(expected)
    assert any(type(p).__name__ == "Polygon" or p.get_alpha() == 0.08 for p in ax.patches)  # SAM's band


def test_the_frontier_spreads_points_of_equal_cost_apart_around_their_cost_and_leaves_lone_points_alone():
    from suite.plots import spread_sideways

    xs = [1.0, 2.0, 2.0, 2.0, 2.05, 1.2, 1.201, 1.5]
    out = spread_sideways(xs, step=0.01)
    assert out[0] == 1.0 and out[7] == 1.5  # nothing near them: exactly where they were
    ordered = sorted(out)
    assert min(b - a for a, b in zip(ordered, ordered[1:])) >= 0.01 - 1e-9
    assert out[1] < out[2] < out[3]  # within a group, the table's order
    assert abs(sum(out[1:4]) / 3 - 2.0) < 1e-9 and out[4] == 2.05  # 2.05 is a step and more from 2.01
    assert abs((out[5] + out[6]) / 2 - 1.2005) < 1e-9
    assert spread_sideways([]) == [] and spread_sideways([3.0]) == [3.0]


def every_optimizer(budgets=("epochs", "flops"), **metrics) -> list[dict]:
    """Two seeds of every registered optimizer under each budget, spread in cost and accuracy."""
    from suite import registry

    return [record(n, s, 0.30 + 0.003 * i + 0.01 * s, 1.4 + 0.05 * i, budget=b, **metrics)
            for b in budgets for i, n in enumerate(registry.names()) for s in range(2)]


def extent(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


def test_each_column_has_its_legend_above_its_top_panel_with_every_registered_optimizer():
    """The issue's case: the legends stood only under the lowest of four stacked panels. With every registered optimizer
    (33 now) under two budgets (four rows): one legend per column, above the top panel's title, holding the
    column's optimizers, the legends apart, and the note and the title above them all."""
    import matplotlib.pyplot as plt

    plots._theme()
    s = shown(every_optimizer())
    fig = plots._cost_figure(s)
    try:
        grid = [ax for ax in fig.axes if ax.get_title()]
        assert len(grid) == 4 * len(plots.panels(list(dict.fromkeys(s.summary["optimizer"])), s.references))
        with_legend = [ax for ax in grid if ax.get_legend() is not None]
        top = max(extent(ax, fig).y1 for ax in grid)
        assert len(with_legend) == len(plots.panels(list(s.summary["optimizer"].unique()), s.references))
        assert all(extent(ax, fig).y1 == top for ax in with_legend)  # the top row's panels
        boxes = sorted((extent(ax.get_legend(), fig) for ax in with_legend), key=lambda b: b.x0)
        for ax in with_legend:
            assert extent(ax.get_legend(), fig).y0 >= extent(ax.title, fig).y1  # above the panel's title
            drawn = {t.get_text() for t in ax.get_legend().get_texts()}
            title = ax.get_title().split(" — ")[0]
            assert drawn == set(dict(plots.panels(list(s.summary["optimizer"].unique()), s.references))[title])
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # side by side, not overlapping
        highest = max(b.y1 for b in boxes)
        assert all(extent(t, fig).y0 > highest for t in [*fig.texts, fig._suptitle])
    finally:
        plt.close(fig)


def test_a_ring_and_a_contention_mark_at_the_edge_stay_inside_the_panel():
    """smoke-comparison.png: msam, the most accurate and cheapest, stood on the top edge, its ring and † half
    outside the panel. Every ring and † of the figure is inside its panel."""
    import matplotlib.pyplot as plt
    import numpy as np

    plots._theme()
    records = [record(n, 0, acc, tflop, budget="epochs", time_contended=True)
               for n, acc, tflop in (("sgd", 0.114, 0.047), ("sam", 0.112, 0.095), ("msam", 0.130, 0.047))]
    fig = plots._cost_figure(shown(records))
    try:
        fig.canvas.draw()
        dpi = fig.dpi
        checked = 0
        for ax in fig.axes:
            box = extent(ax, fig)
            for mark in ax.texts:
                b = extent(mark, fig)
                assert box.x0 <= b.x0 and b.x1 <= box.x1 and box.y0 <= b.y0 and b.y1 <= box.y1, mark.get_text()
                checked += 1
            for ring in ax.collections:
                if not (hasattr(ring, "get_sizes") and ring.get_sizes().size and ring.get_sizes()[0] >= 200):
                    continue
                radius = np.sqrt(ring.get_sizes()[0]) / 2 * dpi / 72
                for x, y in ax.transData.transform(ring.get_offsets()):
                    assert box.x0 <= x - radius and x + radius <= box.x1
                    assert box.y0 <= y - radius and y + radius <= box.y1
                    checked += 1
        assert checked >= 4  # a † per point of the seconds panel, msam's ring in the FLOPs panel
    finally:
        plt.close(fig)


def frontier(records) -> plots.Shown:
    import dataclasses

    from suite import claims

    base = shown(records)
    return dataclasses.replace(base, verdicts=claims.verdicts(report.run_rows(report.label_tables(records))))


def test_the_frontier_says_its_budget_and_how_far_points_moved_only_where_they_did():
    """The caption said "spread sideways (by at most 0.00)" where nothing moved, and no figure text said which
    budget the frontier shows."""
    import matplotlib.pyplot as plt

    plots._theme()
    apart = [record(n, s, acc + 0.002 * s, 1.0, budget="epochs", flops_per_step=f)
             for n, acc, f in (("sgd", 0.40, 1e9), ("sam", 0.44, 2e9), ("sam-quarter-ascent", 0.43, 1.25e9))
             for s in range(3)]
    together = apart + [record("ssam-f-nm-explicit", s, 0.43, 1.0, budget="epochs", flops_per_step=2.001e9)
                        for s in range(3)]
    figures = {}
    try:
        for name, records in (("apart", apart), ("together", together)):
            figures[name] = plots._frontier_figure(frontier(records))
        for fig in figures.values():
            assert "budget epochs" in fig._suptitle.get_text()
        text = {k: " ".join(t.get_text() for t in f.texts).replace("\n", " ") for k, f in figures.items()}
        assert "sideways" not in text["apart"] and "0.00" not in text["apart"]
        moved = re.search(r"moved sideways, by up to (\d\.\d\d)× SGD's FLOPs", text["together"])
        assert moved and float(moved.group(1)) > 0
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_the_time_goal_line_is_told_apart_from_the_grid():
    """The dotted 1.2× line lay on the x grid's 1.2 in the grid's grey: it is drawn over the grid in a colour,
    width and dash no gridline has, labelled, and in the legend."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    plots._theme()
    records = [record(n, s, acc, 1.0, budget="epochs", flops_per_step=f) for n, acc, f in
               (("sgd", 0.40, 1e9), ("sam", 0.44, 2e9), ("sam-quarter-ascent", 0.43, 1.25e9)) for s in range(3)]
    fig = plots._frontier_figure(frontier(records))
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        goal = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [plots.STUDY.time_goal] * 2]
        assert len(goal) == 1
        goal = goal[0]
        for grid in ax.get_xgridlines():
            assert to_hex(goal.get_color()) != to_hex(grid.get_color())
            assert goal.get_linewidth() > grid.get_linewidth()
            assert goal.get_linestyle() != grid.get_linestyle()
        assert goal.get_zorder() > ax.xaxis.get_zorder()  # the grid is drawn with its axis (below the data)
        assert any(f"{plots.STUDY.time_goal:g}×" in t.get_text() for t in ax.texts)
        assert any("time goal" in t.get_text() for t in ax.get_legend().get_texts())
    finally:
        plt.close(fig)


def test_captions_and_the_list_write_epsilon_for_the_perturbation(capsys):
    """"masked e" meant ε: the figures' key to the markers and `python -m suite list` say ε."""
    from suite.cli import main

    assert "masked ε" in plots.MARKER_KEY and not re.search(r"\b(masked|dense) e\b", plots.MARKER_KEY)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "masked ε" in out and "dense ε" in out and not re.search(r"\b(masked|dense) e\b", out)
