#!/usr/bin/env bash
# The prepared GPU check: every step of benchmarks/gpu_check.py (see its docstring), each in its own process
# under its own time limit (their sum under the device tool's 10 minutes a command; about 7 minutes of work on one
# H200, where the ddp step is skipped). Each step's figures land in $OUT/gpu_check.json as soon as it ends (OUT:
# the device tool's folder, else benchmarks/results/gpu_check); the log is $OUT/gpu_check.log and the summary
# table, printed last, $OUT/gpu_check.md.
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
out=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$out"
rm -f "$out/gpu_check.json" "$out/gpu_check.md" "$out/gpu_check.log"  # ours: this run's records only
log="$out/gpu_check.log"

# preflight: versions and imports, one line on failure; no time limit (the first imports of torch, timm and
# optuna took over 10 s on a cold H200 machine, 12-04, and a limit there killed the check without a word)
echo "== preflight (imports; a cold machine takes a while)" | tee -a "$log"
"$py" - "${dry[@]}" <<'PY' 2>&1 | tee -a "$log"
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
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  echo "preflight failed (exit code $rc; its message, if any, is above)" | tee -a "$log"
  exit 2
fi

status=0
# step name and its limit in seconds on a GPU (sum 580 s; seen on an H200 12-04: 245 s for the steps but readme,
# which took 128 s there before this change)
for entry in tests:60 readme:160 cka:20 stage:50 e2e:50 workers:45 memory:20 study:75 stream:40 ddp:60; do
  step=${entry%%:*}; limit=${entry##*:}
  t0=$(date +%s.%N)
  if [ ${#dry[@]} -eq 0 ]; then
    echo "== $step (limit ${limit} s)" | tee -a "$log"
    timeout --kill-after=5 "$limit" "$py" benchmarks/gpu_check.py "$step" --out "$out" >>"$log" 2>&1
  else
    echo "== $step (dry)" | tee -a "$log"
    "$py" benchmarks/gpu_check.py "$step" --out "$out" --dry >>"$log" 2>&1
  fi
  rc=$?
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  "$py" benchmarks/_gpu_check_records.py mark --step "$step" --rc "$rc" --seconds "$seconds" --out "$out"
  echo "   rc=$rc, $seconds s" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
done
"$py" benchmarks/_gpu_check_records.py summary --out "$out" | tee -a "$log"
exit $status
