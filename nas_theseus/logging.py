"""The package's status lines (``device: cpu (auto)``, ``guide activations: ...``, storage outages) are log records
of the ``nas_theseus`` logger and its children (``nas_theseus.study.storage``, ...), as Optuna's are of ``optuna``.

By default they are shown, as the command line shows them: the ``nas_theseus`` logger has its own handler, which
writes the bare message to the current ``sys.stderr`` (a notebook's cell output, pytest's capture), at level INFO,
and does not pass records on to the root logger. :func:`set_verbosity` changes the level (``WARNING`` keeps only
warnings such as storage outages); :func:`disable_default_handler` hands the records to the application's own
logging configuration instead.
"""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written (not the one at import)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


_root = logging.getLogger("nas_theseus")
_default_handler = _StderrHandler()
_default_handler.setFormatter(logging.Formatter("%(message)s"))
_root.addHandler(_default_handler)
_root.setLevel(logging.INFO)
_root.propagate = False


def set_verbosity(level: int | str) -> None:
    """Show the package's records of ``level`` and above (``logging.INFO`` by default, ``"WARNING"``, ...)."""
    _root.setLevel(level)


def disable_default_handler() -> None:
    """Stop writing records to stderr and pass them on to the root logger (``logging.basicConfig``, ...)."""
    _root.removeHandler(_default_handler)
    _root.propagate = True
