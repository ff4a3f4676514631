#!/usr/bin/env bash
# GPU cost of ZePT against plain nnU-Net on one GPU, in under 8 minutes:
#   1. training step and prediction of every trainer with nnU-Net's mixed precision, their ratios to
#      plain nnU-Net, and each trainer's peak GPU memory (torch.cuda.max_memory_allocated)
#      -> benchmarks/results/training_cost_cuda.md (and .json)
#   2. the --gpu demo preset end to end -> <work>/demo/report/report.md
# Usage:  bash benchmarks/gpu_cost.sh [--work DIR]
#         bash benchmarks/gpu_cost.sh --cpu-smoke [--work DIR]   # the same steps shrunk to a short CPU
#                                                                # run (the test suite runs it, so it cannot rot)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
SMOKE=0
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --work) WORK="$2"; shift ;;
    *) echo "gpu_cost.sh: unknown argument $1 (use --cpu-smoke and/or --work DIR)" >&2; exit 2 ;;
  esac
  shift
done
WORK="${WORK:-$(mktemp -d -t zept_gpu_cost.XXXXXX)}"
mkdir -p "$WORK"
start=$(date +%s)

if [ "$SMOKE" = 1 ]; then
  timeout 900 "$PY" benchmarks/training_cost.py --device cpu --profile smoke --work "$WORK/cost" \
    --out "$WORK/training_cost_smoke.md"
  timeout 900 "$PY" -m nnunetv2_zept.cli demo --quick --no-reference --baseline --output "$WORK/demo"
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_cost.sh: torch sees no CUDA GPU; use --cpu-smoke to check the script on a CPU')"
  # the cost part gets up to 4 minutes, the demo the rest of the 8
  timeout 240 "$PY" benchmarks/training_cost.py --device cuda --skip scaling --work "$WORK/cost"
  left=$(( 480 - ($(date +%s) - start) ))
  timeout "$left" "$PY" -m nnunetv2_zept.cli demo --gpu --no-reference --output "$WORK/demo"
fi
echo "gpu_cost.sh: done in $(( $(date +%s) - start )) s; work folder $WORK"
