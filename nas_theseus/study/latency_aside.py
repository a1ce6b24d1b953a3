"""The costs known before training (latency, FLOPs, parameters) measured aside: while the trial trains, in a
process of its own on cores reserved for timing (``[latency] cores``, utils/cores.py).

In a quiet slot (utils/quiet.py) a trial's latency is timed after its training, and every worker of the machine
pauses meanwhile: on the README's study about 4 s of a 14.7 s trial on an H200 (200 blocks of 10 ms for the
network and as many for the guide beside it), and no faster on a faster GPU. A network's time does not depend on
its weights, so its architecture can be timed from the trial's start. Aside, the worker sends the deploy network
(built untrained, as the pruning rule's pre-training costs are) to its measurer, a child process pinned to a
reserved slot of cores, then trains; the trainers of the machine are pinned to the other cores, and measurers
take the slots in turn (a file lock per slot), so no training runs where the timing does.

The measurer is started at a worker's first measurement and lives as long as the worker; it reads requests on
its standard input and answers on a private copy of its standard output, and ends when its input closes. A
network it cannot load (a class that only the worker's process defines) or a measurer that died is measured in
the worker's quiet slot instead, said once in a warning; a measurement that fails (an uncounted operation)
fails the trial as it would in the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import UserError
from ..measure.latency import Runners
from ..utils import cores
from ..utils.devices import cpu_copy
from ..utils.files import cache_dir
from .objectives import OBJECTIVES, Probe


class AsideLost(Exception):
    """The measurer cannot answer this request (it died, or cannot load the network): measure in the worker."""


class AsideFailed(RuntimeError):
    """The measurement itself failed in the measurer, with an error the worker would not have called a user's."""


def layout_for(config, device: str) -> cores.Layout | None:
    """Where a process of the study ``config`` that trains on ``device`` times latency: a
    :class:`~nas_theseus.utils.cores.Layout` to time it aside, or None for a quiet slot on the trainers' own
    cores (or nothing to time: no latency objective or constraint). ``[latency] cores = "auto"``: aside when the
    study trains on a GPU (its trainers leave the cores idle) and latency is timed on the CPU, on a machine with
    cores to spare; ``"reserved"``: aside wherever the machine can set cores apart (else one line why). Never
    for a study on the ``meta`` device (the tests' dry runs): a network without data cannot be sent."""
    latency = config.latency
    if latency.cores == "shared" or torch.device(latency.device).type != "cpu" or \
            torch.device(device).type == "meta" or "latency_ms" not in {*config.objectives, *config.constraints}:
        return None
    if latency.cores == "auto" and torch.device(device).type != "cuda":
        return None
    try:
        return cores.layout(latency.threads, required=latency.cores == "reserved")
    except ValueError as e:
        raise UserError(f"latency.cores = \"reserved\": {e}; use \"shared\" (a quiet slot) here") from None


