"""Incremental steps of causal token modules: the contract and the registry behind incremental decoding.

A language model deployed for generation runs one token at a time, carrying a state (an RNN its hidden state,
attention a cache of the keys and values of earlier tokens). Every module of such a model has a **stepper**:
``init(batch, device, dtype) -> state``, then ``step(x, state) -> (y, new_state)`` for its input at one position
with the time axis kept, (B, 1, ...), never changing a state in place. The driver
(:mod:`nas_theseus.measure.decode`) builds the stepper of a whole model once and runs it.

A module gets its stepper, in this order, from:

1. :data:`STEPPERS`, by class (or by the class's dotted name, for library classes this package does not
   import, e.g. ``"transformers.models.gpt2.modeling_gpt2.GPT2Block"``; ``"<module>.*"`` covers every class
   of a module): a factory ``(module, path, build) -> Stepper``, where ``build(child, child_path)`` gives the
   stepper of a child. Containers (``nn.Sequential``, a residual, a guide's chain) register one here;
2. its own methods, beside its ``forward``: ``step(x, state) -> (y, new_state)`` and, if it has a state,
   ``init_state(batch, device, dtype) -> state`` (the sequence blocks and the hf guide's embedding do);
3. the class attribute ``tokenwise = True``: its forward treats every position alone, so it runs on the
   one-token slice;
4. a registered base class, when the subclass keeps the base's ``forward``.

A subclass that overrides ``forward`` inherits neither a registered stepper nor its base's ``step``. A module
with none of these (e.g. a token-mixing MLP) is refused by path in one line. Each kind of module registers its
stepper where it is defined: the sequence blocks in :mod:`nas_theseus.targets.sequence_blocks`, the hf guide's
chain, embedding and GPT-2 block in :mod:`nas_theseus.guides.hf`, a guide's stem or head chain in
:mod:`nas_theseus.guides.guide`; this module holds only the generic ones (``nn.Sequential``, per-position torch
modules). To support another module, give it ``step`` / ``init_state``, or register a factory::

    @register_stepper(MyScaled)          # a module that runs its ``body`` child, then scales the output
    class MyScaledStep(Wrapper):
        child = "body"
        def step(self, x, state):
            y, state = self.inner.step(x, state)
            return self.module.scale * y, state
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

Build = Callable[[nn.Module, str], "Stepper"]
Factory = Callable[[nn.Module, str, Build], "Stepper"]


class Stepper:
    """The incremental step of one module at ``path``; subclasses override :meth:`init` and :meth:`step`."""

    def __init__(self, module: nn.Module, path: str, build: Build):
        self.module, self.path = module, path

    def init(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        """The state before the first token (None: no state)."""
        return None

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Output at this position (B, 1, ...) and the new state, for input ``x`` (B, 1, ...)."""
        raise NotImplementedError


class PerPosition(Stepper):
    """A module that treats every position alone: its forward on the one-token slice."""

    def step(self, x, state):
        return self.module(x), state


class OwnStep(Stepper):
    """A module with its own ``step`` (and ``init_state`` when it carries a state)."""

    def init(self, batch, device, dtype):
        init = getattr(self.module, "init_state", None)
        return None if init is None else init(batch, device, dtype)

    def step(self, x, state):
        return self.module.step(x, state)


class Wrapper(Stepper):
    """A module that runs one child (the attribute named ``child``) and carries that child's state; a subclass
    changes :meth:`step` where the module does more than call it (a residual adds its input)."""

    child = "body"

    def __init__(self, module: nn.Module, path: str, build: Build):
        super().__init__(module, path, build)
        self.inner = build(getattr(module, self.child), join(path, self.child))

    def init(self, batch, device, dtype):
        return self.inner.init(batch, device, dtype)

    def step(self, x, state):
        return self.inner.step(x, state)


class Chain(Stepper):
    """Children in order (``children``: (name, module) pairs, default the named children); state: their tuple."""

    def __init__(self, module: nn.Module, path: str, build: Build,
                 children: Iterable[tuple[str, nn.Module]] | None = None):
        super().__init__(module, path, build)
        named = module.named_children() if children is None else children
        self.children = [build(m, join(path, name)) for name, m in named]

    def init(self, batch, device, dtype):
        return tuple(c.init(batch, device, dtype) for c in self.children)

    def step(self, x, state):
        new = []
        for child, s in zip(self.children, state, strict=True):
            x, s = child.step(x, s)
            new.append(s)
        return x, tuple(new)


ELEMENTWISE = (nn.Identity, nn.Dropout, nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
               nn.Mish, nn.Hardtanh, nn.Softplus)

STEPPERS: dict[type | str, Factory] = {
    nn.Sequential: Chain,
    **{cls: PerPosition for cls in (nn.Linear, nn.LayerNorm, nn.Embedding, *ELEMENTWISE)},
}
"""Module class, dotted class name or ``"<module>.*"`` -> stepper factory ``(module, path, build) -> Stepper``
(see the module docstring)."""


def register_stepper(*keys: type | str) -> Callable[[Factory], Factory]:
    """Decorator: the factory (a :class:`Stepper` subclass or a function) for modules of the classes ``keys``."""
    def register(factory: Factory) -> Factory:
        for key in keys:
            STEPPERS[key] = factory
        return factory
    return register


def _registered(cls: type) -> Factory | None:
    for key in (cls, f"{cls.__module__}.{cls.__qualname__}", f"{cls.__module__}.*"):
        if key in STEPPERS:
            return STEPPERS[key]
    return None


def _definer(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines attribute ``name``."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def _factory(cls: type) -> Factory | None:
    """See the module docstring for the order."""
    if (factory := _registered(cls)) is not None:
        return factory
    stepper, forward = _definer(cls, "step"), _definer(cls, "forward")
    if stepper is not None and forward is not None and issubclass(stepper, forward):
        return OwnStep
    if getattr(cls, "tokenwise", False) is True:
        return PerPosition
    for base in cls.__mro__[1:]:
        if (factory := _registered(base)) is not None and _definer(cls, "forward") is _definer(base, "forward"):
            return factory
    return None


def build_stepper(module: nn.Module, path: str = "") -> Stepper:
    """The stepper of ``module`` (named ``path`` in the model) and, through it, of all its descendants."""
    factory = _factory(type(module))
    if factory is None:
        raise UserError(f"no incremental step for {name(path)} ({type(module).__name__}): it is not a "
                        f"per-position or causal module the decoder knows (a module mixing positions cannot run "
                        f"token by token); give it step / init_state or register one with "
                        f"nas_theseus.stepping.register_stepper")
    return factory(module, path, build_stepper)


def join(path: str, child: str) -> str:
    return f"{path}.{child}" if path else child


def name(path: str) -> str:
    """A path for messages (the root has none)."""
    return path or "the model"


def empty_cache(batch: int, heads: int, head_dim: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of no tokens yet: two (B, heads, 0, head_dim) tensors."""
    empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)
    return empty, empty


def attend_cached(q, k, v, cache, scale: float | None = None):
    """Append this token's k, v (B, H, 1, E) to the cache (grown by concatenation, as transformers'
    ``DynamicCache``); the query attends to every cached position (all <= t).

    Returns the attention output (B, 1, H·E) and the grown cache."""
    keys, values = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
    y = F.scaled_dot_product_attention(q, keys, values, scale=scale)
    return y.transpose(1, 2).reshape(q.shape[0], 1, -1), (keys, values)
