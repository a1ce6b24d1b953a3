"""tests: the CUDA tests (tests/test_cuda.py), a one-trial study on CUDA among them; on the CPU the device
tests, with the meta device standing in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from _common import ROOT

from ..sizes import Sizes


def run(sz: Sizes, out: Path) -> dict:
    files = ["tests/test_cuda.py"] if sz.device == "cuda" else ["tests/test_devices.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *files],
                          cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    return {"ok": proc.returncode == 0 and counts.get("passed", 0) > 0, "files": files, "summary": last, **counts}
