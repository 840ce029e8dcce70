"""Several processes (torchrun's DistributedDataParallel) on the CPU with gloo: every optimizer runs and its
replicas agree; SGD takes the steps one process takes; SAM perturbs per replica, checked against an
independent computation; a killed run resumes bit for bit; the command writes one record, from rank 0."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from ddp_worker import dataset, spawn
from helpers import run_config

from suite import build, harness, registry
from suite.config import ConfigError, TrainConfig
from suite.data import epoch_batches
from suite.models import build_model

TRAIN = TrainConfig(dataset="synthetic", model="resnet8", epochs=1, batch_size=16, train_subset=48, test_subset=16,
                    eval_batch_size=16, device="cpu", flop_steps=1, replicas=2)  # 3 steps of 8 examples a replica
NOBN = dataclasses.replace(TRAIN, model="tiny-nobn", epochs=2, crop_padding=0, flip=False)  # 6 steps


def config(name: str, train: TrainConfig = TRAIN, **hp):
    if registry.get(name).changes.get("mask") == "fisher":
        hp.setdefault("fisher_samples", 4)  # each replica scores its own 8 examples
    return run_config(name, train, **hp)


def test_every_optimizer_runs_in_two_processes_and_the_replicas_agree(tmp_path):
    """Weights and masks identical on both replicas after three steps, for every registered optimizer;
    each replica trained on its own half of every batch, so only the all-reduce and the mask broadcast
    can make them agree."""
    names = registry.names()
    ranks = spawn([config(name) for name in names], tmp_path)
    assert set(ranks[0]) == set(ranks[1]) == set(names)
    for name in names:
        a, b = ranks[0][name], ranks[1][name]
        assert all(torch.equal(x, y) for x, y in zip(a["params"], b["params"])), name
        assert len(a["masks"]) == len(b["masks"]) and all(torch.equal(x, y) for x, y in zip(a["masks"], b["masks"]))
        record = a["record"]
        assert record["metrics"]["steps"] == 3 and record["distributed"]["world_size"] == 2
        assert record["distributed"]["per_replica_batch"] == 8 and record["config"]["train"]["replicas"] == 2
    assert any(ranks[0][n]["masks"] for n in names)  # the SSAM variants were among them


def one_process(name: str, train: TrainConfig, **hp) -> list[torch.Tensor]:
    single = dataclasses.replace(train, replicas=1)
    _, state = harness.fit(config(name, single, **hp), dataset(), progress=False)
    return [p.detach().clone() for p in state.model.parameters()]


def test_sgd_in_two_processes_takes_the_steps_of_one_process(tmp_path):
    """Without BatchNorm the mean of two half-batch gradients is the whole batch's: the same run, up to
    floating point."""
    two = spawn([config("sgd", NOBN)], tmp_path)[0]["sgd"]["params"]
    one = one_process("sgd", NOBN)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(two, one))


def sam_by_hand(train: TrainConfig, rho: float, replicas: int) -> list[torch.Tensor]:
    """SAM with per-replica ascent, written out: each replica's e from its own half of the batch, the
    descent gradients at each replica's w + e averaged, then torch's SGD update (momentum, weight decay)."""
    data = dataset()
    split, _ = build.subsets(data, train)
    torch.manual_seed(0)
    model = build_model(train.model, data.num_classes, in_channels=data.channels)
    names = [n for n, _ in model.named_parameters()]
    w = [p.detach().clone() for p in model.parameters()]
    order, aug = build.seeded_generator(0, 0), build.seeded_generator(0, 1)
    augment, steps_per_epoch = build.make_augment(train, data), len(split) // train.batch_size
    total, t, buf = steps_per_epoch * train.epochs, 0, None

    def grad(weights, x, y):
        weights = [v.requires_grad_(True) for v in weights]
        out = torch.func.functional_call(model, dict(zip(names, weights)), (x,))
        return torch.autograd.grad(F.cross_entropy(out, y), weights)

    for _ in range(train.epochs):
        for idx in epoch_batches(len(split), train.batch_size, order):
            x, y = augment(split.images[idx], aug), split.labels[idx]
            descents = []
            for xs, ys in zip(x.chunk(replicas), y.chunk(replicas)):
                g = grad([v.clone() for v in w], xs, ys)
                norm = torch.stack([gi.norm() for gi in g]).norm()
                descents.append(grad([v + rho * gi / (norm + 1e-12) for v, gi in zip(w, g)], xs, ys))
            d = [sum(parts) / replicas + train.weight_decay * v for v, parts in zip(w, zip(*descents))]
            buf = [di.clone() for di in d] if buf is None else [train.momentum * b + di for b, di in zip(buf, d)]
            lr = train.lr * 0.5 * (1 + math.cos(math.pi * t / total))
            w = [v - lr * b for v, b in zip(w, buf)]
            t += 1
    return w


def test_sam_in_two_processes_perturbs_per_replica(tmp_path):
    """Two processes: each replica ascends on its own half (no all-reduce in the first pass), as computed
    by hand; and that is not what one process does with the whole batch."""
    two = spawn([config("sam", NOBN, rho=0.5)], tmp_path)[0]["sam"]["params"]
    by_hand = sam_by_hand(NOBN, 0.5, replicas=2)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(two, by_hand))
    one = one_process("sam", NOBN, rho=0.5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(one, sam_by_hand(NOBN, 0.5, replicas=1)))
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(two, one))


def test_a_killed_two_process_run_resumes_bit_for_bit(tmp_path):
    names = ["sam", "ssam-d-unstructured-explicit", "ssam-f-nm-explicit"]
    train = dataclasses.replace(TRAIN, epochs=2)
    straight = spawn([config(n, train) for n in names], tmp_path / "straight")[0]
    killed = spawn([config(n, train) for n in names], tmp_path / "resumed", kill_at_epoch=2)[0]
    assert killed == {}  # every run stopped after its first epoch's checkpoint
    resumed = spawn([config(n, train) for n in names], tmp_path / "resumed")[0]
    for n in names:
        assert resumed[n]["record"]["resumed_after_epochs"] == [1]
        for key in ("params", "buffers", "masks"):
            assert all(torch.equal(a, b) for a, b in zip(straight[n][key], resumed[n][key])), (n, key)


def test_the_run_command_under_torchrun_writes_one_record_from_rank_0(tmp_path):
    profile = tmp_path / "two.toml"
    profile.write_text('description = "d"\nseeds = 1\noptimizers = ["sgd", "ssam-f-nm-explicit"]\n'
                       'budgets = ["epochs", "flops"]\n[hparams."ssam-f*"]\nfisher_samples = 4\n'
                       '[train]\ndataset = "synthetic"\nmodel = "resnet8"\nepochs = 1\nbatch_size = 16\n'
                       'train_subset = 48\ntest_subset = 16\neval_batch_size = 16\ndevice = "cpu"\n')
    results = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "suite", "run", "--profile",
           str(profile), "--results-dir", str(results), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("profile two: 4 runs") == 1  # rank 0 speaks, rank 1 does not
    records = [json.loads(p.read_text()) for p in sorted((results / "runs" / "two").glob("*.json"))]
    assert len(records) == 4 and (results / "summary.md").exists()
    assert not list((results / "runs" / "two").glob("*.ckpt")) and not list(results.rglob("*.lease"))
    for r in records:
        assert r["distributed"]["world_size"] == 2 and r["config"]["train"]["replicas"] == 2
    flops = {r["config"]["train"]["budget"]: r["metrics"] for r in records if r["config"]["optimizer"] == "sgd"}
    assert flops["flops"]["flops_per_step"] == flops["epochs"]["flops_per_step"]  # the global batch's FLOPs
    assert flops["flops"]["forward_samples_per_step"] == 16.0
    # the same command a second time finds every run recorded and runs nothing
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "4 already recorded, 0 to run" in again.stderr


def test_an_overflow_in_one_replicas_ascent_skips_the_step_on_every_replica(tmp_path):
    ranks = spawn([], tmp_path, task="overflow_in_one_replica")
    for r in ranks:
        assert [s["scale"] for s in r] == [2.0 ** 12, 2.0 ** 11, 2.0 ** 11]  # backed off once, on both
        assert all(torch.equal(a, b) for a, b in zip(r[0]["params"], r[1]["params"]))  # step 2 skipped
        assert not all(torch.equal(a, b) for a, b in zip(r[1]["params"], r[2]["params"]))  # and on it went
    assert all(torch.equal(a, b) for s0, s1 in zip(*ranks) for a, b in zip(s0["params"], s1["params"]))


def test_rank_0_unable_to_take_the_lease_is_the_same_one_line_error_on_every_rank(tmp_path):
    """Rank 0 alone takes a run's lease; where it cannot (here its folder is a file; a full disk alike), the
    other ranks, waiting to hear whether to run, end with rank 0's error instead of waiting for ever."""
    from suite.lease import lease_path

    run = config("sgd")
    folder = lease_path(tmp_path / "results", run.profile, run.run_id).parent
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    ranks = spawn([run], tmp_path, task="sweep_and_say")
    assert ranks[0] == ranks[1], ranks
    assert ranks[0].startswith("StoreError: could not take the lease ") and "\n" not in ranks[0], ranks[0]


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 15}, "batch_size 15 does not split evenly over 2 processes"),
    ({"accumulate": 16}, "accumulate 16 is more than each of 2 processes' 8 examples"),
    ({"budget": "time"}, "budget 'time' is priced by one process's probe"),
])
def test_what_several_processes_cannot_run_is_one_line(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TRAIN, **change)


