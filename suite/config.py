"""Profiles (TOML) and the frozen run configuration they resolve to. Every check happens here,
before anything is built or written, and fails with a ``ConfigError`` naming the value."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_DIR = Path(__file__).parent / "profiles"
DATASETS = ("cifar10", "cifar100", "synthetic")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
BUDGETS = ("epochs", "flops", "time")
COMMON_HPARAMS = ("lr", "momentum", "weight_decay", "nesterov")


class ConfigError(ValueError):
    """A bad value from a profile or the command line; the message is one line for the user."""


@dataclass(frozen=True)
class TrainConfig:
    """What every optimizer of a profile shares: data, model, schedule, measurement."""

    dataset: str = "cifar10"
    model: str = "resnet20"
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    train_subset: int = 0  # 0: the whole training set; else a fixed, class-balanced subset
    test_subset: int = 0
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0  # side of the Cutout square in pixels; 0 = off
    cutout_p: float = 0.5
    eval_batch_size: int = 1000
    channels_last: bool = True
    device: str = "auto"
    flop_steps: int = 1  # whole steps counted by FlopCounterMode (untimed); specs may ask for more
    # What every optimizer gets the same of: ``epochs`` epochs, or the training FLOPs / wall-clock that
    # ``budget_reference`` spends in ``epochs`` epochs (then each optimizer runs as many steps as fit).
    budget: str = "epochs"
    budget_reference: str = "sgd"

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("budget", self.budget, BUDGETS)
        if not self.budget_reference or not isinstance(self.budget_reference, str):
            raise ConfigError(f"budget_reference must be an optimizer name, got {self.budget_reference!r}")
        if not self.model or not isinstance(self.model, str):
            raise ConfigError(f"model must be a model name, got {self.model!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "flop_steps"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("train_subset", "test_subset", "crop_padding", "cutout"):
            _check_int(name, getattr(self, name), minimum=0)
        _check_float("lr", self.lr, positive=True)
        _check_float("momentum", self.momentum, low=0.0)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("cutout_p", self.cutout_p, low=0.0, high=1.0)
        for name in ("nesterov", "flip", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RunConfig:
    """One run: a profile's training settings, one optimizer with its hyper-parameters, one seed."""

    profile: str
    optimizer: str
    seed: int
    train: TrainConfig
    hparams: tuple[tuple[str, Any], ...] = ()  # resolved optimizer hyper-parameters, sorted

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "train": dataclasses.asdict(self.train),
            "hparams": dict(self.hparams),
        }

    @property
    def run_id(self) -> str:
        """Stable key of the resolved configuration: the same config is the same run."""
        blob = json.dumps(self.as_dict(), sort_keys=True, default=str).encode()
        return f"{self.optimizer}-s{self.seed}-{hashlib.sha256(blob).hexdigest()[:10]}"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    train: TrainConfig
    seeds: int = 1
    optimizers: tuple[str, ...] | None = None  # None: every registered optimizer
    budgets: tuple[str, ...] = ("epochs",)  # the sweep runs once under each
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-optimizer overrides


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``suite/profiles/NAME.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"unknown profile {name_or_path!r}; known: {', '.join(available_profiles())}")
    elif not path.is_file():
        raise ConfigError(f"profile file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {str(path)!r} is not valid TOML: {exc}") from None
    return parse_profile(path.stem, raw)


def parse_profile(name: str, raw: dict[str, Any]) -> Profile:
    _check_keys("profile", raw, {"description", "seeds", "optimizers", "budgets", "train", "hparams"})
    train_raw = raw.get("train", {})
    _check_keys("[train]", train_raw, {f.name for f in dataclasses.fields(TrainConfig)})
    try:
        train = TrainConfig(**train_raw)
    except TypeError as exc:  # pragma: no cover - keys were checked above
        raise ConfigError(str(exc)) from None
    seeds = raw.get("seeds", 1)
    _check_int("seeds", seeds, minimum=1)
    optimizers = raw.get("optimizers", "all")
    if optimizers == "all":
        optimizers = None
    elif not (isinstance(optimizers, list) and optimizers and all(isinstance(o, str) for o in optimizers)):
        raise ConfigError(f'optimizers must be "all" or a list of names, got {optimizers!r}')
    budgets = raw.get("budgets", [train.budget])
    if not (isinstance(budgets, list) and budgets):
        raise ConfigError(f'budgets must be a list such as ["epochs", "flops"], got {budgets!r}')
    for budget in budgets:
        _check_choice("budget", budget, BUDGETS)
    hparams = raw.get("hparams", {})
    if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
        raise ConfigError("[hparams] must hold one table per optimizer, e.g. [hparams.sam] rho = 0.05")
    return Profile(
        name=name,
        description=str(raw.get("description", "")),
        train=train,
        seeds=seeds,
        optimizers=tuple(optimizers) if optimizers else None,
        budgets=tuple(dict.fromkeys(budgets)),
        hparams=hparams,
    )


def with_overrides(train: TrainConfig, **overrides: Any) -> TrainConfig:
    """A copy of ``train`` with command-line overrides (None = keep), re-validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(train, **changes) if changes else train


def _check_keys(where: str, raw: Any, allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {raw!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; known: {', '.join(choices)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(
    name: str, value: Any, positive: bool = False, low: float | None = None, high: float | None = None
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not positive or value > 0) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = "> 0" if positive else f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bounds}, got {value!r}")
