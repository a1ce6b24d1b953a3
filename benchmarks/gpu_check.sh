#!/usr/bin/env bash
# The prepared GPU check: every step of benchmarks/gpu_check.py (see its docstring), each in its own process
# under its own time limit, 8.5 minutes in all on one H100/H200 (less with one GPU: the ddp step is skipped). Each step's figures land in
# $OUT/gpu_check.json as soon as it ends (OUT: the device tool's folder, else benchmarks/results/gpu_check);
# the log is $OUT/gpu_check.log and the summary table, printed last, $OUT/gpu_check.md.
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
scale=1  # a dry run checks code paths on a small CPU, not speed: 3 times the limits
if [ "${1:-}" = "--dry" ]; then dry=(--dry); scale=3; fi
export PYTHONUNBUFFERED=1 NAS_THESEUS_PROGRESS=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if [ ${#dry[@]} -eq 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
out=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$out"
rm -f "$out/gpu_check.json" "$out/gpu_check.md" "$out/gpu_check.log"  # ours: this run's records only
log="$out/gpu_check.log"

# preflight (10 s): versions and imports, one line on failure
timeout $((10 * scale)) "$py" - "${dry[@]}" <<'PY' 2>&1 | tee -a "$log"
import sys
try:
    import fvcore, mnist1d, optuna, timm, torch  # noqa: F401
    import nas_theseus  # noqa: F401
except Exception as e:  # noqa: BLE001
    sys.exit(f"preflight: cannot import {getattr(e, 'name', None) or e} ({type(e).__name__}); run "
             f"benchmarks/gpu_wheels.sh here and carry .whl")
if "--dry" not in sys.argv and not torch.cuda.is_available():
    sys.exit("preflight: no CUDA GPU here (use --dry on the CPU)")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (dry run)"
print(f"preflight: torch {torch.__version__} (CUDA {torch.version.cuda}), optuna {optuna.__version__}, "
      f"timm {timm.__version__}, Python {sys.version.split()[0]}, {gpu}")
PY
if [ "${PIPESTATUS[0]}" != 0 ]; then
  echo "preflight failed (see above)" | tee -a "$log"
  exit 2
fi

status=0
# step name and its limit in seconds (sum 505 s; with the preflight, under 8.5 minutes)
for entry in tests:75 cka:25 stage:65 e2e:65 workers:50 memory:25 study:95 stream:45 ddp:60; do
  step=${entry%%:*}; limit=${entry##*:}
  limit=$((limit * scale))
  echo "== $step (limit ${limit} s)" | tee -a "$log"
  t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" "$py" benchmarks/gpu_check.py "$step" --out "$out" "${dry[@]}" >>"$log" 2>&1
  rc=$?
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  "$py" benchmarks/_gpu_check_records.py mark --step "$step" --rc "$rc" --seconds "$seconds" --out "$out"
  echo "   rc=$rc, $seconds s" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
done
"$py" benchmarks/_gpu_check_records.py summary --out "$out" | tee -a "$log"
exit $status
