"""The harness every step shares: the arguments, the whole check (the preflight, then each step of the registry
in its own process under its limit, its record marked with its exit status and wall time, the summary last),
and the dispatch to one step's process. It imports no torch: the bookkeeping between steps costs no GPU time,
and a torch that cannot import is the preflight's one line, not a traceback here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from . import __doc__ as OVERVIEW
from . import preflight, records
from .steps import NAMES, STEPS, Step

PACKAGE = Path(__file__).resolve().parent  # what ``python`` runs: the check, a step, or a step's helper process
RECORDS = ("gpu_check.json", "gpu_check.md", "gpu_check.log")
KILL_AFTER_S = 5  # after a step's limit, the seconds `timeout` waits between its TERM and a KILL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check", description=OVERVIEW,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["all", "preflight", *NAMES, "worker", "ddp_rank"],
                    help="the whole check (default), its preflight, one step, or a step's helper process")
    ap.add_argument("--dry", action="store_true", help="on the CPU with tiny sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(records.DEFAULT_OUT))
    ap.add_argument("--ready", help="worker: the file it touches once set up")
    ap.add_argument("--go", help="worker: the file whose appearance starts the timed loop")
    ap.add_argument("--threads", type=int, default=1, help="worker, ddp_rank: CPU threads")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.what == "all":
        sys.exit(run_check(Path(args.out), args.dry))
    if args.what == "preflight":
        sys.exit(preflight.check(args.dry))
    from . import one_step  # torch, timm, nas_theseus: only in a step's own process

    one_step.main(args)


def run_check(out: Path, dry: bool) -> int:
    """Every step: 0 when every one passed, 1 when one failed or ran out of time, 2 when the preflight failed."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RECORDS:  # ours: this run's records only
        (out / name).unlink(missing_ok=True)
    log = Log(out / "gpu_check.log")
    # no time limit (the first imports of torch, timm and optuna took over 10 s on a cold H200 machine, 12-04,
    # and a limit there killed the check without a word)
    log.say("== preflight (imports; a cold machine takes a while)")
    rc = log.run([sys.executable, str(PACKAGE), "preflight", *(["--dry"] if dry else [])], echo=True)
    if rc != 0:
        log.say(f"preflight failed (exit code {rc}; its message, if any, is above)")
        return 2
    status = 0
    for step in STEPS:
        if run_step(step, out, dry, log) != 0:
            status = 1
    log.say(records.summary(out))
    return status


def run_step(step: Step, out: Path, dry: bool, log: Log) -> int:
    """One step in its own process, its output into the log: under its limit on a GPU, with none on a dry run
    (code paths on a small CPU, not speed). Its record gets the exit status and wall time, and a status where
    the step wrote none (it ran out of time, or crashed before its end)."""
    command = [sys.executable, str(PACKAGE), step.name, "--out", str(out)]
    if dry:
        log.say(f"== {step.name} (dry)")
        command.append("--dry")
    else:
        log.say(f"== {step.name} (limit {step.limit_s} s)")
        command = ["timeout", f"--kill-after={KILL_AFTER_S}", str(step.limit_s), *command]
    t0 = time.perf_counter()
    rc = log.run(command)
    seconds = f"{time.perf_counter() - t0:.1f}"
    records.mark(out, step.name, rc, float(seconds))
    log.say(f"   rc={rc}, {seconds} s")
    return rc


class Log:
    """OUT/gpu_check.log: the harness's lines go to the terminal and the log both, a process's output to the log
    (and to the terminal with ``echo``)."""

    def __init__(self, path: Path):
        self.path = path

    def say(self, text: str = "", end: str = "\n") -> None:
        print(text, end=end, flush=True)
        with self.path.open("a") as f:
            f.write(text + end)

    def run(self, command: list[str], *, echo: bool = False) -> int:
        """``command``'s exit status as a shell reports it (128 + the signal that killed it)."""
        with self.path.open("a") as f:
            if echo:
                proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            else:
                proc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
        if echo:
            self.say(proc.stdout, end="")
        return 128 - proc.returncode if proc.returncode < 0 else proc.returncode
