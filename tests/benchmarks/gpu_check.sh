#!/usr/bin/env bash
# The prepared GPU check (issue 10, item 5): correctness and speed figures of bench on this machine's device.
#   tests/benchmarks/gpu_check.sh OUT_DIR [--tiny] [--device auto|cpu|cuda] [--data-dir DIR] [--steps a,b,...] [--budget S]
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md; exit status 1 if a step failed. Under 10 minutes on one
# H100 (every step is capped); --tiny runs the same steps on tiny models in well under a minute (CI).
# Nothing is downloaded. What each step measures and its tolerances: tests/benchmarks/gpu_check.py.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,6p' "$0"
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$repo/.venv/bin/activate" ]; then
  . "$repo/.venv/bin/activate"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
if [ -z "${BENCH_DATA_DIR:-}" ]; then
  for d in "$repo/../shared/data" "$repo/shared/data"; do
    if [ -d "$d/stereoset" ]; then export BENCH_DATA_DIR="$(cd "$d" && pwd)"; break; fi
  done
fi
mkdir -p "$1"
cd "$repo"
exec python "$here/gpu_check.py" "$@"
