"""Timings under load: what a run saw of its machine is recorded, a time taken while another program used
the cores is flagged in the record, marked in the tables and figures, and a record without the measurement
is unknown, not contended."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import run_config, squash

from suite import harness, measure, plots
from suite.config import TrainConfig
from suite.data import synthetic_dataset
from suite.report import summarize, to_markdown
from suite.store import SCHEMA

TRAIN = TrainConfig(dataset="synthetic", model="resnet8", epochs=1, batch_size=32, train_subset=320,
                    test_subset=100, eval_batch_size=100, flop_steps=1)
MACHINE = ("cpu_seconds", "cpu_share", "cpu_wait_seconds", "cpu_wait_share", "load_average_start",
           "load_average_end", "torch_threads", "usable_cores", "time_contended")


def busy_loops(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep a core busy until killed."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.3)  # let them start spinning
    return loops


def record(optimizer, seed, time_s, contended=None, measured=True):
    machine = {"time_contended": contended, "cpu_share": 0.5 if contended else 0.97,
               "cpu_wait_share": 0.4 if contended else 0.01} if measured else {}
    return {
        "schema": SCHEMA, "references": ["sgd", "sam"],
        "config": {"profile": "p", "optimizer": optimizer, "seed": seed, "train": {"budget": "epochs"}},
        "metrics": {"status": "finished", "test_acc": 0.5, "time_per_step_s": time_s, "flops_per_step": 1e9,
                    "budget_train_flops": 1e10, "budget_train_seconds_at_timed_rate": 10 * time_s,
                    "budget_steps_run": 10, **machine},
        "epochs": [{"epoch": 1, "epochs_done": 1, "test_acc": 0.5, "train_seconds": 1.0}],
    }


def row(md: str, name: str) -> list[str]:
    line = next(line for line in squash(md).splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def columns(md: str) -> list[str]:
    line = next(line for line in squash(md).splitlines() if line.startswith("| optimizer |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def cell(md: str, name: str, column: str) -> str:
    return row(md, name)[columns(md).index(column)]


def test_a_run_under_injected_contention_is_flagged_in_its_record_and_marked_in_the_table():
    """A busy loop per usable core while a short synthetic run trains: the run's threads wait for a core, and
    its record says its time was taken under contention; the summary table marks its ms/step and the ratios
    that involve it."""
    dataset = synthetic_dataset(n_train=400, n_test=100)
    harness.run(run_config("sgd", TRAIN), dataset, progress=False)  # the process's one-off costs, outside
    loops = busy_loops(measure.usable_cores())
    try:
        loaded = harness.run(run_config("sgd", TRAIN), dataset, progress=False)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    m = loaded["metrics"]
    assert set(MACHINE) <= set(m)
    assert m["time_contended"] is True, {k: m[k] for k in MACHINE}
    assert 0 < m["cpu_seconds"] and 0 < m["cpu_share"] <= 1.05
    if m["cpu_wait_share"] is not None:  # Linux: the threads' run-queue wait decides
        assert m["cpu_wait_share"] >= measure.CONTENDED_WAIT_SHARE
    else:
        assert m["cpu_share"] < measure.CONTENDED_CPU_SHARE
    assert m["torch_threads"] >= 1 and m["usable_cores"] == measure.usable_cores()
    quiet = json.loads(json.dumps(loaded))  # the same run as SAM's, twice as slow, its cores to itself
    quiet["config"]["optimizer"] = "sam"
    quiet["metrics"].update(time_per_step_s=2 * m["time_per_step_s"], time_contended=False)
    md = to_markdown(summarize([loaded, quiet]))
    assert cell(md, "sgd", "ms/step").endswith(" †") and not cell(md, "sam", "ms/step").endswith("†")
    assert cell(md, "sam", "time × SGD").endswith(" †")  # its reference's time was contended
    assert "†: time taken under contention" in md and "(sgd)" in md
    assert "`python -m suite cost` are the authority for time" in md


def test_an_uncontended_record_is_not_marked():
    records = [record("sgd", s, 0.1, contended=False) for s in range(2)] + \
              [record("sam", s, 0.2, contended=False) for s in range(2)]
    md = to_markdown(summarize(records))
    assert "†" not in md
    assert cell(md, "sam", "ms/step") == "200.0" and cell(md, "sam", "time × SGD") == "2.00"
    assert "Time: no measured run was taken under contention" in md and "10%" in md


def test_a_record_without_the_measurement_is_unknown_not_contended():
    """Records made before contention was measured (the published ones): no mark, the note says unknown; beside
    a measured contended run only the contended one is marked."""
    old = [record("sgd", s, 0.1, measured=False) for s in range(2)] + [record("sam", s, 0.2, measured=False)
                                                                       for s in range(2)]
    table = summarize(old)
    assert list(table["time_unmeasured"]) == [2, 2] and list(table["time_contended"]) == [0, 0]
    md = to_markdown(table)
    assert "†" not in md
    assert "Time: these runs were recorded before the suite measured contention (unknown, not contended)" in md
    mixed = [*old[:2], record("sam", 0, 0.2, contended=True), record("sam", 1, 0.2, contended=False)]
    md = to_markdown(summarize(mixed))
    assert not cell(md, "sgd", "ms/step").endswith("†") and cell(md, "sam", "ms/step").endswith(" †")
    assert cell(md, "sam", "time × SGD").endswith(" †") and cell(md, "sgd", "time × SAM").endswith(" †")
    assert "2 of the 4 runs were recorded before the suite measured contention" in md


def test_the_rule_prefers_the_run_queue_wait_and_falls_back_on_cpu_share_and_load(monkeypatch):
    import torch

    monkeypatch.setattr(measure, "usable_cores", lambda: 2)
    clock = measure.StepClock(torch.device("cpu"))
    clock.timed_steps, clock.timed_seconds, clock.load_start = 10, 1.0, 1.0
    threads = min(torch.get_num_threads(), 2)
    clock.cpu_seconds, clock.wait_seconds = 0.5 * threads, 0.0  # a half-idle small model, nobody else: fine
    assert clock.cpu_share == pytest.approx(0.5) and measure.contended(clock, load_end=9.0) is False
    clock.wait_seconds = 0.2 * threads  # waited for a core 2/7 of the time it was ready
    assert measure.contended(clock, load_end=1.0) is True
    clock.wait_seconds = None  # not Linux: the CPU share and the load decide
    assert measure.contended(clock, load_end=1.0) is True
    clock.cpu_seconds = 0.95 * threads
    assert measure.contended(clock, load_end=1.0) is False and measure.contended(clock, load_end=2.6) is True
    clock.cpu_seconds, clock.load_start = None, None  # resumed from a checkpoint older than the measurement
    assert measure.contended(clock, load_end=None) is None
    clock.load_state_dict({"timed_seconds": 1.0, "timed_steps": 3, "all_seconds": 2.0})
    assert clock.cpu_share is None and clock.wait_share is None


def test_the_cost_figure_marks_a_time_taken_under_contention():
    import matplotlib.pyplot as plt

    from suite.report import epoch_rows, label_tables

    records = label_tables([record("sgd", 0, 0.1, contended=False), record("sam", 0, 0.2, contended=True)])
    plots._theme()
    fig = plots._cost_figure(plots.Shown("p", summarize(records), epoch_rows(records), pd.DataFrame(),
                                         ("sgd", "sam")))
    try:
        flops_row, seconds_row = fig.axes
        assert [t.get_text() for t in seconds_row.texts] == ["†"] and len(flops_row.texts) == 0
        assert any("†: training seconds taken under contention" in t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)
