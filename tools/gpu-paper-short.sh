#!/usr/bin/env bash
# What one lent GPU session runs (issue 14, item 7), in the order that keeps the most if time runs out:
#   1. the gpu-paper-short sweep (paper-cifar10 in bf16, 8 epochs, SGD, SAM, SSAM-F, SSAM-D, ESAM at 50%,
#      sharpness of each final model), one optimizer per invocation, the records packed after each;
#   2. `suite cost` in that setting, bf16 then fp32 (interleaved repeats: the time ratios to quote), for the
#      five and for two sub-batch-ascent variants (the only ones that save time on the CPU), if at least
#      COST_MIN_S seconds before DEADLINE_S are left.
# On an NVIDIA H100 (its image's torch 2.11) the five runs took 45-134 s each (8.1 min in all, data decode
# and sharpness included) and each cost table 42 s: more than one 10-minute device call. OPTIMIZERS (the
# runs, default all five) and COST (1 or 0) choose a part, to run the rest in a second call.
#
#   tools/gpu-paper-short.sh CIFAR10_JPEG_TARBALL OUT_DIR
#
# OUT_DIR gets runs.tar.gz (the records; weights stay behind), cost-bf16/, cost-fp32/ and log.txt.
# PROFILE (default gpu-paper-short; a .toml path for a CPU rehearsal), OPTIMIZERS, COST, PYTHON (default
# python3), DEADLINE_S (default 480: the seconds after which nothing new is started) and COST_MIN_S (default
# 60) may be set.
set -euo pipefail
tarball=$1 out=$2
profile=${PROFILE:-gpu-paper-short} py=${PYTHON:-python3}
deadline=${DEADLINE_S:-480} cost_min=${COST_MIN_S:-60}
optimizers=${OPTIMIZERS:-sgd sam ssam-f-unstructured-explicit ssam-d-unstructured-explicit esam} cost=${COST:-1}
cost_optimizers='"sgd", "sam", "esam", "ssam-f-unstructured-explicit", "ssam-d-unstructured-explicit",
  "sam-two-fifths-ascent", "ssam-d-unstructured-explicit-two-fifths-ascent"'
start=$SECONDS
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 SUITE_CACHE_DIR=$work/cache
exec > >(tee -a "$out/log.txt") 2>&1

tar -xzf "$tarball" -C "$work"
echo "data unpacked in $((SECONDS - start)) s"
"$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'

for opt in $optimizers; do
  if (( SECONDS - start > deadline )); then echo "deadline: $opt not started"; continue; fi
  "$py" -m suite run --profile "$profile" --optimizer "$opt" --data-dir "$work" --results-dir "$work/results" \
    --no-report --no-progress || echo "run $opt failed"
  tar -czf "$out/runs.tar.gz" -C "$work/results" runs
  echo "$opt done at $((SECONDS - start)) s"
done

for precision in bf16 fp32; do
  if [[ $cost != 1 ]]; then continue; fi
  if (( SECONDS - start > deadline - cost_min )); then echo "deadline: cost $precision not started"; continue; fi
  printf 'extends = "%s"\noptimizers = [%s]\n[train]\nprecision = "%s"\n' "$profile" "$cost_optimizers" "$precision" \
    > "$work/cost-$precision.toml"
  "$py" -m suite cost --profile "$work/cost-$precision.toml" --data-dir "$work" --out "$out/cost-$precision" \
    --repeats 3 --no-progress || echo "cost $precision failed"
  echo "cost $precision done at $((SECONDS - start)) s"
done
