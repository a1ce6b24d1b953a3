"""Build (or read back) a study's block library: every run of consecutive parts its search space can form, times
every block the space offers for it, each trained once alone for ``steps`` steps, scored once, and every link
between them costed once.

Blocks are stored by content key under ``folder/blocks`` (and in the artifact store): a library is reused by any
study with the same guide, data and settings, and a killed build resumes at the block it was training. The
assembled library is written to ``folder/library-<key>.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..convert import ConvertConfig
from ..convert.activations import GuideActivations, choose_activations
from ..convert.checkpoints import CheckpointStore
from ..errors import UserError
from ..search import SearchSpace
from ..targets import BlockSpec
from ..utils.hashing import keyed_fields, stable_hash
from ..utils.progress import progress_bar
from .blocks import block_key, guide_val_logits, score_block
from .costs import LinkCosts, add
from .library import BlockLibrary, LibraryOption
from .solver import Link

logger = logging.getLogger(__name__)
LIBRARY_COSTS = ("flops", "latency_ms")  # what a library measures per link (latency only where the study times it)


@keyed_fields()
@dataclass(frozen=True)
class LibrarySettings:
    """The ``[library]`` section: ``enabled`` (build the library before a study's first trial and enqueue its
    predicted front), ``steps`` (optimizer steps each block trains alone, fixed: the library's cost), ``cost``
    (``flops`` | ``latency_ms``: the cost the enqueued candidates are budgeted on) and ``levels`` (one enqueued
    candidate per level, a ratio of that cost to the guide's); ``latency_repeats``: timed blocks per module when
    the library measures latency (the study has a ``latency_ms`` objective)."""

    enabled: bool = False
    steps: int = 300
    cost: str = "flops"
    levels: list = dataclasses.field(default_factory=lambda: [0.25, 0.5, 0.75])
    latency_repeats: int = 20

    def block_config(self, convert: ConvertConfig) -> ConvertConfig:
        """How every block trains: the study's conversion settings, alone (independent), ``steps`` fixed steps."""
        return dataclasses.replace(convert, schedule="independent", steps_per_stage=self.steps, stage_stop="fixed")


def refusal(space: SearchSpace, guide) -> str | None:
    """Why the library cannot serve this space and guide, in one line (None where it can)."""
    if space.block_options is None or space.candidate_params is None:
        missing = [n for n in ("block_options", "candidate_params") if getattr(space, n) is None]
        return (f"search space {space.path.name} cannot enumerate its blocks for a block library: it defines no "
                f"{' and no '.join(f'{n}()' for n in missing)} (docs/library.md)")
    if guide.tokens:
        return "the block library measures per-sample costs; a token guide (a language model) is not supported yet"
    return None


def run_options(space: SearchSpace, guide) -> list[tuple[int, int, BlockSpec | None]]:
    """(start, stop, block) for every run the space forms and every block it offers there; a kept run of several
    parts is left out (the same network as its parts kept one by one)."""
    found = []
    n = len(guide.parts)
    for start in range(n):
        for stop in range(start + 1, n + 1):
            blocks = space.block_options(guide, start, stop)
            if not isinstance(blocks, list | tuple) or any(b is not None and not isinstance(b, BlockSpec)
                                                           for b in blocks):
                raise UserError(f"{space.path.name}: block_options({start}, {stop}) must return a list of BlockSpec "
                                f"or None, got {blocks!r}")
            found += [(start, stop, b) for b in dict.fromkeys(blocks) if b is not None or stop == start + 1]
    for p in range(n):  # every part can be kept: the guide itself is a chain
        if (p, p + 1, None) not in found:
            found.append((p, p + 1, None))
    return sorted(found, key=lambda o: (o[0], o[1], o[2] is not None))


def build_library(guide, space: SearchSpace, data, convert: ConvertConfig, settings: LibrarySettings, *,
                  folder: Path, device: str, latency: dict | None = None, activations=None, artifacts=None,
                  progress: bool = True) -> BlockLibrary:
    """The library of ``space`` over ``guide``: read from ``folder`` where it was assembled before, else each block
    read back where it is stored or trained now (see the module docstring), and the links costed.
    ``latency``: ``measure_latency`` settings to time each link's modules (None: FLOPs only). ``activations``: the
    guide's cached activations over the training split, if the caller has them."""
    why = refusal(space, guide)
    if why:
        raise UserError(why)
    t0 = time.perf_counter()
    config = settings.block_config(convert)
    runs = run_options(space, guide)
    trained = [o for o in runs if o[2] is not None]
    keys = [block_key(guide, a, b, s, data, config, device) for a, b, s in trained]
    key = stable_hash({"library": 1, "blocks": keys, "runs": [[a, b, None if s is None else s.to_dict()]
                                                              for a, b, s in runs],
                       "latency": latency, "latency_repeats": settings.latency_repeats,
                       "bridge": [convert.bridge, convert.bridge_rank]})
    path = Path(folder) / f"library-{key}.json"
    if path.is_file():
        return BlockLibrary.load(path)
    store = CheckpointStore(Path(folder) / "blocks", remote=artifacts)
    if activations is None and choose_activations(config.activations, data, guide)[0] == "cache":
        activations = GuideActivations.compute(guide, data.train, data_key=data.fingerprint_on(device), device=device,
                                               progress=progress)
    logits = guide_val_logits(guide, data, device)
    scores, read = {}, 0
    bar = progress_bar(total=len(trained), desc="block library", unit="block", enabled=progress, leave=True)
    with bar:
        for (start, stop, spec), block in zip(trained, keys):
            bar.set_postfix_str(f"{'+'.join(guide.part_names[start:stop])}={spec}")
            scores[block], was_read = score_block(guide, start, stop, spec, data, config, key=block, device=device,
                                                  store=store, activations=activations, guide_logits=logits)
            read += was_read
            bar.update()
    library = _assemble(key, guide, runs, [scores[k] for k in keys], data, convert, settings, latency, logits,
                        device)
    library.build = {"blocks": len(trained), "trained": len(trained) - read, "read_back": read,
                     "wall_s": round(time.perf_counter() - t0, 3)}
    library.save(path)
    logger.info("block library: %d blocks (%d trained now, %d read back), %d links, %.0f s", len(trained),
                len(trained) - read, read, len(library.links), library.build["wall_s"])
    return library


def _assemble(key: str, guide, runs, scores: list, data, convert: ConvertConfig, settings: LibrarySettings,
              latency: dict | None, logits, device: str) -> BlockLibrary:
    """The library's plain data from the scored blocks (in ``runs``' order): its options, their links and
    costs, the guide's figures."""
    costs = LinkCosts(guide, bridge=convert.bridge, bridge_rank=convert.bridge_rank,
                      latency=None if latency is None else {**latency, "repeats": settings.latency_repeats})
    scored = iter(scores)
    options = []
    for start, stop, spec in runs:
        name = f"{'+'.join(guide.part_names[start:stop])}={'keep' if spec is None else spec}"
        if spec is None:
            options.append(LibraryOption(start, stop, None, name, tuple(guide.shapes[stop])))
            continue
        built = costs.target(spec, guide.shapes[start], stop)
        if built is None:
            raise UserError(f"block {name} cannot read the guide's own activation {tuple(guide.shapes[start])}")
        options.append(LibraryOption(start, stop, spec.to_dict(), name, tuple(built[1]), next(scored)))
    links = _links(options, guide, costs)
    guide_chain = [next(i for i, o in enumerate(options) if o.start == p and o.spec is None)
                   for p in range(len(guide.parts))]
    guide_costs = add(costs.base(), *_chain_costs(links, guide_chain))
    return BlockLibrary(key, list(guide.part_names), _accuracy(logits, data), guide_costs, costs.base(), options,
                        links, settings={"steps": settings.steps,
                                         "stage_settings": settings.block_config(convert).stage_settings(device)})


def _links(options: list[LibraryOption], guide, costs: LinkCosts) -> list[Link]:
    """Every link of the chain graph with its costs: into each option from the input or from an option that ends
    where it starts and whose output it can read, and from each last option into the output (the head)."""
    links = []
    n = len(guide.parts)
    for j, dst in enumerate(options):
        sources = [None] if dst.start == 0 else [i for i, o in enumerate(options) if o.stop == dst.start]
        for i in sources:
            src = None if i is None else options[i]
            in_shape = tuple(guide.shapes[0]) if src is None else src.out_shape
            if dst.spec is None:
                behind = [] if src is None or src.spec is None else [costs.adapter(in_shape, guide.shapes[dst.start])]
                links.append(Link(i, j, add(costs.kept(dst.start, dst.stop), *behind)))
                continue
            built = costs.target(dst.block, in_shape, dst.stop)
            if built is not None and tuple(built[1]) == dst.out_shape:
                links.append(Link(i, j, costs.entered(dst.block, in_shape, dst.stop)))
        if dst.stop == n:
            links.append(Link(j, None, costs.head(dst.out_shape, guide_head=dst.spec is None)))
    return links


def _chain_costs(links: list[Link], chain: list[int]) -> list[dict]:
    by_ends = {(link.src, link.dst): link.costs for link in links}
    ends = [None, *chain, None]
    return [by_ends[(a, b)] for a, b in zip(ends, ends[1:])]


def _accuracy(logits, data) -> float:
    correct = n = 0
    for b, g in zip(data.val.batches(1024, device=logits[0].device), logits):
        correct += int((g.argmax(-1) == b.y).sum())
        n += b.y.numel()
    return correct / max(n, 1)
