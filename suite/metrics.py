"""What a run measures, declared once: each entry is a key of the record's flat ``metrics`` mapping,
the code that measures it from the finished run, and — for those the report tabulates — its column.

Add a metric: one ``Metric`` in ``METRICS`` whose ``measure`` reads the finished run (``Finished``:
the run's context, its state, its last evaluation and its budget). The harness records it, the report
finds it, ``label`` gives it a column, ``ratios`` adds its ratio to each reference optimizer, and
``interval`` adds mean ± std, a 95% interval and seed-paired differences to the references.

A measure of the final model that another command adds to the record afterwards (``python -m suite
sharpness``) is declared here too, with no ``measure`` and the table it belongs to (``table="sharpness"``):
the harness leaves it out, the command writes it, and the report tabulates it by the same code as the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from suite import budget
from suite.measure import contended, load_average, usable_cores


@dataclass(frozen=True)
class Metric:
    key: str
    # the finished run -> a JSON value (None where it does not apply); None: not measured by the harness but
    # added to the record later by the command that measures its ``table`` (``python -m suite sharpness``)
    measure: Callable[[Finished], Any] | None
    label: str | None = None  # the report's column header; None: recorded, not tabulated
    fmt: str = "{:.2f}"  # the table's format, applied after ``scale``
    scale: float = 1.0
    ratios: str | None = None  # name of its ratio columns ("time" -> "time × SGD"); None: no ratios
    interval: bool = False  # mean ± std, 95% interval, paired differences to the references
    varies: bool = False  # depends on the machine's speed or load: left out of reproduction checks
    table: str = "summary"  # the report's table with its column: "summary" (the main one) or "sharpness"
    spread_fmt: str | None = None  # format of its ± half-widths (None: ``fmt``)
    diff_fmt: str | None = None  # format of its paired differences (None: ``fmt``, signed)
    timing: bool = False  # a time figure: the report marks it, and its ratios, where taken under contention
    # measured only in runs scored on this split ("test"; "val": a validation split, ``validation_fraction``):
    # a run with a validation split has no test metric at all, one without it no validation metric
    split: str | None = None


class Finished:
    """What a metric may read: the run's context (``ctx``: config, data, device) and state (``state``:
    model, optimizer, counters, per-epoch rows) once training has ended."""

    def __init__(self, ctx: Any, state: Any) -> None:
        self.ctx, self.state = ctx, state

    @property
    def last(self) -> dict[str, Any]:
        return self.state.epochs[-1]

    @cached_property
    def budget(self) -> dict[str, Any]:
        return budget.spent(self.state.plan, self.state.step, self.ctx.steps_per_epoch,
                            self.flops_per_step, self.state.clock.per_step)

    @property
    def step_mix(self) -> Any:
        """The entry's ``registry.StepMix`` where its steps mix two kinds in a share no period repeats; else None."""
        info = getattr(self.ctx, "info", None)
        return getattr(info, "step_mix", None)

    @cached_property
    def sam_share(self) -> float | None:
        """The share of the run's steps, all of them, that ran the second pass (a mixed method's; else None, and
        None where a run resumed from a checkpoint that predates the count: its FLOPs are then the counter's)."""
        taken = getattr(self.state.optimizer, "second_passes_taken", None)
        if self.step_mix is None or not self.state.step or taken is None:
            return None
        return taken / self.state.step

    @cached_property
    def flops_by_kind(self) -> tuple[float, float] | None:
        """(a one-pass step's FLOPs, a SAM step's) of a mixed method, probed with each kind forced on a throwaway
        model built like the run's (``probe.kind_costs``: the same figures its FLOP budget was planned with)."""
        if self.step_mix is None:
            return None
        from suite import probe  # not at the top: the probe builds with the registry, which a metric need not

        return probe.kind_costs(self.ctx.config, self.ctx.dataset, "flops")

    @cached_property
    def flops_per_step(self) -> float | None:
        """FLOPs per step. Where a step's cost varies periodically, the counter's mean over the first steps (one
        period or more). Where the steps mix two kinds in a share no period repeats (``registry.StepMix``), the
        first steps are not typical (late-phase SAM's are all SGD's): each kind's FLOPs weighted by the share the
        run realised over all its steps, ``(1 - s) * one_pass + s * sam``."""
        if self.flops_by_kind is None or self.sam_share is None:
            return self.state.flops.per_step
        return budget.weighted(*self.flops_by_kind, self.sam_share)

    def per_step(self, total: float) -> float:
        return total / self.state.step

    @cached_property
    def load_end(self) -> float | None:
        return load_average()

    def machine(self, what: str) -> Any:
        """What the run saw of its machine at its end: ``torch_threads``, ``usable_cores``, or whether its time
        figures were taken under contention (``contended``, ``suite.contended``)."""
        if what == "torch_threads":
            return torch.get_num_threads()
        if what == "usable_cores":
            return usable_cores()
        return contended(self.state.clock, self.load_end)

    @property
    def replicas(self) -> int:
        """Processes that each ran every step on a slice of the batch (torchrun; else 1)."""
        world = getattr(self.ctx, "world", None)
        return world.size if world is not None else 1


