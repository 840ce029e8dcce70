"""Profiles (TOML) and the frozen run configuration they resolve to. Every check happens here,
before anything is built or written, and fails with a ``ConfigError`` naming the value (in the words
of ``baselines.core.checks``, the one checker optimizers use too)."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from baselines.core import check_bool, check_choice, check_int, check_number

PROFILE_DIR = Path(__file__).parent / "profiles"
ROOT = Path(__file__).resolve().parent.parent  # the suite's checkout: a record names the files under it relative to it
SCHEDULES = ("cosine", "constant", "warmup-linear")  # warmup-linear: airbench94's (suite.build.warmup_linear)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("none", "default", "reduce-overhead")
# Settings added after records were published: at these values they are left out of a run's identity (its
# record and run_id), so that the runs recorded before them stay the same runs; any other value is recorded.
LATER_DEFAULTS = {"accumulate": 1, "precision": "fp32", "replicas": 1, "streaming": False, "loader_workers": 4,
                  "min_steps": 0, "compile": "none", "validation_fraction": 0.0,
                  "device_data": False}
BUDGETS = ("epochs", "flops", "time")
COMMON_HPARAMS = ("lr", "momentum", "weight_decay", "nesterov")
REFERENCES = ("sgd", "sam")  # what the report compares every optimizer with, unless the profile says
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ConfigError(ValueError):
    """Anything the user can fix — a bad value from a profile or the command line, a missing data set, an
    unwritable directory; the message is one line for the user (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class TrainConfig:
    """What every optimizer of a profile shares: data, model, schedule, measurement."""

    dataset: str = "cifar10"  # cifar10, cifar100, synthetic, or the name of any ImageFolder data set
    image_size: int = 0  # 0: images must share one size; else every image is resized to this side
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
    # fraction of the training labels (after the subset) replaced by another class drawn uniformly, the same
    # examples and labels for every run: symmetric label noise, the setting where SAM's paper shows its
    # largest gains over SGD; the test labels stay clean
    label_noise: float = 0.0
    # fraction of the training (sub)set held out as a validation split (after the label noise: its labels as
    # noisy as the training labels), class-stratified, the same examples for every seed and method; the run
    # then trains on the rest, is scored on the held-out examples (val_acc) and never evaluates the test set.
    # 0: no validation split, scored on the test set. What tuning runs (suite/tune.py, docs/tuning.md)
    validation_fraction: float = 0.0
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0  # side of the Cutout square in pixels; 0 = off
    cutout_p: float = 0.5
    eval_batch_size: int = 1000
    channels_last: bool = True
    device: str = "auto"
    flop_steps: int = 1  # whole steps counted by FlopCounterMode (untimed); specs may ask for more
    # each batch in this many micro-batches inside the closure, both passes: the same gradient, a K-th of the
    # activations' memory; BatchNorm then normalises (and moves its statistics) per micro-batch
    accumulate: int = 1
    # "bf16": the forward passes under torch.autocast(bfloat16), weights kept in fp32; "fp16" (CUDA): the same in
    # float16, with a gradient scaler that every optimizer's passes are unscaled from (docs/harness.md)
    precision: str = "fp32"
    # "default" / "reduce-overhead": the timed steps' forward (and so its backward) is torch.compile(model, mode=...)
    # — "reduce-overhead" replays CUDA graphs too; the FLOP-counted steps, evaluation and SSAM-F's vectorised
    # Fisher run the module itself, with the same parameters (docs/harness.md)
    compile: str = "none"
    # processes that share each batch, a slice each (torchrun --nproc_per_node=N: set from its WORLD_SIZE by
    # the run command, never by a profile); part of the run's identity, as its results differ from one process's
    replicas: int = 1
    # an ImageFolder too large for memory (ImageNet): read by loader_workers DataLoader workers per process,
    # random resized crops of image_size (0: 224) and flips for training, resize + center crop for testing
    # (suite/streaming.py); the in-memory path's crop_padding and cutout do not apply to its training batches
    streaming: bool = False
    loader_workers: int = 4
    # the training (sub)set held on the run's device as uint8 tensors and augmented there a batch at a time, the
    # same batches as the host path in the same order (suite.data.DeviceData); not with streaming
    device_data: bool = False
    # What every optimizer gets the same of: ``epochs`` epochs, or the training FLOPs / wall-clock that
    # ``budget_reference`` spends in ``epochs`` epochs (then each optimizer runs as many steps as fit).
    budget: str = "epochs"
    budget_reference: str = "sgd"
    # at least this many steps: a small data set (your own, with few steps per epoch) trains for more than
    # ``epochs`` epochs, as many as reach it (``epochs_for``); 0: ``epochs`` as given
    min_steps: int = 0

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs a run trains (or, under a flops/time budget, the reference spends) at this many steps
        per epoch: ``epochs``, or more where ``min_steps`` asks for more."""
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    def __post_init__(self) -> None:
        _checked(self._check)

    def _check(self) -> None:
        if not (isinstance(self.dataset, str) and DATASET_NAME.fullmatch(self.dataset)):
            raise ValueError(f"dataset must be a name of letters, digits, '_', '.' or '-', got {self.dataset!r}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("compile", self.compile, COMPILE_MODES)
        if self.compile == "reduce-overhead" and self.accumulate > 1:
            raise ValueError("compile 'reduce-overhead' cannot take accumulate > 1: a CUDA graph's replay overwrites "
                             "the gradient the previous micro-batch left; use compile 'default'")
        check_choice("budget", self.budget, BUDGETS)
        if not self.budget_reference or not isinstance(self.budget_reference, str):
            raise ValueError(f"budget_reference must be an optimizer name, got {self.budget_reference!r}")
        if not self.model or not isinstance(self.model, str):
            raise ValueError(f"model must be a model name, got {self.model!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "flop_steps", "accumulate", "replicas"):
            check_int(name, getattr(self, name), minimum=1)
        check_bool("streaming", self.streaming)
        check_bool("device_data", self.device_data)
        if self.streaming and self.device_data:
            raise ValueError("device_data holds the training set on the device, streaming on disk: choose one")
        for name in ("train_subset", "test_subset", "crop_padding", "cutout", "image_size", "loader_workers",
                     "min_steps"):
            check_int(name, getattr(self, name), minimum=0)
        if self.accumulate > self.batch_size:
            raise ValueError(f"accumulate must be at most batch_size ({self.batch_size}): micro-batches of at least "
                             f"one example, got {self.accumulate}")
        self._check_replicas()
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("cutout_p", self.cutout_p, 0, 1)
        check_number("label_noise", self.label_noise, 0, 1, high_open=True)
        check_number("validation_fraction", self.validation_fraction, 0, 1, high_open=True)
        for name in ("nesterov", "flip", "channels_last"):
            check_bool(name, getattr(self, name))

    def _check_replicas(self) -> None:
        if self.replicas == 1:
            return
        if self.batch_size % self.replicas:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {self.replicas} processes")
        if self.accumulate > self.batch_size // self.replicas:
            raise ValueError(f"accumulate {self.accumulate} is more than each of {self.replicas} processes' "
                             f"{self.batch_size // self.replicas} examples")
        if self.compile != "none":  # DDP's no_sync through a compiled wrapper is untested here
            raise ValueError(f"compile {self.compile!r} cannot run under torchrun yet; use compile 'none'")
        if self.budget == "time":
            raise ValueError("budget 'time' is priced by one process's probe and cannot run under torchrun; use "
                             "epochs or flops")


@dataclass(frozen=True)
class ProfileSource:
    """What a profile said and where it was read: its name, the sha256 of its resolved content (the merged TOML
    after ``extends``, as canonical JSON: the same profile hashes the same whichever files say it) and the TOML
    files read (resolved paths, the profile's own first, then each it extends). Recorded with every run, and
    the files are what the run's provenance vouches for (``measure.environment``); not part of a run's identity."""

    name: str
    sha256: str
    files: tuple[Path, ...] = ()

    @classmethod
    def of(cls, name: str, raw: dict[str, Any], files: tuple[Path, ...] = ()) -> ProfileSource:
        blob = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return cls(name, hashlib.sha256(blob.encode()).hexdigest(), files)

    def as_record(self) -> dict[str, Any]:
        """As a record holds it: the files under the suite's checkout relative to it, any other by its full path."""
        shown = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in self.files]
        return {"name": self.name, "sha256": self.sha256, "files": shown}


@dataclass(frozen=True)
class RunConfig:
    """One run: a profile's training settings, one optimizer with its hyper-parameters, one seed."""

    profile: str
    optimizer: str
    seed: int
    train: TrainConfig
    hparams: tuple[tuple[str, Any], ...] = ()  # the hyper-parameters it is built with, sorted
    # what the report compares it with: not part of the run (nor of its run_id)
    references: tuple[str, ...] = field(default=REFERENCES, compare=False)
    # the budget reference's hyper-parameters as the profile resolves them (flops/time budgets price a step of
    # it); empty: its registered defaults. Part of the plan, not of the run's identity (the budget is recorded)
    reference_hparams: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    # the profile it was planned from (its content's hash, its files): recorded, and what the run's git state is
    # checked for (measure.environment); not part of the run (nor of its run_id: as_dict leaves it out)
    source: ProfileSource | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "train": {k: v for k, v in dataclasses.asdict(self.train).items()
                      if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]},
            "hparams": {k: _named(v) for k, v in self.hparams},
        }

    @property
    def run_id(self) -> str:
        """Stable key of the resolved configuration: the same config is the same run."""
        blob = json.dumps(self.as_dict(), sort_keys=True, default=str).encode()
        return f"{self.optimizer}-s{self.seed}-{hashlib.sha256(blob).hexdigest()[:10]}"


