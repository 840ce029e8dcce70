"""Name -> optimizer spec. An optimizer joins the suite by decorating its class in one file.

    from suite.registry import register

    @register("my-sam", description="SAM with a twist", defaults={"rho": 0.05},
              passes_per_step=2, closure_features={"freeze_bn"})
    class MySAM(torch.optim.Optimizer): ...

Modules in the packages ``baselines`` and ``ssam`` are imported on first use; out-of-tree modules
are named in ``SUITE_OPTIMIZER_MODULES`` (comma-separated import paths). This module imports
nothing heavy, so optimizer files may depend on it without pulling in the harness.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# What the harness hands an optimizer at construction when its spec asks (never during steps).
INPUTS = frozenset({"model", "total_steps", "steps_per_epoch", "seed"})
# What the suite's closure offers beyond the torch convention (see baselines.closure.ModelClosure).
CLOSURE_FEATURES = frozenset({"subset", "backward", "per_sample", "freeze_bn", "fisher"})
PACKAGES = ("baselines", "ssam")


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything the harness needs to build and describe one optimizer."""

    name: str
    factory: Callable[..., Any]  # factory(params, **hparams) -> torch.optim.Optimizer
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)  # optimizer-specific hyper-parameters
    passes_per_step: int = 1  # nominal forward+backward passes per step; the meter measures the truth
    closure_features: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset()  # construction inputs from the harness, a subset of INPUTS
    # Steps over which one step's cost varies periodically (e.g. a mask refresh interval); the harness
    # counts FLOPs over that many whole steps. Called with the resolved hyper-parameters and inputs.
    flop_window: Callable[[Mapping[str, Any]], int] | None = None
    alias_of: str | None = None

    def build(self, params: Iterable[Any], available: Mapping[str, Any] | None = None, **hparams: Any) -> Any:
        """Construct with this spec's defaults under ``hparams``; of ``available`` (the harness's
        model, total_steps, steps_per_epoch, and the run's seed for the optimizer's own random draws)
        only the inputs the spec asks for are passed."""
        inputs = {k: v for k, v in (available or {}).items() if k in self.inputs}
        return self.factory(params, **{**self.defaults, **hparams}, **inputs)

    def resolved_hparams(self, common: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Common training hyper-parameters, then this optimizer's defaults, then profile overrides."""
        return {**common, **self.defaults, **overrides}


_REGISTRY: dict[str, OptimizerSpec] = {}
_discovered = False


def register(
    name: str,
    *,
    description: str,
    defaults: Mapping[str, Any] | None = None,
    passes_per_step: int = 1,
    closure_features: Iterable[str] = (),
    inputs: Iterable[str] = (),
    flop_window: Callable[[Mapping[str, Any]], int] | None = None,
    factory: Callable[..., Any] | None = None,
    aliases: Iterable[str] = (),
) -> Callable[[Any], Any]:
    """Class decorator (or, with ``factory=``, a plain call) adding an optimizer to the registry."""
    features = frozenset(closure_features)
    unknown = features - CLOSURE_FEATURES
    if unknown:
        raise ValueError(f"{name}: unknown closure features {sorted(unknown)}; known: {sorted(CLOSURE_FEATURES)}")
    if set(inputs) - INPUTS:
        raise ValueError(f"{name}: unknown inputs {sorted(set(inputs) - INPUTS)}; known: {sorted(INPUTS)}")

    def add(obj: Any) -> Any:
        spec = OptimizerSpec(
            name=name,
            factory=factory or obj,
            description=description,
            defaults=MappingProxyType(dict(defaults or {})),
            passes_per_step=passes_per_step,
            closure_features=features,
            inputs=frozenset(inputs),
            flop_window=flop_window,
        )
        for key, value in [(name, spec)] + [(a, _alias(spec, a)) for a in aliases]:
            if key in _REGISTRY and _REGISTRY[key].factory is not value.factory:
                raise ValueError(f"optimizer name {key!r} is registered twice")
            _REGISTRY[key] = value
        return obj

    return add


def _alias(spec: OptimizerSpec, alias: str) -> OptimizerSpec:
    return OptimizerSpec(**{**spec.__dict__, "name": alias, "alias_of": spec.name})


def discover() -> None:
    """Import every optimizer module once, so that their decorators run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{info.name}")
    for module in filter(None, os.environ.get("SUITE_OPTIMIZER_MODULES", "").split(",")):
        importlib.import_module(module.strip())


def names(include_aliases: bool = False) -> list[str]:
    """Registered names in a stable order (baselines first, as registered)."""
    discover()
    return [n for n, s in _REGISTRY.items() if include_aliases or s.alias_of is None]


def get(name: str) -> OptimizerSpec:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(names(include_aliases=True))}") from None
