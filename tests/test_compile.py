"""``[train] compile``: the timed steps' forward through ``torch.compile``, everything else as before."""

from __future__ import annotations

import pytest
import torch
from helpers import run_config

from suite import build, harness, probe
from suite.config import TrainConfig
from suite.data import synthetic_dataset

TRAIN = dict(dataset="synthetic", model="tiny-nobn", epochs=2, batch_size=16, train_subset=64, test_subset=32,
             eval_batch_size=32, device="cpu")


def test_compile_is_part_of_a_run_only_where_it_changes_it():
    plain = run_config("sgd", TrainConfig())
    assert "compile" not in plain.as_dict()["train"]
    assert run_config("sgd", TrainConfig(compile="none")).run_id == plain.run_id  # the published records' ids
    compiled = run_config("sgd", TrainConfig(compile="default"))
    assert compiled.run_id != plain.run_id and compiled.as_dict()["train"]["compile"] == "default"


def test_an_unknown_compile_mode_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown compile 'max-autotune'; known: none, default, reduce-overhead"):
        TrainConfig(compile="max-autotune")


def test_settings_compile_cannot_take_are_refused_in_one_line():
    with pytest.raises(ValueError, match="'reduce-overhead' cannot take accumulate > 1"):
        TrainConfig(compile="reduce-overhead", accumulate=2)
    TrainConfig(compile="default", accumulate=2)  # no CUDA graph: the gradients accumulate as eagerly
    with pytest.raises(ValueError, match="compile 'default' cannot run under torchrun yet"):
        TrainConfig(compile="default", replicas=2, batch_size=8)


def test_passes_that_must_run_eagerly_see_through_the_compiled_wrapper():
    """SSAM-F's vectorised Fisher takes ``unwrapped(closure.model)``: the module itself, not the compiled one."""
    from baselines.core.closure import _replicated, unwrapped

    model = torch.nn.Linear(2, 2)
    assert unwrapped(torch.compile(model)) is model and not _replicated(torch.compile(model))


def test_a_compiled_model_fails_loudly_rather_than_fall_back_to_eager():
    """Past dynamo's recompile limit it would run the model eagerly and say nothing; compiled() makes that an
    error, at a limit a bounded number of variants (sub-batch shapes, frozen BatchNorm, masked backward) fits."""
    build.compiled(torch.nn.Linear(2, 2), TrainConfig(compile="default"))
    assert torch._dynamo.config.fail_on_recompile_limit_hit
    assert torch._dynamo.config.recompile_limit >= build.RECOMPILE_LIMIT


def test_only_the_timed_steps_call_the_compiled_model():
    """The FLOP-counted steps, the optimizer's construction and evaluation see the module itself; the probe's
    timed closures and the run's timed steps the compiled one, which shares its parameters."""
    dataset = synthetic_dataset(n_train=64, n_test=32, size=8)
    config = run_config("sam", TrainConfig(**TRAIN, compile="default"))
    trial = probe.probe_setup(config, dataset)
    assert next(trial.closures(1)).model is trial.model
    fast = next(trial.closures(1, timed=True)).model
    assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule) and fast._orig_mod is trial.model
    state = harness.RunState(harness.context(config, dataset), {"steps": 4})
    assert state.fast._orig_mod is state.replica and state.untimed >= 1
    eager = harness.RunState(harness.context(run_config("sam", TrainConfig(**TRAIN)), dataset), {"steps": 4})
    assert eager.fast is eager.replica


@pytest.mark.e2e  # compiles a (tiny) model on the CPU: tens of seconds
def test_a_compiled_run_trains_as_the_eager_one_and_counts_the_same_flops():
    """The same steps on the same batches, compiled: the same FLOPs (counted on the eager steps) and the same
    curve up to the rounding of fused kernels."""
    dataset = synthetic_dataset(n_train=64, n_test=32, size=8)
    from torch._dynamo.utils import counters

    eager = harness.run(run_config("sam", TrainConfig(**TRAIN)), dataset, progress=False)
    torch._dynamo.reset()
    counters.clear()
    fast = harness.run(run_config("sam", TrainConfig(**TRAIN, compile="default")), dataset, progress=False)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did capture the timed steps' forward
    assert fast["config"]["train"]["compile"] == "default"
    assert fast["metrics"]["flops_per_step"] == eager["metrics"]["flops_per_step"]
    assert fast["metrics"]["forward_passes_per_step"] == eager["metrics"]["forward_passes_per_step"] == 2
    for a, b in zip(eager["epochs"], fast["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)
    # its first compiled steps (compilation) are left out of the clock, as the FLOP-counted ones are
    assert fast["metrics"]["timed_steps"] == eager["metrics"]["timed_steps"] - build.COMPILE_STEPS > 0
    assert fast["metrics"]["time_per_step_s"] > 0