def _budget(key: str, **column: Any) -> Metric:
    return Metric(f"budget_{key}", lambda r: r.budget.get(key), **column)


def _mask(r: Finished, which: str) -> float | None:
    """An optimizer's realised mask density (SSAM: ``mask_density()``, ``density_range``); None without masks."""
    opt = r.state.optimizer
    if not hasattr(opt, "mask_density"):
        return None
    if which == "final":
        return opt.mask_density()
    seen = getattr(opt, "density_range", None)
    return None if seen is None else seen[0 if which == "min" else 1]


METRICS: list[Metric] = [
    # ----- the report's columns, in its order -----
    _budget("epochs_run", label="epochs"),
    Metric("test_acc", lambda r: r.last["test_acc"], "test acc %", scale=100, interval=True, split="test"),
    Metric("val_acc", lambda r: r.last["val_acc"], "val acc %", scale=100, interval=True, split="val"),
    Metric("time_per_step_s", lambda r: r.state.clock.per_step, "ms/step", "{:.1f}", 1e3, ratios="time",
           varies=True, timing=True),
    Metric("flops_per_step", lambda r: r.flops_per_step, "GFLOP/step", scale=1e-9, ratios="FLOPs"),
    _budget("train_flops", label="train TFLOP", scale=1e-12),
    _budget("spent_ratio", label="budget spent %", fmt="{:.0f}", scale=100),
    Metric("forward_passes_per_step", lambda r: r.per_step(r.state.passes.forward_passes), "fwd passes"),
    Metric("backward_passes_per_step", lambda r: r.per_step(r.state.passes.backward_passes), "bwd passes"),
    Metric("peak_memory_mb", lambda r: r.state.memory.read_mb(), "peak MB", "{:.0f}", varies=True),
    Metric("mask_density", lambda r: _mask(r, "final"), "mask density"),
    Metric("mask_density_min", lambda r: _mask(r, "min"), "lowest mask density"),
    Metric("mask_density_max", lambda r: _mask(r, "max")),
    # ----- recorded only -----
    Metric("status", lambda r: r.state.status),
    Metric("diverged_at_step", lambda r: r.state.diverged_at),
    Metric("last_finite_loss", lambda r: r.state.last_finite),
    Metric("test_loss", lambda r: r.last["test_loss"], split="test"),
    Metric("val_loss", lambda r: r.last["val_loss"], split="val"),
    Metric("best_test_acc_on_test_set", lambda r: max(e["test_acc"] for e in r.state.epochs), split="test"),
    Metric("train_loss", lambda r: r.last["train_loss"]),
    Metric("steps", lambda r: r.state.step),
    Metric("timed_steps", lambda r: r.state.clock.timed_steps),
    Metric("flop_counted_steps", lambda r: r.state.flops.steps),
    # a method whose steps mix the base optimizer's and SAM's (registry.StepMix): the share of SAM steps over the
    # whole run and each kind's FLOPs, which flops_per_step weights (None for every other method)
    Metric("sam_step_share", lambda r: r.sam_share),
    Metric("flops_per_one_pass_step", lambda r: r.flops_by_kind[0] if r.flops_by_kind else None),
    Metric("flops_per_sam_step", lambda r: r.flops_by_kind[1] if r.flops_by_kind else None),
    Metric("train_seconds", lambda r: r.state.clock.all_seconds, varies=True),
    Metric("samples_per_s", lambda r: r.state.clock.samples_per_s(r.ctx.config.train.batch_size), varies=True),
    # the input pipeline: seconds spent waiting for the next batch (augmentation in memory, the loader's
    # workers when streaming), and their share of waiting plus stepping; near 1 the data is the bottleneck
    Metric("data_seconds", lambda r: r.state.data_seconds, varies=True),
    Metric("data_share", lambda r: r.state.data_seconds / (r.state.data_seconds + r.state.clock.all_seconds)
           if r.state.data_seconds + r.state.clock.all_seconds > 0 else None, varies=True),
    # what the run could see of its machine over its timed steps (``suite.measure.StepClock``): its CPU seconds
    # and their share of wall seconds x threads, its threads' wait for a core (Linux), the load average, the
    # threads and cores; from them whether its time figures were taken under contention (``time_contended``:
    # None where nothing could tell; absent from records made before it was measured: unknown, not contended)
    Metric("cpu_seconds", lambda r: r.state.clock.cpu_seconds, varies=True),
    Metric("cpu_share", lambda r: r.state.clock.cpu_share, varies=True),
    Metric("cpu_wait_seconds", lambda r: r.state.clock.wait_seconds, varies=True),
    Metric("cpu_wait_share", lambda r: r.state.clock.wait_share, varies=True),
    Metric("load_average_start", lambda r: r.state.clock.load_start, varies=True),
    Metric("load_average_end", lambda r: r.load_end, varies=True),
    Metric("torch_threads", lambda r: r.machine("torch_threads"), varies=True),
    Metric("usable_cores", lambda r: r.machine("usable_cores"), varies=True),
    Metric("time_contended", lambda r: r.machine("contended"), varies=True),
    Metric("forward_samples_per_step", lambda r: r.per_step(r.state.passes.forward_samples) * r.replicas),
    Metric("backward_samples_per_step", lambda r: r.per_step(r.state.passes.backward_samples) * r.replicas),
    Metric("peak_memory_kind", lambda r: r.state.memory.kind),
    Metric("checkpoints", lambda r: r.state.saving["count"]),
    Metric("checkpoint_seconds", lambda r: r.state.saving["seconds"], varies=True),
    *(_budget(key) for key in ("kind", "unit", "amount", "reference", "reference_epochs", "reference_cost_per_step",
                               "probed_cost_per_step", "steps", "steps_run", "spent", "planned_sam_share",
                               "probed_cost_one_pass_step", "probed_cost_sam_step")),
    _budget("train_seconds_at_timed_rate", varies=True),
    # ----- the final model's sharpness (suite/sharpness.py, in this order), a table of its own; four
    # significant digits, as the measures span orders of magnitude across models -----
    *(Metric(key, None, label, "{:.4g}", interval=True, table="sharpness", spread_fmt="{:.2g}", diff_fmt="{:+.3g}")
      for key, label in (("sharpness_lambda_max", "λmax"), ("sharpness_trace", "Hessian trace"),
                         ("sharpness_m", "m-sharpness"), ("sharpness_m_adaptive", "adaptive m-sharpness"))),
]
EPOCH_VARIES = ("train_seconds",)  # per-epoch values that depend on the machine's speed


def measure(finished: Finished) -> dict[str, Any]:
    """The record's flat metrics mapping (the metrics the harness measures; of the split metrics, those of the
    split the run is scored on)."""
    on = "val" if finished.ctx.config.train.validation_fraction > 0 else "test"
    return {m.key: m.measure(finished) for m in METRICS if m.measure is not None and m.split in (None, on)}


def accuracy_said(m: dict[str, Any]) -> str:
    """A record's final accuracy as a progress line says it: "test acc 0.4210", or "val acc 0.4100" for a run
    scored on a validation split."""
    key = "test_acc" if "test_acc" in m else "val_acc"
    value = m.get(key)
    return f"{key.replace('_', ' ')} " + ("-" if value is None else f"{value:.4f}")


def columns(table: str = "summary") -> list[Metric]:
    """The metrics with a column in ``table``, in their declared order."""
    return [m for m in METRICS if m.label and m.table == table]


def keys(table: str) -> tuple[str, ...]:
    """The keys of every metric of ``table`` (``"sharpness"``: what ``python -m suite sharpness`` records)."""
    return tuple(m.key for m in METRICS if m.table == table)


def get(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def varying_keys() -> set[str]:
    return {m.key for m in METRICS if m.varies}
