#!/usr/bin/env bash
# Training and prediction cost of ZePT vs plain nnU-Net on one GPU (mixed precision, as nnU-Net
# trains on CUDA).  Writes benchmarks/results/training_cost_cuda.md (and .json).  Budget: < 8 min.
#   bash benchmarks/gpu_cost.sh [extra arguments of training_cost.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
exec timeout 480 "$PY" benchmarks/training_cost.py --device cuda "$@"
