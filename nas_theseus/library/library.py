"""The block library as plain data: every (run of parts, block) option with its score and output shape, the links
saying which option may follow which and what that costs, and the guide's own figures. JSON on disk; the solver
(:mod:`nas_theseus.library.solver`) reads a :class:`ChainGraph` made from it and never the scoring code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..convert import Candidate
from ..targets import BlockSpec
from ..utils.files import atomic_write_text
from .blocks import BlockScore
from .solver import Chain, ChainGraph, Link, Option


@dataclass(frozen=True)
class LibraryOption:
    """One block for the run of parts ``start..stop-1`` (``spec`` None: the guide's own part, kept)."""

    start: int
    stop: int
    spec: dict | None
    name: str
    out_shape: tuple[int, ...]
    score: BlockScore | None = None  # None for a kept part (the guide's own: no change)

    @property
    def block(self) -> BlockSpec | None:
        return None if self.spec is None else BlockSpec.from_dict(self.spec)


@dataclass
class BlockLibrary:
    key: str
    part_names: list[str]
    guide_accuracy: float  # validation
    guide_costs: dict  # the guide's own chain's costs (what ratios are taken against)
    base_costs: dict  # the stem's: every chain pays them
    options: list[LibraryOption]
    links: list[Link]
    settings: dict = field(default_factory=dict)  # what the blocks were trained with (steps, ...)
    build: dict = field(default_factory=dict)  # how the build went (blocks trained / read, seconds)

    @property
    def n_parts(self) -> int:
        return len(self.part_names)

    def graph(self, values: list[float]) -> ChainGraph:
        """The chain graph with ``values[i]`` the additive value of option i (the predictor's)."""
        options = [Option(o.start, o.stop, o.name, v) for o, v in zip(self.options, values)]
        return ChainGraph(self.n_parts, options, self.links, self.base_costs)

    def candidate(self, chain: Chain | tuple[int, ...]) -> Candidate:
        """The candidate a chain stands for: its runs as the partition, swapped input to output; the guide's head
        where the last run is kept, else a new linear head."""
        picked = [self.options[i] for i in (chain.options if isinstance(chain, Chain) else chain)]
        blocks = tuple(o.block for o in picked)
        return Candidate(blocks, head="guide" if blocks[-1] is None else "linear",
                         partition=tuple(o.stop - o.start for o in picked))

    def chain_of(self, candidate: Candidate) -> tuple[int, ...] | None:
        """The options a candidate is made of (a kept run as its kept parts), or None where the library lacks one."""
        index = {(o.start, o.stop, json.dumps(o.spec, sort_keys=True)): i for i, o in enumerate(self.options)}
        partition = candidate.partition or (1,) * len(candidate.blocks)
        chain, start = [], 0
        for n, spec in zip(partition, candidate.blocks):
            runs = [(p, p + 1) for p in range(start, start + n)] if spec is None else [(start, start + n)]
            for a, b in runs:
                i = index.get((a, b, json.dumps(None if spec is None else spec.to_dict(), sort_keys=True)))
                if i is None:
                    return None
                chain.append(i)
            start += n
        return tuple(chain)

    def ratios(self, costs: dict) -> dict:
        """Each cost as a ratio to the guide's."""
        return {k: v / self.guide_costs[k] for k, v in costs.items() if self.guide_costs.get(k)}

    def save(self, path: Path) -> None:
        d = asdict(self)
        atomic_write_text(path, json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: Path) -> BlockLibrary:
        d = json.loads(Path(path).read_text())
        d["options"] = [LibraryOption(**{**o, "out_shape": tuple(o["out_shape"]),
                                         "score": None if o["score"] is None else BlockScore(**o["score"])})
                        for o in d["options"]]
        d["links"] = [Link(**link) for link in d["links"]]
        return cls(**d)
