"""The optimizer table: every optimizer the suite runs, one entry each, in the order tables list them.

An entry names the class and states only what it changes of the class's own defaults (a default is
written once, in the constructor), what the harness must hand it at construction, and the inputs it
must refuse — the registry-generated tests check every one raises ``ValueError`` naming the value. The
optimizer files import torch and ``baselines.core`` only, never this module.

Add an optimizer: write its file (``baselines/`` or ``ssam/``), then one ``OptimizerInfo`` line in
``OPTIMIZERS``. Out-of-tree, a module named in ``SUITE_OPTIMIZER_MODULES`` (comma-separated import
paths or ``.py`` file paths) calls ``register(OptimizerInfo(...))``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from baselines import AESAM, ESAM, GSAM, KSAM, MESA, MSAM, RST, RWP, SAF, SAM, LateSAM, LookSAM
from ssam import SSAM

ORIGINS = {"paper": "as in the paper's code", "extension": "extension of this suite",
           "published": "published method", "reference": "reference baseline", "": "not stated"}
# Which method an entry is a variant of (the figures' colours, markers and panels, the claims' groups): one
# word each. Who made the variant (the paper's code, a published paper, this suite) is its origin, not its
# family: this suite's cheaper-ascent SAM is in SAM's family, its SSAM-F variants in SSAM-F's.
FAMILIES = {"SGD": "SGD with momentum, the plain reference",
            "SAM": "SAM (Foret et al. 2021), with any ascent fraction",
            "ESAM": "ESAM (Du et al. 2022)",
            "SSAM-F": "Sparse SAM with a Fisher mask (Mi et al. 2023): every pattern and form",
            "SSAM-D": "Sparse SAM with a dynamic mask (Mi et al. 2023): every pattern and form",
            "field": "the efficient-SAM field (issues 25, 38): ASAM, periodic SAM, LookSAM, RST, GSAM, Momentum-SAM, "
                     "AE-SAM, late-phase SAM, random weight perturbation (ARWP), K-SAM, SAF, MESA and this suite's "
                     "combinations of them",
            "": "not stated"}
# The Sparse SAM variants the paper's official code has (Mi et al.'s repositories): SSAM-F explicit in
# every pattern, SSAM-F implicit for structured and N:M masks, SSAM-D unstructured and explicit only.
PAPER_SSAM = {("fisher", "unstructured", "explicit"), ("fisher", "structured", "explicit"),
              ("fisher", "nm", "explicit"), ("fisher", "structured", "implicit"), ("fisher", "nm", "implicit"),
              ("dynamic", "unstructured", "explicit")}

# What the harness can hand an optimizer at construction (never during steps).
INPUTS = frozenset({"model", "total_steps", "steps_per_epoch", "seed", "sample_examples", "train_size"})

# How the share of SAM steps of a method whose steps mix the two kinds is known before its run (``StepMix``)
SHARE_BASES = {
    "schedule": "its schedule's share, exact for the run's length",
    "drawn": "the probability of its draws (a run's own draws are counted)",
    "declared": "declared: the gradients decide, so a model's expected share (a run's own is counted)",
}


@dataclass(frozen=True)
class StepMix:
    """A method whose steps are of two kinds, the base optimizer's (one pass) and SAM's (two), in a share that
    no period repeats: late-phase SAM (SGD's steps, then SAM's), RST (drawn), AE-SAM (decided by the gradient).

    Pricing such a step from the first steps of a run prices the wrong mix (late-phase SAM's are all SGD's),
    and no window of steps is typical. So the suite prices each kind of step on its own (``suite.probe``, the
    optimizer's ``step_kind``), and weights the two by a share of SAM steps: the share the run realised
    (``second_passes_taken``, counted over all its steps) for a record's FLOPs per step, and before a run the
    expected share, ``sam_steps(optimizer, T) / T``, for a budget's step count and the cost table."""

    # the expected number of SAM steps in a run of T steps, from the built optimizer's hyper-parameters
    sam_steps: Callable[[torch.optim.Optimizer, int], float]
    basis: str  # a key of SHARE_BASES: how that expectation is known

    def __post_init__(self) -> None:
        if self.basis not in SHARE_BASES:
            raise ValueError(f"StepMix basis must be one of {sorted(SHARE_BASES)}, got {self.basis!r}")

    def expected_share(self, optimizer: torch.optim.Optimizer, total_steps: int) -> float:
        return self.sam_steps(optimizer, total_steps) / total_steps
_NOT_HPARAMS = {"self", "params", "base_optimizer", *INPUTS}


@dataclass(frozen=True)
class OptimizerInfo:
    """One row of the table."""

    name: str
    cls: Callable[..., torch.optim.Optimizer]  # cls(params, **hparams, **inputs)
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # constructor arguments other than its defaults
    inputs: frozenset[str] = frozenset()  # what the harness hands it, a subset of INPUTS
    passes_per_step: int = 1  # nominal forward/backward passes per step; the closure's meter measures the truth
    # Steps over which a step's cost varies periodically (a mask refresh interval), read from the built
    # optimizer; the harness counts FLOPs over that many whole steps.
    flop_window: Callable[[torch.optim.Optimizer], int] | None = None
    invalid: tuple[Mapping[str, Any], ...] = ()  # hyper-parameters it must refuse with ValueError
    # Valid configurations other than the default (as torch's optim_db optim_inputs_func): each is built over
    # the entry's changes, and every generated contract test runs on the default and on each of them.
    samples: tuple[Mapping[str, Any], ...] = ()
    aliases: tuple[str, ...] = ()  # other names that select this entry
    # "paper": as in the method's paper's code; "extension": this suite's own variant; "reference": a
    # plain baseline; "": not said (an out-of-tree entry unless it says)
    origin: str = ""
    family: str = ""  # a key of FAMILIES; "": not stated (an out-of-tree entry unless it says)
    # its steps mix the base optimizer's and SAM's in a share that is not periodic: each kind priced on its own
    # and weighted by the share (``StepMix``); None: a step's cost is priced over ``flop_window`` steps
    step_mix: StepMix | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", MappingProxyType(dict(self.changes)))
        object.__setattr__(self, "inputs", frozenset(self.inputs))
        object.__setattr__(self, "samples", tuple(MappingProxyType(dict(s)) for s in self.samples))
        if self.inputs - INPUTS:
            raise ValueError(f"{self.name}: unknown inputs {sorted(self.inputs - INPUTS)}; known: {sorted(INPUTS)}")
        if self.origin not in ORIGINS:
            raise ValueError(f"{self.name}: origin must be one of {sorted(ORIGINS)}, got {self.origin!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {sorted(FAMILIES)}, got {self.family!r}")

    @property
    def provenance(self) -> str:
        """Where the variant comes from, in words (``python -m suite list``, the README, each record)."""
        return ORIGINS[self.origin]

    def build(self, params: Iterable[Any], available: Mapping[str, Any] | None = None,
              **hparams: Any) -> torch.optim.Optimizer:
        """Construct with ``hparams`` over this entry's changes; of ``available`` (the harness's model,
        total_steps, steps_per_epoch and the run's seed) only the inputs the entry asks for are passed."""
        inputs = {k: v for k, v in (available or {}).items() if k in self.inputs}
        return self.cls(params, **{**self.changes, **hparams}, **inputs)

    def accepts(self, key: str) -> bool:
        """Whether the constructor takes ``key``: a parameter of its own, or, where it passes ``**kwargs``
        on to a ``base_optimizer`` (the two-pass family), one of that optimizer's. Unknown where the
        signature cannot be read: then it is handed and a wrong one fails at construction."""
        return _accepts(self.cls, key, self.changes.get("base_optimizer"))

    def defaults(self) -> dict[str, Any]:
        """The hyper-parameters this entry runs with unless told otherwise: the constructor's defaults
        under the entry's changes (what ``python -m suite list`` shows)."""
        try:
            signature = inspect.signature(self.cls)
        except (TypeError, ValueError):  # a builtin or C-implemented factory: nothing to read
            return dict(self.changes)
        own = {k: p.default for k, p in signature.parameters.items()
               if k not in _NOT_HPARAMS and p.default is not inspect.Parameter.empty}
        return {**own, **self.changes}


def _accepts(fn: Callable[..., Any], key: str, base: Any = None, depth: int = 0) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    if key in params and params[key].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return True
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return False
    base = base or (params["base_optimizer"].default if "base_optimizer" in params else None)
    if base is None or base is inspect.Parameter.empty or depth > 3:
        return True  # **kwargs that go somewhere unknown: it may take anything
    return _accepts(base, key, None, depth + 1)


# ----- invalid inputs, declared once per family ------------------------------------------------------------
SGD_INVALID = ({"lr": -1.0}, {"momentum": -0.5}, {"weight_decay": -1e-4})
TWO_PASS_INVALID = (*SGD_INVALID, {"rho": -0.1}, {"rho": float("inf")}, {"adaptive": "yes"}, {"ascent_fraction": 0},
                    {"ascent_fraction": 1.5})
PERIODIC_INVALID = (*TWO_PASS_INVALID, {"sam_every": 0}, {"sam_every": 2.5})
LOOKSAM_INVALID = (*PERIODIC_INVALID, {"alpha": -0.7})
GSAM_INVALID = (*TWO_PASS_INVALID, {"alpha": -0.1}, {"rho_min": -0.01}, {"rho_min": 1.0})
RST_INVALID = (*TWO_PASS_INVALID, {"probability": 1.5}, {"probability": -0.2})
MSAM_INVALID = (*SGD_INVALID, {"rho": -0.1}, {"adaptive": "yes"}, {"momentum": 0.0})
# (total_steps is the harness's input, not a hyper-parameter: tests/test_peers.py checks its refusals)
AESAM_INVALID = (*TWO_PASS_INVALID, {"delta": 1.0}, {"delta": -0.1}, {"lambda1": float("inf")}, {"lambda2": "1"},
                 {"ascent_fraction": 0.5}, {"sam_every": 2})
LATE_SAM_INVALID = (*TWO_PASS_INVALID, {"switch_at": 1.5}, {"switch_at": -0.1}, {"sam_every": 3})
# SAF and MESA are SGD with a loss term: their own settings, SGD's (train_size, steps_per_epoch and model are the
# harness's inputs: tests/test_saf.py checks their refusals)
TRAJECTORY_INVALID = (*SGD_INVALID, {"lam": -0.1}, {"temperature": 0.0}, {"start_epoch": -1}, {"start_epoch": 1.5},
                      {"end_epoch": 6})
SAF_INVALID = (*TRAJECTORY_INVALID, {"past_epochs": 0}, {"past_epochs": 7})
MESA_INVALID = (*TRAJECTORY_INVALID, {"ema_decay": 1.0}, {"ema_decay": -0.1})
# (total_steps and seed are the harness's inputs: tests/test_rwp.py checks their refusals)
RWP_INVALID = (*SGD_INVALID, {"rho": -0.1}, {"rho": float("inf")}, {"eta": -0.1}, {"beta": 1.5}, {"beta": -0.1},
               {"increase": -1.0}, {"increase": float("nan")})
# k_fraction < 1 already takes the ascent on part of the batch: a random part besides is refused
KSAM_INVALID = (*TWO_PASS_INVALID, {"k_fraction": 0}, {"k_fraction": 1.5}, {"k_fraction": -0.25},
                {"k_fraction": "0.5"}, {"k_fraction": 0.5, "ascent_fraction": 0.25})
ESAM_INVALID = (*TWO_PASS_INVALID, {"beta": 0}, {"beta": 1.5}, {"gamma": 0.0}, {"gamma": 1.5}, {"swp": "layer"})
SSAM_INVALID = (*TWO_PASS_INVALID, {"drop_rate": -0.5}, {"update_every": 0}, {"fisher_samples": 0},
                {"growth": "best"}, {"normalise": "l1"}, {"fisher_impl": "jit"}, {"fisher_bn": "none"},
                {"fisher_data": "test"}, {"refresh_timing": "later"})
SSAM_DENSITY_INVALID = {"unstructured": ({"sparsity": 1.5}, {"sparsity": -0.1}),
                        "structured": ({"sparsity": 1.5}, {"sparsity": -0.1}),
                        "structured-top": ({"sparsity": 1.5}, {"sparsity": -0.1}),
                        "nm": ({"m": 5}, {"n": 5}, {"n": 0}, {"sparsity": 0.3})}

# ----- sample configurations, declared once per family: valid settings other than the defaults, each run by
# every generated contract test (tiny models: they must build and step there) --------------------------------
SGD_SAMPLES = ({"nesterov": True, "weight_decay": 1e-3}, {"momentum": 0.0, "weight_decay": 0.0})
TWO_PASS_SAMPLES = ({"adaptive": True, "rho": 0.5}, {"rho": 0.2, "nesterov": True}, {"ascent_fraction": 0.5})
ESAM_SAMPLES = ({"beta": 1.0, "gamma": 1.0}, {"beta": 0.3, "swp": "element", "adaptive": True, "rho": 0.5},
                {"gamma": 1.0, "ascent_fraction": 0.5, "rho": 0.2})
PERIODIC_SAMPLES = ({"sam_every": 2, "adaptive": True, "rho": 0.5}, {"sam_every": 3, "ascent_fraction": 0.5})
LOOKSAM_SAMPLES = ({"sam_every": 2, "alpha": 0.2, "nesterov": True}, {"adaptive": True, "rho": 0.5, "sam_every": 3})
GSAM_SAMPLES = ({"alpha": 0.0, "rho_min": 0.01}, {"adaptive": True, "rho": 0.5, "alpha": 0.4},
                {"ascent_fraction": 0.5, "nesterov": True})
RST_SAMPLES = ({"probability": 0.2, "adaptive": True, "rho": 0.5}, {"probability": 0.7, "ascent_fraction": 0.5})
MSAM_SAMPLES = ({"adaptive": True, "rho": 0.3}, {"rho": 0.1, "nesterov": True, "weight_decay": 0.0})
AESAM_SAMPLES = ({"delta": 0.5, "lambda1": 0.0, "lambda2": 2.0}, {"adaptive": True, "rho": 0.5, "nesterov": True})
LATE_SAM_SAMPLES = ({"switch_at": 0.25, "adaptive": True, "rho": 0.5}, {"switch_at": 0.5, "ascent_fraction": 0.5})
SAF_SAMPLES = ({"past_epochs": 1, "start_epoch": 0, "lam": 1.0, "temperature": 2.0},
               {"start_epoch": 1, "past_epochs": 2, "end_epoch": 4, "nesterov": True})
MESA_SAMPLES = ({"ema_decay": 0.5, "start_epoch": 0, "lam": 0.1},
                {"temperature": 1.0, "end_epoch": 7, "nesterov": True})
RWP_SAMPLES = ({"rho": 0.01, "increase": 0.0}, {"eta": 1.0, "beta": 0.9, "nesterov": True})
# k_fraction = 1 is SAM (its ascent_fraction then allowed); a quarter is cheaper than SGD in FLOPs
KSAM_SAMPLES = ({"k_fraction": 0.5, "adaptive": True, "rho": 0.5}, {"k_fraction": 0.25, "nesterov": True},
                {"k_fraction": 1.0, "ascent_fraction": 0.5})
SSAM_DENSITY_SAMPLES = {"unstructured": {"sparsity": 0.9}, "structured": {"sparsity": 0.25},
                        "structured-top": {"sparsity": 0.75}, "nm": {"n": 1, "m": 2}}
SSAM_MASK_SAMPLES = {
    "fisher": ({"fisher_impl": "loop", "fisher_samples": 4, "fisher_bn": "running"},
               {"fisher_data": "train", "refresh_timing": "paper"}),
    "dynamic": ({"drop_rate": 0.9, "growth": "gradient"}, {"refresh_timing": "paper", "update_every": 1}),
}


def _ssam_samples(mask: str, pattern: str, form: str, normalise: str) -> tuple[dict[str, Any], ...]:
    """Another density (and, where the form allows both, the other normalisation), a larger adaptive rho with
    a longer refresh period, and the mask kind's own settings."""
    other = {"normalise": "paper" if normalise == "masked" else "masked"} if form != "implicit" else {}
    return ({**SSAM_DENSITY_SAMPLES[pattern], **other}, {"rho": 0.2, "adaptive": True, "update_every": 3},
            *SSAM_MASK_SAMPLES[mask])


# Cheaper first passes (issue 12): the ascent gradient from a fraction of the batch (the skeleton's
# ascent_fraction), every example still in the descent. A step costs about (1 + f)x SGD's FLOPs. A quarter
# is the cheapest; two fifths is the cheapest that kept SAM's accuracy on the long CPU profile (cpu-noise),
# and stays under 1.5x SGD with SSAM-F's Fisher pass added. The variants that carry either are this suite's.
ASCENT_FRACTIONS = {"quarter": 0.25, "two-fifths": 0.4}
ASCENT_PHRASES = {"quarter": "a quarter", "two-fifths": "two fifths"}
ASCENT_SUFFIXES = {word: f"-{word}-ascent" for word in ASCENT_FRACTIONS}  # the names' endings


def _ascent(word: str | None) -> tuple[str, str, dict[str, Any]]:
    """(name suffix, description words, changes) of an ascent-fraction variant; empty for none."""
    if word is None:
        return "", "", {}
    return ASCENT_SUFFIXES[word], f"; ascent gradient from {ASCENT_PHRASES[word]} of the batch", \
        {"ascent_fraction": ASCENT_FRACTIONS[word]}


def _ssam(mask: str, pattern: str, form: str, aliases: tuple[str, ...] = (), ascent: str | None = None,
          changes: dict[str, Any] | None = None, words: str = "") -> OptimizerInfo:
    letter = mask[0]
    inputs = {"steps_per_epoch", "seed"} | ({"total_steps"} if mask == "dynamic" else {"sample_examples"}) \
        | ({"model"} if form != "explicit" else set())
    origin = "paper" if (mask, pattern, form) in PAPER_SSAM and ascent is None else "extension"
    what = {"explicit": "explicit (masked ε)", "implicit": "implicit (masked backward, dense ε)",
            "implicit-masked": "masked backward and masked ε"}[form]
    suffix, ascent_words, ascent_changes = _ascent(ascent)
    changes = {"mask": mask, "pattern": pattern, "form": form, **ascent_changes, **(changes or {})}
    return OptimizerInfo(
        f"ssam-{letter}-{pattern}-{form}{suffix}", SSAM,
        f"SSAM-{letter.upper()} (Mi et al. 2023): {pattern}, {what}{ascent_words}{words}",
        origin=origin,
        family=f"SSAM-{letter.upper()}",
        changes=changes,
        inputs=inputs,
        passes_per_step=2,
        flop_window=lambda opt: opt.defaults["update_every"],  # a mask refresh per period
        invalid=(*SSAM_INVALID, *SSAM_DENSITY_INVALID[pattern]), aliases=aliases,
        samples=_ssam_samples(mask, pattern, form, changes.get("normalise", "paper")),
    )


def _sam(ascent: str) -> OptimizerInfo:
    suffix, words, changes = _ascent(ascent)
    return OptimizerInfo("sam" + suffix, SAM, "SAM (Foret et al. 2021)" + words, changes=changes,
                         passes_per_step=2, invalid=TWO_PASS_INVALID, samples=TWO_PASS_SAMPLES, origin="extension",
                         family="SAM")


# The efficient-SAM field (issues 25, 38): a second pass on some steps only (periodic SAM, LookSAM, RST; AE-SAM
# where ||g||^2 is high; late-phase SAM in the last eighth of training), none (Momentum-SAM; RWP, whose perturbation
# is random), both on part of the batch (K-SAM), or a changed descent direction (GSAM); ASAM is SAM's adaptive
# setting at its paper's radius. SAF and MESA change the loss instead (a trajectory term), with SGD's one pass.
PEERS = [
    OptimizerInfo("asam", SAM, "ASAM (Kwon et al. 2021): SAM in the weight-scaled ball T_w = |w| + 0.01",
                  changes={"adaptive": True, "rho": 0.5, "eta": 0.01}, passes_per_step=2,
                  invalid=(*TWO_PASS_INVALID, {"eta": -0.01}),
                  samples=({"rho": 1.0, "nesterov": True}, {"ascent_fraction": 0.5}), origin="published",
                  family="field"),
    OptimizerInfo("periodic-sam", SAM, "periodic SAM (Composer's SAM(interval=5)): SAM every 5th step, SGD's between",
                  changes={"sam_every": 5}, passes_per_step=1, invalid=PERIODIC_INVALID, samples=PERIODIC_SAMPLES,
                  flop_window=lambda opt: opt.defaults["sam_every"], origin="published", family="field"),
    OptimizerInfo("looksam", LookSAM, "LookSAM (Liu et al. 2022): SAM every 5th step; the steps between reuse "
                  "its gradient's part orthogonal to g", passes_per_step=1, invalid=LOOKSAM_INVALID,
                  samples=LOOKSAM_SAMPLES, flop_window=lambda opt: opt.defaults["sam_every"], origin="published",
                  family="field"),
    OptimizerInfo("rst", RST, "RST (Zhao et al. 2022): a SAM step with probability 0.5, SGD's otherwise",
                  inputs={"seed"}, passes_per_step=1, invalid=RST_INVALID, samples=RST_SAMPLES,
                  # which steps are SAM's is drawn: each kind priced, weighted by p before a run (no longer by
                  # seed 0's first 16 draws) and by the run's own draws in its record
                  step_mix=StepMix(lambda opt, t: opt.expected_sam_share() * t, "drawn"),
                  origin="published", family="field"),
    OptimizerInfo("gsam", GSAM, "GSAM (Zhuang et al. 2022): SAM's gradient minus alpha times g's part orthogonal "
                  "to it; rho follows the learning rate", passes_per_step=2, invalid=GSAM_INVALID,
                  samples=GSAM_SAMPLES, origin="published", family="field"),
    # this suite's combination (issue 25): the two savings are independent, so measure them together: the
    # two-fifths ascent on every second step costs about 1 + 0.4 / 2 = 1.2x SGD's FLOPs, the goal's cost
    OptimizerInfo("sam-two-fifths-ascent-every-2", SAM, "SAM every 2nd step, its ascent gradient from two fifths "
                  "of the batch; SGD's steps between", changes={"ascent_fraction": 0.4, "sam_every": 2},
                  passes_per_step=1, invalid=PERIODIC_INVALID, samples=({"sam_every": 3},),
                  flop_window=lambda opt: opt.defaults["sam_every"], origin="extension", family="field"),
    OptimizerInfo("msam", MSAM, "Momentum-SAM (Becker et al. 2024): the gradient at w - rho*v/||v||, v the "
                  "momentum: one pass", passes_per_step=1, invalid=MSAM_INVALID, samples=MSAM_SAMPLES,
                  origin="published", family="field"),
    # Both need the run's length (total_steps, the plan's: the LR schedule's T). Which steps are SAM's moves over
    # the run, so no window of steps from its start prices a whole run: each kind of step is priced on its own
    # and weighted by the share of SAM steps (StepMix; docs/harness.md, "Steps of two kinds").
    OptimizerInfo("ae-sam", AESAM, "AE-SAM (Jiang et al. 2023): SAM where ||g||^2 >= its running mean + c_t "
                  "running sds, c_t from 1 down to -1; SGD's step elsewhere", inputs={"total_steps"},
                  passes_per_step=1, invalid=AESAM_INVALID, samples=AESAM_SAMPLES,
                  # which steps are SAM's depends on the gradients: before a run only a declared share is known
                  step_mix=StepMix(lambda opt, t: opt.expected_sam_share() * t, "declared"),
                  origin="published", family="field"),
    OptimizerInfo("late-sam", LateSAM, "late-phase SAM (Zhou et al. 2025): SGD's steps, then SAM's for the last "
                  "eighth of the run's steps", inputs={"total_steps"}, passes_per_step=1, invalid=LATE_SAM_INVALID,
                  samples=LATE_SAM_SAMPLES, origin="published", family="field",
                  # the steps from ceil(switch_at * T) on are SAM's: the share is exact once T is known
                  step_mix=StepMix(lambda opt, t: opt.sam_steps_in(t), "schedule")),
    # No second pass at all: the one gradient at w plus filter-normalised Gaussian noise, its scale rising over the
    # run (total_steps) and drawn from the run's seed
    OptimizerInfo("rwp", RWP, "random weight perturbation, adaptive (ARWP: Li et al., TMLR 2024, 'Revisiting Random "
                  "Weight Perturbation for Efficiently Improving Generalization'): the gradient at w plus "
                  "filter-normalised Gaussian noise shrunk by a running second moment of the gradient; one pass",
                  inputs={"total_steps", "seed"}, passes_per_step=1, invalid=RWP_INVALID, samples=RWP_SAMPLES,
                  origin="published", family="field"),
    # Loss-shaping methods (issue 38): SGD's one pass on the loss plus a trajectory term, which the closure
    # evaluates through the optimizer's ``objective`` with each example's index (baselines/core/closure.py)
    OptimizerInfo("saf", SAF, "SAF (Du et al. 2022): SGD on the loss + lam * KL to each example's outputs 3 epochs "
                  "earlier (a memory of N x 4 x classes logits): one pass", inputs={"train_size", "steps_per_epoch"},
                  passes_per_step=1, invalid=SAF_INVALID, samples=SAF_SAMPLES, origin="published", family="field"),
    OptimizerInfo("mesa", MESA, "MESA (Du et al. 2022): SGD on the loss + lam * KL to an EMA of the weights' "
                  "outputs on the same batch: one pass and the teacher's forward", inputs={"model", "steps_per_epoch"},
                  passes_per_step=1, invalid=MESA_INVALID, samples=MESA_SAMPLES, origin="published", family="field"),
    # both passes on the examples of highest loss, ranked by a forward over the batch: 1/3 + 2 * k_fraction of SGD's
    # FLOPs, the same every step
    OptimizerInfo("k-sam", KSAM, "K-SAM (Ni et al. 2022): SAM's ascent and descent on the third of the batch with "
                  "the highest loss, ranked by a forward pass over the whole batch", passes_per_step=2,
                  invalid=KSAM_INVALID, samples=KSAM_SAMPLES, origin="published", family="field"),
]

OPTIMIZERS: list[OptimizerInfo] = [
    OptimizerInfo("sgd", torch.optim.SGD, "SGD with momentum (torch.optim.SGD): one forward/backward pass per step",
                  invalid=SGD_INVALID, samples=SGD_SAMPLES, origin="reference", family="SGD"),
    OptimizerInfo("sam", SAM, "SAM (Foret et al. 2021): SGD step with the gradient at w + rho*g/||g||",
                  passes_per_step=2, invalid=TWO_PASS_INVALID, samples=TWO_PASS_SAMPLES, origin="paper",
                  family="SAM"),
    OptimizerInfo("esam", ESAM, "ESAM (Du et al. 2022): SAM on random weights (SWP) and the sharpest samples (SDS)",
                  inputs={"seed"}, passes_per_step=2, invalid=ESAM_INVALID, samples=ESAM_SAMPLES, origin="paper",
                  family="ESAM",
                  # which tensors are drawn changes a step's cost: count FLOPs over enough steps to average it
                  flop_window=lambda opt: 16 if any(g["beta"] < 1 for g in opt.param_groups) else 1),
    _ssam("fisher", "unstructured", "explicit", aliases=("ssam-f",)),
    _ssam("fisher", "unstructured", "implicit"),
    _ssam("fisher", "structured", "explicit"),
    _ssam("fisher", "structured", "implicit"),
    _ssam("fisher", "nm", "explicit"),
    _ssam("fisher", "nm", "implicit"),
    _ssam("dynamic", "unstructured", "explicit", aliases=("ssam-d",)),
    _ssam("dynamic", "unstructured", "implicit"),
    _ssam("dynamic", "structured", "explicit"),
    _ssam("dynamic", "structured", "implicit"),
    _ssam("dynamic", "nm", "explicit"),
    _ssam("dynamic", "nm", "implicit"),
    # The combination the implicit form used to be here (a masked backward and a masked ε): kept where the
    # earlier cpu sweep found it strongest against SAM (docs/ssam.md, "Forms").
    _ssam("fisher", "structured", "implicit-masked"),
    _ssam("dynamic", "unstructured", "implicit-masked"),
    # Cheaper first passes (issue 12): SAM and the paper's two unstructured variants with the ascent gradient
    # from a quarter / two fifths of the batch, so a step costs about 1.25x / 1.4x SGD's FLOPs.
    *(info for word in ASCENT_FRACTIONS for info in (
        _sam(word),
        _ssam("fisher", "unstructured", "explicit", ascent=word),
        _ssam("dynamic", "unstructured", "explicit", ascent=word))),
    # A cost-aware structured mask: whole tensors near the output only, the norm over what is perturbed, so
    # the first backward computes no dW below them and stops at the lowest (SSAM.not_perturbed).
    _ssam("fisher", "structured-top", "explicit", changes={"normalise": "masked"},
          words="; norm over the perturbed weights, so the first backward stops below them"),
    # The cheaper sharpness-aware methods a user would weigh against Sparse SAM (issue 25), each as its paper
    # (and its code, where there is one) defines it; docs/peers.md gives the sources and what differs.
    *PEERS,
]

_plugins_loaded = False


def register(info: OptimizerInfo) -> OptimizerInfo:
    """Add an out-of-tree optimizer (from a module named in ``SUITE_OPTIMIZER_MODULES``)."""
    taken = {n for i in OPTIMIZERS for n in (i.name, *i.aliases)}
    clash = sorted({info.name, *info.aliases} & taken)
    if clash:
        raise ValueError(f"optimizer name {clash[0]!r} is registered twice")
    OPTIMIZERS.append(info)
    return info


class PluginError(ValueError):
    """A module named in ``SUITE_OPTIMIZER_MODULES`` that cannot be found; the message is one line."""


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get("SUITE_OPTIMIZER_MODULES", "").split(","))):
        load_plugin(module)


