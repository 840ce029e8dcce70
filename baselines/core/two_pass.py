"""The one step shared by SAM, ESAM and every SSAM variant.

    g = grad L(w)                      first_pass(closure)
    e = perturbation(g)                SAM: rho * g / ||g||; SSAM masks it; ESAM samples tensors
    w <- w + e
    g' = grad L(w + e)                 second_pass(closure)   (BatchNorm statistics frozen)
    w <- w                             restored from a copy, bit for bit
    w <- base_step(w, g')

A variant overrides a hook (``prepare``, ``grad_norm``, ``perturbation``, ``first_pass``,
``second_pass``), never ``step``. The base optimizer shares ``param_groups`` with the wrapper, so LR
schedulers and per-group hyper-parameters reach both. Hyper-parameters are checked per group
(``check_group``) when a group is added; those a step can only use with one value for every group
are named in ``shared_hparams``, and a group that differs is refused (``shared``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from .checks import check_bool, check_number
from .closure import call_closure

Closure = Callable[..., torch.Tensor]


class TwoPassOptimizer(torch.optim.Optimizer):
    """Skeleton with SAM's hooks as the defaults (Foret et al., 2021; ASAM with ``adaptive=True``)."""

    shared_hparams: tuple[str, ...] = ()  # one value for all groups: the step cannot honour it per group

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        adaptive: bool = False,
        extra_defaults: dict[str, Any] | None = None,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **(extra_defaults or {})))
        # The base optimizer adopts the wrapper's group dicts, so both read the same lr, rho, ...
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        # w before the perturbation, reused across steps; _perturbed lists what this step moved.
        self._anchors: dict[torch.Tensor, torch.Tensor] = {}
        self._perturbed: list[torch.Tensor] = []

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
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(f"{type(self).__name__}.step needs a closure that recomputes the loss")
        with torch.enable_grad():
            loss = self.first_pass(closure)
        self.prepare()
        self.perturb()
        with torch.enable_grad():
            self.second_pass(closure, loss)
        self.restore()
        self.base_optimizer.step()
        return loss

    @torch.no_grad()
    def perturb(self) -> None:
        norm = self.grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
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

    # ----- hooks --------------------------------------------------------------------------------
    def first_pass(self, closure: Closure) -> torch.Tensor:
        """Gradient at w; the only pass that updates BatchNorm running statistics."""
        return closure()

    def second_pass(self, closure: Closure, first_loss: torch.Tensor) -> torch.Tensor:
        """Gradient at w + e, which the base optimizer then applies at w."""
        return call_closure(closure, freeze_bn=True)

    def prepare(self) -> None:
        """Runs after the first pass, before the perturbation (e.g. refresh a mask)."""

    def grad_norm(self) -> torch.Tensor:
        """||g||, or ASAM's ||T_w g|| with T_w = |w|, over all parameters of all groups."""
        norms = [
            ((p.abs() * p.grad) if group["adaptive"] else p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not norms:
            return torch.tensor(0.0)
        device = norms[0].device
        return torch.stack([n.to(device) for n in norms]).norm(p=2)

    def perturbation(self, p: torch.Tensor, group: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
        """e for one parameter: ``scale * g`` (ASAM: ``scale * w^2 * g``); None leaves p unperturbed."""
        e = p.grad * scale.to(p.device)
        return e * p.square() if group["adaptive"] else e

    # ----- state: the base optimizer's (momentum buffers) travels with the wrapper's (masks) -----
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["base"] = self.base_optimizer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        base = state_dict.pop("base")
        super().load_state_dict(state_dict)
        self.base_optimizer.load_state_dict(base)
        self.param_groups = self.base_optimizer.param_groups  # re-share after torch rebuilt both
