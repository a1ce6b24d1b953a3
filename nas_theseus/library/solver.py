"""The best chain of block options under cost budgets, read from plain data (never torch, never the scoring code).

A block library scores every block option for every run of consecutive guide parts once. A candidate network is a
*chain*: the parts 0..K-1 cut into runs of consecutive parts, one option per run. Options are the nodes of a graph
and links its edges: a link says that one option may directly follow another, and what taking it costs. Costs sit on
links, not on options, because a block's cost depends on what it reads (its predecessor's output), a kept part after
a target needs an adapter, and the link into the output carries the head's cost.

`ChainGraph.solve` picks the chain of largest summed value whose summed costs stay within budgets: by walking every
chain (depth-first, pruned on budgets and on the best value still reachable) while there are few, else as a
mixed-integer program with one binary per link (like NVIDIA Puzzle's ``mip_nas.py``: one binary per variant, cost
sums within bounds) solved by HiGHS through `scipy.optimize.milp`. Either answer is rebuilt from the data and checked
before it is returned, and forbidding earlier answers gives the next best ones (`ChainGraph.several`, `.front`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

_NO_BUDGETS: Mapping[str, float] = MappingProxyType({})
_METHODS = ("auto", "enumerate", "milp")
# HiGHS's default mip_feasibility_tolerance: how far past a row's bound (as HiGHS sees the row) an answer it calls
# optimal may lie; scipy's milp cannot tighten it, so budget rows are scaled to make it relative
_HIGHS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Option:
    """One block option for one run of parts: a node of the graph.

    ``start`` is the run's first part and ``stop`` one past its last (``0 <= start < stop <= n_parts``); ``name`` is
    for messages only; ``value`` is additive, a chain's value being the sum over its options (it may be negative)."""

    start: int
    stop: int
    name: str
    value: float


@dataclass(frozen=True)
class Link:
    """``dst`` may directly follow ``src`` in a chain, and taking this link adds ``costs``: an edge of the graph.

    ``src`` and ``dst`` index the options; ``src=None`` is the network's input (then ``dst`` starts at part 0) and
    ``dst=None`` its output (then ``src`` stops at the last part). ``costs`` maps every cost name of the graph
    ("flops", "latency_ms", ...) to a finite value >= 0: what ``dst`` costs reading ``src``'s output (an adapter
    included), or what the head costs for a link into the output."""

    src: int | None
    dst: int | None
    costs: dict[str, float]


@dataclass(frozen=True)
class Chain:
    """An input->output chain: its option indices in order, its value (the sum of their values, added up from the
    input on) and its costs (the graph's base costs plus its links' costs, added up from the input on)."""

    options: tuple[int, ...]
    value: float
    costs: dict[str, float]


