"""One step in this process (``python benchmarks/gpu_check STEP [--dry]``): the run's meta in its record
first, so a step that runs out of time still says where it ran; its figures and its own time after; exit status
1 when it did not pass. Also the helper processes a step starts (``worker``, ``ddp_rank``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import commit, machine, today

from . import records
from .sizes import Sizes, sizes
from .steps import BY_NAME, ddp, workers

HELPERS = {"worker": workers.worker, "ddp_rank": ddp.rank}


def main(args: argparse.Namespace) -> None:
    if args.what in HELPERS:
        return HELPERS[args.what](args)
    run_step(args.what, sizes(args.dry), Path(args.out))


def run_step(name: str, sz: Sizes, out: Path) -> None:
    if sz.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here (use --dry on the CPU)")
    if sz.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    records.record(out, name, {}, meta())
    t0 = time.perf_counter()
    values = BY_NAME[name].run(sz, out)
    values["step_s"] = round(time.perf_counter() - t0, 1)
    records.record(out, name, values)
    print(json.dumps({name: values}, indent=1, default=str)[:4000])
    if not values.get("ok"):
        sys.exit(1)


def meta() -> dict:
    gpu = {}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}
    return {"machine": machine(), "commit": commit(), "date": today(), "torch": torch.__version__, **gpu}

