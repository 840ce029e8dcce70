"""End to end on a slice of the real CIFAR-10 copy (ImageFolder JPEGs); .ci/run unpacks it and sets
SUITE_TEST_CIFAR. Skipped without it."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import machine_threads_env, squash

from suite.cli import main
from suite.data import load_dataset

pytestmark = pytest.mark.e2e


def test_the_copy_loads_whole_and_balanced(cifar_dir):
    ds = load_dataset("cifar10", cifar_dir)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (50_000, 10_000, 10)
    assert torch.bincount(ds.train.labels).tolist() == [5000] * 10
    assert ds.train.images.shape[1:] == (3, 32, 32)
    # a real photo set, not noise: channel means near the published CIFAR-10 statistics
    means = ds.train.images.sum(dim=(0, 2, 3), dtype=torch.int64) / (50_000 * 32 * 32 * 255)
    assert torch.allclose(means, torch.tensor(ds.mean), atol=0.03)


def test_smoke_profile_runs_every_optimizer_and_reports(cifar_dir, tmp_path):
    out = tmp_path / "results"
    assert main(["run", "--profile", "smoke", "--data-dir", str(cifar_dir), "--results-dir", str(out),
                 "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in (out / "runs" / "smoke").glob("*.json")]
    from suite import registry

    assert {r["config"]["optimizer"] for r in records} == set(registry.names())
    assert all(r["metrics"]["status"] == "finished" for r in records)
    assert all(r["data"]["source"] == str(cifar_dir.resolve()) for r in records)
    table = squash((out / "summary.md").read_text())
    assert "| sgd | 1 |" in table and "| sam | 1 |" in table


def test_sgd_learns_above_chance(cifar_dir, tmp_path):
    profile = tmp_path / "learn.toml"
    profile.write_text('optimizers = ["sgd"]\n[train]\nmodel = "resnet8"\nepochs = 3\nbatch_size = 64\n'
                       "train_subset = 2000\ntest_subset = 1000\nlr = 0.05\n")
    out = tmp_path / "r"
    assert main(["run", "--profile", str(profile), "--data-dir", str(cifar_dir), "--results-dir", str(out),
                 "--no-progress", "--no-report"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs" / "learn").glob("*.json")]
    assert record["metrics"]["test_acc"] > 0.25  # chance is 0.10


def test_published_runs_reproduce(cifar_dir):
    """tools/check_reproduction.py: seed 0 of five published cpu runs, both budgets, re-run through the
    command line; every metric and per-epoch value but the wall-clock ones equals the published record
    (bit for bit on the machine kind that made them; elsewhere counts exact, floats close)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "tools" / "check_reproduction.py"), "--data-dir",
                          str(cifar_dir)], capture_output=True, text=True, cwd=root, env=machine_threads_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "10 of 10 runs reproduce their published records" in out.stdout


def test_the_gpu_fast_smoke_profile_runs_on_the_copy_with_its_data_on_the_device(cifar_dir, tmp_path):
    """gpu-fast's network, schedule and device data path on 256 real images (the device here is the CPU)."""
    out = tmp_path / "r"
    assert main(["run", "--profile", "gpu-fast-smoke", "--optimizer", "sgd", "--data-dir", str(cifar_dir),
                 "--results-dir", str(out), "--no-progress", "--no-report"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs" / "gpu-fast-smoke").glob("*.json")]
    assert record["metrics"]["status"] == "finished" and record["data"]["train_size"] == 256
    assert record["config"]["train"]["device_data"] and record["config"]["train"]["model"] == "airbench94"
