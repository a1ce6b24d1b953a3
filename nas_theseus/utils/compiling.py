"""``torch.compile`` as a conversion asks for it (``ConvertConfig.compile``): off, on (``true``: inductor's default
mode), or one of inductor's modes by name. ``"reduce-overhead"`` replays each compiled forward and backward as
a CUDA graph on a GPU (one launch for a step's many small kernels: what bounds the small targets of a search);
on the CPU it compiles as ``"default"`` does. :class:`Compiler` compiles with a fallback: where the compiler
fails, the run goes on eagerly and says so."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch
from torch import nn

from ..errors import UserError

T = TypeVar("T")

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


COMPILER_CODE = tuple(f"{os.sep}torch{os.sep}{part}{os.sep}" for part in ("_dynamo", "_inductor", "_functorch"))


def raised_by_compiler(error: BaseException) -> bool:
    """Whether ``error`` came out of ``torch.compile``'s own machinery (dynamo, AOTAutograd, inductor and its CUDA
    graph trees): a frame of its traceback, or of an error it was raised from, is in their code. An error of
    the network's own code raised while it was traced counts too; the eager rerun then raises it again."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if any(part in tb.tb_frame.f_code.co_filename for part in COMPILER_CODE):
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return False


class Compiler:
    """``torch.compile`` as a run asks for it (``compile``), with a fallback that says so.

    What it compiles (modules in place, :meth:`in_place`; a model's training forward, :meth:`forward`) runs
    compiled until the compiler fails: a compile that cannot be done (no C++ compiler for inductor, an
    unsupported operator), or a CUDA graph that cannot be recorded or replayed. Then everything it compiled
    runs eagerly from there on, for the rest of the run; the call that failed is rerun so (a forward at once;
    a training step's backward by :meth:`run`, which reruns the whole step); one warning says where and why,
    and :attr:`failed` records it. An error of the step's own code is raised as it is, and so is one the
    eager rerun raises again.
    """

    def __init__(self, compile: bool | str, what: str = "conversion"):
        self.compile, self.kwargs, self.what = compile, compile_kwargs(compile), what
        self.failed = ""  # "where: the compiler's error", once it has fallen back
        self._eager = False  # fallen back (set before the rerun: what it calls runs eagerly)
        self._modules: list[nn.Module] = []
        self._forwards: dict[int, tuple[nn.Module, Callable]] = {}

    @property
    def on(self) -> bool:
        return self.kwargs is not None and not self._eager

    def in_place(self, modules) -> None:
        """Compile each module's call in place (as ``nn.Module.compile`` does: parameter names, which
        checkpoints and deploy read, are unchanged; a deep copy comes out uncompiled), with the fallback."""
        if not self.on:
            return
        for m in modules:
            m._compiled_call_impl = self._guarded(torch.compile(m._call_impl, **self.kwargs), m._call_impl,
                                                  type(m).__name__)
            self._modules.append(m)

    def forward(self, model: nn.Module):
        """``model``'s forward compiled (once per model), with the fallback; ``model`` itself, eager, when
        compiling is off."""
        if not self.on:
            return model
        if id(model) not in self._forwards:  # the model is kept with it: its id is not reused meanwhile
            compiled = torch.compile(model, **self.kwargs)  # shares the module's parameters
            self._forwards[id(model)] = model, self._guarded(compiled, model, type(model).__name__)
        return self._forwards[id(model)][1]

    def run(self, step: Callable[[], T], where: str) -> T:
        """``step()`` (one training step: forward, backward, optimizer); where it fails in the compiler, as a
        compiled backward can, the compiler is turned off and the step is run again, eagerly. The step must
        not have changed the weights before the backward (its gradients are zeroed first, as
        :func:`~nas_theseus.training.optimizer_step` does)."""
        if not self.on:
            return step()
        try:
            return step()
        except Exception as e:
            return self._eagerly(e, step, where)

    def _guarded(self, compiled, eager, name: str):
        def call(*args, **kwargs):
            if not self.on:
                return eager(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except Exception as e:
                return self._eagerly(e, partial(eager, *args, **kwargs), f"the forward of {name}")
        return call

    def _eagerly(self, error: Exception, call: Callable[[], T], where: str) -> T:
        """After ``error`` in a compiled ``call``: where the compiler raised it, compiling off and ``call()`` run
        again eagerly, then one warning; else ``error`` raised as it is."""
        if not raised_by_compiler(error):
            raise error
        self._off()
        result = call()
        self._said(where, error)
        return result

    def _off(self) -> None:
        self._eager = True
        for m in self._modules:
            m._compiled_call_impl = None
        self._modules.clear()
        self._forwards.clear()

    def _said(self, where: str, error: BaseException) -> None:
        while (inner := getattr(error, "inner_exception", None) or error.__cause__) is not None:
            error = inner  # dynamo's wrapper names the backend; what it wraps says what failed
        first = (str(error).strip().splitlines() or [""])[0][:300]
        self.failed = f"{where}: {type(error).__name__}: {first}"
        setting = "true" if self.compile is True else f'"{self.compile}"'
        warnings.warn(f"{self.what}: torch.compile (compile = {setting}) failed in {self.failed}; the {self.what} "
                      f"runs without it from here on (that call was run again eagerly, so nothing is lost)",
                      stacklevel=3)
