"""What a step of each optimizer costs, without training: ``python -m suite cost``.

For every optimizer of a profile, on a throwaway model built as its runs build theirs (seed 0, the first
batches of the training subset: ``probe.probe_setup``):

- FLOPs per step, counted over whole steps by the harness's counter and amortised over the optimizer's
  periodic window (SSAM's mask refresh and Fisher pass included), as in every record;
- the FLOPs a sparse kernel would need (theory, ``sparse_kernel_flops``): the measured count less the
  first-pass work that the mask makes useless and that no kernel here skips;
- a method whose steps mix the base optimizer's and SAM's in a share no period repeats (``registry.StepMix``:
  late-phase SAM, RST, AE-SAM): each kind of step priced on its own (FLOPs and seconds), weighted by the share
  of SAM steps expected over a run of the profile's epochs, which the table states with how it is known
  (late-phase SAM: its schedule's exact share; RST: p; AE-SAM: declared, as its gradients decide);
- time per step: the harness's probe (one step discarded, the median of the next five, the periodic work
  amortised), repeated ``repeats`` times with the optimizers interleaved and their order rotated every
  repeat, so that a drift of a shared machine hits all alike. Ratios to the references (the profile's; SGD
  and SAM unless it names others) are taken within a repeat, then summarised by their median and range
  over the repeats.

Nothing is trained and no accuracy is measured; ``cost.csv`` (one row per optimizer), ``cost-repeats.csv``
(one row per optimizer and repeat), ``cost.md`` and ``cost-step.json`` (the step it timed: ``step``) are
written into the output directory.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from suite import build, probe, registry, store, sweep
from suite.config import REFERENCES, ConfigError, RunConfig
from suite.data import Dataset
from suite.measure import environment
from suite.store import atomic_write


def layer_forward_flops(model: nn.Module, closure: Any) -> dict[nn.Module, float]:
    """FLOPs of one forward of each Conv2d/Linear on the closure's batch, per example. A layer's
    input-gradient and weight-gradient each cost what its forward costs (``measure.conv_backward_flops``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(closure.inputs)
    counts = counter.get_flop_counts()
    root, batch = type(model).__name__, closure.inputs.shape[0]
    out = {}
    for name, module in model.named_modules():
        if type(module) in (nn.Conv2d, nn.Linear):
            out[module] = sum(counts.get(f"{root}.{name}", {}).values()) / batch
    return out


def sparse_kernel_flops(optimizer: torch.optim.Optimizer, model: nn.Module, closure: Any,
                        measured: float) -> float:
    """The measured FLOPs per step less what the mask makes useless in the first pass, layer by layer
    (Conv2d/Linear weights; ``d`` = the share of the layer's weight the mask keeps, ``n`` = examples of
    the first pass):

    - implicit forms: the input-gradient runs through ``W ⊙ M``: a sparse kernel does ``d`` of it
      (2:4 semi-structured kernels do this for N:M on some GPUs; the lowest layer has no input-gradient);
    - a masked ε normalised over what is perturbed (``normalise="masked"``): only the kept entries of the
      weight-gradient are read: ``d`` of it (a layer with ``d = 0`` is skipped already: measured);
    - the paper's norm ``||g||`` reads every weight's gradient, and SAM, ESAM and SGD have no mask: no
      saving. ESAM's skipped tensors and the ascent sub-batch are in the measured count already.
    """
    masks = getattr(optimizer, "masks", None)
    if masks is None or not hasattr(optimizer, "settings"):
        return measured
    h = optimizer.settings()
    implicit = h["form"] in ("implicit", "implicit-masked")
    sparse_dw = h["normalise"] == "masked" and h["form"] != "implicit"
    if not (implicit or sparse_dw):
        return measured
    batch = int(closure.targets.shape[0])
    n = max(1, min(batch, math.ceil(round(h["ascent_fraction"] * batch, 9))))
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the order masks() lists them
    mask_of = {id(p): m for p, m in zip(params, masks())}
    saved, lowest = 0.0, True
    for layer, flops in layer_forward_flops(model, closure).items():
        mask = mask_of.get(id(layer.weight))
        first = lowest
        lowest = False
        if mask is None:
            continue
        kept = float(mask.float().mean())
        if implicit and not first:
            saved += (1 - kept) * flops * n
        if sparse_dw and kept > 0:
            saved += (1 - kept) * flops * n
    return measured - saved


def flops(config: RunConfig, dataset: Dataset) -> tuple[float, float]:
    """(measured FLOPs per step, a sparse kernel's) for one optimizer; a mixed one's weighted by kind (no mask)."""
    if registry.get(config.optimizer).step_mix is not None:
        with torch.random.fork_rng(devices=[]):
            weighted = probe.fresh_step_cost(config, dataset, "flops")
        return weighted, weighted
    trial = probe.probe_setup(config, dataset)
    measured = probe.probe_cost(trial, "flops")  # the masks are then the ones the probe ended with
    return measured, sparse_kernel_flops(trial.optimizer, trial.model, next(trial.closures(1)), measured)


def sam_share(config: RunConfig, dataset: Dataset) -> tuple[float | None, str]:
    """The share of SAM steps a mixed method's row is weighted by, and how it is known, in words (for the
    table: ``registry.SHARE_BASES``, and the run length it is for); (None, "") for the others."""
    mix = registry.get(config.optimizer).step_mix
    if mix is None:
        return None, ""
    steps = probe.planned_steps(config, dataset)
    return probe.expected_share(config, dataset, steps), f"{registry.SHARE_BASES[mix.basis]} (T = {steps} steps)"


def measure(runs: list[RunConfig], dataset: Dataset, repeats: int, progress: bool = True) -> pd.DataFrame:
    """One row per optimizer and repeat: FLOPs (the same every repeat) and seconds per step; for a mixed method
    the share of SAM steps both are weighted by (``sam_step_share``) and its basis."""
    counted, shares = {}, {}
    bar = tqdm(total=len(runs) * (repeats + 1), desc="cost", unit="probe", disable=None if progress else True)
    for config in runs:
        bar.set_postfix_str(f"FLOPs of {config.optimizer}", refresh=False)
        counted[config.optimizer] = flops(config, dataset)
        shares[config.optimizer] = sam_share(config, dataset)
        bar.update()
    rows = []
    for r in range(repeats):
        shift = r % len(runs)
        for config in runs[shift:] + runs[:shift]:  # a rotated order every repeat
            bar.set_postfix_str(f"repeat {r + 1}: {config.optimizer}", refresh=False)
            with torch.random.fork_rng(devices=[]):
                seconds = probe.fresh_step_cost(config, dataset, "time")
            measured, sparse = counted[config.optimizer]
            share, basis = shares[config.optimizer]
            rows.append({"optimizer": config.optimizer, "repeat": r, "time_per_step_s": seconds,
                         "flops_per_step": measured, "sparse_kernel_flops_per_step": sparse,
                         "sam_step_share": share, "sam_share_basis": basis})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame, order: list[str], references: tuple[str, ...] = REFERENCES) -> pd.DataFrame:
    """Per optimizer: FLOPs and their ratios, the median time per step and its range over repeats, and
    the median (range) of the within-repeat time ratios to each reference present (the profile's)."""
    out = []
    per_repeat = rows.pivot(index="repeat", columns="optimizer", values="time_per_step_s")
    flops = rows.groupby("optimizer")[["flops_per_step", "sparse_kernel_flops_per_step"]].first()
    for name in order:
        t = per_repeat[name]
        row: dict[str, Any] = {
            "optimizer": name, "origin": registry.get(name).provenance,
            "gflops_per_step": flops.loc[name, "flops_per_step"] / 1e9,
            "sparse_kernel_gflops_per_step": flops.loc[name, "sparse_kernel_flops_per_step"] / 1e9,
            "ms_per_step_median": 1000 * t.median(), "ms_per_step_min": 1000 * t.min(),
            "ms_per_step_max": 1000 * t.max(), "repeats": int(t.count()),
        }
        for ref in references:
            if ref not in per_repeat:
                continue
            ratio = t / per_repeat[ref]
            row[f"flops_x_{ref}"] = flops.loc[name, "flops_per_step"] / flops.loc[ref, "flops_per_step"]
            row[f"sparse_kernel_flops_x_{ref}"] = (flops.loc[name, "sparse_kernel_flops_per_step"]
                                                  / flops.loc[ref, "flops_per_step"])
            row[f"time_x_{ref}_median"] = ratio.median()
            row[f"time_x_{ref}_min"] = ratio.min()
            row[f"time_x_{ref}_max"] = ratio.max()
        row["saves_here"] = saving(row, references)
        if "sam_step_share" in rows:  # tables of repeats written before mixed steps were priced have none
            mixed = rows[rows["optimizer"] == name].iloc[0]
            row["sam_step_share"] = mixed["sam_step_share"]
            row["sam_share_basis"] = mixed["sam_share_basis"] if pd.notna(mixed["sam_step_share"]) else ""
        out.append(row)
    return pd.DataFrame(out)


