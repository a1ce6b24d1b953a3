"""Search spaces: define-by-run Python files with ``search_space(trial, guide)``.

The function suggests values with the usual ``trial.suggest_*`` calls and returns a
:class:`~nas_theseus.convert.Candidate`, or ``(candidate, overrides)`` where ``overrides`` is a dict of
:class:`~nas_theseus.convert.ConvertConfig` fields that the trial varies (``schedule``, ``alignment``...).
Suggested values must be primitives (None/bool/int/float/str) with stable names, so
``optuna.trial.FixedTrial(trial.params)`` rebuilds any trial's architecture exactly.

A space that the block library (:mod:`nas_theseus.library`) can read also defines two functions beside it:

* ``block_options(guide, start, stop)``: the blocks it offers for the run of guide parts ``start..stop-1``, a
  list of :class:`~nas_theseus.targets.BlockSpec` (``None``: keep the guide's part; the empty list: the space
  never forms that run);
* ``candidate_params(guide, candidate)``: the parameters for which ``search_space`` returns ``candidate`` (what
  ``enqueue_trial`` takes), or ``None`` when the space does not hold it. The library checks every answer with
  ``FixedTrial`` (the space must give the same candidate back).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..convert import Candidate
from ..errors import UserError

_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    fn: Callable
    sha256: str
    block_options: Callable | None = None  # the library's hooks (module docstring); None where not defined
    candidate_params: Callable | None = None

    def __call__(self, trial, guide) -> tuple[Candidate, dict]:
        out = self.fn(_CheckedTrial(trial), guide)
        candidate, overrides = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(candidate, Candidate) or not isinstance(overrides, dict):
            raise UserError(f"{self.path.name}: search_space must return a Candidate or (Candidate, dict), "
                            f"got {type(out).__name__}")
        return candidate, overrides


class _CheckedTrial:
    """Passes every call to the trial, but refuses categorical choices that are not primitives."""

    def __init__(self, trial):
        self._trial = trial

    def suggest_categorical(self, name, choices):
        bad = [c for c in choices if not isinstance(c, _PRIMITIVES)]
        if bad:
            raise UserError(f"search space parameter {name!r} suggests non-primitive choices {bad!r}: use "
                            f"None/bool/int/float/str (e.g. a name, and build the object from it)")
        return self._trial.suggest_categorical(name, choices)

    def __getattr__(self, name):
        return getattr(self._trial, name)


def load_search_space(path: str | Path) -> SearchSpace:
    """Import ``search_space`` from a Python file (its content hash is part of the study's identity)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"search space file {path} does not exist")
    source = path.read_bytes()
    name = f"nas_theseus_space_{hashlib.sha256(source).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"search space {path} failed to import: {type(e).__name__}: {e}") from None
    fn = getattr(module, "search_space", None)
    if not callable(fn):
        raise UserError(f"search space {path} defines no search_space(trial, guide) function")
    hooks = [getattr(module, name, None) for name in ("block_options", "candidate_params")]
    return SearchSpace(path, fn, hashlib.sha256(source).hexdigest(), *(h if callable(h) else None for h in hooks))
