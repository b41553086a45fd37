#!/usr/bin/env bash
# The GPU check on the GPU machine: install the carried wheels (gpu_wheels/, made here by scripts/gpu_wheels.sh)
# into /tmp/site, put it first on PYTHONPATH, then run scripts/gpu_check.py (every step, or those of --steps).
#   bash scripts/gpu_check.sh OUT [--steps 0,2,3] [--cap 2=200]
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G "gpu_wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site gpu_wheels/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no gpu_wheels/: run scripts/gpu_wheels.sh here first (mlxtend and huggingface_hub>=2 are missing there)" >&2
fi
export PYTHONUNBUFFERED=1
nvidia-smi || true
exec python3 scripts/gpu_check.py "$@"