class ChainGraph:
    """Options and links over ``n_parts`` parts, and the best chains among them under budgets.

    The graph is read once and never changed. ``base_costs`` (the stem, say) is added to every chain's costs; a cost
    name it leaves out counts 0. Raises ValueError (one line) on bad input: an option outside 0..n_parts or with a
    value that is not finite; a link with an index out of range, from the input straight to the output, between runs
    that do not meet (``options[src].stop != options[dst].start``), from the input to an option that does not start
    at part 0, or into the output from one that does not stop at ``n_parts``; two links with the same (src, dst); a
    link whose cost names differ from the first link's; a link cost that is negative or not finite (costs >= 0 let
    the walk stop a chain as soon as it is over a budget); a base cost that is not finite or under a name no link
    carries."""

    def __init__(self, n_parts: int, options: Sequence[Option], links: Sequence[Link],
                 base_costs: Mapping[str, float] | None = None):
        if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts < 1:
            raise ValueError(f"n_parts must be an int >= 1, got {n_parts!r}")
        self.n_parts, self.options, self.links = n_parts, tuple(options), tuple(links)
        for i, option in enumerate(self.options):
            self._check_option(i, option)
        base_costs = dict(base_costs or {})
        self._names = _cost_names(self.links, base_costs)
        self._base = tuple(float(base_costs.get(name, 0.0)) for name in self._names)
        if not all(math.isfinite(c) for c in self._base):
            raise ValueError(f"base costs must be finite, got {base_costs}")
        self._costs = [self._check_link(i, link) for i, link in enumerate(self.links)]
        self._cost_array = np.array(self._costs, dtype=float).reshape(len(self.links), len(self._names))
        self._pairs: dict[tuple[int | None, int | None], int] = {}
        for i, link in enumerate(self.links):
            if self._pairs.setdefault((link.src, link.dst), i) != i:
                raise ValueError(f"links {self._pairs[link.src, link.dst]} and {i} both join {link.src} -> {link.dst}")
        self._out: dict[int | None, list[tuple[int | None, int]]] = {}
        for (src, dst), i in sorted(self._pairs.items(), key=lambda item: -1 if item[0][1] is None else item[0][1]):
            self._out.setdefault(src, []).append((dst, i))
        self._order = sorted(range(len(self.options)), key=lambda o: self.options[o].start)
        self._rest = self._best_rest()
        # how far a bound summed in another order may fall below a chain's value by rounding alone
        self._rounding = 1e-9 * (1.0 + sum(abs(o.value) for o in self.options))
        self._count: int | None = None

    @property
    def cost_names(self) -> tuple[str, ...]:
        """The cost names every link carries, sorted: the names a budget may use."""
        return self._names

    def _check_option(self, i: int, option: Option) -> None:
        if not (isinstance(option.start, int) and isinstance(option.stop, int)
                and 0 <= option.start < option.stop <= self.n_parts):
            raise ValueError(f"option {i} ({option.name}) covers parts {option.start}..{option.stop}, which is not a "
                             f"run within 0..{self.n_parts} (start < stop)")
        if not math.isfinite(option.value):
            raise ValueError(f"option {i} ({option.name}) has value {option.value}; values must be finite")

    def _label(self, end: int | None, none: str) -> str:
        return none if end is None else f"option {end} ({self.options[end].name})"

    def _check_link(self, i: int, link: Link) -> tuple[float, ...]:
        """The link's costs in `cost_names` order, after checking that it joins runs that meet."""
        for end in (link.src, link.dst):
            if end is not None and (isinstance(end, bool) or not isinstance(end, int)
                                    or not 0 <= end < len(self.options)):
                raise ValueError(f"link {i} ({link.src} -> {link.dst}): {end!r} is not an option index "
                                 f"(0..{len(self.options) - 1}) or None")
        if link.src is None and link.dst is None:
            raise ValueError(f"link {i} goes from the input straight to the output: a chain has at least one option")
        ends_at = 0 if link.src is None else self.options[link.src].stop
        starts_at = self.n_parts if link.dst is None else self.options[link.dst].start
        if ends_at != starts_at:
            raise ValueError(f"link {i}: {self._label(link.src, 'the input')} ends at part {ends_at} but "
                             f"{self._label(link.dst, 'the output')} starts at part {starts_at}; a link joins runs "
                             "that meet")
        costs = tuple(float(link.costs[name]) for name in self._names)
        if not all(math.isfinite(c) and c >= 0 for c in costs):
            raise ValueError(f"link {i} ({link.src} -> {link.dst}) has costs {link.costs}; costs must be finite and "
                             ">= 0 (the walk stops a chain once it is over a budget)")
        return costs

    def _best_rest(self) -> list[float]:
        """Per option, the largest value the options after it can add on the way to the output (budgets ignored);
        -inf when no chain continues from it to the output."""
        rest = [-math.inf] * len(self.options)
        for node in reversed(self._order):  # a link's dst starts where its src stops: later in this order
            for dst, _ in self._out.get(node, ()):
                rest[node] = max(rest[node], 0.0 if dst is None else self.options[dst].value + rest[dst])
        return rest

    def count(self) -> int:
        """How many input->output chains there are (budgets ignored), by dynamic programming over the options in
        order of their first part: each option's number of ways in, summed along its links, never listing chains."""
        if self._count is None:
            ways, total = [0] * len(self.options), 0
            for node in (None, *self._order):
                here = 1 if node is None else ways[node]
                for dst, _ in self._out.get(node, ()) if here else ():
                    if dst is None:
                        total += here
                    else:
                        ways[dst] += here
            self._count = total
        return self._count

    def chains(self) -> Iterator[Chain]:
        """Every input->output chain (budgets ignored), depth-first with each option's successors in index order: so
        in lexicographic order of the option tuples. There are `count()` of them; mind how many before listing."""
        for options in self._paths(None, []):
            yield self._chain(options)

    def _paths(self, node: int | None, path: list[int]) -> Iterator[tuple[int, ...]]:
        for dst, _ in self._out.get(node, ()):
            if dst is None:
                yield tuple(path)
            else:
                path.append(dst)
                yield from self._paths(dst, path)
                path.pop()

    def _chain(self, options: tuple[int, ...]) -> Chain | None:
        """The chain through these options, its value and costs recomputed from the data (summed from the input on,
        as the walk sums them); None when the options do not form an input->output chain of this graph."""
        steps = list(zip((None, *options), (*options, None)))
        if not options or not all(step in self._pairs for step in steps):
            return None
        value, costs = 0.0, list(self._base)
        for option in options:
            value += self.options[option].value
        for step in steps:
            costs = [c + d for c, d in zip(costs, self._costs[self._pairs[step]])]
        return Chain(tuple(options), value, dict(zip(self._names, costs)))

    def _limits(self, budgets: Mapping[str, float]) -> tuple[float, ...]:
        """The budgets in `cost_names` order, +inf where a cost has none."""
        unknown = sorted(set(budgets) - set(self._names))
        if unknown:
            raise ValueError(f"no cost named {', '.join(map(repr, unknown))}; the cost names are {list(self._names)}")
        bad = {name: b for name, b in budgets.items() if math.isnan(b) or b == -math.inf}
        if bad:
            raise ValueError(f"budgets must be numbers or +inf, got {bad}")
        return tuple(float(budgets.get(name, math.inf)) for name in self._names)

    def solve(self, budgets: Mapping[str, float] = _NO_BUDGETS, *, exclude: Iterable[Sequence[int]] = (),
              method: str = "auto", enumerate_limit: int = 200_000) -> Chain | None:
        """The chain of largest value whose every budgeted cost is <= its budget, other than the ``exclude``d chains
        (option-index tuples, each a chain of this graph, else ValueError); None when no chain fits.

        ``budgets`` maps cost names to limits (+inf: none; an unknown name is a ValueError listing the cost names).
        ``method`` "enumerate" walks every chain depth-first in lexicographic order of the option tuples, stopping a
        chain once it is over a budget or can no longer reach the best value found, and is exact (ties: the
        lexicographically smallest option tuple). "milp" solves a mixed-integer program with HiGHS: one binary per
        link, in-flow == out-flow at every option, exactly one input and one output link taken, a row per budget,
        and per excluded chain a row keeping its links from all being taken; the relative gap is 0, so the answer is
        optimal up to HiGHS's absolute gap (1e-6 of the largest |option value|), ties broken by HiGHS. "auto"
        enumerates when `count()` <= ``enumerate_limit``, else solves the program.

        Either answer is verified before it is returned: rebuilt as an input->output chain of this graph, its value
        and costs recomputed from the data, each budget checked exactly. A chain HiGHS returns over a budget by no
        more than its feasibility tolerance allows (1e-6 on a row scaled to its largest entry, plus what rounding
        its near-binary answer to 0/1 moves) is forbidden and the program solved again; any other answer that does
        not verify raises RuntimeError (a solver bug, never returned)."""
        limits = self._limits(budgets)
        excluded = set()
        for options in exclude:
            if self._chain(tuple(options)) is None:
                raise ValueError(f"cannot exclude {tuple(options)}: not an input->output chain of this graph")
            excluded.add(tuple(options))
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if method == "auto":
            method = "enumerate" if self.count() <= enumerate_limit else "milp"
        return self._enumerate(limits, excluded) if method == "enumerate" else self._milp(limits, excluded)

    def _enumerate(self, limits: tuple[float, ...], excluded: set[tuple[int, ...]]) -> Chain | None:
        """Walk every chain in lexicographic order, keeping the first of the best; a chain stops once a cost is over
        its budget (costs >= 0 only grow) or its value plus the best the rest can add falls below the best found."""
        best: list = [-math.inf, None]

        def walk(node: int | None, value: float, costs: list[float], path: list[int]) -> None:
            for dst, i in self._out.get(node, ()):
                after = [c + d for c, d in zip(costs, self._costs[i])]
                if any(c > limit for c, limit in zip(after, limits)):
                    continue
                if dst is None:
                    if value > best[0] and tuple(path) not in excluded:
                        best[:] = [value, tuple(path)]
                    continue
                reach = value + self.options[dst].value
                if reach + self._rest[dst] >= best[0] - self._rounding:
                    path.append(dst)
                    walk(dst, reach, after, path)
                    path.pop()

        walk(None, 0.0, list(self._base), [])
        if best[1] is None:
            return None
        return self._verified(best[1], limits, excluded, [0.0] * len(limits))  # over a budget at all: RuntimeError

    def _verified(self, options: tuple[int, ...], limits: tuple[float, ...], excluded: set[tuple[int, ...]],
                  allowed: Sequence[float]) -> Chain | None:
        """A solver's answer rebuilt from the data and checked: a chain of this graph, not excluded, within every
        budget exactly. None when it is over a budget by no more than ``allowed`` (per cost: what the solver's
        tolerance lets through); RuntimeError otherwise, a solver bug."""
        chain = self._chain(options)
        if chain is None or options in excluded:
            why = "an excluded chain" if chain is not None else "not an input->output chain of this graph"
            raise RuntimeError(f"solver bug: the answer {options} is {why}")
        slack = dict(zip(self._names, allowed))
        over = {name: chain.costs[name] - limit for name, limit in zip(self._names, limits)
                if chain.costs[name] > limit}
        beyond = {name: excess for name, excess in over.items() if excess > slack[name]}
        if beyond:
            raise RuntimeError(f"solver bug: the answer {options} is over its budgets by {beyond}")
        return None if over else chain

    def _milp(self, limits: tuple[float, ...], excluded: set[tuple[int, ...]]) -> Chain | None:
        """Solve the program; an answer over a budget within HiGHS's tolerance is forbidden and the program solved
        again (each time one chain fewer, so this ends)."""
        excluded = set(excluded)
        while self.links:
            answer = self._milp_once(limits, excluded)
            if answer is None:
                return None
            options, allowed = answer
            chain = self._verified(options, limits, excluded, allowed)
            if chain is not None:
                return chain
            excluded.add(options)
        return None

    def _milp_once(self, limits: tuple[float, ...],
                   excluded: set[tuple[int, ...]]) -> tuple[tuple[int, ...], list[float]] | None:
        """One HiGHS solve: the taken links' chain, and per cost how far over its budget HiGHS's tolerance lets
        the chain be; None when the program is infeasible (no chain fits)."""
        from scipy.optimize import Bounds, milp  # here: scipy costs every study process a second to import

        constraint, scales = self._milp_rows(limits, excluded)
        values = np.array([0.0 if link.dst is None else self.options[link.dst].value for link in self.links])
        unit = float(np.abs(values).max(initial=0.0)) or 1.0  # HiGHS's absolute gap, relative to the values
        # presolve off: on a 6-part library of 10k links HiGHS solved at its root node either way, 2-8x sooner
        # without presolve (0.6-5.6 s against 3.8-9.9 s, 2 shared cores)
        res = milp(-values / unit, integrality=np.ones(len(self.links)), bounds=Bounds(0.0, 1.0),
                   constraints=constraint, options={"mip_rel_gap": 0.0, "presolve": False})
        if res.status == 2:
            return None
        if res.status != 0 or res.x is None:
            raise RuntimeError(f"HiGHS did not solve the chain program (status {res.status}): {res.message}")
        taken = res.x > 0.5
        options = self._taken_chain(taken)
        if options is None:
            raise RuntimeError("solver bug: the links HiGHS took do not form one input->output chain")
        drift = np.abs(taken.astype(float) - res.x)  # rounding to 0/1 moves a row by at most |row| . drift
        allowed = [_HIGHS_TOLERANCE * scale + float(self._cost_array[:, k] @ drift) for k, scale in enumerate(scales)]
        return options, allowed

    def _milp_rows(self, limits: tuple[float, ...],
                   excluded: set[tuple[int, ...]]) -> tuple[object, list[float]]:
        """The program's rows over one binary per link, and each budget row's scale: in-flow == out-flow at every
        option, one input link and one output link, a budget row per limited cost (divided by its largest entry, so
        HiGHS's absolute tolerance is relative to it), and per excluded chain ``sum of its links <= len - 1``."""
        rows: list[int] = []
        cols: list[int] = []
        data: list[float] = []
        lower: list[float] = []
        upper: list[float] = []

        def row(entries: Iterable[tuple[int, float]], lo: float, hi: float) -> None:
            for col, coef in entries:
                rows.append(len(lower))
                cols.append(col)
                data.append(coef)
            lower.append(lo)
            upper.append(hi)

        flow: list[list[tuple[int, float]]] = [[] for _ in self.options]
        for i, link in enumerate(self.links):
            if link.dst is not None:
                flow[link.dst].append((i, 1.0))
            if link.src is not None:
                flow[link.src].append((i, -1.0))
        for entries in flow:
            row(entries, 0.0, 0.0)
        row([(i, 1.0) for i, link in enumerate(self.links) if link.src is None], 1.0, 1.0)
        row([(i, 1.0) for i, link in enumerate(self.links) if link.dst is None], 1.0, 1.0)
        scales = []
        for k, limit in enumerate(limits):
            if limit == math.inf:
                scales.append(0.0)
                continue
            room = limit - self._base[k]
            scales.append(max(abs(room), float(self._cost_array[:, k].max(initial=0.0))) or 1.0)
            row([(i, c / scales[k]) for i, c in enumerate(self._cost_array[:, k]) if c], -math.inf, room / scales[k])
        for options in excluded:
            steps = list(zip((None, *options), (*options, None)))
            row([(self._pairs[step], 1.0) for step in steps], -math.inf, len(steps) - 1.0)
        from scipy import sparse
        from scipy.optimize import LinearConstraint

        matrix = sparse.csr_array((data, (rows, cols)), shape=(len(lower), len(self.links)))
        return LinearConstraint(matrix, lower, upper), scales

    def _taken_chain(self, taken: np.ndarray) -> tuple[int, ...] | None:
        """The chain the taken links form, followed from the input; None unless they form exactly one chain."""
        chosen = [(link.src, link.dst) for link, on in zip(self.links, taken) if on]
        path: list[int] = []
        node: int | None = None
        while True:
            nexts = [dst for src, dst in chosen if src == node]
            if len(nexts) != 1:
                return None
            node = nexts[0]
            if node is None:
                break
            path.append(node)
        return tuple(path) if len(path) + 1 == len(chosen) else None

    def several(self, budgets: Mapping[str, float], n: int, **kw) -> list[Chain]:
        """Up to ``n`` distinct chains within ``budgets``, best first: each the best one not found yet (`solve`,
        forbidding the ones found; ``kw`` goes to `solve`, an ``exclude`` there forbidding chains from the start).
        Fewer when fewer fit."""
        exclude = [tuple(options) for options in kw.pop("exclude", ())]
        found: list[Chain] = []
        while len(found) < n:
            chain = self.solve(budgets, exclude=exclude, **kw)
            if chain is None:
                break
            found.append(chain)
            exclude.append(chain.options)
        return found

    def front(self, cost: str, budgets_list: Sequence[float], fixed: Mapping[str, float] = _NO_BUDGETS,
              **kw) -> list[Chain]:
        """The predicted front over budgets: for each level of ``cost`` (lowest first), the best chain whose
        ``cost`` is within that level and whose other costs are within ``fixed``; ``kw`` goes to `solve`. Levels no
        chain fits are left out, and a chain best at several levels is kept once (at the lowest)."""
        if cost not in self._names:
            raise ValueError(f"no cost named {cost!r}; the cost names are {list(self._names)}")
        if cost in fixed:
            raise ValueError(f"{cost!r} is the front's cost; it cannot also be fixed")
        found: list[Chain] = []
        for level in sorted(budgets_list):
            chain = self.solve({**fixed, cost: level}, **kw)
            if chain is not None and all(chain.options != seen.options for seen in found):
                found.append(chain)
        return found


def _cost_names(links: Sequence[Link], base_costs: Mapping[str, float]) -> tuple[str, ...]:
    """The cost names every link carries (the first link's, sorted; the base costs' without links)."""
    names = tuple(sorted(links[0].costs)) if links else tuple(sorted(base_costs))
    for i, link in enumerate(links):
        if set(link.costs) != set(names):
            missing, extra = sorted(set(names) - set(link.costs)), sorted(set(link.costs) - set(names))
            raise ValueError(f"link {i} ({link.src} -> {link.dst}) lacks costs {missing} and has extra {extra}; every "
                             f"link carries the same cost names {list(names)}")
    unknown = sorted(set(base_costs) - set(names))
    if unknown:
        raise ValueError(f"base costs {unknown} are not among the links' cost names {list(names)}")
    return names
