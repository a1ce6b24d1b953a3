#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, under 8 minutes): the CUDA tests, the default study on cuda, a
# CIFAR-10-sized ResNet-18 -> MLP conversion in fp32 and bf16, and the stage ÷ bare-loop ratio on the GPU.
# Results land in benchmarks/results/ (gpu_*.md/json) and, where $OUT is set (the device tool), are copied there.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#
# The device machine's image has torch (2.11) but not every dependency: carry the missing wheels in .whl/
# (see the device tool's README) and this script installs them into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NAS_THESEUS_PROGRESS=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
out=${OUT:-benchmarks/results}
mkdir -p "$out"
status=0
step() { echo "== $*"; local t0=$SECONDS; "$@" 2>&1 | tee -a "$out/gpu_check.log"; local rc=${PIPESTATUS[0]};
         echo "   rc=$rc, $((SECONDS - t0)) s" | tee -a "$out/gpu_check.log"; [ "$rc" = 0 ] || status=1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_check.log"
step timeout 120 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step timeout 150 python3 -m nas_theseus run studies/mnist1d_cnn_to_mlp.toml --device cuda --workdir /tmp/gpu_study \
  --no-progress
step timeout 150 python3 benchmarks/gpu_resnet18.py --device cuda
step timeout 90 python3 benchmarks/stage_loop.py --device cuda --pairs 3 --out stage_loop_cuda
cp benchmarks/results/gpu_resnet18.* benchmarks/results/stage_loop_cuda.* "$out"/ 2>/dev/null
exit $status
