"""``torch.compile`` as a conversion asks for it (``ConvertConfig.compile``): off, on (``true``: inductor's default
mode), or one of inductor's modes by name. ``"reduce-overhead"`` replays each compiled forward and backward as
a CUDA graph on a GPU (one launch for a step's many small kernels: what bounds the small targets of a search);
on the CPU it compiles as ``"default"`` does."""

from __future__ import annotations

from ..errors import UserError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile(compile: bool | str) -> None:
    """Refuse, in one line, a ``compile`` that is neither a bool nor one of :data:`MODES`."""
    if not isinstance(compile, bool) and compile not in MODES:
        raise UserError(f"compile must be true, false or one of {', '.join(map(repr, MODES))}, got {compile!r}")


def compile_kwargs(compile: bool | str) -> dict | None:
    """The keyword arguments of ``torch.compile`` / ``nn.Module.compile`` for ``compile``; None when off."""
    check_compile(compile)
    if compile is False:
        return None
    return {} if compile is True else {"mode": compile}