class Aside:
    """This process's measurer (started at the first :meth:`submit`) and its answers, in request order. Requests
    are written by a thread of their own: a trial never waits for the measurer to read (it imports torch first)."""

    def __init__(self, layout: cores.Layout):
        self.layout = layout
        self._proc: subprocess.Popen | None = None
        self._outbox: queue.Queue | None = None  # pickled requests for the writer thread; None ends it
        self._sent = 0  # requests sent, by this process's measurers in all
        self._started = 0  # measurers started: an answer is read from the one its request went to
        self._guide = False  # the guide sent (its runner times beside each network)
        self._unread = 0  # the request whose answer comes next (the earlier ones were read, or dropped)
        self.lost: str | None = None  # why the measurer cannot be used any more

    def submit(self, model: torch.nn.Module, probe: Probe, names: list[str], guide=None) -> Pending:
        """Send ``model`` (any device; sent as a CPU copy) to be measured on ``names``; ``guide``: a callable that
        returns the guide's network, sent once when the probe times beside it. Raises :class:`AsideLost`."""
        if self.lost:
            raise AsideLost(self.lost)
        probe = dataclasses.replace(probe, example=probe.example.cpu(), guide_runner=None, slot=None)
        try:
            if self._proc is None:
                self._start()
            if probe.guide_ms and not self._guide and guide is not None:
                self._send({"guide": _dumps(guide())})
                self._guide = True
            self._send({"id": self._sent, "model": _dumps(model), "probe": probe, "names": names})
        except (OSError, pickle.PicklingError, AttributeError, TypeError) as e:
            raise self._lose(e) from e
        self._sent += 1
        return Pending(self, self._sent - 1, self._started)

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the measurer imports this very package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen([sys.executable, "-c", f"from {__name__} import main; main()"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self._outbox, self._guide, self._unread = queue.Queue(), False, self._sent
        self._started += 1
        threading.Thread(target=_write, args=(self._proc, self._outbox), daemon=True,
                         name="latency-aside-requests").start()
        self._send({"slots": self.layout.slots})

    def _send(self, message: dict) -> None:
        self._outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def answer(self, request: int, started: int) -> dict:
        """The answer to ``request``, sent to the ``started``-th measurer (earlier answers, of interrupted trials,
        are read and dropped). A read cut by a signal (the study stopping) would leave the pipe mid-answer, so the
        measurer is ended there, and the next request starts a new one."""
        if self.lost:
            raise AsideLost(self.lost)
        while self._proc is not None and started == self._started and request >= self._unread:
            try:
                reply = pickle.load(self._proc.stdout)
            except KeyboardInterrupt:
                self.close()
                raise
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                raise self._lose(e) from e
            self._unread = reply["id"] + 1
            if reply["id"] == request:
                return reply
        raise AsideLost("its answer was dropped for a later one's, or the measurer it went to was ended (a study "
                        "stopping) before it answered")

    def _lose(self, e: BaseException) -> AsideLost:
        if self.lost:
            return AsideLost(self.lost)
        code = self._proc.poll() if self._proc is not None else None
        self.lost = f"{type(e).__name__}: {e}" + (f" (the measurer exited with {code})" if code is not None else "")
        warnings.warn(f"latency is timed in the worker's quiet slot from now on: the measurer on reserved cores "
                      f"stopped answering ({self.lost})", stacklevel=3)
        self.close()
        return AsideLost(self.lost)

    def close(self) -> None:
        """End the measurer now (nothing it may still be timing is awaited: a request no trial reads any more);
        it also ends by itself when this process does, its input closed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._outbox.put(None)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


def _write(proc: subprocess.Popen, outbox: queue.Queue) -> None:
    """The writer thread: each pickled request to the measurer's input, which it closes at the end (a None)."""
    while (data := outbox.get()) is not None:
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (OSError, ValueError):  # the measurer died (or was ended): its answer reads EOF, and the worker
            return  # measures in its quiet slot
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()


class Pending:
    """A measurement sent to the measurer; :meth:`result` waits for it (once: later calls return the same)."""

    def __init__(self, aside: Aside, request: int, started: int):
        self.aside, self.request, self.started, self._answer = aside, request, started, None

    def result(self) -> tuple[dict, dict]:
        """The costs and what the trial records beside them (``latency_aside``: the slot's cores, the measuring
        and waiting seconds). Raises :class:`AsideLost` (measure in the worker), ``UserError`` or
        :class:`AsideFailed` (the measurement failed)."""
        if self._answer is None:
            waiting = time.perf_counter()
            self._answer = self.aside.answer(self.request, self.started)
            self._answer["trial_wait_s"] = time.perf_counter() - waiting
        reply = self._answer
        if "unloadable" in reply:
            raise self.aside._lose(RuntimeError(reply["unloadable"]))
        if "error" in reply:
            if reply["known"]:
                raise UserError(reply["error"])
            raise AsideFailed(f"{reply['error']}\nin the latency measurer:\n{reply['traceback']}")
        record = {"cores": list(reply["cores"]), **{k: round(reply[k], 3) for k in
                                                     ("slot_wait_s", "measure_s", "trial_wait_s")}}
        return reply["values"], {**reply["attrs"], "latency_aside": record}


def _dumps(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(cpu_copy(module), buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------------------
# the measurer: ``main`` in a process of its own

@contextlib.contextmanager
def _slot(slots) -> Iterator[tuple[int, ...]]:
    """A free slot of reserved cores (a machine-wide lock each; waits for one when all are taken), this process
    pinned there for the block."""
    from filelock import lock_descriptor, unlock_descriptor

    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    files = [open(folder / f"latency-slot-{','.join(map(str, s))}.lock", "a+") for s in slots]  # noqa: SIM115
    try:
        held = next((i for i, f in enumerate(files) if lock_descriptor(f.fileno(), blocking=False)), None)
        if held is None:
            held = os.getpid() % len(files)
            lock_descriptor(files[held].fileno())
        try:
            cores.pin(slots[held])
            torch.set_num_threads(len(slots[held]))  # FLOP counting; latency sets its own threads
            yield tuple(cores.allowed())
        finally:
            unlock_descriptor(files[held].fileno())
    finally:
        for f in files:
            f.close()


def _answer(message: dict, guide, slots) -> dict:
    asked = time.perf_counter()
    try:
        model = torch.load(io.BytesIO(message["model"]), weights_only=False)
    except Exception as e:  # noqa: BLE001 - e.g. a class only the worker's process defines: measured there
        return {"id": message["id"], "unloadable": f"{type(e).__name__}: {e}"}
    probe = dataclasses.replace(message["probe"], guide_runner=guide, slot=contextlib.nullcontext)
    try:
        with _slot(slots) as where:
            began = time.perf_counter()
            values, attrs = {}, {}
            for name in message["names"]:
                if name not in OBJECTIVES:  # registered by the worker's own code only: measured there
                    continue
                values[name], extra = OBJECTIVES[name].measure(model, probe)
                attrs.update(extra)
    except Exception as e:  # noqa: BLE001 - sent back: the trial fails with it, as in the worker
        from ..measure import UncountedOpsError

        return {"id": message["id"], "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "known": isinstance(e, (UserError, UncountedOpsError))}
    return {"id": message["id"], "values": values, "attrs": attrs, "cores": where, "slot_wait_s": began - asked,
            "measure_s": time.perf_counter() - began}


def main() -> None:
    frames = os.fdopen(os.dup(1), "wb")  # answers only: whatever a library prints goes to standard error
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when a study stops; its input closing ends us
    requests = sys.stdin.buffer
    slots = pickle.load(requests)["slots"]
    guide = None
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:
            return
        if "guide" in message:
            net = torch.load(io.BytesIO(message["guide"]), weights_only=False).eval()
            guide = Runners(lambda net=net: net)  # as StudyContext.guide_runner makes them
            continue
        pickle.dump(_answer(message, guide, slots), frames, protocol=pickle.HIGHEST_PROTOCOL)
        frames.flush()


if __name__ == "__main__":
    main()
