"""Measurement shared by every optimizer: step timer, FLOPs over whole steps, peak memory, provenance."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Wall-clock of optimizer steps. Steps marked untimed (warm-up, FLOP counting) are left out.

    Over the timed steps it also measures what the run could see of its machine, so that a time taken while
    another program used the cores is known as such (``contended``): the process's CPU seconds (all its
    threads: ``time.process_time``) and, on Linux, the seconds its threads waited in the run queue for a
    core (``/proc/self/task/*/schedstat``), read outside the timed span; the 1-minute load average when
    the run's clock was made (``load_start``)."""

    def __init__(self, device: torch.device, deferred: bool = False) -> None:
        self.device = device
        self.timed_seconds = 0.0
        self.timed_steps = 0
        self.all_seconds = 0.0
        self.cpu_seconds: float | None = 0.0  # None: not measured over every timed step (an older checkpoint)
        self.wait_seconds: float | None = 0.0 if run_queue_waits() is not None else None
        self.load_start = load_average()
        # deferred on CUDA: each step's span is a pair of CUDA events, read in ``settle`` (once an epoch), so no
        # step waits for the device; elsewhere (and not deferred) each step synchronises and is read at once
        self.events = deferred and device.type == "cuda"
        self._pending: list[tuple[Any, Any, bool]] = []  # (start event, end event, timed) not yet read
        self._since = 0.0  # seconds of the steps stopped since the last ``settle`` (read at once)

    def start(self) -> None:
        self._waits = run_queue_waits() if self.wait_seconds is not None else None
        if self.events:
            self._event0 = torch.cuda.Event(enable_timing=True)
            self._event0.record()
        else:
            sync(self.device)
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self, timed: bool) -> float:
        """The step's seconds; with CUDA events 0.0 here, its time counted by the next ``settle``."""
        if self.events:
            event1 = torch.cuda.Event(enable_timing=True)
            event1.record()
            self._pending.append((self._event0, event1, timed))
            self._host(time.process_time() - self._cpu0, timed)
            return 0.0
        sync(self.device)
        dt = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        self._count(dt, timed)
        self._host(cpu, timed)
        self._since += dt
        return dt

    def settle(self) -> float:
        """The seconds of the steps stopped since the last call, all timed or not; with CUDA events the one wait
        for the device (the last event), then each pair's elapsed time, in step order."""
        if self._pending:
            self._pending[-1][1].synchronize()
            for event0, event1, timed in self._pending:
                dt = event0.elapsed_time(event1) / 1000
                self._count(dt, timed)
                self._since += dt
            self._pending = []
        seconds, self._since = self._since, 0.0
        return seconds

    def _count(self, dt: float, timed: bool) -> None:
        self.all_seconds += dt
        if timed:
            self.timed_seconds += dt
            self.timed_steps += 1

    def _host(self, cpu: float, timed: bool) -> None:
        """The process's CPU seconds and its threads' run-queue wait over a timed step's host side (with CUDA
        events: the host's span of the step, from start to stop, which does not wait for the device)."""
        if not timed:
            return
        if self.cpu_seconds is not None:
            self.cpu_seconds += cpu
        if self.wait_seconds is not None and self._waits is not None:
            after = run_queue_waits() or {}
            # threads alive at both reads (a thread that ended in between takes its wait with it)
            self.wait_seconds += sum(max(after[t] - w, 0.0) for t, w in self._waits.items() if t in after)

    @property
    def per_step(self) -> float | None:
        return self.timed_seconds / self.timed_steps if self.timed_steps else None

    def samples_per_s(self, batch_size: int) -> float | None:
        return batch_size * self.timed_steps / self.timed_seconds if self.timed_steps else None

    @property
    def cpu_share(self) -> float | None:
        """The process's CPU seconds over the timed steps per wall second and thread it may use (torch's
        threads, at most the usable cores): near 1 it had its cores; it is lower when another program took
        them, and also when the threads had too little parallel work to stay busy (a small model)."""
        if not self.timed_steps or self.cpu_seconds is None or self.timed_seconds <= 0:
            return None
        return self.cpu_seconds / (self.timed_seconds * min(torch.get_num_threads(), usable_cores()))

    @property
    def wait_share(self) -> float | None:
        """Of the time the process's threads were ready to run in the timed steps, the share they waited for a
        core (run-queue wait / (wait + CPU)): about 0 with the cores to itself, whatever its parallel
        efficiency; None where the kernel does not say (not Linux)."""
        if self.wait_seconds is None or self.cpu_seconds is None or self.wait_seconds + self.cpu_seconds <= 0:
            return None
        return self.wait_seconds / (self.wait_seconds + self.cpu_seconds)

    def state_dict(self) -> dict[str, Any]:
        self.settle()  # a saved clock has read every step
        return {"timed_seconds": self.timed_seconds, "timed_steps": self.timed_steps, "all_seconds": self.all_seconds,
                "cpu_seconds": self.cpu_seconds, "wait_seconds": self.wait_seconds, "load_start": self.load_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.timed_seconds, self.timed_steps, self.all_seconds = (state[k] for k in
                                                                  ("timed_seconds", "timed_steps", "all_seconds"))
        # a checkpoint written before these were measured: unknown for the whole run, not low
        self.cpu_seconds, self.wait_seconds = state.get("cpu_seconds"), state.get("wait_seconds")
        self.load_start = state.get("load_start")


# When a run's time figures count as taken under contention (``contended``): its threads waited for a core
# for at least this share of the time they were ready to run (where the kernel says: Linux) ...
CONTENDED_WAIT_SHARE = 0.10
# ... else, on a CPU device, its CPU share fell below this, or the load average at its start or end
# exceeded the usable cores by this factor
CONTENDED_CPU_SHARE = 0.8
CONTENDED_LOAD_PER_CORE = 1.25


def contended(clock: StepClock, load_end: float | None) -> bool | None:
    """Whether the run's time figures were taken under contention; None where nothing could tell (no timed
    step). The run-queue wait is the direct measure and, where it exists, the only one: the CPU share also
    falls when a small model leaves threads idle, and a container's load average can be its host's."""
    if clock.wait_share is not None:
        return clock.wait_share >= CONTENDED_WAIT_SHARE
    signs = []
    if clock.device.type == "cpu" and clock.cpu_share is not None:  # on a GPU the CPU mostly waits for it
        signs.append(clock.cpu_share < CONTENDED_CPU_SHARE)
    loads = [x for x in (clock.load_start, load_end) if x is not None]
    if loads:
        signs.append(max(loads) > CONTENDED_LOAD_PER_CORE * usable_cores())
    return any(signs) if signs else None


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform says, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable tasks, on Linux also those in uninterruptible sleep); None where the
    platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_queue_waits() -> dict[str, float] | None:
    """Per thread of this process, the seconds it has waited in a run queue for a core (Linux schedstat,
    second field, in ns); None where it cannot be read."""
    waits = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                waits[tid] = int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return waits or None


