"""The gpu-fast profile's pieces on the CPU (docs/gpu-fast.md): the device data path gives the host path's batches,
airbench94's network steps with every registered optimizer, its schedule, the deferred step clock, and the
gpu-fast-smoke profile end to end."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers import run_config, shaped
from test_registry_contract import build

from suite import harness, registry
from suite.build import seeded_generator, warmup_linear
from suite.config import TrainConfig, load_profile
from suite.data import Augment, DeviceData, Split, epoch_batches, synthetic_dataset
from suite.measure import StepClock
from suite.models import FastNet, ShiftNorm, build_model


def _split(n: int = 96, side: int = 12) -> Split:
    gen = torch.Generator().manual_seed(5)
    return Split(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=gen), torch.arange(n) % 10)


@pytest.mark.parametrize("part", [slice(None), slice(8, 16)])
def test_the_device_path_gives_the_host_paths_batches_bit_for_bit(part):
    split = _split()
    augment = Augment((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), crop_padding=2, flip=True, cutout=4, cutout_p=0.5)
    host_order, host_aug = seeded_generator(3, 0), seeded_generator(3, 1)
    dev_order, dev_aug = seeded_generator(3, 0), seeded_generator(3, 1)
    on_device = DeviceData(split, augment, torch.device("cpu"))
    for _ in range(2):  # two epochs: the generators go on alike
        host_batches = epoch_batches(len(split), 32, host_order)
        host = [(augment(split.images[idx], host_aug)[part], split.labels[idx][part], idx[part])
                for idx in host_batches]
        device = list(on_device.epoch(epoch_batches(len(split), 32, dev_order), dev_aug, part))
        assert len(device) == len(host) == 3
        for (hx, hy, hi), (dx, dy, di) in zip(host, device):
            assert torch.equal(hx, dx) and torch.equal(hy, dy) and torch.equal(hi, di)
    assert torch.equal(host_aug.get_state(), dev_aug.get_state())


def test_a_run_with_device_data_is_the_host_runs_but_for_the_setting():
    dataset = synthetic_dataset(n_train=128, n_test=64)
    train = TrainConfig(dataset="synthetic", model="resnet8", epochs=2, batch_size=32, crop_padding=2, device="cpu",
                        eval_batch_size=64)
    records = [harness.run(run_config("sam", dataclasses.replace(train, device_data=on)), dataset, progress=False)
               for on in (False, True)]
    for key in ("train_loss", "test_loss", "test_acc"):
        assert [e[key] for e in records[0]["epochs"]] == [e[key] for e in records[1]["epochs"]]
    assert "device_data" not in records[0]["config"]["train"] and records[1]["config"]["train"]["device_data"]


def test_device_data_and_streaming_are_refused_together():
    with pytest.raises(ValueError, match="device_data"):
        TrainConfig(device_data=True, streaming=True)


@pytest.mark.parametrize("name", registry.names())
def test_airbench_network_steps_with_every_optimizer(name):
    torch.manual_seed(0)
    model = build_model("airbench94", 10)
    opt = build(name, model)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        loss = opt.step(shaped(opt, model, x, y))
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_airbench_network_shape_and_size():
    model = FastNet(10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # 2x2 stem of 24 filters with bias, groups 64/256/256 (two 3x3 convolutions each), 256x10 head, BN shifts
    convs = 24 * 3 * 4 + 24 + 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 256 * 256 + 256 * 256)
    assert sum(p.numel() for p in model.parameters()) == convs + 256 * 10 + 2 * (64 + 256 + 256)


def test_a_shift_stored_over_8_moves_64_times_as_far():
    norm = ShiftNorm(3, momentum=0.4, scale=8.0)
    x = torch.randn(4, 3, 2, 2)
    (norm(x) * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()  # d/d(shift as applied) = 4 * 2 * 2 * c
    with torch.no_grad():
        norm.shift -= 0.01 * norm.shift.grad
    assert torch.allclose(8.0 * norm.shift, -64 * 0.01 * 16 * torch.arange(3.0))


def test_the_warmup_linear_schedule_is_airbenchs():
    f = warmup_linear(100)
    assert f(0) == pytest.approx(0.2) and f(23) == pytest.approx(1.0) and f(100) == pytest.approx(0.07)
    assert f(11) == pytest.approx(0.2 + 0.8 * 11 / 23) and f(50) == pytest.approx(1 - 0.93 * 27 / 77)


def test_the_profile_says_airbenchs_sgd_in_the_suites_terms():
    profile = load_profile("gpu-fast")
    t = profile.train
    kilostep = 1 + 1 / 0.15  # airbench94's lr and weight decay are per 1024 examples of a summed loss
    assert t.lr == pytest.approx(11.5 / kilostep)
    assert t.weight_decay == pytest.approx(0.0153 / (1.5 * kilostep), rel=1e-5)  # written to 6 figures
    assert (t.model, t.batch_size, t.momentum, t.nesterov, t.epochs) == ("airbench94", 1024, 0.85, True, 10)
    assert (t.device_data, t.schedule, t.crop_padding, t.cutout) == (True, "warmup-linear", 2, 0)
    assert set(profile.optimizers) >= {"sgd", "sam", "esam", "ae-sam", "mesa", "saf"}


def test_the_deferred_clock_on_the_cpu_is_the_per_step_clock():
    clock = StepClock(torch.device("cpu"), deferred=True)
    assert not clock.events
    steps = []
    for timed in (False, True, True):
        clock.start()
        steps.append(clock.stop(timed=timed))
    assert clock.settle() == sum(steps, 0.0) and clock.settle() == 0.0
    assert clock.timed_steps == 2 and clock.all_seconds == sum(steps, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_the_deferred_clock_on_cuda_reads_its_events_once():
    clock = StepClock(torch.device("cuda"), deferred=True)
    a = torch.randn(512, 512, device="cuda")
    for _ in range(3):
        clock.start()
        a = a @ a / 512
        assert clock.stop(timed=True) == 0.0
    seconds = clock.settle()
    assert seconds > 0 and clock.timed_steps == 3 and math.isclose(clock.timed_seconds, seconds)


def test_the_smoke_profile_runs_end_to_end(tmp_path):
    from suite.cli import main

    out = tmp_path / "r"
    assert main(["run", "--profile", "gpu-fast-smoke", "--dataset", "synthetic", "--optimizer", "sgd",
                 "--results-dir", str(out), "--no-progress", "--no-report"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs" / "gpu-fast-smoke").glob("*.json")]
    assert record["metrics"]["status"] == "finished" and record["metrics"]["steps"] == 4
    train = record["config"]["train"]
    assert (train["model"], train["device_data"], train["schedule"]) == ("airbench94", True, "warmup-linear")