def saving(row: dict[str, Any], references: tuple[str, ...] = REFERENCES) -> str:
    """What an optimizer saves against the last reference (SAM by default: the method the sparse variants
    mean to cheapen) on the machine measured, in words: FLOPs and time where it saves FLOPs; else whether
    only a sparse kernel (none runs here) could, or nothing could."""
    against = references[-1]
    if row["optimizer"] in references or f"flops_x_{against}" not in row:
        return "–"
    flops, kernel, name = row[f"flops_x_{against}"], row[f"sparse_kernel_flops_x_{against}"], against.upper()
    if flops < 0.995:
        time = 1 - row[f"time_x_{against}_median"]
        return f"{100 * (1 - flops):.0f}% of {name}'s FLOPs, " + (f"{100 * time:.0f}% of its time" if time >= 0.005
                                                                  else "none of its time")
    if kernel < flops - 0.005:
        return (f"nothing here (a dense gradient times a mask); a sparse kernel would skip "
                f"{100 * (flops - kernel):.0f}% of {name}'s FLOPs")
    return "nothing: the first pass needs every weight's gradient"


def mode(header: dict[str, Any]) -> str:
    """How the steps ran where it is not the default: ", bf16, torch.compile (reduce-overhead)"."""
    precision, compile_mode = header.get("precision", "fp32"), header.get("compile", "none")
    return ((f", {precision}" if precision != "fp32" else "")
            + (f", torch.compile ({compile_mode})" if compile_mode != "none" else ""))