@dataclass(frozen=True)
class SharpnessSettings:
    """What the sharpness measures of a final model look at and how hard they look (``suite.sharpness``);
    a profile's ``[sharpness]`` table sets them, and ``at_end = true`` there measures every run as it
    ends. Recorded with the values. Not part of a run's configuration: measuring changes no training."""

    examples: int = 256  # fixed training examples (seeded, the same for every run of a profile)
    batch_size: int = 128  # the Hessian measures' batches (the mean loss is over all examples)
    m: int = 128  # m-sharpness: examples per batch, each with its own ascent
    ascent_steps: int = 5
    iterations: int = 100  # power iteration and Hutchinson: the common defaults (PyHessian's, among others)
    tolerance: float = 1e-3
    surface_points: int = 21  # per axis of the 1-D surface, over [-span, span]
    surface_2d_points: int = 11  # per axis of the 2-D surface
    span: float = 1.0
    seed: int = 0  # the examples; the directions and probe vectors also take the run's seed

    def __post_init__(self) -> None:
        _checked(self._check)

    def _check(self) -> None:
        for name in ("examples", "batch_size", "m", "ascent_steps", "iterations", "surface_points",
                     "surface_2d_points"):
            check_int(f"sharpness {name}", getattr(self, name), minimum=1)
        check_int("sharpness seed", self.seed, minimum=0)
        check_number("sharpness tolerance", self.tolerance, low=0)
        check_number("sharpness span", self.span, low=0, low_open=True)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    train: TrainConfig
    seeds: int = 1
    optimizer_seeds: dict[str, int] = field(default_factory=dict)  # more (or fewer) seeds for these optimizers
    # the first seed: a confirmatory profile runs fresh seeds (8, 9, ...), none its pilot ran (0-7)
    first_seed: int = 0
    optimizers: tuple[str, ...] | None = None  # None: every registered optimizer
    budgets: tuple[str, ...] = ("epochs",)  # the sweep runs once under each
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-optimizer overrides
    references: tuple[str, ...] = REFERENCES  # the optimizers the report compares every other with
    data_dir: str | None = None  # where the data set is, unless --data-dir or SUITE_DATA_DIR says
    sharpness: SharpnessSettings = field(default_factory=SharpnessSettings)  # how its runs are measured
    sharpness_at_end: bool = False  # measure each run's final model as the run ends (the sweep's switch)
    sharpness_rho: float | None = None  # the ball of m-sharpness; None: the profile's SAM rho
    slurm: dict[str, Any] = field(default_factory=dict)  # what --launcher slurm asks for (launch.SlurmSettings)
    claims: tuple = ()  # its own [[claims]] (suite.claims.Claim), judged on its tables alone
    # false: its accuracy says nothing (a pipeline check: smoke), so the report judges no accuracy claim on it
    accuracy_claims: bool = True
    # its [tune] table as written (suite/tune.py checks it): a grid of one hyper-parameter per optimizer that
    # `python -m suite tune` runs on a validation split; empty: not a tuning profile
    tune: dict[str, Any] = field(default_factory=dict)
    # the tuning profile whose chosen values (``suite tune --choose``) its [hparams] hold: the frontier of its
    # table shows each method's tuned value beside that profile's grid; "": not tuned
    tuned_by: str = ""
    source: ProfileSource | None = field(default=None, compare=False)  # its content's hash and the files read

    def seeds_of(self, name: str, aliases: tuple[str, ...] = ()) -> int:
        """How many seeds ``name`` runs: its ``[optimizer_seeds]`` entry (by name or alias), else ``seeds``."""
        for key in (name, *aliases):
            if key in self.optimizer_seeds:
                return self.optimizer_seeds[key]
        return self.seeds

    def settings_rows(self) -> list[tuple[str, str]]:
        """What each optimizer of this profile is built with: the common settings once, then per optimizer what
        its name does not already say (the registry's class defaults under the profile's values)."""
        from suite import registry  # the registry imports the optimizers (torch): only when asked

        common = ", ".join(f"{k} {getattr(self.train, k)}" for k in COMMON_HPARAMS)
        rows = [(f"profile {self.name}", f"{common} for every optimizer that takes them; SSAM's sparsity 0.5 (N:M: "
                                             "1 - n/m) and a mask refresh per epoch unless shown; then:")]
        for name in self.optimizers or registry.names():
            info = registry.get(name)
            own = info.defaults() if info.cls.__module__.split(".")[0] in ("baselines", "ssam") else {}
            values = {**own, **self.hparams_for(info)}
            overridden = self.overrides_for((info.name, *info.aliases))
            shown = {k: v for k, v in values.items() if k not in COMMON_HPARAMS and v is not None and v is not False
                     and (k not in info.changes or k in overridden) and _applies(k, v, values)}
            rows.append((info.name, " ".join(f"{k}={v}" for k, v in shown.items()) or "-"))
        return rows

    def overrides_for(self, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The profile's hyper-parameters for the optimizer called ``names`` (its name, then its aliases):
        every ``[hparams."PATTERN"]`` table whose glob matches one of them, in file order, then the tables
        named exactly (e.g. ``"ssam-*"``, then ``"ssam-f"``, then ``"ssam-f-unstructured-explicit"``)."""
        merged: dict[str, Any] = {}
        for pattern, values in self.hparams.items():
            if pattern not in names and any(fnmatch.fnmatchcase(n, pattern) for n in names):
                merged.update(values)
        for exact in reversed(names):
            merged.update(self.hparams.get(exact, {}))
        return merged

    def hparams_for(self, info: Any, train: TrainConfig | None = None) -> dict[str, Any]:
        """What the registry entry ``info`` is built with in this profile (``resolve_hparams``) — the one
        answer the sweep, the budget probe and the sharpness measures all read."""
        return resolve_hparams(info, train or self.train, self.overrides_for((info.name, *info.aliases)))

    def sam_rho(self) -> float:
        """The ball the sharpness measures use: ``[sharpness] rho``, else this profile's SAM rho."""
        if self.sharpness_rho is not None:
            return float(self.sharpness_rho)
        from suite import registry  # the registry imports the optimizers (torch): only when asked

        sam = registry.get("sam")
        return float(self.hparams_for(sam).get("rho", sam.defaults()["rho"]))


def _applies(key: str, value, values: dict) -> bool:
    """Whether a setting means anything for this variant (SSAM-D's drop rate nothing to SSAM-F; N:M's n and m
    nothing to another pattern; the whole batch's ascent and a second pass every step are every optimizer's
    default)."""
    mask = values.get("mask")
    return not ((key == "ascent_fraction" and value == 1.0) or (key == "sam_every" and value == 1)
                or (key == "eta" and not values.get("adaptive"))
                or (key in ("n", "m") and values.get("pattern") != "nm")
                or (mask == "fisher" and key in ("drop_rate", "growth"))
                or (mask == "dynamic" and key.startswith("fisher_")))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``suite/profiles/NAME.toml``) or by path to a TOML file. A profile may start
    from another (``extends = "NAME"`` or a path, relative to its own file): the other's keys, with this
    one's on top, table by table (``[train]``, ``[hparams."GLOB"]``, ``[sharpness]`` merge key by key). A profile
    that names its own ``optimizers`` names their seeds too: the other's ``[optimizer_seeds]`` is not inherited."""
    path = _profile_path(name_or_path)
    read: list[Path] = []
    raw = _raw_profile(path, (), read)
    source = ProfileSource.of(path.stem, raw, tuple(read))  # hashed before parsing can touch it
    return dataclasses.replace(parse_profile(path.stem, raw), source=source)


