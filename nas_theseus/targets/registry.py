"""The block registry: every target block kind by name, its options' defaults and their check.

A block is one class with a frozen ``Options`` dataclass of primitives (its defaults are the block's
defaults) and a ``build(options, in_shape, guide_out_shape) -> nn.Module`` static method. ``in_shape`` is the
per-sample shape the block will read; ``guide_out_shape`` is the shape of the guide part it replaces, which a
block may produce (``width=None``) or ignore (an MLP of width 256 outputs (256,)). Register it with
``@register_block("name")``; the contract tests in :mod:`nas_theseus.testing` then run it automatically. A
:class:`~nas_theseus.targets.spec.BlockSpec` names a kind here and is checked against it when made; a block is
built from its spec by :func:`~nas_theseus.targets.build.create_target` (as timm's ``create_model``). This
module knows kinds and options, not specs, so the spec can rely on it without a circle.

A block whose output at position t reads no input after t sets ``causal = True`` (or, when that depends on its
options, ``causal_when(options) -> bool``); causal guides (language models) accept only such blocks.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

from ..errors import UserError, did_you_mean
from ..utils.registry import Registry

BLOCKS: Registry = Registry("block")


def register_block(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if not (dataclasses.is_dataclass(getattr(cls, "Options", None)) and hasattr(cls, "build")):
            raise TypeError(f"block {cls.__name__} needs an Options dataclass and a build() method")
        cls.kind = name
        return BLOCKS.add(name, cls)
    return deco


def list_blocks() -> list[str]:
    return sorted(BLOCKS)


def _check_type(kind: str, name: str, value, annotation):
    """Return ``value`` (an int given for a float option becomes a float) or raise :class:`UserError`."""
    allowed = typing.get_args(annotation) or (annotation,)
    allowed = tuple(type(None) if a is None else a for a in allowed)
    if float in allowed and int not in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        raise UserError(f"block option {kind}.{name} must be {annotation}, got {value!r}")
    if not isinstance(value, allowed):
        raise UserError(f"block option {kind}.{name} must be {annotation}, got {type(value).__name__} {value!r}")
    return value


def default_options(kind: str) -> dict:
    """The block's options with their default values."""
    return dataclasses.asdict(BLOCKS[kind].Options())


def checked_options(kind: str, options: tuple[tuple[str, object], ...]) -> tuple:
    """Check ``(name, value)`` options of block ``kind``; return them with ints for float options made floats.

    Raises :class:`UserError` for an unknown kind, an unknown option or an option of the wrong type.
    """
    cls = BLOCKS.lookup(kind)
    hints = typing.get_type_hints(cls.Options)
    checked = []
    for name, value in options:
        if name not in hints:
            raise UserError(f"unknown option {name!r} for block {kind!r}{did_you_mean(name, hints)}; "
                            f"valid: {', '.join(sorted(hints)) or '(none)'}")
        checked.append((name, _check_type(kind, name, value, hints[name])))
    check = getattr(cls, "check", None)
    if check is not None:
        check(cls.Options(**dict(checked)))
    return tuple(checked)
