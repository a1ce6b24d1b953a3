"""Answer a budget from a stored library: the best predicted candidates within it, as candidates the search
space holds (with the parameters that make it return them), no training.

Budgets are on the library's costs, as ratios to the guide's (``flops=0.5``) or absolute (``flops=abs:120000``);
``latency`` is ``latency_ms``'s short name. A chain the solver picks is checked against the space: its
``candidate_params`` must give parameters for which ``search_space`` returns the same candidate; a chain the space
does not hold is forbidden and the solver asked again.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from ..convert import Candidate
from ..errors import UserError
from .library import BlockLibrary
from .predict import Predictor
from .solver import Chain

ALIASES = {"latency": "latency_ms"}
MAX_REFUSED = 200  # chains the space may refuse in a row before the answer gives up


@dataclass(frozen=True)
class Proposal:
    chain: tuple[int, ...]
    candidate: Candidate
    params: dict
    predicted: float  # validation accuracy
    costs: dict  # absolute, as the library sums them (FLOPs exact; latency a sum over modules)
    ratios: dict  # the same as ratios to the guide's


def parse_budget(text: str) -> tuple[str, float, bool]:
    """``NAME=RATIO`` or ``NAME=abs:VALUE`` -> (cost name, value, absolute)."""
    name, sep, value = text.partition("=")
    absolute = value.startswith("abs:")
    try:
        number = float(value.removeprefix("abs:"))
    except ValueError:
        number = -1.0
    if not sep or number <= 0:
        raise UserError(f"budget {text!r}: write NAME=RATIO (to the guide's, e.g. flops=0.5) or NAME=abs:VALUE "
                        f"(e.g. latency=abs:0.2, in ms)")
    return ALIASES.get(name.strip(), name.strip()), number, absolute


def absolute_budgets(library: BlockLibrary, budgets: list[tuple[str, float, bool]]) -> dict[str, float]:
    """{cost name: absolute bound}; a cost the library did not measure is one line naming those it did."""
    out = {}
    for name, value, absolute in budgets:
        if name not in library.guide_costs:
            raise UserError(f"the library has no cost {name!r}; it measured: {', '.join(library.guide_costs)}")
        out[name] = value if absolute else value * library.guide_costs[name]
    return out


def propose(library: BlockLibrary, predictor: Predictor, budgets: dict[str, float], *, space, guide, n: int = 1,
            exclude: tuple = ()) -> list[Proposal]:
    """Up to ``n`` distinct candidates, best predicted first, within ``budgets`` (absolute), that ``space`` holds."""
    graph = library.graph(predictor.values(library))
    found: list[Proposal] = []
    excluded = [tuple(c) for c in exclude]
    refused = 0
    while len(found) < n and refused < MAX_REFUSED:
        chain = graph.solve(budgets, exclude=excluded)
        if chain is None:
            break
        excluded.append(chain.options)
        proposal = _as_proposal(library, predictor, chain, space, guide)
        if proposal is None:
            refused += 1
            continue
        found.append(proposal)
        refused = 0
    return found


def _as_proposal(library: BlockLibrary, predictor: Predictor, chain: Chain, space, guide) -> Proposal | None:
    candidate = library.candidate(chain)
    params = space.candidate_params(guide, candidate)
    if params is None:
        return None
    back, _ = space(optuna.trial.FixedTrial(params), guide)
    if not same_network(back, candidate):
        raise UserError(f"{space.path.name}: candidate_params gives {params}, for which search_space returns "
                        f"{back.describe(guide.part_names)}, not {candidate.describe(guide.part_names)}")
    return Proposal(chain.options, back, params, predictor.intercept + chain.value, chain.costs,
                    library.ratios(chain.costs))


def same_network(a: Candidate, b: Candidate) -> bool:
    """Whether two candidates build the same deploy network (the swap order aside)."""
    return (a.blocks, a.partition, a.head, a.stem) == (b.blocks, b.partition, b.head, b.stem)


def front(library: BlockLibrary, predictor: Predictor, cost: str, levels: list[float], *, space, guide,
          fixed: dict | None = None) -> list[tuple[float, Proposal]]:
    """One candidate per level of ``cost`` (a ratio to the guide's), other budgets ``fixed`` (absolute): from the
    lowest level up, the best one within it not picked at a lower level (as Puzzle finds diverse solutions, by
    forbidding earlier ones); a level with nothing left is skipped."""
    out: list[tuple[float, Proposal]] = []
    for level in sorted(levels):
        budgets = {**(fixed or {}), cost: level * library.guide_costs[cost]}
        found = propose(library, predictor, budgets, space=space, guide=guide, exclude=[p.chain for _, p in out])
        out += [(level, p) for p in found]
    return out
