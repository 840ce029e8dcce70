"""Gradient accumulation and bf16 autocast in the closure (issue 14): every registered optimizer, in both
passes, sees the whole batch's gradient whatever the number of micro-batches."""

from __future__ import annotations

import pytest
import torch
from helpers import shaped, toy_batch
from test_registry_contract import build
from torch import nn

from baselines.core import ModelClosure
from suite import registry

NAMES = registry.names()


class NoBatchNormNet(nn.Module):
    """The tests' TinyNet with GroupNorm (per example) in place of BatchNorm (per batch): a function of each
    example alone, so that splitting the batch changes nothing but the order of sums."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, bias=False)
        self.norm = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


def _train(name: str, accumulate: int, steps: int = 3, n: int = 16, **hparams) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = NoBatchNormNet()
    opt = build(name, model, **hparams)
    torch.manual_seed(1)  # the optimizers' own draws (SSAM-D's growth, ESAM's tensors): the same either way
    for i in range(steps):
        x, y = toy_batch(n=n, seed=i)
        opt.step(shaped(opt, model, x, y, accumulate=accumulate))
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", NAMES)
def test_four_micro_batches_train_as_one_batch_for_every_optimizer(name):
    one, four = _train(name, 1), _train(name, 4)
    for a, b in zip(one, four, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_esam_with_beta_and_gamma_one_and_an_uneven_split():
    # beta = gamma = 1: ESAM is SAM (every tensor, every example); 16 examples in 3 parts: 6, 5, 5
    one, three = _train("esam", 1, beta=1.0, gamma=1.0), _train("esam", 3, beta=1.0, gamma=1.0)
    for a, b in zip(one, three, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    sam = _train("sam", 1)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(one, sam))


def test_the_closure_returns_the_same_loss_gradient_and_per_sample_losses():
    x, y = toy_batch(n=10)
    results = []
    for k in (1, 3, 10, 20):  # 20 > 10 examples: as many parts as examples
        torch.manual_seed(0)
        model = NoBatchNormNet()
        closure = ModelClosure(model, x, y, accumulate=k)
        loss = closure()
        grads = [p.grad.clone() for p in model.parameters()]
        per = closure(per_sample=True, backward=False)
        sub = closure(subset=torch.tensor([1, 4, 7]))
        results.append((loss, grads, per, sub))
        assert closure.meter.forward_passes == 3 and closure.meter.backward_samples == 13  # one pass a call
    for loss, grads, per, sub in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(per, results[0][2])
        torch.testing.assert_close(sub, results[0][3])
        for a, b in zip(grads, results[0][1]):
            torch.testing.assert_close(a, b)


def test_batchnorm_normalises_each_micro_batch_by_its_own_statistics():
    from helpers import tiny_model

    x, y = toy_batch(n=16)
    model = tiny_model()
    one = ModelClosure(model, x, y)()
    ModelClosure(model, x, y, accumulate=4)()
    four = ModelClosure(tiny_model(), x, y, accumulate=4)()
    assert model.bn.num_batches_tracked.item() == 1 + 4  # running statistics move once per micro-batch
    assert not torch.allclose(one, four)  # not the same function: what the README says


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_accumulate_is_refused_naming_it(bad):
    x, y = toy_batch()
    with pytest.raises(ValueError, match="accumulate must be an integer >= 1"):
        ModelClosure(NoBatchNormNet(), x, y, accumulate=bad)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_steps_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = NoBatchNormNet()
    opt = build(name, model)
    x, y = toy_batch(n=16)
    closure = shaped(opt, model, x, y, autocast=torch.bfloat16)
    first = float(closure(backward=False))
    for _ in range(3):
        loss = opt.step(closure)
    assert loss.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(loss) and float(closure(backward=False)) < first
    fp32 = ModelClosure(model, x, y)(backward=False)
    assert abs(float(closure(backward=False)) - float(fp32)) < 0.05  # bf16 keeps ~3 significant digits


# ----- the profile settings: [train] accumulate and precision -------------------------------------------------
def test_the_settings_are_part_of_a_run_only_where_they_change_it():
    from helpers import run_config

    from suite.config import TrainConfig

    plain = run_config("sgd", TrainConfig())
    assert "accumulate" not in plain.as_dict()["train"] and "precision" not in plain.as_dict()["train"]
    # the run_ids of runs recorded before these settings existed: unchanged (the published records' ids)
    assert run_config("sgd", TrainConfig(accumulate=1, precision="fp32")).run_id == plain.run_id
    for changed in (TrainConfig(accumulate=2), TrainConfig(precision="bf16")):
        other = run_config("sgd", changed)
        assert other.run_id != plain.run_id and set(other.as_dict()["train"]) > set(plain.as_dict()["train"])


def test_a_sweep_in_bf16_with_micro_batches_records_them(tmp_path):
    import json

    from suite.cli import main

    profile = tmp_path / "tiny.toml"
    profile.write_text('seeds = 1\noptimizers = ["sgd", "ssam-f-nm-implicit", "esam"]\n[train]\ndataset = "synthetic"\n'
                       'model = "resnet8"\nepochs = 1\nbatch_size = 32\ntrain_subset = 64\ntest_subset = 50\n'
                       'accumulate = 4\nprecision = "bf16"\n')
    assert main(["run", "--profile", str(profile), "--results-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs" / "tiny").glob("*.json")]
    assert len(records) == 3
    for r in records:
        assert r["config"]["train"]["accumulate"] == 4 and r["config"]["train"]["precision"] == "bf16"
        assert r["metrics"]["status"] == "finished" and 0 <= r["metrics"]["test_acc"] <= 1


@pytest.mark.parametrize("train, message", [
    ("accumulate = 0", "accumulate must be an integer >= 1, got 0"),
    ("accumulate = 64", "accumulate must be at most batch_size (32)"),
    ('precision = "fp8"', "unknown precision 'fp8'; known: fp32, bf16, fp16"),
    ('precision = "fp16"\ndevice = "cpu"', "precision fp16 needs a CUDA device"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, train, message):
    from helpers import refused_in_one_line

    profile = tmp_path / "tiny.toml"
    profile.write_text(f'[train]\ndataset = "synthetic"\nmodel = "resnet8"\nbatch_size = 32\n{train}\n')
    refused_in_one_line(capsys, ["run", "--profile", str(profile), "--no-progress"], message, tmp_path / "out")
