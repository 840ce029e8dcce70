"""Sharpness of a trained model (issue 13): the measures every optimizer is compared by.

All of them look at the training loss of a fixed, seeded set of training examples (``batches``: a list of
``(x, y)`` already on the model's device and normalised), with the model in eval mode (BatchNorm uses its
running statistics, Dropout is off), so that the loss is one deterministic function of the weights:

- ``top_eigenvalue``: the Hessian's largest eigenvalue, by power iteration on Hessian-vector products;
- ``hessian_trace``: Hutchinson's estimator with Rademacher vectors;
- ``m_sharpness``: the largest loss increase a few normalised ascent steps find within the rho-ball,
  averaged over batches of m examples (Foret et al. 2021), and its adaptive form (Kwon et al. 2021),
  where the ball is scaled by each weight's magnitude;
- ``surface``: the loss along one or two filter-normalised random directions (Li et al. 2018).

Every function leaves the model as it found it: weights, buffers, requires_grad flags, gradients and
train/eval mode (``preserved``). The curvature measures are over the parameters that require grad.

Our own code rather than PyHessian's: it is unmaintained, pins no torch version, runs BatchNorm in
whatever mode it is handed and stops on a different rule. The tests compare against a dense Hessian.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from suite import build, measure, metrics, registry, store
from suite.config import ConfigError, SharpnessSettings, TrainConfig, available_profiles, load_profile
from suite.data import DataError, load_dataset

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (output, target) -> mean loss

ITERATIONS = SharpnessSettings.iterations  # the common defaults (PyHessian's, among others)
TOLERANCE = SharpnessSettings.tolerance


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a measurement on ``model`` and give it back exactly as it was: the state (weights and buffers,
    restored by copy), the mode of every module, requires_grad and .grad of every parameter."""
    state = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode
        for p, flag, g in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = g


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _weights(batches: Sequence[Batch]) -> list[float]:
    total = sum(len(y) for _, y in batches)
    return [len(y) / total for _, y in batches]


