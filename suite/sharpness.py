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
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (output, target) -> mean loss

ITERATIONS = 100  # the common defaults (PyHessian's, among others)
TOLERANCE = 1e-3


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
