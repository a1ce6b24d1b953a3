"""A guide: a frozen network cut into stem -> part_1 -> ... -> part_K -> head.

The guide's activation A_k(x) is the output of part k (A_0 is the input of part 1). Activations are captured
by forward hooks on the part modules during the guide's own forward pass, so what the engine aligns to is
exactly what the unmodified guide computes. Stem, parts and head run in order must reproduce the guide's own
output; :meth:`Guide.from_module` checks that (max |Δ| ≤ 1e-5) and refuses the guide otherwise.

The guide is shared by every conversion (and every trial of a study), so it stays in ``eval()`` mode with
``requires_grad=False``; the engine never registers its modules inside a trainable module, and a module
that must be trained (a kept part, in fine-tuning) is a deep copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError, did_you_mean
from ..stepping import Chain, register_stepper
from ..utils.hashing import module_fingerprint, stable_hash

REPRODUCE_TOL = 1e-5
# source entries that say where something lies, not what it is: never part of an identity or a key
LOCATION_KEYS = ("cache_key", "file", "weights_file", "directory", "bundled")


@dataclass(frozen=True)
class Part:
    """One replaceable part of a guide: its submodule path and the module itself. A part of a regrouped guide
    (:meth:`Guide.grouped`) is a run of consecutive parts (``members``), run in order."""

    name: str
    module: nn.Module = field(compare=False, repr=False)
    members: tuple[Part, ...] = field(default=(), compare=False, repr=False)

    @property
    def paths(self) -> list[str]:
        """The submodule paths this part runs, in order."""
        return [m.name for m in self.members] if self.members else [self.name]

    @property
    def first(self) -> nn.Module:
        return self.members[0].module if self.members else self.module

    @property
    def last(self) -> nn.Module:
        return self.members[-1].module if self.members else self.module


class _Chain(nn.Module):
    """Run several submodules in order (a stem or head given as a list of paths)."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        self.items = nn.ModuleList(modules)

    def forward(self, x):
        for m in self.items:
            x = m(x)
        return x


@register_stepper(_Chain)
def _chain_step(module: _Chain, path: str, build) -> Chain:
    """Incremental decoding: the items in order (nas_theseus.stepping)."""
    return Chain(module, path, build, ((f"items.{i}", m) for i, m in enumerate(module.items)))


# Named adapters for stems/heads that are not plain submodules (a timm ViT's embedding, a model's forward_head):
# "@name" in a stem/head path list calls GUIDE_ADAPTERS[name](module), so exports can rebuild them by name.
GUIDE_ADAPTERS: dict[str, Callable[[nn.Module], nn.Module]] = {}


def _resolve(module: nn.Module, path: str, role: str) -> nn.Module:
    if path.startswith("@"):
        if path[1:] not in GUIDE_ADAPTERS:
            raise UserError(f"unknown {role} adapter {path!r}; known: {', '.join('@' + n for n in GUIDE_ADAPTERS)}")
        return GUIDE_ADAPTERS[path[1:]](module)
    try:
        return module.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        raise UserError(f"{role} path {path!r} is not a submodule of the guide{did_you_mean(path, names)}; "
                        f"top-level modules: {', '.join(n for n, _ in module.named_children())}") from None


