#!/usr/bin/env bash
# SFT -> RM -> PPO on one CUDA GPU with a Qwen2-0.5B-shaped random-weight model (nothing downloaded):
# tokens/s, episodes/s and peak GPU memory into benchmarks/results/gpu_check.json. About 5 minutes on an H200.
#   benchmarks/gpu_check.sh            # the GPU check
#   benchmarks/gpu_check.sh --tiny     # a CPU smoke test of the same script (seconds)
# PYTHON=... picks the interpreter (default: .venv/bin/python if there is one, else python3); it needs
# instructrl's dependencies and, for the GPU check, a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ " $* " != *" --tiny "* ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
