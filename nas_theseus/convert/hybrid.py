"""The hybrid network: the guide with some parts swapped for targets, runnable end to end at every stage.

Shapes are planned for the *final* network first: target k reads what its predecessor will give it once the
conversion is done (the previous target's output, or the guide activation where the previous part is kept).
While the network is half converted, three kinds of joints appear:

* **input adapter** (temporary, trained with the target): target k reads guide part k−1, which will be
  swapped later and whose output shape differs from what target k will eventually read;
* **output adapter**: a guide part (or the guide head) reads a target's output. CKA ignores rotation and
  scale, so even an equally shaped output is in another basis: the adapter is refit in closed form (ridge) to
  map the target's output onto the guide activation on a fixed probe batch. It is temporary when the guide
  part is swapped later and part of the deploy network when the part is kept;
* **new head** (``head="linear"``): a linear classifier on the final network's last activation, fit by
  ridge to the guide's logits until fine-tuning trains it.

The stem is the guide's (frozen until fine-tuning) unless ``stem="relearn"``: then a re-initialised copy of
it feeds target 0 once part 0 is swapped, and trains with that target (the guide path keeps the guide's stem).

For a token guide (``guide.tokens``, a language model) every adapter and the new head act on each position
alone (token-wise bridges, a per-token Linear(D, V)), and with a causal guide every target block must be
causal (:func:`~nas_theseus.targets.is_causal`), so no hybrid at any stage sees future tokens.

The guide's own modules are never registered here (so ``train()`` cannot touch them, and state dicts hold
only what the conversion trains); kept parts are deep-copied into the deploy network.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from ..errors import UserError
from ..guides import Guide
from ..targets import create_target, is_causal, make_bridge, probe_output_shape
from ..targets.layers import numel
from ..utils.hashing import seed_from_key, stable_hash
from ..utils.reinit import reinitialize
from .config import Candidate, ConvertConfig

Shape = tuple[int, ...]


class DeployModel(nn.Sequential):
    """The converted network: stem, then per part a target or a kept guide part (with adapters), then the head.

    ``arch`` describes every child (kind, shapes, spec) as JSON-able data; ``boundaries[k]`` is the index of
    the child whose output is the network's activation at part k (for the stitching diagnostic).
    """

    def __init__(self, children: OrderedDict, arch: list[dict], boundaries: list[int]):
        super().__init__(children)
        self.arch = arch
        self.boundaries = boundaries

    def prefix(self, k: int) -> nn.Sequential:
        """The network up to and including part k (a view sharing modules)."""
        return nn.Sequential(*list(self.children())[: self.boundaries[k] + 1])


class Hybrid(nn.Module):
    def __init__(self, guide: Guide, candidate: Candidate, config: ConvertConfig):
        super().__init__()
        guide = guide.grouped(candidate.partition)
        object.__setattr__(self, "guide", guide)  # not a registered submodule (see module docstring)
        if len(candidate.blocks) != len(guide.parts):
            raise UserError(f"the candidate has {len(candidate.blocks)} blocks but the guide has "
                            f"{len(guide.parts)} parts ({', '.join(guide.part_names)})")
        self.candidate, self.config = candidate, config
        self.K = len(guide.parts)
        self.gshapes: list[Shape] = guide.shapes  # A_0 .. A_K
        self.kept = {k for k, b in enumerate(candidate.blocks) if b is None}
        self.targets = nn.ModuleDict()
        self.in_shapes: list[Shape] = []
        self.out_shapes: list[Shape] = []
        h_shape = self.gshapes[0]
        for k, spec in enumerate(candidate.blocks):
            self.in_shapes.append(h_shape)
            if spec is None:
                h_shape = self.gshapes[k + 1]
            else:
                if guide.causal and not is_causal(spec):
                    raise UserError(f"part {guide.parts[k].name}: {spec} mixes positions, but this guide is causal "
                                    f"(a language model): use a causal block (lstm, gru, elman, causal_attention, "
                                    f"tokenwise_mlp without token_mixing)")
                torch.manual_seed(seed_from_key(self.part_key(k)))
                try:
                    block = create_target(spec, h_shape, self.gshapes[k + 1])
                    h_shape = probe_output_shape(block, h_shape)
                except UserError as e:
                    raise UserError(f"part {guide.parts[k].name}: {e}") from None
                except RuntimeError as e:
                    raise UserError(f"part {guide.parts[k].name}: {spec} cannot read shape {h_shape} ({e})") from None
                self.targets[str(k)] = block
            self.out_shapes.append(h_shape)
        self.in_adapters = nn.ModuleDict()
        self.out_adapters = nn.ModuleDict()
        self.tokens = guide.tokens
        head_in, head_out = ((self.out_shapes[-1][-1], guide.output_shape[-1]) if self.tokens
                             else (numel(self.out_shapes[-1]), numel(guide.output_shape)))
        self.new_head = nn.Linear(head_in, head_out) if candidate.head == "linear" else None
        self.new_stem = self._relearned_stem() if candidate.stem == "relearn" else None
        self.current: set[int] = set()
        # moves with .to(): modules made later (the adapters of swap_in) are made where the hybrid lives
        self.register_buffer("_device", torch.empty(0), persistent=False)
        self.to(guide.device)  # built where the guide lives: no module of a hybrid is ever on another device

    def _relearned_stem(self) -> nn.Module:
        stem = copy.deepcopy(self.guide.stem).requires_grad_(True)
        torch.manual_seed(seed_from_key(stable_hash({"seed": self.config.seed, "stem": "relearn"})))
        reinitialize(stem)
        return stem

    # --- keys and structure ------------------------------------------------------------------------
    def part_key(self, k: int) -> str:
        spec = self.candidate.blocks[k]
        return stable_hash({"seed": self.config.seed, "part": k, "spec": None if spec is None else spec.to_dict(),
                            "in": list(self.in_shapes[k])})

    @property
    def device(self) -> torch.device:
        return self._device.device

    def swap_in(self, parts) -> None:
        """Mark parts as swapped and create the adapters the new configuration needs (on the hybrid's device)."""
        self.current |= set(parts)
        for k in sorted(self.current):
            if self._needs_in_adapter(k) and str(k) not in self.in_adapters:
                torch.manual_seed(seed_from_key(self.part_key(k) + "in"))
                self.in_adapters[str(k)] = self.bridge(self.gshapes[k], self.in_shapes[k])
            if self._needs_out_adapter(k) and str(k) not in self.out_adapters:
                self.out_adapters[str(k)] = self.bridge(self.out_shapes[k], self.gshapes[k + 1])

    def bridge(self, in_shape: Shape, out_shape: Shape) -> nn.Module:
        """A new adapter of the configured kind (token-wise for a token guide), on the hybrid's device."""
        return make_bridge(self.config.bridge, in_shape, out_shape, rank=self.config.bridge_rank,
                           tokenwise=self.tokens).to(self.device)

    def _needs_in_adapter(self, k: int) -> bool:
        return k in self.current and k > 0 and (k - 1) not in self.current and (k - 1) not in self.kept \
            and self.gshapes[k] != self.in_shapes[k]

    def _needs_out_adapter(self, k: int) -> bool:
        if k not in self.current:
            return False
        if k + 1 < self.K:
            return (k + 1) not in self.current
        return self.candidate.head == "guide"

    def _use_new_head(self) -> bool:
        last = self.K - 1
        return self.new_head is not None and (last in self.current or last in self.kept)

    def reads_through_adapter(self, stop: int) -> bool:
        """Whether a part up to ``stop`` reads a target's output through an output adapter (a guide part
        after a swapped one), i.e. whether refitting adapters can change what a loss up to ``stop`` sees."""
        return any(k + 1 <= stop and self._needs_out_adapter(k) for k in self.current)

    def used_in_adapters(self) -> list[int]:
        return [k for k in sorted(self.current) if self._needs_in_adapter(k)]

    def _tokenwise_tag(self) -> dict:
        return {"tokenwise": True} if self.tokens else {}

    # --- running -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *, collect: bool = False):
        """Run the hybrid; with ``collect`` also return {part k: target k's output}."""
        outs: dict[int, torch.Tensor] = {}
        h, basis = self._stem(x), "guide"
        for k in range(self.K):
            h, basis = self._step(k, h, basis)
            if k in self.current:
                outs[k] = h
        y = self._head(h, basis)
        return (y, outs) if collect else y

    def first_swapped(self) -> int:
        """The first swapped part: every part before it is the guide's, so its input is the cached A_k."""
        return min(self.current)

    def forward_span(self, x: torch.Tensor | None, a_start: torch.Tensor | None, stop: int
                     ) -> dict[int, torch.Tensor]:
        """Outputs {k: target k's output} of the swapped parts up to ``stop``, computed from the first swapped
        part on: its input is the guide's own activation ``a_start`` (the cached A_k; every part before it is
        the guide's), or the relearned stem on ``x`` when that part is 0. Nothing after ``stop`` runs (no later
        guide part, adapter or head), and the stem is not recomputed."""
        start = self.first_swapped()
        if start == 0 and self.new_stem is not None:
            h = self.new_stem(x)
        else:
            h = a_start
        outs: dict[int, torch.Tensor] = {}
        basis = "guide"
        for k in range(start, stop + 1):
            h, basis = self._step(k, h, basis)
            if k in self.current:
                outs[k] = h
        return outs

    def _stem(self, x):
        if self.new_stem is not None and 0 in self.current:
            return self.new_stem(x)
        with torch.no_grad():
            return self.guide.stem(x)

    def _step(self, k: int, h, basis: str, fit_target=None):
        if k in self.current:
            if basis == "guide" and self._needs_in_adapter(k):
                h = self.in_adapters[str(k)](h)
            return self.targets[str(k)](h), "target"
        if basis == "target":
            adapter = self.out_adapters[str(k - 1)]
            if fit_target is not None:
                adapter.fit(h, fit_target, self.config.ridge)
            h = adapter(h)
        return self.guide.parts[k].module(h), "guide"

    def _head(self, h, basis: str, fit_target=None):
        if self._use_new_head():
            if fit_target is not None:
                _fit_linear(self.new_head, h, fit_target[-1], self.config.ridge, tokens=self.tokens)
            return self.new_head(h) if self.tokens else self.new_head(h.flatten(1))
        if basis == "target":
            adapter = self.out_adapters[str(self.K - 1)]
            if fit_target is not None:
                adapter.fit(h, fit_target[self.K], self.config.ridge)
            h = adapter(h)
        return self.guide.head(h)

    @torch.no_grad()
    def refit(self, probe_x: torch.Tensor, probe_acts: list[torch.Tensor], *, stop: int | None = None) -> None:
        """Refit output adapters and the new head by ridge on the probe batch, in forward order. With ``stop``,
        only the adapters that parts up to ``stop`` read (those a stage's loss reads through), from the first
        swapped part's cached input on (as :meth:`forward_span`)."""
        was = self.training
        self.eval()
        if stop is None:
            start, h = 0, self._stem(probe_x)
        else:
            start = self.first_swapped()
            h = self.new_stem(probe_x) if start == 0 and self.new_stem is not None else probe_acts[start]
        basis = "guide"
        for k in range(start, self.K if stop is None else stop + 1):
            target = probe_acts[k] if basis == "target" and k not in self.current else None
            h, basis = self._step(k, h, basis, fit_target=target)
        if stop is None:
            self._head(h, basis, fit_target=probe_acts)
        self.train(was)

    # --- deploy ------------------------------------------------------------------------------------
    def deploy(self) -> DeployModel:
        """The final network (all planned swaps done), as copies; temporary adapters are left out."""
        if self.current != set(range(self.K)) - self.kept:
            raise RuntimeError("deploy() before every planned part is swapped")
        children: OrderedDict[str, nn.Module] = OrderedDict()
        relearned = self.new_stem is not None
        arch: list[dict] = [{"name": "stem", "kind": "guide", "path": self.guide.stem_paths,
                             "out": list(self.gshapes[0]), **({"relearned": True} if relearned else {})}]
        children["stem"] = copy.deepcopy(self.new_stem if relearned else self.guide.stem)
        boundaries: list[int] = []
        for k in range(self.K):
            name = self.guide.parts[k].name
            if k in self.kept:
                if k > 0 and (k - 1) not in self.kept:
                    children[f"adapter{k - 1}"] = copy.deepcopy(self.out_adapters[str(k - 1)])
                    arch.append({"name": f"adapter{k - 1}", "kind": "bridge", "bridge": self.config.bridge,
                                 "rank": self.config.bridge_rank, "in": list(self.out_shapes[k - 1]),
                                 "out": list(self.gshapes[k]), **self._tokenwise_tag()})
                part = self.guide.parts[k]
                children[f"part{k}"] = copy.deepcopy(part.module)
                path = part.paths if part.members else name  # a kept run rebuilds as the chain of its paths
                arch.append({"name": f"part{k}", "kind": "guide", "path": path, "out": list(self.gshapes[k + 1])})
            else:
                children[f"part{k}"] = copy.deepcopy(self.targets[str(k)])
                arch.append({"name": f"part{k}", "kind": "target", "replaces": name,
                             "spec": self.candidate.blocks[k].to_dict(full=True), "in": list(self.in_shapes[k]),
                             "out": list(self.out_shapes[k]), "guide_out": list(self.gshapes[k + 1])})
            boundaries.append(len(children) - 1)
        if self._use_new_head():
            head = copy.deepcopy(self.new_head)
            children["head"] = nn.Sequential(head) if self.tokens else nn.Sequential(nn.Flatten(), head)
            arch.append({"name": "head", "kind": "linear", "in": list(self.out_shapes[-1]),
                         "out": list(self.guide.output_shape), **({"tokenwise": True} if self.tokens else {})})
        else:
            if (self.K - 1) not in self.kept:
                children["adapter_head"] = copy.deepcopy(self.out_adapters[str(self.K - 1)])
                arch.append({"name": "adapter_head", "kind": "bridge", "bridge": self.config.bridge,
                             "rank": self.config.bridge_rank, "in": list(self.out_shapes[-1]),
                             "out": list(self.gshapes[self.K]), **self._tokenwise_tag()})
            children["head"] = copy.deepcopy(self.guide.head)
            arch.append({"name": "head", "kind": "guide", "path": self.guide.head_paths,
                         "out": list(self.guide.output_shape)})
        model = DeployModel(children, arch, boundaries)
        model.requires_grad_(True)
        return model


@torch.no_grad()
def _fit_linear(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, ridge: float, *, tokens: bool = False) -> None:
    """Ridge fit of ``layer`` to map x to y: per sample (flattened), or per position (rows) for tokens."""
    from ..targets import ridge_solve

    if tokens:
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    w, b = ridge_solve(x.flatten(1), y.flatten(1), ridge)
    layer.weight.copy_(w.T)
    layer.bias.copy_(b)
