#!/usr/bin/env bash
# What one lent GPU call runs for the gpu-fast profile (docs/gpu-fast.md): the sweep, seed-major (the sweep's own
# order: every optimizer of seed 0, then of seed 1, ...), stopped at a deadline and resumed by the next call; then,
# once every run is recorded, the cost table in the same setting.
#
#   OUT=/path tools/gpu-fast.sh            # on the GPU machine $OUT is set; run from anywhere in the checkout
#
# Resumable: the work (the unpacked data, the decoded-image cache, records, checkpoints) stays in GPU_FAST_WORK
# (default build/gpu-fast, ignored by git, kept on a warm machine between calls); a second call skips the recorded
# runs and resumes the interrupted one from its last epoch. On a fresh machine, RESUME_FROM=<an earlier call's
# $OUT/state.tar.gz> restores records and checkpoints first (leases are not carried: they name the old machine).
# Every call leaves under $OUT: log.txt, state.tar.gz (records and checkpoints), runs.tar.gz (the records alone),
# summary.md and summary.csv (suite report on the records so far) and, once the sweep is complete, cost/ (the cost
# table, made once per profile).
#
# Settings: GPU_FAST_PROFILE (default gpu-fast; gpu-fast-smoke rehearses on a CPU), DEADLINE_S (default 540: the
# seconds after the start at which the sweep is stopped), COST_S (default 90: kept for the report and, when the
# sweep is done, the cost table), SEEDS (default: the profile's), CIFAR10_TARBALL (default
# ../shared/data/cifar10-jpeg.tar.gz, relative to the checkout), PYTHON (default python3), GPU_FAST_WORK, RESUME_FROM.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the directory the results go to}
profile=${GPU_FAST_PROFILE:-gpu-fast} py=${PYTHON:-python3}
deadline=${DEADLINE_S:-540} cost_s=${COST_S:-90}
tarball=${CIFAR10_TARBALL:-../shared/data/cifar10-jpeg.tar.gz}
work=${GPU_FAST_WORK:-build/gpu-fast}
start=$SECONDS
mkdir -p "$out" "$work/results"
work=$(cd "$work" && pwd)
cost_dir=$work/cost-$(basename "$profile" .toml)  # one cost table per profile
export PYTHONUNBUFFERED=1 SUITE_CACHE_DIR=$work/cache
exec > >(tee -a "$out/log.txt") 2>&1

if [[ ! -d $work/data/train ]]; then
  mkdir -p "$work/data" && tar -xzf "$tarball" -C "$work/data"
  echo "data unpacked in $((SECONDS - start)) s"
fi
if [[ -n ${RESUME_FROM:-} && ! -d $work/results/runs ]]; then
  tar -xzf "$RESUME_FROM" -C "$work/results" && echo "restored records and checkpoints from $RESUME_FROM"
fi
if command -v nvidia-smi > /dev/null; then nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader; fi
"$py" -c 'import sys, torch, torchvision; print("python", sys.version.split()[0], "torch", torch.__version__,
  "torchvision", torchvision.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
git log -1 --format='commit %H %s' 2> /dev/null || true

left=$((deadline - cost_s - (SECONDS - start)))
seeds=()
if [[ -n ${SEEDS:-} ]]; then seeds=(--seeds "$SEEDS"); fi
status=0
if (( left > 0 )); then
  # SIGINT first: the interrupted run keeps its last epoch's checkpoint; the next call resumes it
  timeout --signal=INT --kill-after=20 "$left" "$py" -m suite run --profile "$profile" "${seeds[@]}" \
    --data-dir "$work/data" --results-dir "$work/results" --no-progress --no-report || status=$?
  echo "sweep exited with $status at $((SECONDS - start)) s"
  if (( status == 124 )); then echo "stopped at the deadline: call again to go on"; fi
else
  echo "no time left for the sweep"
fi

"$py" -m suite status --profile "$profile" "${seeds[@]}" --results-dir "$work/results" || true
"$py" -m suite report --results-dir "$work/results" > /dev/null && cp "$work/results"/summary.{md,csv} "$out"/ || true
(cd "$work/results" && tar -czf "$out/state.tar.gz" --exclude=leases runs $(ls -d checkpoints 2> /dev/null))
tar -czf "$out/runs.tar.gz" -C "$work/results" runs
if (( status == 0 )) && [[ ! -f $cost_dir/cost.md ]]; then
  if (( SECONDS - start < deadline )); then
    timeout --signal=INT "$((deadline - (SECONDS - start) + 30))" "$py" -m suite cost --profile "$profile" \
      --data-dir "$work/data" --out "$cost_dir" --repeats 3 --no-progress || echo "cost table not finished"
  fi
fi
if [[ -d $cost_dir ]]; then rm -rf "$out/cost" && cp -r "$cost_dir" "$out/cost"; fi
echo "done at $((SECONDS - start)) s"
