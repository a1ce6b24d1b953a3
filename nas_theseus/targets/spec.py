"""Architecture as data: a :class:`BlockSpec` names a registered block kind and its options (primitives only),
checked against the kind in :mod:`~nas_theseus.targets.registry` when the spec is made.

Specs are frozen, hashable and round-trip through JSON, so a study can store them, a stage checkpoint can be
keyed by them, and an export can rebuild the module from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .registry import checked_options, default_options

_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class BlockSpec:
    """``kind`` (a registered block name) and ``options`` as sorted (name, value) pairs.

    Options equal to the block's defaults are dropped, so equal architectures give equal specs (and keys).

    >>> spec = BlockSpec.of("mlp", width=256)
    >>> BlockSpec.from_dict(spec.to_dict()) == spec
    True
    """

    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name, value in self.options:
            if not isinstance(value, _PRIMITIVES):
                raise UserError(f"block option {self.kind}.{name} must be None/bool/int/float/str, "
                                f"got {type(value).__name__} {value!r}")
        object.__setattr__(self, "options", tuple(sorted(self.options)))
        options = checked_options(self.kind, self.options)
        defaults = default_options(self.kind)
        object.__setattr__(self, "options", tuple((k, v) for k, v in options if k not in defaults
                                                  or defaults[k] != v or type(defaults[k]) is not type(v)))

    @classmethod
    def of(cls, kind: str, **options: Any) -> BlockSpec:
        return cls(kind, tuple(options.items()))

    @classmethod
    def from_dict(cls, d: dict) -> BlockSpec:
        if not isinstance(d, dict) or "kind" not in d:
            raise UserError(f"a block spec is a table with a 'kind' key, got {d!r}")
        rest = {k: v for k, v in d.items() if k != "kind"}
        return cls(str(d["kind"]), tuple(rest.items()))

    def to_dict(self, *, full: bool = False) -> dict:
        """``{"kind": ..., **options}``; ``full`` adds every default (for exports read by other versions)."""
        return {"kind": self.kind, **(default_options(self.kind) if full else {}), **dict(self.options)}

    @property
    def opts(self) -> dict:
        return dict(self.options)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.kind}({inner})"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
