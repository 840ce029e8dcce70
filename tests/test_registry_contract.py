"""The optimizer contract, generated from the registry table: every registered name gets every test,
so a new optimizer gets them for free — including one test per invalid input its entry declares, and the
behavioural tests on its default and on each sample configuration it declares."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import TRAIN_SIZE, shaped, tiny_model, toy_batch

from baselines.core import Meter, ModelClosure, TwoPassOptimizer
from suite import registry

NAMES = registry.names()
COMMON = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
INVALID = [(name, bad) for name in NAMES for bad in registry.get(name).invalid]
# (name, hyper-parameters) for the default ({}) and every declared sample configuration
SAMPLES = [(name, dict(sample)) for name in NAMES for sample in ({}, *registry.get(name).samples)]


def settings_id(settings) -> str:
    return "-".join(f"{k}={v}" for k, v in settings.items()) or "default"


each_sample = pytest.mark.parametrize(("name", "sample"), SAMPLES,
                                      ids=[f"{n}-{settings_id(s)}" for n, s in SAMPLES])


def build(name: str, model: torch.nn.Module, params=None, **overrides) -> torch.optim.Optimizer:
    """As the harness builds it: common hyper-parameters, then the inputs the entry asks for (masks are
    refreshed every 2 steps, so the round-trip test crosses refreshes)."""
    inputs = {"model": model, "total_steps": 12, "steps_per_epoch": 2, "seed": 0, "train_size": TRAIN_SIZE,
              "sample_examples": lambda n: toy_batch(n=n, seed=100)}  # "random" training examples, fixed here
    return registry.get(name).build(model.parameters() if params is None else params, inputs,
                                    **{**COMMON, **overrides})


def step(opt, model, i, meter=None):
    x, y = toy_batch(seed=i)
    return opt.step(shaped(opt, model, x, y, meter=meter))


def is_two_pass(name: str) -> bool:
    return isinstance(build(name, tiny_model()), TwoPassOptimizer)


def test_registry_has_the_baselines():
    assert {"sgd", "sam", "esam"} <= set(NAMES) and len(NAMES) == len(set(NAMES))


@each_sample
def test_builds_as_torch_optimizer_with_hparams_in_groups(name, sample):
    opt = build(name, tiny_model(), **sample)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == COMMON["lr"]
    for key, value in {**registry.get(name).changes, **sample}.items():
        assert opt.param_groups[0][key] == value, f"{key} must live in param_groups"


@each_sample
def test_reduces_loss_on_a_toy_problem(name, sample):
    model = tiny_model()
    opt = build(name, model, **{**sample, "lr": 0.1})
    x, y = toy_batch(n=24)
    closure = shaped(opt, model, x, y)
    first = float(closure(backward=False))
    for _ in range(30):
        opt.step(closure)
    # A trajectory loss (SAF, MESA) holds the outputs near an earlier network's on purpose (MESA's teacher at
    # decay 0.9998 is the initial network for these 30 steps): there the cross-entropy alone must fall by a fifth.
    if getattr(opt, "objective", None) is None:
        assert float(closure(backward=False)) < 0.5 * first
    else:
        assert float(ModelClosure(model, x, y)(backward=False)) < 0.8 * first


@pytest.mark.parametrize("name", NAMES)
def test_steps_on_after_its_loss_turns_non_finite(name):
    """The harness reads the loss once an epoch, so a diverged run takes the rest of its epoch's steps on
    non-finite weights: they must not raise (mask refreshes every 2 steps included)."""
    model = tiny_model()
    opt = build(name, model, lr=1e12)
    losses = [float(step(opt, model, i)) for i in range(8)]
    assert not all(math.isfinite(v) for v in losses), "lr 1e12 diverges"


@each_sample
def test_state_dict_round_trip_mid_run_continues_bit_identically(name, sample):
    model = tiny_model()
    opt = build(name, model, **sample)
    for i in range(3):
        step(opt, model, i)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for i in range(3, 6):
        step(opt, model, i)
    resumed = tiny_model(seed=99)  # different initial weights: everything must come from the state
    resumed.load_state_dict(saved_model)
    opt2 = build(name, resumed, **sample)
    opt2.load_state_dict(saved_opt)
    for i in range(3, 6):
        step(opt2, resumed, i)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@each_sample
def test_honours_an_lr_scheduler(name, sample):
    """With momentum and weight decay as configured: lr = 0 must stop them too."""
    model = tiny_model()
    opt = build(name, model, **sample)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t == 0 else 0.0)
    before = [p.detach().clone() for p in model.parameters()]
    step(opt, model, 0)
    scheduler.step()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before)), "lr > 0 must move weights"
    frozen = [p.detach().clone() for p in model.parameters()]
    step(opt, model, 1)
    assert all(torch.equal(p, f) for p, f in zip(model.parameters(), frozen)), "lr = 0 must not move weights"


@each_sample
def test_meter_reports_the_declared_passes(name, sample):
    """A step outside a mask refresh runs the declared passes: of steps 1-3, with a refresh period of at
    most 3, some step is outside one, whichever timing; a refresh only adds passes. Step 0 may run fewer:
    the paper's timing perturbs it with an all-zero mask, which a masked norm skips."""
    model, meter = tiny_model(), Meter()
    opt = build(name, model, **sample)
    backward = []
    for i in range(4):
        meter.reset()
        step(opt, model, i, meter)
        backward.append(meter.backward_passes)
        assert meter.forward_passes >= meter.backward_passes
    assert min(backward[1:]) == registry.get(name).passes_per_step, backward