def loss(model: nn.Module, batches: Sequence[Batch], criterion: Criterion = F.cross_entropy) -> float:
    """The mean loss (cross-entropy unless told) over every example of ``batches``."""
    with torch.no_grad():
        return sum(w * criterion(model(x), y).item() for w, (x, y) in zip(_weights(batches), batches))


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _normalised(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(float(_dot(v, v)))
    return [x / norm for x in v]


def hvp(model: nn.Module, params: list[nn.Parameter], batches: Sequence[Batch], v: Sequence[torch.Tensor],
        criterion: Criterion = F.cross_entropy) -> list[torch.Tensor]:
    """H v, H the Hessian of the mean loss over ``batches`` in ``params`` (double backward, batch by batch)."""
    out = [torch.zeros_like(p) for p in params]
    for w, (x, y) in zip(_weights(batches), batches):
        grads = torch.autograd.grad(criterion(model(x), y), params, create_graph=True)
        hv = torch.autograd.grad(_dot(grads, v), params)
        for o, h in zip(out, hv):
            o.add_(h, alpha=w)
    return out


@dataclass(frozen=True)
class Estimate:
    """A measure's value, the iterations it took, and whether it met its tolerance before the limit."""

    value: float
    iterations: int
    converged: bool


def top_eigenvalue(model: nn.Module, batches: Sequence[Batch], generator: torch.Generator,
                   iterations: int = ITERATIONS, tolerance: float = TOLERANCE,
                   criterion: Criterion = F.cross_entropy) -> Estimate:
    """The Hessian's eigenvalue of largest magnitude (for a trained network, its largest), by power
    iteration from a seeded Gaussian start; stops when the Rayleigh quotient changes by less than
    ``tolerance`` relative to its size."""
    with preserved(model):
        model.eval()
        params = _params(model)
        v = _normalised([torch.randn(p.shape, generator=generator).to(p) for p in params])
        value = None
        for i in range(1, iterations + 1):
            hv = hvp(model, params, batches, v, criterion)
            new = float(_dot(hv, v))
            if value is not None and abs(new - value) <= tolerance * (abs(value) + 1e-12):
                return Estimate(new, i, True)
            value = new
            v = _normalised([h.detach() for h in hv])
        return Estimate(value, iterations, False)


def hessian_trace(model: nn.Module, batches: Sequence[Batch], generator: torch.Generator,
                  iterations: int = ITERATIONS, tolerance: float = TOLERANCE,
                  criterion: Criterion = F.cross_entropy) -> Estimate:
    """Hutchinson's estimate of tr(H): the mean of v'Hv over Rademacher vectors v (seeded); stops when
    one more sample moves the running mean by less than ``tolerance`` relative to it."""
    with preserved(model):
        model.eval()
        params = _params(model)
        samples: list[float] = []
        mean = None
        for i in range(1, iterations + 1):
            v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
            samples.append(float(_dot(hvp(model, params, batches, v, criterion), v)))
            new = sum(samples) / len(samples)
            if mean is not None and abs(new - mean) <= tolerance * (abs(mean) + 1e-12):
                return Estimate(new, i, True)
            mean = new
        return Estimate(mean, iterations, False)


def m_sharpness(model: nn.Module, batches: Sequence[Batch], rho: float, steps: int = 5,
                adaptive: bool = False, criterion: Criterion = F.cross_entropy) -> float:
    """The mean over ``batches`` (each of m examples) of max_k L(w + e_k) - L(w), where e_1..e_steps
    climb the loss by normalised gradient steps of rho/steps each, projected back into the ball
    ||e|| <= rho; with ``adaptive``, the ball and the steps are scaled by |w| elementwise (ASAM's
    ||e / |w| || <= rho)."""
    if rho < 0 or steps < 1:
        raise ValueError(f"m_sharpness needs rho >= 0 and steps >= 1, got rho={rho}, steps={steps}")
    with preserved(model):
        model.eval()
        params = _params(model)
        origin = [p.detach().clone() for p in params]
        scale = [o.abs() if adaptive else torch.ones_like(o) for o in origin]
        rises = []
        for x, y in batches:
            with torch.no_grad():
                base = criterion(model(x), y).item()
            e = [torch.zeros_like(o) for o in origin]
            best = 0.0
            for _ in range(steps):
                grads = torch.autograd.grad(criterion(model(x), y), params)
                # the steepest step in the scaled norm: T g / ||T g||, then e = T (that), T = diag(scale)
                tg = [s * g for s, g in zip(scale, grads)]
                norm = math.sqrt(float(_dot(tg, tg))) + 1e-12
                e = [ei + (rho / steps) * s * t / norm for ei, s, t in zip(e, scale, tg)]
                scaled = [ei / s.clamp_min(1e-12) for ei, s in zip(e, scale)] if adaptive else e
                size = math.sqrt(float(_dot(scaled, scaled)))
                if size > rho:
                    e = [ei * (rho / size) for ei in e]
                with torch.no_grad():
                    for p, o, ei in zip(params, origin, e):
                        p.copy_(o + ei)
                    best = max(best, criterion(model(x), y).item() - base)
            with torch.no_grad():
                for p, o in zip(params, origin):
                    p.copy_(o)
            rises.append(best)
        return sum(rises) / len(rises)


def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction over the parameters that require grad, each filter (a weight's slice along
    its first dimension) rescaled to the norm of the same filter of the weights (Li et al. 2018); 1-D
    parameters (biases, BatchNorm) get zero, as in that paper, so the plot moves the filters only."""
    out = []
    for p in _params(model):
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator).to(p)
        w = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        n = d.reshape(p.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        out.append(d * (w / n).reshape(-1, *[1] * (p.dim() - 1)))
    return out


def surface(model: nn.Module, batches: Sequence[Batch], directions: Sequence[Sequence[torch.Tensor]],
            coordinates: Sequence[float], criterion: Criterion = F.cross_entropy) -> torch.Tensor:
    """The loss at w + a d1 (one direction: a vector over ``coordinates``) or w + a d1 + b d2 (two: a
    matrix, rows a, columns b)."""
    if len(directions) not in (1, 2):
        raise ValueError(f"a loss surface has one or two directions, got {len(directions)}")
    grid = [(a,) for a in coordinates] if len(directions) == 1 else \
        [(a, b) for a in coordinates for b in coordinates]
    with preserved(model), torch.no_grad():
        model.eval()
        params = _params(model)
        origin = [p.detach().clone() for p in params]
        values = []
        for point in grid:
            for i, p in enumerate(params):
                p.copy_(origin[i] + sum(c * d[i] for c, d in zip(point, directions)))
            values.append(loss(model, batches, criterion))
    out = torch.tensor(values, dtype=torch.float64)
    return out if len(directions) == 1 else out.reshape(len(coordinates), len(coordinates))


# ----- a run's final model, measured: what ``python -m suite sharpness`` does for each record ----------------
Settings = SharpnessSettings  # defined with the other configuration (a profile's [sharpness] table sets it)

# the record's flat metrics this module adds, declared (labels, formats) with the others in suite.metrics
METRIC_KEYS = metrics.keys("sharpness")  # λmax, trace, m-sharpness, adaptive m-sharpness: measure_model's order


def _split(x: torch.Tensor, y: torch.Tensor, size: int) -> list[Batch]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def measure_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float, settings: Settings,
                  run_seed: int) -> tuple[dict[str, float], dict[str, object]]:
    """Every measure of one model on the examples ``(x, y)`` (normalised, on the model's device):
    (flat metrics for the record's ``metrics``, details: iterations, convergence, surfaces)."""
    import time

    t0 = time.perf_counter()
    batches, m_batches = _split(x, y, settings.batch_size), _split(x, y, settings.m)
    gen = torch.Generator().manual_seed(1_000_003 * settings.seed + run_seed)
    top = top_eigenvalue(model, batches, gen, settings.iterations, settings.tolerance)
    trace = hessian_trace(model, batches, gen, settings.iterations, settings.tolerance)
    sharp = m_sharpness(model, m_batches, rho, settings.ascent_steps)
    sharp_adaptive = m_sharpness(model, m_batches, rho, settings.ascent_steps, adaptive=True)
    # directions from their own stream, so that they do not depend on how long the iterations ran
    dirs_gen = torch.Generator().manual_seed(2_000_003 * settings.seed + run_seed)
    directions = [filter_normalised_direction(model, dirs_gen) for _ in range(2)]
    line = torch.linspace(-settings.span, settings.span, settings.surface_points).tolist()
    plane = torch.linspace(-settings.span, settings.span, settings.surface_2d_points).tolist()
    surface_1d = surface(model, batches, directions[:1], line)
    surface_2d = surface(model, batches, directions, plane)
    metrics = dict(zip(METRIC_KEYS, (top.value, trace.value, sharp, sharp_adaptive)))
    details = {
        "settings": dataclasses.asdict(settings), "rho": rho,
        "lambda_max_iterations": top.iterations, "lambda_max_converged": top.converged,
        "trace_iterations": trace.iterations, "trace_converged": trace.converged,
        "surface_1d": {"coordinates": line, "loss": surface_1d.tolist()},
        "surface_2d": {"coordinates": plane, "loss": surface_2d.tolist()},
        "seconds": time.perf_counter() - t0,
    }
    return metrics, details


def train_config(record: dict) -> TrainConfig:
    """The training settings a record ran with (a setting it predates takes its default)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in record["config"]["train"].items() if k in names})


def fixed_examples(dataset, cfg: TrainConfig, settings: Settings,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``settings.examples`` training examples of the run's training subset (with its labels, noisy where
    the profile made them so: the loss the run minimised), drawn with ``settings.seed``, normalised, not
    augmented: the same for every run of a profile."""
    train, _ = build.subsets(dataset, cfg)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))[: settings.examples]
    x = build.make_augment(cfg, dataset).normalise(train.images[idx])
    return build.to_device(x, device, cfg), train.labels[idx].to(device)


def reference_rho(records: list[dict]) -> dict[str, float]:
    """Per profile, the rho every run of it is measured with: its SAM runs' rho (so every optimizer of
    a table is measured on the same ball), else SAM's registered default."""
    default = float(registry.get("sam").defaults()["rho"])
    out: dict[str, float] = {}
    for r in records:
        if r["optimizer"]["name"] == "sam":
            out[r["config"]["profile"]] = float(r["optimizer"]["hparams"].get("rho", default))
    return {r["config"]["profile"]: out.get(r["config"]["profile"], default) for r in records}


def measure_record(record: dict, state_dict: dict, dataset, settings: Settings,
                   rho: float) -> tuple[dict[str, float], dict[str, object]]:
    """Rebuild a run's model from its record and final weights, and measure it."""
    cfg = train_config(record)
    device = build.resolve_device(cfg.device)
    model = build.make_model(cfg, dataset, device)
    model.load_state_dict(state_dict)
    x, y = fixed_examples(dataset, cfg, settings, device)
    return measure_model(model, x, y, rho, settings, int(record["config"]["seed"]))


# ----- measuring a results directory's runs (``python -m suite sharpness``, a sweep's ``at_end``) -------------
def settings_for(profile, examples: int | None = None, iterations: int | None = None) -> tuple[Settings, float | None]:
    """How a profile's runs are measured: its ``[sharpness]`` settings with the command line's overrides,
    and its rho (``Profile.sam_rho``; None for a profile no longer shipped: its records then say it)."""
    settings = profile.sharpness if profile else SharpnessSettings()
    changes = {k: v for k, v in (("examples", examples), ("iterations", iterations)) if v is not None}
    return dataclasses.replace(settings, **changes), (profile.sam_rho() if profile else None)


def measure_into(record: dict, weights, dataset, settings: Settings, rho: float) -> dict:
    """Measure one finished run's final model into its record (metrics and the ``sharpness`` details,
    with the commit that measured); the record, for the caller to write."""
    state = store.load_weights(weights, record["run_id"])
    metrics, details = measure_record(record, state, dataset, settings, rho)
    record["metrics"].update(metrics)
    record["sharpness"] = {**details, "git_commit": measure.git_commit()}
    return record


def summary_line(record: dict) -> str:
    m, d = record["metrics"], record["sharpness"]
    return (f"{record['optimizer']['name']} seed {record['config']['seed']}: lambda_max "
            f"{m['sharpness_lambda_max']:.4g}, trace {m['sharpness_trace']:.4g}, m-sharpness "
            f"{m['sharpness_m']:.4g} (adaptive {m['sharpness_m_adaptive']:.4g}) at rho {d['rho']:g}; "
            f"{d['seconds']:.1f} s")


@dataclass
class Request:
    """What ``measure_results`` measures: which records, and the command line's overrides."""

    profiles: list[str] | None = None  # names (globs) or .toml paths; None: every profile
    optimizers: list[str] | None = None  # globs; None: every optimizer
    force: bool = False  # measure again runs that already have the measures
    examples: int | None = None
    iterations: int | None = None
    rho: float | None = None
    data_dir: Path | None = None  # else the profile's data_dir, else $SUITE_DATA_DIR, else ./data
    download: bool | None = None
    progress: bool = True


def measure_results(results_dir, request: Request) -> int:
    """Measure what is missing in ``results_dir``, record by record (each written as soon as it is
    measured); every value is checked before anything is measured. Returns how many were measured."""
    if request.rho is not None and not (math.isfinite(request.rho) and request.rho >= 0):
        raise ConfigError(f"--rho must be a finite number >= 0, got {request.rho}")
    names, given = _named_profiles(request.profiles)
    found = [pr for profile in names for pr in store.iter_records(results_dir, profile)]
    if not found:
        raise ConfigError(f"no records in {str(results_dir)!r}" + (f" of profile {names[0]!r}"
                                                                  if request.profiles else ""))
    unreadable = [str(p) for p, r in found if r is None]
    if unreadable:
        raise ConfigError(f"unreadable record {unreadable[0]}: re-run it or remove it")
    setups = {name: _setup(given.get(name) or (load_profile(name) if name in available_profiles() else None), request)
              for name in dict.fromkeys(r["config"]["profile"] for _, r in found)}
    from_records = reference_rho([r for _, r in found])
    chosen = [(p, r) for p, r in found if not request.optimizers or any(
        fnmatch.fnmatchcase(r["optimizer"]["name"], g) for g in request.optimizers)]
    if not chosen:
        raise ConfigError(f"no records of optimizer {request.optimizers[0]!r} in {str(results_dir)!r}")
    todo = [(p, r) for p, r in chosen if request.force or METRIC_KEYS[0] not in r["metrics"]]
    weights = {p: store.weights_path(results_dir, r["config"]["profile"], p.stem) for p, r in todo}
    unfinished = [p for p, r in todo if r["metrics"].get("status") != "finished"]
    missing = [p for p, _ in todo if p not in unfinished and not weights[p].exists()]
    todo = [(p, r) for p, r in todo if p not in missing and p not in unfinished]
    print(f"sharpness: {len(chosen)} runs, {len(chosen) - len(todo) - len(missing) - len(unfinished)} already "
          f"measured, {len(todo)} to measure" + (f", {len(unfinished)} diverged (left out)" if unfinished else "")
          + (f", {len(missing)} without final weights (made before runs kept them: re-run them with "
             "`run --force`)" if missing else ""), file=sys.stderr)
    if missing and not todo:
        raise ConfigError(f"no final weights for {len(missing)} runs to measure (e.g. {missing[0].name}): re-run "
                          "them with `python -m suite run --force`")
    datasets: dict = {}
    bar = tqdm(todo, desc="sharpness", unit="run", disable=None if request.progress else True)
    for path, record in bar:
        cfg = train_config(record)
        settings, rho, data_dir = setups[record["config"]["profile"]]
        key = (cfg.dataset, cfg.image_size, cfg.streaming, data_dir)
        if key not in datasets:
            try:
                datasets[key] = load_dataset(cfg.dataset, data_dir, request.download,
                                             image_size=cfg.image_size or None, streaming=cfg.streaming)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
        rho = from_records[record["config"]["profile"]] if rho is None else rho
        store.write_record(path, measure_into(record, weights[path], datasets[key], settings, rho))
        bar.write(summary_line(record), file=sys.stderr)
    return len(todo)


def _setup(profile, request: Request) -> tuple[Settings, float | None, Path | None]:
    """How one profile's runs are measured: settings, rho and where its data is, the command line first."""
    settings, rho = settings_for(profile, request.examples, request.iterations)
    data_dir = request.data_dir or (Path(profile.data_dir).expanduser() if profile and profile.data_dir else None)
    return settings, request.rho if request.rho is not None else rho, data_dir


def _named_profiles(given: list[str] | None) -> tuple[list[str], dict]:
    """The profile names (globs) to look for, and the profiles named by their .toml file (measured with
    that file's [sharpness] settings)."""
    names, loaded = [], {}
    for name in given or ["*"]:
        if name.endswith(".toml"):
            profile = load_profile(name)
            loaded[profile.name] = profile
            name = profile.name
        names.append(name)
    return names, loaded
