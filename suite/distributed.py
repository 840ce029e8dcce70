"""Several processes under ``torchrun``: the world a run is part of, and the few collectives the harness uses.

``torchrun --nproc_per_node=N -m suite run ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment; ``World.from_env`` joins
them into one process group (NCCL where the run's device is CUDA, gloo on the CPU) through torch's own
``init_process_group`` — nothing here is home-made transport. Without those variables (a plain
``python -m suite``) the world is one process and nothing below communicates.

What a run does with it (``suite.harness``, docs/harness.md "Several processes"): the model is wrapped in
``DistributedDataParallel``; every rank draws the same global batch with the run's generators and
keeps its slice; the descent pass is all-reduced, the ascent pass of every two-pass optimizer is not
(the closure's ``sync=False``: per-replica perturbations, as SAM defines m-sharpness); SSAM's masks are
broadcast from rank 0 whenever they change; rank 0 alone writes records, checkpoints, weights, leases
and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from baselines.core import several_processes


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def leave(self) -> None:
        """Leave the process group this world joined (nothing in one process)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    @staticmethod
    def from_env(device: str = "auto") -> World:
        """The world torchrun started this process in, its process group joined; one process without it."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return World()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if not dist.is_initialized():
            if cuda:
                torch.cuda.set_device(local)
            # rank 0 alone decodes a data set into the cache and measures sharpness while the others wait at
            # their next collective: an hour, not torch's default minutes, before a wait counts as a hang
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=1))
        return World(rank, size, local)


ONE_PROCESS = World()  # a plain `python -m suite`


def active() -> bool:
    """Whether this process is one of several (a process group of more than one is joined)."""
    return several_processes()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (as is, in one process)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_of(value: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor every rank holds (each replica's loss -> the global batch's)."""
    if not active():
        return value
    total = value.detach().float().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def barrier() -> None:
    if active():
        dist.barrier()