@pytest.mark.parametrize(("name", "bad"), INVALID, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in b.items())}"
                                                         for n, b in INVALID])
def test_declared_invalid_input_raises_value_error_naming_the_value(name, bad):
    with pytest.raises(ValueError) as info:
        build(name, tiny_model(), **bad)
    message = str(info.value)
    for value in bad.values():
        assert repr(value) in message or str(value) in message, message


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_declares_invalid_inputs(name):
    assert registry.get(name).invalid, f"{name}: declare the inputs it must refuse"


# ----- parameter groups: honoured per group, or refused ---------------------------------------------------------
def two_groups(model: torch.nn.Module, **second) -> list[dict]:
    params = list(model.parameters())
    return [{"params": params[:2]}, {"params": params[2:], **second}]


def moved_by_the_perturbation(name: str, **second) -> list[bool]:
    model = tiny_model()
    opt = build(name, model, two_groups(model, **second))
    for i in range(2):  # Momentum-SAM perturbs along the momentum, which the first step makes
        step(opt, model, i)
    x, y = toy_batch()
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_pass(ModelClosure(model, x, y))
    opt.prepare()
    opt.perturb()
    moved = [not torch.equal(p, b) for p, b in zip(model.parameters(), before)]
    opt.restore()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    return moved


@pytest.mark.parametrize("name", [n for n in NAMES if is_two_pass(n)])
def test_per_group_rho_is_honoured(name):
    """A group with rho = 0 is not perturbed; the other group moves as it does when both have rho."""
    both = moved_by_the_perturbation(name)
    assert any(both[2:]), "the second group must move when its rho is not 0"
    assert moved_by_the_perturbation(name, rho=0.0) == both[:2] + [False] * (len(both) - 2)


ALTERNATIVES = {"sparsity": (0.25, 0.75), "gamma": (0.75, 0.25), "mask": ("fisher", "dynamic"),
                "pattern": ("structured", "unstructured"), "n": (1, 2), "m": (2, 8), "form": ("explicit", "implicit"),
                "update_every": (7, 3), "fisher_samples": (3, 5), "fisher_impl": ("loop", "vmap"),
                "drop_rate": (0.25, 0.75), "growth": ("gradient", "random"), "normalise": ("masked", "paper"),
                "total_steps": (99, 98), "fisher_bn": ("running", "batch"),
                "fisher_data": ("train", "batch"), "refresh_timing": ("paper", "suite"),
                "ascent_fraction": (0.5, 1.0), "sam_every": (3, 1),
                "probability": (0.25, 0.75), "delta": (0.5, 0.9), "lambda1": (0.0, -1.0), "lambda2": (2.0, 1.0),
                "switch_at": (0.5, 0.25), "lam": (0.5, 0.3), "temperature": (2.0, 5.0), "start_epoch": (1, 5),
                "end_epoch": (9, 8), "past_epochs": (2, 3), "ema_decay": (0.9, 0.9998), "k_fraction": (0.5, 0.25)}


@pytest.mark.parametrize(("name", "key"), [(n, k) for n in NAMES if is_two_pass(n)
                                           for k in type(build(n, tiny_model())).shared_hparams])
def test_a_setting_that_cannot_differ_per_group_is_refused(name, key):
    model = tiny_model()
    opt = build(name, model)
    other = next(v for v in ALTERNATIVES[key] if v != opt.param_groups[0][key])
    with pytest.raises(ValueError, match=f"one {key} for all parameter groups"):
        build(name, model, two_groups(model, **{key: other}))
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    opt.param_groups[-1][key] = other  # changed after construction: refused when the step reads it
    with pytest.raises(ValueError, match=f"one {key} for all parameter groups"):
        opt.shared(key)


