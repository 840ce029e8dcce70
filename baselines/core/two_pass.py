"""The one step shared by SAM, ESAM and every SSAM variant.

    g = grad L(w)                      first_pass(closure)
    e = perturbation(g)                SAM: rho * g / ||g||; SSAM masks it; ESAM samples tensors
    w <- w + e
    g' = grad L(w + e)                 second_pass(closure)   (BatchNorm statistics frozen)
    w <- w                             restored from a copy, bit for bit
    w <- base_step(w, g')

A variant overrides a hook (``prepare``, ``grad_norm``, ``perturbation``, ``first_pass``,
``second_pass``, ``not_perturbed``, ``descent``), never ``step``.

Not every step needs the second pass. ``two_passes()`` decides per step (by default every ``sam_every``-th
step of the optimizer's own count, from step 0, is a sharpness-aware one: Composer's ``SAM(interval=k)``);
on the others ``one_pass(closure)`` takes the gradient at w (synchronised, BatchNorm statistics moving, the
whole batch), ``reuse()`` may change it (LookSAM adds its stored direction), and the base optimizer steps:

    g = grad L(w)                      one_pass(closure)      (Momentum-SAM: at w + e from its momentum)
    reuse()                            LookSAM: g + alpha * ||g|| / ||g_v|| * g_v
    w <- base_step(w, g)

A method that decides from the step's own gradient (AE-SAM: from ||g||^2) says so after the first pass:
``second_pass_needed()`` False ends the step there with the base step on g.

Two ways the first (ascent) pass can cost less, for every variant:

- ``ascent_fraction = f < 1``: g comes from the first ``ceil(f * B)`` examples of the batch (the batch
  is already in random order), the descent gradient from all ``B`` — one perturbation per step from a
  sub-batch, in the spirit of SAM's m-sharpness. The closure must take ``subset`` and expose its batch
  (``ModelClosure``); BatchNorm running statistics then move with the sub-batch's statistics.
- ``not_perturbed()``: tensors this step will certainly leave unperturbed and whose first-pass gradient
  nothing else reads get no weight-gradient in that pass (``requires_grad`` off while it runs), so
  autograd skips their ``dW`` and stops below the lowest tensor that still needs one. The update is the
  same, bit for bit: it only skips work whose result was thrown away.

Under ``DistributedDataParallel`` (a ``ModelClosure`` around the wrapped model) the first pass runs with
``sync=False``: no all-reduce, each replica's e from its own slice of the batch (per-replica
perturbations, as SAM defines m-sharpness); the second pass is all-reduced as any backward is.

The base optimizer shares ``param_groups`` with the wrapper, so LR
schedulers and per-group hyper-parameters reach both. Hyper-parameters are checked per group
(``check_group``) when a group is added; those a step can only use with one value for every group
are named in ``shared_hparams``, and a group that differs is refused (``shared``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from .checks import check_bool, check_int, check_number
from .closure import BACKWARD, BATCH, SCALER, SUBSET, SYNC, call_closure, has_features, several_processes

Closure = Callable[..., torch.Tensor]
DEFAULT_RHO = 0.05  # SAM's radius (Foret et al. 2021, CIFAR): written here once, SAM's signature takes it from here


class TwoPassOptimizer(torch.optim.Optimizer):
    """Skeleton with SAM's hooks as the defaults (Foret et al., 2021; ASAM with ``adaptive=True``)."""

    # one value for all groups: the step cannot honour it per group
    shared_hparams: tuple[str, ...] = ("ascent_fraction", "sam_every")

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = DEFAULT_RHO,
        adaptive: bool = False,
        extra_defaults: dict[str, Any] | None = None,
        ascent_fraction: float = 1.0,
        sam_every: int = 1,
        **base_kwargs: Any,
    ) -> None:
        defaults = dict(rho=rho, adaptive=adaptive, ascent_fraction=ascent_fraction, sam_every=sam_every,
                        **(extra_defaults or {}))
        super().__init__(params, defaults)
        # The base optimizer adopts the wrapper's group dicts, so both read the same lr, rho, ...
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        # w before the perturbation, reused across steps; _perturbed lists what this step moved.
        self._anchors: dict[torch.Tensor, torch.Tensor] = {}
        self._perturbed: list[torch.Tensor] = []
        self.steps_taken = 0  # every step, with one pass or two: what the periodic schedules count
        # steps that ran the second pass: with ``steps_taken`` the share of SAM steps a run realised, which prices
        # a method whose steps are of both kinds (suite.probe: each kind's cost, weighted by this share)
        self.second_passes_taken: int | None = 0
        # None: each step's kind is the method's own decision; True or False: every step is forced to two passes
        # or one (``step_kind``), so that a probe can price each kind of step on its own
        self.forced_kind: bool | None = None

    # ----- hyper-parameters: checked per group -------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)  # fills in the defaults
        group = self.param_groups[-1]
        for key in self.shared_hparams:
            if group[key] != self.param_groups[0][key]:
                raise ValueError(self._not_shared(key, group[key]))
        self.check_group(group)

    def check_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the value for a bad hyper-parameter of ``group``."""
        check_number("rho", group["rho"], low=0)
        check_bool("adaptive", group["adaptive"])
        check_number("ascent_fraction", group["ascent_fraction"], 0, 1, low_open=True)
        check_int("sam_every", group["sam_every"])

    def shared(self, key: str) -> Any:
        """The value of a ``shared_hparams`` entry; refused if a group was given another one since."""
        value = self.param_groups[0][key]
        for group in self.param_groups[1:]:
            if group[key] != value:
                raise ValueError(self._not_shared(key, group[key]))
        return value

    def _not_shared(self, key: str, value: Any) -> str:
        return (f"{type(self).__name__} takes one {key} for all parameter groups (got {value!r} beside "
                f"{self.param_groups[0][key]!r}): it is not applied per group")

    # ----- the step ---------------------------------------------------------------------------
    # keep g (``keep_first_gradient``) after ``prepare``, for a ``descent`` that reads both passes' gradients
    keeps_first_gradient = False

    # reads the closure's GradScaler itself (the harness then calls scaler.update() after the step)
    unscales_itself = True

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        """One step. With a closure that scales its loss (fp16: ``closure.scaler``), each pass's gradients
        are unscaled before they are read — ‖g‖ and e from the true g — and an inf or NaN in either pass
        skips the whole step: nothing perturbed or restored, no update, gradients cleared; the caller's
        ``scaler.update()`` then lowers the scale. Each pass is unscaled through another optimizer object
        (this one, then the base), so the scaler's one-unscale-per-optimizer rule holds for two passes."""
        if closure is None:
            raise RuntimeError(f"{type(self).__name__}.step needs a closure that recomputes the loss")
        scaler = closure.scaler if has_features(closure, SCALER) else None
        two = self.two_passes() if self.forced_kind is None else self.forced_kind
        self.steps_taken += 1
        if not two:
            return self._one_pass_step(closure, scaler)
        with torch.enable_grad():
            loss = self.first_pass(closure)
        if scaler is not None and not self._unscaled(scaler, self):
            return loss
        self.prepare()
        if self.forced_kind is None and not self.second_pass_needed():  # decided on the first pass's gradient
            self.base_optimizer.step()                                   # (AE-SAM)
            return loss
        if self.keeps_first_gradient:
            self.keep_first_gradient()
        if self.second_passes_taken is not None:  # its work is done even where an overflow then skips the update
            self.second_passes_taken += 1
        self.perturb()
        with torch.enable_grad():
            self.second_pass(closure, loss)
        self.restore()
        if scaler is not None and not self._unscaled(scaler, self.base_optimizer):
            return loss
        self.descent()
        self.base_optimizer.step()
        return loss

    def _one_pass_step(self, closure: Closure, scaler: Any) -> torch.Tensor:
        """A step without the second pass: the gradient of ``one_pass``, what ``reuse`` makes of it, the base step
        (under fp16 an overflow skips it, as in a two-pass step)."""
        with torch.enable_grad():
            loss = self.one_pass(closure)
        if scaler is not None and not self._unscaled(scaler, self.base_optimizer):
            return loss
        self.reuse()
        self.base_optimizer.step()
        return loss

    def _unscaled(self, scaler: Any, owner: torch.optim.Optimizer) -> bool:
        """Unscale the gradients in place (recorded by the scaler under ``owner``); False, with the
        gradients cleared, where any is not finite."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads and several_processes():
            _agree_on_overflow(grads)
        scaler.unscale_(owner)
        if not grads:
            return True
        # one device sync per pass, not one per tensor (this runs on every fp16 step)
        device = grads[0].device
        if bool(torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all()):
            return True
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        return False

    @torch.no_grad()
    def perturb(self) -> None:
        norm = self.grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if self.direction(p) is None:
                    continue
                e = self.perturbation(p, group, scale)
                if e is None:
                    continue
                anchor = self._anchors.get(p)
                if anchor is None:
                    anchor = self._anchors[p] = torch.empty_like(p)
                anchor.copy_(p)
                p.add_(e)
                self._perturbed.append(p)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights the perturbation started from."""
        for p in self._perturbed:
            p.copy_(self._anchors[p])
        self._perturbed.clear()

    @contextmanager
    def without_grad(self, params: list[torch.Tensor]) -> Iterator[None]:
        """While inside, ``params`` need no gradient (and hold none afterwards): autograd skips their dW."""
        params = [p for p in params if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def ascent_call(self, closure: Closure, **options: Any) -> torch.Tensor:
        """Call the closure for the first pass: on the whole batch or the ascent sub-batch, without the
        weight-gradients of ``not_perturbed()`` (asked here, after whatever the variant decided first), and
        without an all-reduce across replicas (``sync=False``: the perturbation is each replica's own)."""
        fraction = self.shared("ascent_fraction")
        if fraction < 1:
            if not has_features(closure, SUBSET, BATCH):
                raise ValueError(f"ascent_fraction={fraction} runs the first pass on part of the batch: the "
                                 "closure must take subset and expose its batch (use baselines.ModelClosure)")
            batch = int(closure.targets.shape[0])
            # ceil, at least 1 (a float product like 0.7 * 10 = 7.000000000000001 is not 8)
            k = max(1, min(batch, math.ceil(round(fraction * batch, 9))))
            if k < batch:
                options[SUBSET] = torch.arange(k, device=closure.targets.device)
        options[SYNC] = False  # under DistributedDataParallel: each replica perturbs with its own gradient
        frozen = self.not_perturbed()
        if frozen and {id(p) for p in frozen} >= {id(p) for g in self.param_groups for p in g["params"]
                                                 if p.requires_grad}:
            # nothing will be perturbed (e = 0): a forward gives the loss; a plain closure runs backward,
            # which needs something to differentiate
            if has_features(closure, BACKWARD):
                options[BACKWARD] = False
            else:
                frozen = []
        with self.without_grad(frozen):
            return call_closure(closure, **options)

    @contextmanager
    def step_kind(self, two_passes: bool) -> Iterator[None]:
        """While inside, every step is of one kind: both passes (``True``, a SAM step, whatever ``two_passes()``
        and ``second_pass_needed()`` would say) or one (``False``). For pricing a method whose steps mix the two
        kinds (``suite.probe``), on a throwaway copy: the method's own schedule is not consulted, so a drawn one
        (RST) draws nothing and a data-dependent one (AE-SAM) still updates its statistics."""
        before, self.forced_kind = self.forced_kind, bool(two_passes)
        try:
            yield
        finally:
            self.forced_kind = before

    # ----- hooks --------------------------------------------------------------------------------
    def two_passes(self) -> bool:
        """Whether this step (``self.steps_taken``, from 0) runs both passes: every ``sam_every``-th does."""
        return self.steps_taken % self.shared("sam_every") == 0

    def second_pass_needed(self) -> bool:
        """On a two-pass step, after the first pass (its gradient unscaled) and ``prepare``: False ends the step
        with the base optimizer's step on that gradient. For a method that decides from the gradient itself
        (AE-SAM); its ``first_pass`` must then take the whole batch, synchronised, as ``one_pass`` does."""
        return True

    def one_pass(self, closure: Closure) -> torch.Tensor:
        """The gradient at w on a step without the second pass: the whole batch, synchronised across replicas,
        BatchNorm statistics moving, as SGD's pass."""
        return call_closure(closure)

    def at_perturbed_weights(self, closure: Closure) -> torch.Tensor:
        """The closure at w + e (``perturb``, the pass, ``restore`` even if it raises): a ``one_pass`` for a method
        whose one gradient is taken at perturbed weights (Momentum-SAM along its momentum, RWP with noise)."""
        self.perturb()
        try:
            return call_closure(closure)
        finally:
            self.restore()

    def reuse(self) -> None:
        """On a one-pass step, after its gradient and before the base step (LookSAM adds a stored direction)."""

    def descent(self) -> None:
        """On a two-pass step, after the weights are restored and before the base step, with ``p.grad`` the
        gradient at w + e (GSAM subtracts part of the first-pass gradient)."""

    # ----- for a descent() that combines both passes' gradients (GSAM, LookSAM) ---------------------------------
    def all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def keep_first_gradient(self) -> None:
        """Copy each parameter's first-pass gradient g into ``state[p]["g"]`` (from ``prepare``)."""
        for p in self.all_params():
            if p.grad is not None:
                self.state[p]["g"] = p.grad.detach().clone()

    def both_gradients(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """In ``descent``: the parameters with both gradients (``p.grad`` the second pass's g_s), their kept g
        (taken out of the state), and over all of them <g, g_s>, ||g||^2 and ||g_s||^2 (zeros where none)."""
        params = [p for p in self.all_params() if p.grad is not None and "g" in self.state[p]]
        firsts = [self.state[p].pop("g") for p in params]
        if not params:
            return [], [], *(torch.zeros(()),) * 3
        sums = [torch.stack(t).sum() for t in ([(p.grad * g).sum() for p, g in zip(params, firsts)],
                                               [g.square().sum() for g in firsts],
                                               [p.grad.square().sum() for p in params])]
        return params, firsts, *sums

    def direction(self, p: torch.Tensor) -> torch.Tensor | None:
        """What the perturbation follows for ``p``: its gradient (Momentum-SAM: its momentum); None: not perturbed."""
        return p.grad

    def first_pass(self, closure: Closure) -> torch.Tensor:
        """Gradient at w; the only pass that updates BatchNorm running statistics."""
        return self.ascent_call(closure)

    def not_perturbed(self) -> list[torch.Tensor]:
        """Tensors whose first-pass gradient this step neither perturbs with nor reads otherwise."""
        return []

    def second_pass(self, closure: Closure, first_loss: torch.Tensor) -> torch.Tensor:
        """Gradient at w + e, which the base optimizer then applies at w."""
        return call_closure(closure, freeze_bn=True)

    def prepare(self) -> None:
        """Runs after the first pass, before the perturbation (e.g. refresh a mask)."""

    def grad_norm(self) -> torch.Tensor:
        """||g||, or ASAM's ||T_w g|| with T_w = |w|, over all parameters of all groups."""
        norms = [
            ((self.weight_scale(p, group) * d) if group["adaptive"] else d).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if (d := self.direction(p)) is not None
        ]
        if not norms:
            return torch.tensor(0.0)
        device = norms[0].device
        return torch.stack([n.to(device) for n in norms]).norm(p=2)

    def perturbation(self, p: torch.Tensor, group: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
        """e for one parameter: ``scale * g`` (ASAM: ``scale * w^2 * g``); None leaves p unperturbed."""
        e = self.direction(p) * scale.to(p.device)
        return e * self.weight_scale(p, group).square() if group["adaptive"] else e

    def weight_scale(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """ASAM's T_w for ``p`` in a group with ``adaptive=True``: |w| (``SAM``'s ``eta`` adds a constant)."""
        return p.abs()

    # ----- state: the base optimizer's (momentum buffers) travels with the wrapper's (masks) -----
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["base"] = self.base_optimizer.state_dict()
        state["two_pass"] = {"steps": self.steps_taken, "second_passes": self.second_passes_taken}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        base = state_dict.pop("base")
        counts = state_dict.pop("two_pass", {})
        self.steps_taken = counts.get("steps", 0)  # absent from checkpoints before it
        # absent from checkpoints before it: unknown (None) for the rest of the run, not counted from the resume on
        self.second_passes_taken = counts.get("second_passes", 0 if "steps" not in counts else None)
        super().load_state_dict(state_dict)
        self.base_optimizer.load_state_dict(base)
        self.param_groups = self.base_optimizer.param_groups  # re-share after torch rebuilt both


def _agree_on_overflow(grads: list[torch.Tensor]) -> None:
    """Under several processes, an overflow in any replica's pass is every replica's: the ascent pass is not
    all-reduced, and a replica that skipped its step alone would leave the others waiting in the descent
    pass's all-reduce (and its scale would drift from theirs). A replica whose own gradients are finite
    marks one of them inf, so that its scaler records the overflow and backs off as the others' do."""
    device = grads[0].device
    finite = torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all().to(torch.int32)
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite):
        grads[0].fill_(float("inf"))


def average_over_replicas(tensors: list[torch.Tensor]) -> None:
    """Under several processes, each tensor replaced in place by its mean over the replicas (one all-reduce of
    them all): for what a variant computes from the first pass's gradient, which is each replica's own (the
    ascent pass is not all-reduced), and which must be the same on every replica lest their weights part."""
    if not tensors or not several_processes():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))
