"""What each of several processes runs in tests/test_distributed.py: torch.multiprocessing starts them, they
join one gloo process group through a rendezvous file, train with the harness exactly as `torchrun -m suite
run` does (``harness.train`` with the process's ``World``), and each saves what the test compares."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from suite import harness
from suite.data import synthetic_dataset
from suite.distributed import World

THREADS = 2  # this machine's cores; the tests' processes use one each


def dataset():
    return synthetic_dataset(n_train=64, n_test=16, size=8)


def dataset_for(config):
    """The generated set, or for a streamed config the ImageFolder the test names in SUITE_TEST_FOLDER."""
    if not config.train.streaming:
        return dataset()
    from suite.data import load_dataset

    return load_dataset(config.train.dataset, Path(os.environ["SUITE_TEST_FOLDER"]), False,
                        image_size=config.train.image_size or None, streaming=True)


def final_state(state) -> dict:
    """The trained parameters and buffers, and the masks where the optimizer has them."""
    masks = state.optimizer.masks() if hasattr(state.optimizer, "masks") else []
    return {"params": [p.detach().clone() for p in state.model.parameters()],
            "buffers": [b.detach().clone() for b in state.model.buffers()],
            "masks": [m.detach().clone() for m in masks]}


def train_each(world: World, configs: list, out: Path, kill_at_epoch: int | None = None) -> None:
    """Train every config; with ``kill_at_epoch``, every process stops as that epoch starts (a kill after
    the previous epoch's checkpoint), leaving the checkpoint behind."""
    results = {}
    if kill_at_epoch is not None:
        real = harness.train_epoch

        def train_epoch(ctx, state, epoch, *args):
            if epoch == kill_at_epoch:
                raise KeyboardInterrupt
            return real(ctx, state, epoch, *args)

        harness.train_epoch = train_epoch
    for config in configs:
        ckpt = out / f"{config.run_id}.ckpt"
        try:
            ctx, state = harness.fit(config, dataset_for(config), progress=False, checkpoint=ckpt, world=world)
        except KeyboardInterrupt:
            continue
        results[config.optimizer] = {**final_state(state), "record": harness.make_record(ctx, state)}
    torch.save(results, out / f"rank{world.rank}.pt")


def overflow_in_one_replica(world: World, configs: list, out: Path, kill_at_epoch: int | None) -> None:
    """fp16's scaler (torch's CPU scaler here) under DDP: rank 0's ascent pass overflows at the second step,
    rank 1's does not. Both must skip that step (an ascent is per replica, so only an agreed flag can tell
    rank 1), and neither may wait for the other's missing all-reduce."""
    from helpers import toy_batch
    from test_accumulate import NoBatchNormNet
    from test_scaler import Overflow

    from baselines.core import ModelClosure
    from suite import registry
    from suite.harness import optimizer_step

    torch.manual_seed(0)
    net = NoBatchNormNet()
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = registry.get("sam").build(net.parameters(), {}, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    seen = []
    for step in range(3):
        x, y = toy_batch(n=16, seed=step)
        mine = slice(world.rank * 8, world.rank * 8 + 8)
        loss_fn = Overflow(at={1} if step == 1 and world.rank == 0 else set())
        optimizer_step(opt, ModelClosure(model, x[mine], y[mine], loss_fn=loss_fn, scaler=scaler), scaler)
        seen.append({"params": [p.detach().clone() for p in net.parameters()], "scale": scaler.get_scale()})
    torch.save(seen, out / f"rank{world.rank}.pt")


def time_steps(world: World, configs: list, out: Path, kill_at_epoch: int | None) -> None:
    """Median seconds of a global step of 128 examples (ResNet-8, channels_last, as the harness steps it):
    ``configs`` = [optimizer name, timed steps]; each process steps its slice; rank 0 saves the median."""
    import time

    from baselines.core import ModelClosure
    from suite import registry
    from suite.models import build_model

    name, steps = configs
    torch.manual_seed(0)
    net = build_model("resnet8", 10).to(memory_format=torch.channels_last)
    model = torch.nn.parallel.DistributedDataParallel(net) if world.distributed else net
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    mine = slice(world.rank * 128 // world.size, (world.rank + 1) * 128 // world.size)
    opt = registry.get(name).build(net.parameters(), {"model": net}, lr=0.05, momentum=0.9, weight_decay=5e-4)
    closure, seconds = ModelClosure(model, x[mine], y[mine]), []
    for i in range(steps + 2):  # two untimed warm-up steps
        t0 = time.perf_counter()
        opt.step(closure)
        if i >= 2:
            seconds.append(time.perf_counter() - t0)
    torch.save(sorted(seconds)[len(seconds) // 2], out / f"rank{world.rank}.pt")


def sweep_and_say(world: World, configs: list, out: Path, kill_at_epoch: int | None) -> None:
    """``Sweep.run`` of ``configs`` into ``out/results``, as `suite run` under torchrun runs it: what each rank
    ended with (an error's type and message, or the exit status)."""
    from suite.sweep import Sweep

    try:
        outcome = f"exit {Sweep(out / 'results', progress=False, world=world).run(configs, dataset())}"
    except Exception as exc:  # noqa: BLE001 - what ended the rank is the result
        outcome = f"{type(exc).__name__}: {exc}"
    torch.save(outcome, out / f"rank{world.rank}.pt")


def worker(rank: int, size: int, rendezvous: str, task: str, configs: list, out: str,
           kill_at_epoch: int | None) -> None:
    from datetime import timedelta

    torch.set_num_threads(max(1, THREADS // size))  # the machine's cores shared out among the processes
    os.environ.pop("WORLD_SIZE", None)  # the group is joined here, not from torchrun's variables
    # a collective that one process never joins fails the test in a minute instead of hanging it
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=size,
                            timeout=timedelta(seconds=60))
    try:
        globals()[task](World(rank, size), configs, Path(out), kill_at_epoch)
    finally:
        dist.destroy_process_group()


def spawn(configs: list, out: Path, size: int = 2, kill_at_epoch: int | None = None,
          task: str = "train_each") -> list:
    """Run ``task`` (``train_each``: the ``configs``) in ``size`` processes; each process's results, by rank."""
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    rendezvous = out / "rendezvous"
    rendezvous.unlink(missing_ok=True)
    mp.spawn(worker, args=(size, str(rendezvous), task, configs, str(out), kill_at_epoch), nprocs=size, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(size)]
