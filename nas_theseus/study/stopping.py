"""A worker's stop signal (SIGTERM: the launcher's Ctrl-C, a scheduler's, torchrun's after a lost rank; SIGINT:
Ctrl-C in the terminal of a single run): the trial it runs is interrupted and re-enqueued, and it asks for and
starts no further trial. A second Ctrl-C interrupts at once, wherever the worker is, as Python's own handler
would (a user who presses it twice means now).

Python runs a signal handler in the main thread between two bytecodes, wherever that thread is. A handler that
raised KeyboardInterrupt everywhere let it land anywhere: between Optuna's ``ask`` and the objective (the trial
asked stayed RUNNING, never re-enqueued); while Optuna started or stopped the trial's heartbeat thread (which
then ran on: the worker hung at exit, its trial RUNNING with a live heartbeat); inside Optuna's ``tell``; in a
finalizer (``__del__``), where Python prints the exception and goes on, and since nothing remembered the signal,
the worker asked for its next trial as if none had come (a test run once saw a worker run, after the signal, the
trial another worker had just re-enqueued). So the signal raises only while a trial does its own work
(:meth:`StopSignal.trial`); anywhere else it only sets a flag, read where the worker decides: under the ask lock
before each ask (:meth:`StopSignal.check`: no trial is asked) and before a trial it asked starts (it is given
back: re-enqueued, not counted). The flag stays set whatever happens to the exception. Inside a trial, a storage
call is not cut in two either (:meth:`StopSignal.held`): a SQLite transaction interrupted halfway left the
worker's session unusable (its re-enqueueing then failed, or retried a locked database); the interrupt comes once
the call has ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Stopped(KeyboardInterrupt):
    """The stop signal came before this worker asked for a trial: none was asked."""


class NotStarted(KeyboardInterrupt):
    """The stop signal came after this worker asked for its trial but before the trial started."""


class StopSignal:
    """One worker's stop: whether the signal came (:attr:`requested`), and whether it may interrupt now."""

    def __init__(self):
        self.requested = False
        self._interruptible = False
        self._held = 0

    def handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt("a second Ctrl-C")
        self.requested = True
        if self._interruptible and not self._held:
            self._interrupt(f"signal {signum}")

    def _interrupt(self, why: str) -> None:
        self._interruptible = False  # once: a later signal (torchrun's) waits for the re-enqueueing
        raise KeyboardInterrupt(why)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A storage call: a signal that comes during it, inside a trial, interrupts the trial once the call has
        ended (in the main thread; the heartbeat thread's calls are not the signal's to interrupt)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._interruptible and self.requested:
                self._interrupt("signal during a storage call")

    def check(self) -> None:
        """Before an ask: raises :class:`Stopped` once the signal came."""
        if self.requested:
            raise Stopped("stopped before asking for another trial")

    @contextlib.contextmanager
    def trial(self) -> Iterator[None]:
        """A trial's own work: a signal inside interrupts it (KeyboardInterrupt). Entered after the signal came,
        it raises :class:`NotStarted` before the block runs."""
        self._interruptible = True  # first: a signal that comes between this and the check interrupts
        try:
            if self.requested:
                raise NotStarted("stopped before the trial started")
            yield
        finally:
            self._interruptible = False

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[StopSignal]:
        """SIGTERM and SIGINT handled by :meth:`handler` in the block (in the main thread; elsewhere, left as
        they are)."""
        try:  # a run started with Ctrl-C ignored (a background job of a script) keeps it ignored
            old = {s: signal.signal(s, self.handler) for s in (signal.SIGTERM, signal.SIGINT)
                   if signal.getsignal(s) is not signal.SIG_IGN}
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
