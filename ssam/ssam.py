"""Sparse SAM (Mi et al. 2023, "Systematic Investigation of Sparse Perturbed Sharpness-Aware
Minimization Optimizer", https://arxiv.org/abs/2306.17504).

    e = rho * (m ⊙ g) / ||g||                (normalise="masked": rho * (m ⊙ g) / ||m ⊙ g||)
    w <- base_step(w, grad L(w + e))          the dense gradient: masked-out weights still train

The binary mask ``m`` keeps a fraction ``1 - sparsity`` of the weights. SSAM-F (``mask="fisher"``)
keeps the largest empirical-Fisher scores over ``fisher_samples`` examples, refreshed every
``update_every`` steps (``fisher_bn``: how BatchNorm treats one example, see ``ssam.fisher``).
SSAM-D (``mask="dynamic"``) starts from a random mask and every ``update_every`` steps drops the
active weights with the smallest |g| at rate
``d_t = drop_rate * (1 + cos(pi t / total_steps)) / 2`` and grows as many inactive ones.
Patterns (``ssam.masks``): unstructured, structured (whole tensors), structured-top (whole tensors
near the output only: this suite's), N:M. Forms:

- explicit: the mask on the perturbation, as above;
- implicit (the paper's code): the first backward propagates through masked weights,
  ``dX = dY (W ⊙ M)^T`` (each layer's own ``dW`` stays exact), and the perturbation is SAM's, dense:
  ``e = rho * g_M / ||g_M||`` with ``g_M`` that gradient. Needs ``model``; with every mask 1 it is SAM;
- implicit-masked (this suite's extension): both at once, ``e = rho * (m ⊙ g_M) / ||g_M||``.

With ``normalise="masked"`` and a masked e, tensors whose mask is all zero (a structured mask leaves
whole tensors out) get no weight-gradient in the first pass (``not_perturbed``): the same update, less
backward work. ``ascent_fraction`` (the skeleton's) takes g from part of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from baselines.core import ModelClosure, TwoPassOptimizer, check_choice, check_int, check_number, several_processes
from ssam import masks as mk
from ssam.fisher import FISHER, FISHER_BN
from ssam.implicit import MaskedBackward

MASKS, FORMS, GROWTH, NORMALISE = ("fisher", "dynamic"), ("explicit", "implicit", "implicit-masked"), \
    ("random", "gradient"), ("paper", "masked")
FISHER_DATA = ("batch", "train")
REFRESH_TIMING = ("suite", "paper")
Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # n -> (inputs, targets) of n random examples


class SSAM(TwoPassOptimizer):
    """``SSAM(params, base_optimizer=torch.optim.SGD, rho=0.1, sparsity=0.5, mask="fisher",
    pattern="unstructured", form="explicit", ...)``; ``SSAMD(...)`` is ``mask="dynamic"``. ``rho`` and
    ``adaptive`` may differ per parameter group; the mask settings are one for all groups (a mask is
    chosen over every parameter at once), and a group given another value is refused."""

    shared_hparams = ("sparsity", "mask", "pattern", "n", "m", "form", "update_every", "fisher_samples",
                      "fisher_impl", "fisher_bn", "fisher_data", "refresh_timing", "drop_rate", "growth", "normalise",
                      "total_steps", "ascent_fraction")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.1, sparsity: float | None = None, mask: str = "fisher", pattern: str = "unstructured",
        n: int = 2, m: int = 4, form: str = "explicit", update_every: int | None = None,
        fisher_samples: int = 16, fisher_impl: str = "vmap", fisher_bn: str = "batch", fisher_data: str = "batch",
        sample_examples: Sampler | None = None, refresh_timing: str = "suite", drop_rate: float = 0.5,
        growth: str = "random",
        normalise: str = "paper", total_steps: int | None = None, steps_per_epoch: int | None = None,
        model: torch.nn.Module | None = None, seed: int = 0, adaptive: bool = False, ascent_fraction: float = 1.0,
        **base_kwargs: Any,
    ) -> None:
        params = list(params)
        if pattern == "nm":  # the pattern fixes the density: a sparsity that disagrees is a mistake
            flat = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
            mk.check_nm(flat, n, m)
            if sparsity is not None and not math.isclose(sparsity, 1 - n / m):
                raise ValueError(f"with pattern 'nm' the sparsity is 1 - n/m = {1 - n / m}, got sparsity={sparsity}")
            sparsity = 1 - n / m
        extra = dict(sparsity=0.5 if sparsity is None else sparsity, mask=mask, pattern=pattern, n=n, m=m, form=form,
                     update_every=update_every if update_every is not None else steps_per_epoch,
                     fisher_samples=fisher_samples, fisher_impl=fisher_impl, fisher_bn=fisher_bn,
                     fisher_data=fisher_data, refresh_timing=refresh_timing, drop_rate=drop_rate, growth=growth,
                     normalise=normalise, total_steps=total_steps)
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, extra_defaults=extra,
                         ascent_fraction=ascent_fraction, **base_kwargs)
        if form != "explicit" and model is None:
            raise ValueError(f"form {form!r} needs model= (the module whose layers back-propagate through the mask)")
        if mask == "fisher" and fisher_data == "train" and sample_examples is None:
            raise ValueError("fisher_data='train' needs sample_examples= (a function n -> (inputs, targets) drawing "
                             "n random training examples; the suite's harness hands one)")
        self.model, self.steps, self.sample_examples = model, 0, sample_examples
        self.generator = torch.Generator().manual_seed(seed)
        self._params = [p for group in self.param_groups for p in group["params"]]
        density = 1 - self.shared("sparsity")
        scores = [torch.rand(p.shape, generator=self.generator) if mask == "dynamic" else torch.ones(p.shape)
                  for p in self._params]
        self.density_range: list[float] | None = None  # lowest and highest density of the masks used
        self._pending: list[torch.Tensor] | None = None  # SSAM-D's paper timing: the next step's mask
        if mask == "dynamic":
            self._set_masks(mk.project(scores, pattern, density, n, m))
        elif refresh_timing == "paper":  # the paper's code starts from an all-zero mask: step 0 is SGD's
            self._set_masks([torch.zeros(p.shape, dtype=torch.bool) for p in self._params])
        else:  # a placeholder: the first step's Fisher pass chooses the mask before it is used
            self._set_masks([torch.ones(p.shape, dtype=torch.bool) for p in self._params], used=False)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        for name, known in (("mask", MASKS), ("pattern", mk.PATTERNS), ("form", FORMS), ("growth", GROWTH),
                            ("normalise", NORMALISE), ("fisher_impl", tuple(FISHER)), ("fisher_bn", FISHER_BN),
                            ("fisher_data", FISHER_DATA), ("refresh_timing", REFRESH_TIMING)):
            check_choice(name, group[name], known)
        check_number("sparsity", group["sparsity"], 0, 1)
        check_number("drop_rate", group["drop_rate"], 0, 1)
        check_int("update_every (or steps_per_epoch, to refresh once per epoch)", group["update_every"])
        check_int("fisher_samples", group["fisher_samples"])
        if group["mask"] == "dynamic":
            check_int("total_steps (SSAM-D's drop-rate schedule)", group["total_steps"])
        if group["sam_every"] != 1:  # its refresh period and SSAM-D's schedule count the steps that perturb
            raise ValueError(f"SSAM perturbs every step (sam_every={group['sam_every']} is not supported: its mask "
                             "refresh and drop-rate schedule count perturbed steps only)")
        if group["form"] == "implicit" and group["normalise"] == "masked":
            raise ValueError("normalise='masked' is for the explicit form: the implicit form's perturbation "
                             "is dense, normalised by the norm of the masked-backward gradient")

    def settings(self) -> dict[str, Any]:
        """The mask settings, one value for every group."""
        return {key: self.shared(key) for key in self.shared_hparams}

    # ----- hooks of the two-pass skeleton -------------------------------------------------------
    def first_pass(self, closure: Any) -> torch.Tensor:
        h = self.settings()
        if h["mask"] == "fisher" and self._refreshes(h, fisher=True):
            scored = closure
            if h["fisher_data"] == "train":  # the paper's code: N random training examples, not this batch's
                x, y = self.sample_examples(h["fisher_samples"])
                scored = ModelClosure(closure.model, x, y, loss_fn=closure.loss_fn, meter=closure.meter)
            fisher = FISHER[h["fisher_impl"]](scored, self._params, h["fisher_samples"], h["fisher_bn"])
            self._set_masks(mk.project(fisher, h["pattern"], 1 - h["sparsity"], h["n"], h["m"]))
        if h["form"] != "explicit":
            with MaskedBackward(self.model, lambda w: self.state[w]["mask"] if w in self.state else None):
                return self.ascent_call(closure)
        return self.ascent_call(closure)

    def not_perturbed(self) -> list[torch.Tensor]:
        """Tensors whose mask is all zero, where nothing reads their first-pass gradient: the norm is over
        the perturbed weights (``normalise="masked"``), e is masked (not the dense implicit form), and
        SSAM-D grows at random (``growth="gradient"`` reads every inactive weight's |g|) and does not
        perturb with a mask it refreshes in this very step (the suite's timing: a grown tensor needs its g).
        Then e and the update are the same as with their dW computed; otherwise nothing is skipped."""
        h = self.settings()
        reads_all = h["normalise"] != "masked" or h["form"] == "implicit"
        regrows_now = h["mask"] == "dynamic" and (
            h["growth"] != "random" or (h["refresh_timing"] == "suite" and self._refreshes(h, fisher=False)))
        if reads_all or regrows_now:
            return []
        return [p for p in self._params if not self.state[p]["mask"].any()]

    def prepare(self) -> None:
        h = self.settings()
        if h["mask"] == "dynamic" and self._refreshes(h, fisher=False):
            masks = [self.state[p]["mask"] for p in self._params]
            scores = mk.dst_scores(masks, [p.grad for p in self._params], self.drop_rate_at(self.steps),
                                   h["pattern"], self.generator, h["growth"])
            new = mk.project(scores, h["pattern"], 1 - h["sparsity"], h["n"], h["m"])
            if h["refresh_timing"] == "paper":
                self._pending = new  # this step still perturbs with the old mask (see perturb)
            else:
                self._set_masks(new)
        self.steps += 1

    def _refreshes(self, h: dict[str, Any], fisher: bool) -> bool:
        """Whether this step (``self.steps``, from 0) refreshes the mask. With period P:

        - ``refresh_timing="suite"``: SSAM-F at the start of steps 0, P, 2P, ... (the mask a step uses is
          scored on that step's weights); SSAM-D at the last step of each period, P-1, 2P-1, ..., before
          its perturbation, from its first-pass gradient.
        - ``"paper"`` (its code refreshes on the first batch of every period, after that step): SSAM-F
          scores after steps 0, P, 2P, ..., i.e. at the start of steps 1, P+1, ... (step 0 perturbs with
          the all-zero initial mask); SSAM-D at steps 0, P, 2P, ..., from their first-pass gradient,
          the new mask taking effect from the next step."""
        period, t = h["update_every"], self.steps
        if h["refresh_timing"] == "suite":
            return t % period == 0 if fisher else (t + 1) % period == 0
        return t >= 1 and (t - 1) % period == 0 if fisher else t % period == 0

    @torch.no_grad()
    def perturb(self) -> None:
        super().perturb()
        if self._pending is not None:  # the paper's SSAM-D timing: the refreshed mask applies from the next step
            self._set_masks(self._pending)
            self._pending = None

    def grad_norm(self) -> torch.Tensor:
        if self.shared("normalise") == "paper":
            return super().grad_norm()
        # ||m ⊙ g||, or with adaptive=True ASAM's ||m ⊙ |w| ⊙ g||: the norm of what is perturbed. A tensor
        # left out of the first pass (not_perturbed) counts as the 0 it contributes, so the vector of norms,
        # and with it the last bit of the sum, is the same as when its gradient is computed.
        norms = [((p.abs() * p.grad if group["adaptive"] else p.grad) * self.state[p]["mask"]).norm()
                 if p.grad is not None else torch.zeros((), device=p.device)
                 for group in self.param_groups for p in group["params"]
                 if p.grad is not None or not self.state[p]["mask"].any()]
        return torch.stack(norms).norm() if norms else torch.tensor(0.0)

    def perturbation(self, p: torch.Tensor, group: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
        e = super().perturbation(p, group, scale)
        # explicit: the mask sparsifies e; implicit (the paper's code): e stays dense, the mask acted on g;
        # implicit-masked (this suite's): both
        return e if self.shared("form") == "implicit" else e * self.state[p]["mask"]

    # ----- masks and state ----------------------------------------------------------------------------
    def drop_rate_at(self, step: int) -> float:
        rate, total = self.shared("drop_rate"), self.shared("total_steps")
        return rate * (1 + math.cos(math.pi * min(step, total) / total)) / 2

    def _set_masks(self, masks: list[torch.Tensor], used: bool = True) -> None:
        masks = _from_rank_0([mask.to(p.device) for p, mask in zip(self._params, masks)])
        for p, mask in zip(self._params, masks):
            self.state[p]["mask"] = mask
        if used:  # the realised density: a structured mask takes whole tensors and can fall short of the target
            d = mk.density(masks)
            low, high = self.density_range or (d, d)
            self.density_range = [min(low, d), max(high, d)]

    def mask_density(self) -> float:
        """The fraction of weights the current mask perturbs."""
        return mk.density(self.masks())

    def masks(self) -> list[torch.Tensor]:
        return [self.state[p]["mask"] for p in self._params]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["ssam"] = {"steps": self.steps, "generator": self.generator.get_state(),
                         "density_range": self.density_range}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        own = state_dict.pop("ssam")
        super().load_state_dict(state_dict)
        self.steps = own["steps"]
        self.generator.set_state(own["generator"])
        self._params = [p for group in self.param_groups for p in group["params"]]
        self._set_masks([self.state[p]["mask"].bool() for p in self._params], used=False)  # torch casts to p's dtype
        self.density_range = own.get("density_range")



def _from_rank_0(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Under torch.distributed with several processes, rank 0's masks on every rank, so that every replica
    perturbs the same weights (each replica scores its own slice of the batch, or, for SSAM-D, grows and
    drops from its own gradient): one broadcast of all masks together, as uint8 (gloo has no bool)."""
    if not several_processes() or not masks:
        return masks
    flat = torch.cat([m.reshape(-1).to(torch.uint8) for m in masks])
    dist.broadcast(flat, src=0)
    return [part.view(m.shape).bool() for part, m in zip(flat.split([m.numel() for m in masks]), masks)]