def test_a_fisher_score_larger_than_the_batch_is_one_line_before_anything_runs(tmp_path, capsys):
    """Under torchrun the batch SSAM-F scores is each process's slice; here the same check in one process."""
    from helpers import refused_in_one_line

    profile = tmp_path / "p.toml"
    profile.write_text('description = "d"\noptimizers = ["ssam-f-nm-explicit"]\n[train]\ndataset = "synthetic"\n'
                       'batch_size = 8\ndevice = "cpu"\n')
    refused_in_one_line(capsys, ["run", "--profile", str(profile)],
                        "fisher_samples=16 scores more examples than the batch's 8", tmp_path / "out")
    from suite.config import ConfigError
    from suite.sweep import check_fisher_batch

    with pytest.raises(ConfigError, match="than each of 2 processes' 8; lower it or set fisher_data"):
        check_fisher_batch(config("sgd"), {"mask": "fisher", "fisher_data": "batch", "fisher_samples": 16})


def test_replicas_is_not_a_profile_setting(tmp_path, capsys):
    from helpers import refused_in_one_line

    profile = tmp_path / "p.toml"
    profile.write_text('description = "d"\n[train]\nreplicas = 2\n')
    refused_in_one_line(capsys, ["run", "--profile", str(profile)], "unknown", tmp_path / "out")


def test_a_run_planned_for_two_processes_refuses_to_run_in_one():
    with pytest.raises(ValueError, match="configured for 2 processes .* but runs in 1"):
        harness.fit(config("sgd"), dataset(), progress=False)


def test_one_process_records_are_unchanged_by_the_replicas_setting():
    single = dataclasses.replace(TRAIN, replicas=1)
    assert "replicas" not in run_config("sgd", single).as_dict()["train"]
    assert run_config("sgd", single).run_id != run_config("sgd", TRAIN).run_id
