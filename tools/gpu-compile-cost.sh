#!/usr/bin/env bash
# What one lent GPU call runs for issue 25: the cost of a step of the efficient-SAM field and the suite's own
# cheap variants on the paper's ResNet-18 CIFAR-10 step in bf16 (profile gpu-paper-short), three times:
# eager, then torch.compile with CUDA graphs ("reduce-overhead"), then compiled without them ("default") —
# `suite cost` each, optimizers interleaved, 3 repeats. Eager first: it is the table the others are read
# against. The question: a step of ResNet-18 at batch 128 is bound by kernel launches in eager mode, so
# fewer FLOPs save no time there; do they once the launches are gone?
#
#   tools/gpu-compile-cost.sh CIFAR10_JPEG_TARBALL OUT_DIR
#
# OUT_DIR gets bf16-<mode>/ (cost.md, cost.csv, cost-repeats.csv and the profile file) and log.txt.
# MODES (default "none reduce-overhead default"), OPTIMIZERS (a TOML list's items), REPEATS (3), PYTHON
# (python3) and DEADLINE_S (420: no mode starts after it; a running one is stopped 90 s after it) may be set.
# ESAM is left out of the compiled modes: it trains a random set of tensors each step, which dynamo
# recompiles for every step until the suite's recompile limit stops the whole table (docs/harness.md).
set -euo pipefail
tarball=$1 out=$2
py=${PYTHON:-python3} deadline=${DEADLINE_S:-420} repeats=${REPEATS:-3}
modes=${MODES:-none reduce-overhead default}
optimizers=${OPTIMIZERS:-'"sgd", "sam", "esam", "asam", "gsam", "looksam", "msam", "rst", "periodic-sam",
  "sam-two-fifths-ascent", "sam-two-fifths-ascent-every-2", "ssam-f-unstructured-explicit",
  "ssam-d-unstructured-explicit", "ssam-f-nm-implicit"'}
start=$SECONDS
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 SUITE_CACHE_DIR=$work/cache
exec > >(tee -a "$out/log.txt") 2>&1

tar -xzf "$tarball" -C "$work"
echo "data unpacked in $((SECONDS - start)) s"
"$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'

for mode in $modes; do
  if (( SECONDS - start > deadline )); then echo "deadline: $mode not started"; continue; fi
  dir="$out/bf16-$mode"
  mkdir -p "$dir"
  these=$optimizers
  [[ $mode == none ]] || these=${optimizers/'"esam", '/}
  printf 'extends = "gpu-paper-short"\noptimizers = [%s]\n[train]\ncompile = "%s"\n' "$these" "$mode" \
    > "$dir/compile-$mode.toml"
  # recompilations and skipped CUDA graphs are said in the log: a compiled table is read with them
  logs=$([[ $mode == none ]] && echo "" || echo "recompiles,graph_breaks,perf_hints")
  TORCH_LOGS=$logs timeout $((deadline + 90 - (SECONDS - start))) "$py" -m suite cost --profile "$dir/compile-$mode.toml" \
    --data-dir "$work" --out "$dir" --repeats "$repeats" --no-progress || echo "cost $mode failed (exit $?)"
  echo "cost $mode done at $((SECONDS - start)) s"
done