def markdown(summary: pd.DataFrame, header: dict[str, Any], references: tuple[str, ...] = REFERENCES) -> str:
    """The table a reader looks at: FLOPs (measured, and a sparse kernel's in theory) and time, as ratios to
    each reference (the sparse kernel's to the first); what each saves against the last (``saving``)."""
    def ratio(row: pd.Series, key: str) -> str:
        return f"{row[key]:.2f}" if key in row and pd.notna(row[key]) else "–"

    def share(row: pd.Series) -> str:
        value = row.get("sam_step_share")
        if value is None or pd.isna(value):
            return "–"
        return f"{value:.3f}: {row['sam_share_basis']}"

    def spread(row: pd.Series, ref: str) -> str:
        key = f"time_x_{ref}"
        if f"{key}_median" not in row:
            return "–"
        return f"{row[key + '_median']:.2f} ({row[key + '_min']:.2f}–{row[key + '_max']:.2f})"

    lines = [
        f"# Cost per step: profile `{header['profile']}`", "",
        f"{header['model']}, batch {header['batch_size']}{mode(header)}, {header['device']} ({header['machine']}, "
        f"{header['threads']} thread{'' if header['threads'] == 1 else 's'}), torch {header['torch']}, "
        f"commit `{header['commit']}`; "
        f"{header['repeats']} repeats, optimizers interleaved. Made with `{header['command']}`.", "",
        "FLOPs are counted over whole steps (forward and backward, a multiply-add = 2), the periodic mask "
        "refresh amortised. \"Sparse kernel\" is theory: the FLOPs left if a kernel skipped the first-pass "
        "work the mask makes useless (`suite/cost.py`, `sparse_kernel_flops`); no such kernel runs here. "
        "Time ratios are taken within each repeat: median (lowest–highest). A method whose steps mix SGD's and "
        "SAM's in a share no period repeats is priced by kind: its one-pass step and its SAM step, each measured "
        "alone, weighted by the share of SAM steps in its last column and how that share is known.", "",
        "| optimizer | origin | GFLOP/step | " + "".join(f"FLOPs × {ref.upper()} | " for ref in references)
        + f"sparse kernel × {references[0].upper()} | ms/step | "
        + "".join(f"time × {ref.upper()} | " for ref in references) + f"saves against {references[-1].upper()} here | "
        "SAM steps |",
        "|---|---|---:|" + "---:|" * (2 * len(references) + 2) + "---|---|",
    ]
    for _, row in summary.iterrows():
        lines.append(
            f"| `{row['optimizer']}` | {row['origin']} | {row['gflops_per_step']:.3f} | "
            + "".join(f"{ratio(row, f'flops_x_{ref}')} | " for ref in references)
            + f"{ratio(row, f'sparse_kernel_flops_x_{references[0]}')} | {row['ms_per_step_median']:.0f} | "
            + "".join(f"{spread(row, ref)} | " for ref in references) + f"{row.get('saves_here', '–')} | "
            + f"{share(row)} |")
    return "\n".join(lines) + "\n"


STEP_FILE = "cost-step.json"  # beside cost-repeats.csv: the step its times are of (``step``)
# what the step of a table and of a training run is, as ``step`` and ``suite.frontier.run_step`` say it
STEP = ("model", "batch_size", "precision", "compile", "machine", "threads", "torch", "commit")
STEP_WORDS = {"model": "model", "batch_size": "batch size", "precision": "precision", "compile": "compile mode",
              "machine": "processor", "threads": "threads", "torch": "torch version", "commit": "commit"}


