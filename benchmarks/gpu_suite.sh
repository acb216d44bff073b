#!/usr/bin/env bash
# The trainer's step at full SD 1.5 / SDXL shapes on one GPU, one JSON line per case; see
# benchmarks/gpu_suite.py. Bounded to 8 minutes in all (the Python side also skips cases that would
# start after its budget). --smoke: the same cases on the CPU with the tiny model (for the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec timeout --signal=TERM --kill-after=10 470 "$PYTHON" benchmarks/gpu_suite.py "$@"
