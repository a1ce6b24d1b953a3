#!/usr/bin/env bash
# The prepared GPU check: the package benchmarks/gpu_check/ (see its __init__.py) runs the preflight, then every
# step in its own process under its own time limit (steps/__init__.py; their sum under the device tool's 10
# minutes a command; about 7 minutes of work on one H200, where the ddp step is skipped). Each step's figures
# land in $OUT/gpu_check.json as soon as it ends (OUT: the device tool's folder, else
# benchmarks/results/gpu_check); the log is $OUT/gpu_check.log and the summary table, printed last,
# $OUT/gpu_check.md. This script installs the carried wheels and hands over.
#
#   bash benchmarks/gpu_wheels.sh               # here first: the wheels the device image lacks, into .whl/
#   bash benchmarks/gpu_check.sh                # there (carry .whl), on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry          # every step on the CPU with tiny sizes (tests/test_gpu_check.py)
#
# Where the tree travels without its .git (the device tool), give the commit it was made from:
# NAS_THESEUS_COMMIT=$(git rev-parse --short=12 HEAD) bash benchmarks/gpu_check.sh
#
# Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 when the preflight failed.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=()
if [ "${1:-}" = "--dry" ]; then dry=(--dry); fi  # code paths on a small CPU, not speed: no step limits
export PYTHONUNBUFFERED=1 NAS_THESEUS_PROGRESS=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if [ ${#dry[@]} -eq 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec "$py" benchmarks/gpu_check "${dry[@]}"
