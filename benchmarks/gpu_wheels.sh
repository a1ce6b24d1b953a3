#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with the exact wheels that the device machine's image lacks (see the device
# tool's KINDS.md: it has torch, timm, transformers, pandas, ... but not optuna, fvcore, iopath, mnist1d and
# their own needs), for its Python 3.12 on x86-64. fvcore and iopath publish no wheels: they are built here
# with `pip wheel` (pure Python). benchmarks/gpu_check.sh installs .whl/ into /tmp/site before it starts the
# check (the package benchmarks/gpu_check/).
#
#   bash benchmarks/gpu_wheels.sh          # here, with the package registry reachable (~20 MB)
#
# The pins are the versions this repository is tested with; keep them in step with the local venv.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
binary=(optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 colorlog==6.12.0 Mako==1.4.3
        yacs==0.1.8 termcolor==3.3.0 mnist1d==0.0.2.post1)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$out.tmp" "${binary[@]}"
python3 -m pip wheel -q --no-deps -w "$out.tmp" fvcore==0.1.5.post20221221 iopath==0.1.10
# ours, made by this script: replaced whole, so no second version of a wheel stops the install there
rm -rf "$out" && mv "$out.tmp" "$out"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
ls "$out"
du -sh "$out"