class FlopMeter:
    """Counts FLOPs (forward and backward, a multiply-add = 2) over whole optimizer steps."""

    def __init__(self, replicas: int = 1) -> None:
        self.flops = 0
        self.steps = 0
        self.replicas = replicas  # processes that each run the counted work on their slice of the batch

    def counting(self, active: bool) -> AbstractContextManager[Any]:
        if not active:
            return nullcontext()
        self.steps += 1
        return _Counting(self)

    @property
    def per_step(self) -> float | None:
        return self.flops * self.replicas / self.steps if self.steps else None  # the global batch's

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.flops, self.steps = state["flops"], state["steps"]


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None) -> int:
    """FLOPs of ``aten.convolution_backward``: each requested half (input- and weight-gradient) costs
    what the forward costs. torch 2.14's own formula counts a grouped convolution's weight-gradient as
    if it were dense, ``groups`` times too much; vmap turns per-example gradients (SSAM-F's Fisher)
    into grouped convolutions, so that error made the vectorised Fisher look 6x dearer than the loop."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), bool(transposed))
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


class _Counting:
    def __init__(self, meter: FlopMeter) -> None:
        self.meter, self.mode = meter, flop_counter()

    def __enter__(self) -> None:
        self.mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)
        self.meter.flops += self.mode.get_total_flops()


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak on GPU, the process's peak RSS on CPU.

    On Linux the RSS high-water mark is reset per run (``/proc/self/clear_refs``), so a sweep's runs
    in one process are measured separately; elsewhere it is the process's lifetime peak. Written here
    rather than with psutil: psutil reports the current RSS on Linux, not its peak (``peak_wset`` is
    Windows only), and cannot reset the high-water mark; sampling the current RSS would miss peaks.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "process_lifetime_peak_rss"

    def read_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment(device: torch.device, read: tuple[Path, ...] = ()) -> dict[str, Any]:
    """What made a record: versions, machine, git commit and what the run read that the commit does not hold
    (``git_state``; ``read``: the profile files the run was configured from)."""
    import torchvision

    commit, dirty = git_state(read=read)

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        # the instruction set torch's CPU kernels use (AVX2, AVX512, ...): a VM's processor name ("AMD EPYC")
        # does not tell two generations apart, and their kernels round differently
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": commit,
        "git_dirty_files": dirty,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


CODE = ("suite", "baselines", "ssam", "tools")  # where the python code a run imports lives, in the checkout
OUTPUTS = "results"  # the sweep's own outputs: changing them changes no run


def git_commit() -> str | None:
    """HEAD of the checkout the suite runs from, ``-dirty`` if its code is not that commit's (``git_state``)."""
    return git_state()[0]