@pytest.mark.parametrize("name", [n for n in NAMES if is_two_pass(n)])
def test_a_bad_value_in_a_group_is_refused_like_a_bad_default(name):
    model = tiny_model()
    with pytest.raises(ValueError, match="-0.5"):
        build(name, model, two_groups(model, rho=-0.5))


# ----- the table ------------------------------------------------------------------------------------------------
def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: sgd"):
        registry.get("adamw-sam")


def test_an_alias_is_its_target():
    assert registry.get("ssam-f") is registry.get("ssam-f-unstructured-explicit")
    assert "ssam-f" not in NAMES and "ssam-f" in registry.names(include_aliases=True)


def test_a_name_registered_twice_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "OPTIMIZERS", list(registry.OPTIMIZERS))
    with pytest.raises(ValueError, match="'sam' is registered twice"):
        registry.register(registry.OptimizerInfo("sam", torch.optim.SGD, "again"))


def test_unknown_construction_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown inputs"):
        registry.OptimizerInfo("x", torch.optim.SGD, "x", inputs={"data_loader"})


def test_out_of_tree_module_registers_through_env(tmp_path, monkeypatch):
    (tmp_path / "my_opt.py").write_text(
        "import torch\nfrom suite.registry import OptimizerInfo, register\n"
        "class MySGD(torch.optim.SGD):\n    pass\n"
        "register(OptimizerInfo('my-sgd', MySGD, 'test plug-in', invalid=({'lr': -2.0},)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SUITE_OPTIMIZER_MODULES", "my_opt")
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "OPTIMIZERS", list(registry.OPTIMIZERS))
    assert registry.names()[-1] == "my-sgd"
    assert isinstance(build("my-sgd", tiny_model()), torch.optim.SGD)


def test_every_entry_says_whether_it_is_the_papers_and_the_documented_table_agrees():
    """The paper's code has SSAM-F explicit in every pattern, SSAM-F implicit for structured and N:M,
    SSAM-D unstructured explicit; every other SSAM variant is this suite's extension."""
    import re
    from pathlib import Path

    paper = {"ssam-f-unstructured-explicit", "ssam-f-structured-explicit", "ssam-f-nm-explicit",
             "ssam-f-structured-implicit", "ssam-f-nm-implicit", "ssam-d-unstructured-explicit"}
    builtin = [i for i in registry.OPTIMIZERS if i.origin]
    for info in builtin:
        if info.name.startswith("ssam-"):
            assert (info.origin == "paper") == (info.name in paper), info.name
    readme = (Path(__file__).resolve().parent.parent / "docs" / "optimizers.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)`[^|]*\|[^|]*\|[^|]*\|[^|]*\| ([^|]+) \|$", readme, re.M))
    assert rows == {i.name: i.provenance for i in builtin}


def test_list_shows_the_origin_of_each_entry(capsys):
    from suite.cli import main

    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "as in the paper's code" in lines["ssam-f-nm-implicit"]
    assert "extension of this suite" in lines["ssam-d-nm-implicit"]
    assert "reference baseline" in lines["sgd"]


def test_the_readme_counts_the_registered_optimizers():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    said = int(re.search(r"every registered optimizer \((\d+)\)", readme).group(1))
    builtin = [i for i in registry.OPTIMIZERS if i.cls.__module__.split(".")[0] in ("torch", "baselines", "ssam")]
    assert said == len(builtin)  # out-of-tree entries (SUITE_OPTIMIZER_MODULES) are not the README's


def test_every_entry_names_its_family_from_the_declared_set():
    """The figures' colours, markers and panels follow the family (and the claims may group by it): every
    built-in entry states one, SSAM's by its mask, the published methods in the field; an unknown one is refused."""
    builtin = [i for i in registry.OPTIMIZERS if i.cls.__module__.split(".")[0] in ("torch", "baselines", "ssam")]
    declared = set(registry.FAMILIES) - {""}
    assert {i.family for i in builtin} == declared  # each declared family is used, none other
    for info in builtin:
        mask = info.changes.get("mask")
        if mask is not None:
            assert info.family == {"fisher": "SSAM-F", "dynamic": "SSAM-D"}[mask], info.name
        if info.origin == "published":
            assert info.family == "field", info.name
    assert registry.get("sgd").family == "SGD" and registry.get("sam-quarter-ascent").family == "SAM"
    assert registry.get("esam").family == "ESAM"
    with pytest.raises(ValueError, match="family must be one of"):
        registry.OptimizerInfo("x", torch.optim.SGD, "x", family="extension")
