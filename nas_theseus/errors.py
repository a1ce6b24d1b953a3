"""Errors that are the user's to fix.

A :class:`UserError` carries a one-line message that says what to change; the CLI prints it without a
traceback. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A mistake in user input (a name, a shape, a file); the message says what to fix."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A ready-made error for a name that is not registered: lists the valid names and the closest one."""
    choices = sorted(choices)
    return UserError(f"unknown {kind} {name!r}{did_you_mean(name, choices)}; valid: {', '.join(choices)}")