def write(out: Path, rows: pd.DataFrame, summary: pd.DataFrame, header: dict[str, Any],
          references: tuple[str, ...] = REFERENCES) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "cost.csv", out / "cost-repeats.csv", out / "cost.md", out / STEP_FILE]
    atomic_write(paths[0], lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(paths[1], lambda tmp: rows.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(paths[2], lambda tmp: Path(tmp).write_text(markdown(summary, header, references)))
    atomic_write(paths[3], lambda tmp: Path(tmp).write_text(json.dumps(header, indent=1, sort_keys=True) + "\n"))
    return paths


# the header line ``markdown`` writes: "resnet8, batch 128, cpu (AMD EPYC, 2 threads), torch 2.14.1, commit `...`;"
_HEADER = re.compile(r"^(?P<model>[^,\n]+), batch (?P<batch_size>\d+)(?P<mode>(?:, [^,\n]+?)*), (?P<device>[\w:]+) "
                     r"\((?P<machine>[^\n]+), (?P<threads>\d+) threads?\), torch (?P<torch>\S+), "
                     r"commit `(?P<commit>[^`]+)`; (?P<repeats>\d+) repeats", re.M)
_PROFILE = re.compile(r"^# Cost per step: profile `(?P<profile>[^`]+)`", re.M)


def step(folder: Path) -> dict[str, Any] | None:
    """The step a cost table in ``folder`` timed (``STEP``'s keys, and its profile, device and repeats), or
    None where it cannot be told; a key None: not stated. ``cost-step.json`` says it, written by ``write`` from
    the header ``cost.md`` prints. Tables made before that file existed (the published ``results/cost``, commit
    08f4d61) say it only in ``cost.md``'s header line — ``cost.csv`` has no column for the machine, threads or
    commit — so theirs is read back from that line, which ``markdown`` wrote from the same header: what the
    command wrote, rather than a file added by hand that it never wrote. That line names the precision and
    compile mode only where they are not the defaults, and only since 70e8908 (a bf16 table of 4712b96 does
    not say bf16), so a line that names neither leaves both unstated, not guessed fp32. A ``cost.md`` whose
    header does not parse (edited, or another format) is None: unknown."""
    folder = Path(folder)
    if (folder / STEP_FILE).is_file():
        return json.loads((folder / STEP_FILE).read_text())
    md = folder / "cost.md"
    said = _HEADER.search(md.read_text()) if md.is_file() else None
    if said is None:
        return None
    mode = [m.strip() for m in said["mode"].split(", ") if m.strip()]
    compiled = [m.removeprefix("torch.compile (").removesuffix(")") for m in mode if m.startswith("torch.compile")]
    profile = _PROFILE.search(md.read_text())
    return {"profile": profile["profile"] if profile else None, "model": said["model"],
            "batch_size": int(said["batch_size"]),
            "precision": next((m for m in mode if not m.startswith("torch.compile")), "fp32") if mode else None,
            "compile": (compiled or ["none"])[0] if mode else None,
            "device": said["device"], "machine": said["machine"], "threads": int(said["threads"]),
            "torch": said["torch"], "commit": said["commit"], "repeats": int(said["repeats"])}


def measure_profile(profile, runs: list[RunConfig], repeats: int, out: Path, command: str, data_dir: Path | None = None,
                    download: bool | None = None, progress: bool = True, must_be_clean: bool = False) -> list[Path]:
    """The cost command: one probe per optimizer of ``runs`` (the first seed and budget), ``repeats``
    interleaved repeats, written into ``out`` with a header that says where and how it was measured.
    ``must_be_clean``: refuse a tree that is not a clean commit (publishing into results/)."""
    store.check_writable(out, "--out")
    first = (runs[0].seed, runs[0].train.budget)
    runs = [r for r in runs if (r.seed, r.train.budget) == first]  # one probe per optimizer
    source = runs[0].source  # the profile's files: the commit must hold them too
    env = environment(build.resolve_device(runs[0].train.device), source.files if source is not None else ())
    if must_be_clean and not store.clean_commit({"env": env}):
        raise ConfigError(f"--out {out}: the tree is not a clean commit ({store.provenance(env)}); commit first, or "
                          "pass --allow-uncommitted")
    dataset = sweep.load_data(profile, runs[0].train, data_dir, download)
    sweep.check_constructs(runs, dataset)
    print(f"profile {profile.name}: the cost of {len(runs)} optimizers, {repeats} repeats -> {out}", file=sys.stderr)
    probe.warm_up(runs[0], dataset)
    rows = measure(runs, dataset, repeats, progress)
    references = runs[0].references  # the profile's, resolved to registered names
    summary = summarise(rows, [r.optimizer for r in runs], references)
    settings = runs[0].train
    header = {"profile": profile.name, "model": settings.model, "batch_size": settings.batch_size,
              "precision": settings.precision, "compile": settings.compile,
              "device": env["device"], "machine": env.get("gpu") or env["processor"], "threads": env["torch_threads"],
              "torch": env["torch"], "commit": env["git_commit"], "repeats": repeats, "command": command}
    return write(out, rows, summary, header, references)