def _paths(spec):
    """The JSON-able form of a stem/head given by path(s); False when given as a module object."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return False


def _as_module(module: nn.Module, spec, role: str) -> nn.Module:
    if spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        return _resolve(module, spec, role)
    if isinstance(spec, (list, tuple)):
        return _Chain([_resolve(module, p, role) for p in spec])
    raise UserError(f"{role} must be a submodule path, a list of paths or a module, got {type(spec).__name__}")


class Guide:
    """A frozen guide network with its ordered parts; build with :meth:`from_module`.

    Attributes: ``module`` (the whole network), ``stem``, ``parts`` (list of :class:`Part`), ``head``,
    ``sample_shape`` (input shape without the batch), ``shapes`` (per-sample shapes of A_0..A_K),
    ``output_shape``, ``source`` (a JSON-able description) and ``identity`` (a hash of source and weights).

    ``tokens``: activations are (T, D) sequences whose positions the engine keeps apart (token-wise bridges,
    heads and similarity over batch·token rows); ``causal``: the guide's output at position t reads no input
    after t, and the engine keeps every hybrid causal (language models set both).
    """

    def __init__(self, module: nn.Module, stem: nn.Module, parts: list[Part], head: nn.Module, *,
                 sample_shape: tuple[int, ...], source: dict, input_dtype: torch.dtype = torch.float32,
                 stem_paths=None, head_paths=None, example: torch.Tensor | None = None, tokens: bool = False,
                 causal: bool = False, shapes: tuple[list, tuple] | None = None):
        self.module = module
        self.tokens, self.causal = tokens, causal
        self.stem_paths = stem_paths  # how stem and head were named (paths), so exports can rebuild them
        self.head_paths = head_paths
        self.stem = stem
        self.parts = parts
        self.head = head
        self.sample_shape = tuple(sample_shape)
        self.source = dict(source)
        self.input_dtype = input_dtype
        self._example = None if example is None else example.detach().cpu()
        self.freeze()
        if shapes is None:  # one forward pass of an example made where the guide lives
            acts = self.activations(self.example_input(4))
            shapes = ([tuple(a.shape[1:]) for a in acts[:-1]], tuple(acts[-1].shape[1:]))
        self.shapes: list[tuple[int, ...]] = [tuple(s) for s in shapes[0]]
        if tokens and any(len(s) != 2 for s in self.shapes):
            raise UserError(f"a token guide's activations must be (T, D) sequences, got shapes {self.shapes}")
        self.output_shape: tuple[int, ...] = tuple(shapes[1])
        self._identity: str | None = None
        self._weights: str | None = None  # the weights' fingerprint, hashed once
        self.partition: tuple[int, ...] | None = None  # set on a regrouped guide (see grouped)
        self.levels: list[int] | None = None  # its A_k among the ungrouped guide's activations

    def grouped(self, partition: Sequence[int] | None) -> Guide:
        """This guide with runs of consecutive parts merged into one part each (``partition``: the run lengths,
        summing to the number of parts): a target then replaces a whole run and aligns at the run's last
        boundary. The parts' modules are shared; None (or all runs of 1) is this guide itself."""
        if partition is None or all(n == 1 for n in partition):
            return self if self.partition is None else self._base
        partition = tuple(int(n) for n in partition)
        if self.partition is not None:
            return self if partition == self.partition else self._base.grouped(partition)
        if sum(partition) != len(self.parts) or min(partition) < 1:
            raise UserError(f"partition {list(partition)} must split the guide's {len(self.parts)} parts "
                            f"({', '.join(self.part_names)}) into runs of at least one part")
        memo = self.__dict__.setdefault("_grouped", {})  # one per partition: its identity is hashed once
        if partition not in memo:
            memo[partition] = self._group(partition)
        return memo[partition]

    def _group(self, partition: tuple[int, ...]) -> Guide:
        parts, start = [], 0
        for n in partition:
            run = tuple(self.parts[start:start + n])
            parts.append(run[0] if n == 1 else
                         Part("+".join(p.name for p in run), _Chain([p.module for p in run]), members=run))
            start += n
        ends = [sum(partition[:i + 1]) for i in range(len(partition))]
        # the shapes at the runs' boundaries are the base guide's: no forward pass, wherever the guide lives
        g = Guide(self.module, self.stem, parts, self.head, sample_shape=self.sample_shape, source=self.source,
                  input_dtype=self.input_dtype, stem_paths=self.stem_paths, head_paths=self.head_paths,
                  example=self._example, tokens=self.tokens, causal=self.causal,
                  shapes=([self.shapes[0], *(self.shapes[e] for e in ends)], self.output_shape))
        g.partition, g.levels, g._base = partition, [0, *ends, len(self.parts) + 1], self
        return g

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, parts: Sequence[str], *, sample_shape: Sequence[int],
                    stem=None, head=None, source: dict | None = None,
                    input_dtype: torch.dtype = torch.float32, check_input: torch.Tensor | None = None,
                    tokens: bool = False, causal: bool = False) -> Guide:
        """Wrap ``module`` as a guide cut at the submodules named in ``parts`` (in forward order).

        ``stem`` / ``head``: a submodule path, a list of paths run in order, a module, or None (identity).
        For an ``nn.Sequential`` whose parts are top-level children, stem and head default to the children
        before the first and after the last part. The guide is refused (:class:`UserError`) unless stem,
        parts and head run in order reproduce ``module(x)``. ``tokens`` / ``causal``: see the class docstring.

        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> g = Guide.from_module(net, ["0", "1"], sample_shape=(4,))
        >>> g.shapes
        [(4,), (8,), (8,)]
        """
        if not parts:
            raise UserError("a guide needs at least one part path")
        if len(set(parts)) != len(parts):
            raise UserError(f"part paths repeat: {list(parts)}")
        part_list = [Part(p, _resolve(module, p, "part")) for p in parts]
        if stem is None and head is None and isinstance(module, nn.Sequential):
            stem, head = _sequential_stem_head(module, list(parts))
        guide = cls(module, _as_module(module, stem, "stem"), part_list, _as_module(module, head, "head"),
                    sample_shape=tuple(sample_shape), source=source or {"kind": "module",
                                                                         "class": type(module).__name__},
                    input_dtype=input_dtype, stem_paths=_paths(stem), head_paths=_paths(head),
                    example=None if input_dtype.is_floating_point else check_input, tokens=tokens, causal=causal)
        guide.check_reproduces(check_input)
        return guide

    def freeze(self) -> None:
        for m in (self.module, self.stem, self.head, *(p.module for p in self.parts)):
            m.eval()
            m.requires_grad_(False)

    # --- running ------------------------------------------------------------------------------------
    def example_input(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` example inputs on the guide's device (drawn on the CPU from ``seed``: the same rows anywhere)."""
        g = torch.Generator().manual_seed(seed)
        if self.input_dtype.is_floating_point:
            x = torch.randn((n, *self.sample_shape), generator=g, dtype=self.input_dtype)
        elif self._example is not None:  # integer inputs (tokens): rows of the example given at construction
            x = self._example[torch.randint(len(self._example), (n,), generator=g)]
        else:
            raise UserError("give check_input for a guide whose input is not floating point")
        return x.to(self.device)

    @property
    def device(self) -> torch.device:
        """Where the guide's weights live (the CPU for a guide without parameters or buffers)."""
        return _own_device(self.module) or torch.device("cpu")

    def check_device(self, x: torch.Tensor) -> None:
        """Refuse, in one line naming both, a batch on another device than the guide's (a guide without
        parameters or buffers runs anywhere)."""
        own = _own_device(self.module)
        if own is not None and x.device != own:
            raise UserError(f"the guide is on {own} but was given a batch on {x.device}: move the batch (or the "
                            f"guide, guide.to(device)) first")

    def to(self, device: torch.device | str) -> Guide:
        """Move the guide's modules to ``device`` (in place; a regrouped guide shares them with its base)."""
        if torch.device(device).type == "meta" and self.device.type != "meta":
            self.weights_fingerprint  # noqa: B018 - the meta device keeps no values: hash them while they exist
        self.module.to(device)
        for m in (self.stem, self.head):
            m.to(device)
        return self

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[A_0, A_1, ..., A_K, output] for a batch, captured by hooks during ``module(x)``; a batch on another
        device than the guide's is refused in one line."""
        self.check_device(x)
        self.freeze()
        captured: dict[int, torch.Tensor] = {}

        def pre_hook(_m, args):
            captured.setdefault(0, _first_tensor(args))

        def make_hook(k):
            def hook(_m, _args, out):
                captured[k] = _first_tensor(out)
            return hook

        # on the modules the guide's forward calls (a regrouped part's first and last member)
        handles = [self.parts[0].first.register_forward_pre_hook(pre_hook)]
        handles += [p.last.register_forward_hook(make_hook(k + 1)) for k, p in enumerate(self.parts)]
        try:
            out = self.module(x)
        finally:
            for h in handles:
                h.remove()
        missing = [self.parts[k - 1].name for k in range(1, len(self.parts) + 1) if k not in captured]
        if missing or 0 not in captured:
            raise UserError(f"guide parts {missing or [self.parts[0].name]} were not called by the guide's forward")
        return [captured[k] for k in range(len(self.parts) + 1)] + [_first_tensor(out)]

    @torch.no_grad()
    def activations_upto(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        """[A_0, …, A_upto] by the stem and the parts (as hybrids chain them), computing nothing after part
        ``upto``: what a streamed stage reads of the guide (``upto`` ≤ the number of parts)."""
        self.check_device(x)
        self.freeze()
        h = self.stem(x)
        out = [h]
        for part in self.parts[:upto]:
            h = part.module(h)
            out.append(h)
        return out

    @torch.no_grad()
    def run_chain(self, x: torch.Tensor) -> torch.Tensor:
        """stem -> parts -> head, the decomposition the hybrid networks are built from."""
        h = self.stem(x)
        for p in self.parts:
            h = p.module(h)
        return self.head(h)

    def check_reproduces(self, x: torch.Tensor | None = None) -> float:
        """Max |Δ| between ``module(x)`` and stem -> parts -> head; raises :class:`UserError` above 1e-5."""
        x = self.example_input(8) if x is None else x
        x = x.to(self.device)
        full = self.activations(x)[-1]
        chained = self.run_chain(x)
        if full.shape != chained.shape:
            raise UserError(f"stem + parts + head give shape {tuple(chained.shape)} but the guide gives "
                            f"{tuple(full.shape)}: the parts do not cover the guide's forward")
        delta = (full.float() - chained.float()).abs().max().item()
        if not delta <= REPRODUCE_TOL:
            raise UserError(f"stem + parts + head do not reproduce the guide's output (max |Δ| = {delta:.3g} > "
                            f"{REPRODUCE_TOL:g}): give the stem/head paths, or parts that the forward calls in order")
        return delta

    # --- identity -----------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Hash of the source description and the weights: keys every cache that depends on the guide.

        Where files lie (:data:`LOCATION_KEYS`) is left out: a guide's code enters by its content hash and its
        weights by their fingerprint, so the same study in another folder has the same identity."""
        if self._identity is None:
            # the weights fingerprint stands for the weights: how they were made (a training cache key) is left
            # out, so guides with identical weights share every seed and checkpoint
            source = {k: v for k, v in self.source.items() if k not in LOCATION_KEYS}
            self._identity = stable_hash({"source": source, "parts": [p.name for p in self.parts],
                                          "weights": self.weights_fingerprint,
                                          **({"tokens": True, "causal": self.causal} if self.tokens else {})})
        return self._identity

    @property
    def weights_fingerprint(self) -> str:
        """A hash of the weights' values, computed once (a regrouped guide reads its base guide's: the same
        modules, so no second copy of a guide on a GPU to the host)."""
        if self.partition is not None:
            return self._base.weights_fingerprint
        if self._weights is None:
            self._weights = module_fingerprint(self.module)
        return self._weights

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]

    def __repr__(self) -> str:
        shapes = " -> ".join(str(s) for s in self.shapes)
        return f"Guide({self.source}, parts={self.part_names}, shapes {shapes} -> {self.output_shape})"


def _own_device(module: nn.Module) -> torch.device | None:
    """The device of ``module``'s first parameter or buffer; None when it holds neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


def _first_tensor(obj) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], torch.Tensor):
        return obj[0]
    raise UserError(f"a guide part must take and return a tensor, got {type(obj).__name__}")


def _sequential_stem_head(module: nn.Sequential, parts: list[str]):
    names = [n for n, _ in module.named_children()]
    top = [p.split(".")[0] for p in parts]
    if any(p not in names for p in top) or top != sorted(top, key=names.index):
        raise UserError("parts of an nn.Sequential guide must be its top-level children in order, or give stem/head")
    first, last = names.index(top[0]), names.index(top[-1])
    if len(set(top)) != len(top) or names[first:last + 1] != top:
        raise UserError(f"parts {parts} skip children of the Sequential between them; "
                        f"list every child from {top[0]!r} to {top[-1]!r} or give stem/head")
    stem = names[:first] or None
    head = names[last + 1:] or None
    return stem, head