def git_state(root: Path | None = None, read: tuple[Path, ...] | list[Path] = ()) -> tuple[str | None, dict[str, str]]:
    """(commit, what is not that commit's) for a run that read the files ``read`` (its profile's TOML files)
    from the checkout at ``root`` (None: the package's, else the working directory's). The commit is HEAD,
    ``-dirty`` when the second is not empty; that maps each path (relative to the checkout; a file outside
    it by its full path) to why:

    - a tracked file changed since HEAD (staged or not; ``git describe --dirty``'s rule), but under
      ``results/``, the sweep's own outputs;
    - an untracked ``.py`` file under the code's folders (``CODE``): code a run may import that no commit
      holds; git-ignored files are left out (caches), and so is any other untracked file (notes, data,
      outputs), which a run does not read;
    - a file of ``read`` that HEAD does not hold (untracked or git-ignored);
    - a file of ``read`` outside the checkout: no commit holds it, so the record cannot vouch for it from git.
      It is marked rather than trusted to its hash (the record's ``profile.sha256``): a published record
      must be reproducible from its commit alone, and a hash says what a profile was, not where to find it.

    Read once per process for each ``read``: the code a sweep runs is the code it imported, so a checkout
    that moves on mid-sweep must not relabel its later runs (it did: cpu-noise runs of a sweep started at
    da3f78c say 3875c93)."""
    files = tuple(Path(p).resolve() for p in read)
    commit, dirty = _git_state(root, files)
    return commit, dict(dirty)


@functools.cache
def _git_state(root: Path | None, read: tuple[Path, ...]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    for where in [root] if root is not None else [Path(__file__).resolve().parent.parent, Path.cwd()]:
        try:
            top, head = _git(where, "rev-parse", "--show-toplevel"), _git(where, "rev-parse", "HEAD")
            if top is None or head is None:
                continue
            dirty = _not_committed(Path(top.strip()).resolve(), read)
        except OSError:  # no git
            break
        return head.strip() + ("-dirty" if dirty else ""), tuple(sorted(dirty.items()))
    return None, ()


def commit_holds(where: Path, commit: str, path: str) -> bool | None:
    """Whether ``commit`` holds ``path`` (relative to the top of the checkout at ``where``); None where that
    cannot be told: no git, ``where`` in no checkout, or the commit unknown there."""
    if shutil.which("git") is None or _git(where, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return None
    return _git(where, "cat-file", "-e", f"{commit}:{path}") is not None


def _git(where: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def _not_committed(top: Path, read: tuple[Path, ...]) -> dict[str, str]:
    """``git_state``'s second half, in the checkout whose top folder is ``top``."""
    inside = {p.relative_to(top).as_posix() for p in read if p.is_relative_to(top)}
    dirty = {str(p): "outside the checkout" for p in read if not p.is_relative_to(top)}
    entries = iter((_git(top, "status", "--porcelain=v1", "-z", "--untracked-files=no") or "").split("\0"))
    for entry in entries:
        if not entry:
            continue
        state, path = entry[:2], entry[3:]
        if "R" in state or "C" in state:
            next(entries, None)  # a rename's or copy's source follows it
        if path in inside or not path.startswith(f"{OUTPUTS}/"):
            dirty[path] = "deleted" if "D" in state else "added, not committed" if "A" in state else "modified"
    for path in (_git(top, "ls-files", "-z", "--others", "--exclude-standard", "--", *CODE) or "").split("\0"):
        if path.endswith(".py"):
            dirty[path] = "untracked"
    if inside:
        held = set((_git(top, "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *sorted(inside)) or "").split("\0"))
        for path in sorted(inside - held):
            dirty.setdefault(path, "untracked")
    return dirty
