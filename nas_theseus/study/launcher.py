"""``nas-theseus run STUDY --workers N [--devices cuda:0,cuda:1]``: N worker processes on this machine that share
one study, each bound to one device.

Optuna schedules no devices of its own (its FAQ: one process per GPU), so this is the shell loop a user would
write, done once: the study is prepared here first (the guide trained or read from its cache, the study
created, the guide's figures recorded), then every worker is an ordinary ``nas-theseus run`` of the same work
directory and storage with ``--device`` set (devices round robin, several workers per device allowed) and
``study.threads`` = the usable cores divided by the workers (unless the study sets it; without the cores reserved
for timing latency, where ``[latency] cores`` reserves some: utils/cores.py). Each output line is
prefixed by its worker. Ctrl-C or SIGTERM is passed on to every worker as SIGTERM: each re-enqueues its
running trial, asks for no other and exits, as a single run does (stopping.py); a second Ctrl-C kills them
(their trials are resumed from their stage checkpoints by the next run). A worker that dies is reported at
once; its trial is taken over by another worker (its slot lock is free) or by the next run. The exit code is 0
when every worker ended cleanly, 130 when interrupted, else 1, with one line per worker that did not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ..errors import UserError
from ..utils.devices import MEMORY_FRACTION


def default_devices() -> list[str]:
    """Every visible GPU, else the CPU."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def parse_workers(text: str) -> int | str:
    """``--workers``: a positive count, or ``auto`` (a count per device measured on this machine,
    :mod:`nas_theseus.study.autoworkers`)."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"--workers takes a count or auto, got {text!r}") from None
    if n < 1:
        raise UserError(f"--workers must be at least 1, got {n}")
    return n


def parse_devices(text: str) -> list[str]:
    """``--devices``: a comma-separated list of devices (``cpu``, ``cuda``, ``cuda:i``); repeats allowed."""
    from ..utils.devices import resolve_device

    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise UserError(f"--devices {text!r} names no device; give e.g. cuda:0,cuda:1 or cpu")
    for d in devices:
        if d == "auto":
            raise UserError("--devices lists devices (cpu, cuda:i); leave it out for every visible GPU")
        resolve_device(d)  # a mistyped or absent device is one line here, not one per worker
    return devices


def assign(workers: int | None, devices: list[str]) -> list[str]:
    """Each worker's device, round robin; as many workers as devices when ``workers`` is None."""
    n = len(devices) if workers is None else workers
    if n < 1:
        raise UserError(f"--workers must be at least 1, got {n}")
    return [devices[i % len(devices)] for i in range(n)]


@dataclass
class Worker:
    index: int
    device: str
    process: subprocess.Popen

    @property
    def name(self) -> str:
        return f"worker {self.index} ({self.device})"


def worker_env(index: int, sharing: int = 1, device: str = "cpu") -> dict[str, str]:
    """The environment of worker ``index``: this one's, with ``$NAS_THESEUS_WORKER`` (when set, e.g. a job
    array's task id) made ``<it>/<index>`` so the workers' names, and the sampler seeds drawn from them, differ.
    Unset, each worker is named ``<host>/<slot>`` as usual. A worker that shares its GPU with ``sharing - 1``
    others may take its share of that GPU's memory (``NAS_THESEUS_GPU_MEMORY_FRACTION``)."""
    env = dict(os.environ)
    if env.get("NAS_THESEUS_WORKER"):
        env["NAS_THESEUS_WORKER"] = f"{env['NAS_THESEUS_WORKER']}/{index}"
    if sharing > 1 and device.startswith("cuda"):
        env[MEMORY_FRACTION] = f"{1.0 / sharing:.6f}"
    return env


def _pump(stream, prefix: str, out) -> None:
    for line in stream:
        out.write(prefix + line)
        out.flush()


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(worker_args: list[str], devices: list[str], *, threads: int) -> int:
    """Start one ``nas-theseus run`` per entry of ``devices`` with ``worker_args`` (the study, its work directory
    and options) and ``threads`` CPU threads each, and wait for all of them; see the module docstring for
    signals and the exit code."""
    workers: list[Worker] = []
    pumps: list[threading.Thread] = []
    for i, device in enumerate(devices):
        cmd = [sys.executable, "-m", "nas_theseus", "run", *worker_args, "--device", device, "--no-progress",
               "--set", f"study.threads={threads}", "--as-worker"]
        # a session of its own: a terminal's Ctrl-C reaches this process only, which passes it on once
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                start_new_session=True, env=worker_env(i, devices.count(device), device))
        w = Worker(i, device, proc)
        workers.append(w)
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            t = threading.Thread(target=_pump, args=(stream, f"[{i} {device}] ", out), daemon=True)
            t.start()
            pumps.append(t)
    print(f"started {len(workers)} workers ({', '.join(devices)}; {threads} CPU thread(s) each); Ctrl-C stops "
          f"them all", file=sys.stderr, flush=True)

    interrupts = [0]

    def on_signal(signum, frame):
        interrupts[0] += 1
        how = signal.SIGTERM if interrupts[0] == 1 else signal.SIGKILL
        print(f"\n{'stopping' if how == signal.SIGTERM else 'killing'} {len(workers)} workers"
              + (" (their running trials are re-enqueued)" if how == signal.SIGTERM else
                 " (their trials resume from their stage checkpoints in the next run)"), file=sys.stderr, flush=True)
        for w in workers:
            if w.process.poll() is None:
                w.process.send_signal(how)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = _wait(workers)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t in pumps:
            t.join(timeout=5)
    bad = [w for w in workers if codes[w.index] != 0]
    if interrupts[0]:
        return 130
    for w in bad:
        print(f"{w.name} {_exit_text(codes[w.index])}", file=sys.stderr)
    return 1 if bad else 0


def _wait(workers: list[Worker]) -> dict[int, int]:
    """Wait for every worker, reporting each one that ends badly as it ends."""
    codes: dict[int, int] = {}
    while len(codes) < len(workers):
        time.sleep(0.2)
        for w in workers:
            code = None if w.index in codes else w.process.poll()
            if code is None:
                continue
            codes[w.index] = code
            if code not in (0, 130):
                print(f"{w.name} {_exit_text(code)}; its trial is taken over by another worker or the next run",
                      file=sys.stderr, flush=True)
    return codes