def _profile_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = available_profiles()
            raise ConfigError(f"unknown profile {name_or_path!r};{_did_you_mean(name_or_path, known)} known: "
                              f"{', '.join(known)}")
        return path
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        raise ConfigError(f"profile file {str(path)!r} does not exist")
    return path


def _raw_profile(path: Path, chain: tuple[Path, ...], read: list[Path] | None = None) -> dict[str, Any]:
    """The profile's TOML as a dict, with what it extends merged under it; each file read is appended to ``read``."""
    if path.resolve() in chain:
        raise ConfigError(f"profile {str(path)!r} extends itself (through {' -> '.join(p.stem for p in chain)})")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {str(path)!r} is not valid TOML: {exc}") from None
    if read is not None:
        read.append(path.resolve())
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not (isinstance(base, str) and base):
        raise ConfigError(f"extends must name a profile or a .toml path, got {base!r}")
    under = _raw_profile(_profile_path(base, path.parent), (*chain, path.resolve()), read)
    if "optimizers" in raw:  # the other's seed counts were chosen for its own list of optimizers
        under.pop("optimizer_seeds", None)
    return _merged(under, raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, tables merged key by key (so a preset changes one [train] value, not all)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_profile(name: str, raw: dict[str, Any]) -> Profile:
    """A profile from its resolved TOML (read from no file: its ``source`` has its hash and no files)."""
    return dataclasses.replace(_checked(_parse_profile, name, raw), source=ProfileSource.of(name, raw))


def _parse_profile(name: str, raw: dict[str, Any]) -> Profile:
    # extends was read (and removed) before this: it is allowed, and the message lists it
    _check_keys("profile", raw, {f.name for f in dataclasses.fields(Profile)} - {"name", "source"} | {"extends"})
    # replicas: torchrun's number of processes, not a profile's
    _check_keys("[train]", raw.get("train", {}), {f.name for f in dataclasses.fields(TrainConfig)} - {"replicas"})
    train = TrainConfig(**raw.get("train", {}))
    optimizers = raw.get("optimizers", "all")
    if optimizers != "all" and not _names(optimizers):
        raise ValueError(f'optimizers must be "all" or a list of names, got {optimizers!r}')
    budgets = raw.get("budgets", [train.budget])
    if not (isinstance(budgets, list) and budgets):
        raise ValueError(f'budgets must be a list such as ["epochs", "flops"], got {budgets!r}')
    for budget in budgets:
        check_choice("budget", budget, BUDGETS)
    references = raw.get("references", list(REFERENCES))
    if not _names(references):
        raise ValueError(f'references must be a list of optimizer names such as ["sgd", "sam"], got {references!r}')
    hparams = raw.get("hparams", {})
    if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
        raise ValueError("[hparams] must hold one table per optimizer, e.g. [hparams.sam] rho = 0.1")
    data_dir = raw.get("data_dir")
    if data_dir is not None and not (isinstance(data_dir, str) and data_dir):
        raise ValueError(f"data_dir must be a directory path, got {data_dir!r}")
    table = dict(raw.get("sharpness", {}))
    _check_keys("[sharpness]", table, {f.name for f in dataclasses.fields(SharpnessSettings)} | {"at_end", "rho"})
    at_end = check_bool("[sharpness] at_end", table.pop("at_end", False))
    rho = table.pop("rho", None)
    if rho is not None:
        check_number("[sharpness] rho", rho, low=0)
    optimizer_seeds = raw.get("optimizer_seeds", {})
    if not isinstance(optimizer_seeds, dict):
        raise ValueError("[optimizer_seeds] must be a table of optimizer = seeds, e.g. sam = 8, "
                         f"got {optimizer_seeds!r}")
    for optimizer, count in optimizer_seeds.items():
        check_int(f"[optimizer_seeds] {optimizer}", count, minimum=1)
    return Profile(
        name=name, description=str(raw.get("description", "")), train=train,
        seeds=check_int("seeds", raw.get("seeds", 1), minimum=1), optimizer_seeds=dict(optimizer_seeds),
        first_seed=check_int("first_seed", raw.get("first_seed", 0), minimum=0),
        optimizers=None if optimizers == "all" else tuple(optimizers), budgets=tuple(dict.fromkeys(budgets)),
        hparams=hparams, references=tuple(dict.fromkeys(references)), data_dir=data_dir,
        sharpness=SharpnessSettings(**table), sharpness_at_end=at_end, sharpness_rho=rho,
        slurm=_table("[slurm]", raw.get("slurm", {})), claims=_claims(name, raw.get("claims")),
        accuracy_claims=check_bool("accuracy_claims", raw.get("accuracy_claims", True)),
        tune=_table("[tune]", raw.get("tune", {})), tuned_by=_name("tuned_by", raw.get("tuned_by", "")),
    )


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a profile's name, got {value!r}")
    return value


def resolve_hparams(info: Any, train: TrainConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """What an optimizer is built with: the profile's common settings it accepts (an Adam-based
    optimizer is not handed ``momentum``), then what its registry entry changes of its constructor's
    defaults, then the profile's overrides for it (a profile that names a setting for one optimizer
    means it: one it does not accept fails at construction)."""
    common = {k: getattr(train, k) for k in COMMON_HPARAMS if info.accepts(k)}
    return {**common, **info.changes, **overrides}


def with_overrides(train: TrainConfig, **overrides: Any) -> TrainConfig:
    """A copy of ``train`` with command-line overrides (None = keep), re-validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return _checked(dataclasses.replace, train, **changes) if changes else train


def _named(value: Any) -> Any:
    """A hyper-parameter as a record holds it: a class or function (``base_optimizer``) by its import path."""
    if isinstance(value, type) or callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def _claims(name: str, tables: Any) -> tuple:
    if tables is None:
        return ()
    from suite.claims import parse_claims  # pandas: only for a profile that declares claims

    return parse_claims(tables, f"profile {name}", on=(name,))


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _check_keys(where: str, raw: Any, allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table, got {raw!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where};{_did_you_mean(unknown[0], allowed)} allowed: "
                         f"{', '.join(sorted(allowed))}")


def _did_you_mean(word: str, known: Any) -> str:
    # start-up time: the registry imports torch and the optimizers, which a profile's checks do without; only a
    # misspelt name pays for it here (the command line has imported the registry already)
    from suite.registry import did_you_mean

    return did_you_mean(word, known)


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a ``ValueError`` from the checks becomes the user's ``ConfigError``."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