def load_plugin(module: str) -> None:
    """Import an out-of-tree optimizer module: a dotted import path, or the path of a ``.py`` file (which
    reaches any environment, tox's included, without touching ``PYTHONPATH``)."""
    where = "SUITE_OPTIMIZER_MODULES"
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"{where}: no file {module!r}")
        name = f"suite_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):  # the module itself (or its package) is not there
            raise PluginError(f"{where}: no module named {module!r} (an importable module, or the path of a "
                              f".py file such as ./my_optimizers.py)") from None
        raise PluginError(f"{where}: module {module!r} imports {exc.name!r}, which is not installed") from None


def names(include_aliases: bool = False) -> list[str]:
    """Registered names in table order (aliases after the names they stand for)."""
    _load_plugins()
    return [n for i in OPTIMIZERS for n in ((i.name, *i.aliases) if include_aliases else (i.name,))]


def get(name: str) -> OptimizerInfo:
    """The entry named ``name`` or one of its aliases (an alias is its target, in runs and tables)."""
    _load_plugins()
    for info in OPTIMIZERS:
        if name == info.name or name in info.aliases:
            return info
    known = names(include_aliases=True)
    raise KeyError(f"unknown optimizer {name!r};{did_you_mean(name, known)} known: {', '.join(known)}")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``" did you mean 'x'?"``, to stand before the list of valid names in the message about a misspelt ``word``:
    the names of ``known`` that the standard library's difflib finds close, those nearly as close as the
    closest (``cpu-nose``: ``cpu-noise``, not ``gpu-cost`` too); empty where none is close. Every unknown
    name the suite reports (optimizer, profile, profile key) says it so."""
    known = list(known)
    close = difflib.get_close_matches(word, known, n=3)
    if not close:
        return ""
    ratio = {k: difflib.SequenceMatcher(None, word, k).ratio() for k in close}
    close = [k for k in close if ratio[k] >= ratio[close[0]] - 0.1]
    return f" did you mean {' or '.join(map(repr, close))}?"
