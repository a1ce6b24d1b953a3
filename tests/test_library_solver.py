"""The chain solver against a brute force over every partition and option choice, on many small random graphs.

Enumeration must match the brute force exactly (value, and the lexicographically smallest option tuple on ties: both
sum in the same order); the MILP must match its value up to HiGHS's absolute gap. Budgets are set to chains' own
costs, so a chain exactly at its budget must count as within it."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import OptimizeResult

from nas_theseus.library.solver import Chain, ChainGraph, Link, Option

NAMES = ("flops", "latency")
BASE = {"flops": 1.0, "latency": 0.25}


def random_graph(seed: int) -> ChainGraph:
    """3-5 parts, runs of up to 3 parts with 1-4 options each, ~80 % of the joinable pairs linked; even seeds draw
    values and costs from small exact sets (ties, sums exactly equal), odd seeds from continuous ranges."""
    rng = random.Random(seed)
    n = rng.randint(3, 5)
    exact = seed % 2 == 0

    def value() -> float:
        return rng.choice([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0]) if exact else rng.uniform(-1.0, 1.0)

    def costs() -> dict[str, float]:
        return {name: float(rng.randint(0, 6)) if exact else rng.uniform(0.0, 5.0) for name in NAMES}

    options = [Option(start, stop, f"{start}:{stop}#{j}", value())
               for start in range(n) for stop in range(start + 1, min(n, start + 3) + 1)
               for j in range(rng.randint(1, 4))]
    ends = [None, *range(len(options))]
    links = [Link(src, dst, costs()) for src in ends for dst in [*range(len(options)), None]
             if (src is not None or dst is not None) and rng.random() < 0.8
             and (0 if src is None else options[src].stop) == (n if dst is None else options[dst].start)]
    return ChainGraph(n, options, links, base_costs=BASE)


def brute_force(graph: ChainGraph) -> list[tuple[float, tuple[int, ...], dict[str, float]]]:
    """Every chain as (value, options, costs): every cut of the parts into runs, every option per run, kept when
    each step is a link; sums taken from the input on, as the solver takes them."""
    links = {(link.src, link.dst): link for link in graph.links}
    found = []
    for cuts in itertools.product([False, True], repeat=graph.n_parts - 1):
        bounds = [0, *(p for p, cut in zip(range(1, graph.n_parts), cuts) if cut), graph.n_parts]
        per_run = [[i for i, o in enumerate(graph.options) if (o.start, o.stop) == run]
                   for run in zip(bounds, bounds[1:])]
        for choice in itertools.product(*per_run):
            steps = list(zip((None, *choice), (*choice, None)))
            if not all(step in links for step in steps):
                continue
            value, costs = 0.0, dict(BASE)
            for option in choice:
                value += graph.options[option].value
            for step in steps:
                costs = {name: costs[name] + links[step].costs[name] for name in NAMES}
            found.append((value, tuple(choice), costs))
    return found


def ranked(chains, budgets, exclude=()):
    """The feasible chains, best first, ties by option tuple."""
    fits = [c for c in chains if c[1] not in exclude and all(c[2][k] <= b for k, b in budgets.items())]
    return sorted(fits, key=lambda c: (-c[0], c[1]))


def budget_cases(chains):
    """No budget, budgets at chains' own costs (one and both names), and budgets no chain fits."""
    if not chains:
        return [{}, {"flops": 100.0}]
    flops = sorted(c[2]["flops"] for c in chains)
    latency = sorted(c[2]["latency"] for c in chains)
    return [{}, {"flops": flops[len(flops) // 2]}, {"flops": flops[len(flops) // 3], "latency": latency[-1]},
            {"latency": latency[0]}, {"flops": flops[0], "latency": latency[0]}, {"flops": flops[0] - 0.5},
            {"latency": BASE["latency"] / 2}]


def check_chain(graph: ChainGraph, chain: Chain, budgets) -> None:
    """A returned chain is a real chain of the graph, its value the sum of its options', within its budgets."""
    assert chain.options in [c.options for c in graph.chains()]
    assert chain.value == pytest.approx(sum(graph.options[o].value for o in chain.options), abs=1e-12)
    assert all(chain.costs[name] <= b for name, b in budgets.items())


def value_tolerance(graph: ChainGraph) -> float:
    return 1e-6 * max(abs(o.value) for o in graph.options) * 1.01


@pytest.mark.parametrize("seed", range(40))
def test_solve_matches_brute_force(seed):
    graph = random_graph(seed)
    chains = brute_force(graph)
    for budgets in budget_cases(chains):
        best = ranked(chains, budgets)
        exact = graph.solve(budgets, method="enumerate")
        by_milp = graph.solve(budgets, method="milp")
        if not best:
            assert exact is None and by_milp is None, budgets
            continue
        assert (exact.value, exact.options, exact.costs) == best[0], budgets
        check_chain(graph, by_milp, budgets)
        assert by_milp.value == pytest.approx(best[0][0], abs=value_tolerance(graph))
        assert by_milp.costs == next(c[2] for c in chains if c[1] == by_milp.options)


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_exclude_and_several(seed):
    graph = random_graph(seed)
    chains = brute_force(graph)
    budgets = budget_cases(chains)[1]
    best = ranked(chains, budgets)
    if best:
        second = graph.solve(budgets, exclude=[best[0][1]], method="enumerate")
        assert (second and second.options) == (best[1][1] if len(best) > 1 else None)
        by_milp = graph.solve(budgets, exclude=[best[0][1]], method="milp")
        assert (by_milp and by_milp.options != best[0][1]) == (len(best) > 1)
    for method in ("enumerate", "milp"):
        found = graph.several(budgets, 5, method=method)
        assert len(found) == min(5, len(best))
        assert len({c.options for c in found}) == len(found)
        for chain in found:
            check_chain(graph, chain, budgets)
        slack = 0.0 if method == "enumerate" else value_tolerance(graph)
        assert all(a.value >= b.value - slack for a, b in zip(found, found[1:]))
        assert [c.value for c in found] == pytest.approx([c[0] for c in best[:5]], abs=slack)
    assert [c.options for c in graph.several(budgets, 5, method="enumerate")] == [c[1] for c in best[:5]]


@pytest.mark.parametrize("seed", range(0, 40, 4))
def test_count_and_chains(seed):
    graph = random_graph(seed)
    chains = brute_force(graph)
    listed = list(graph.chains())
    assert graph.count() == len(listed) == len(chains)
    assert [c.options for c in listed] == sorted(c[1] for c in chains)  # depth-first in index order
    assert [(c.value, c.options, c.costs) for c in listed] == sorted(chains, key=lambda c: c[1])


@pytest.mark.parametrize("seed", range(1, 40, 4))
def test_front(seed):
    graph = random_graph(seed)
    chains = brute_force(graph)
    levels = sorted({c[2]["flops"] for c in chains})[::2] + [0.0]
    fixed = {"latency": sorted(c[2]["latency"] for c in chains)[len(chains) // 2]} if chains else {}
    for method in ("enumerate", "milp"):
        front = graph.front("flops", levels[::-1], fixed, method=method)
        best_per_level = [graph.solve({**fixed, "flops": level}, method=method) for level in sorted(levels)]
        expected = []
        for level, chain in zip(sorted(levels), best_per_level):
            if chain is not None:
                check_chain(graph, chain, {**fixed, "flops": level})
                if chain.options not in [c.options for c in expected]:
                    expected.append(chain)
        assert [c.options for c in front] == [c.options for c in expected]
        slack = 0.0 if method == "enumerate" else value_tolerance(graph)
        assert all(a.value <= b.value + slack for a, b in zip(front, front[1:]))


def test_infeasible_and_empty():
    graph = random_graph(3)
    assert graph.solve({"flops": 0.5}) is None  # below the base cost alone
    assert graph.solve({"flops": 0.5}, method="milp") is None
    assert graph.several({"flops": 0.5}, 3) == [] and graph.front("flops", [0.0, 0.5]) == []
    lonely = ChainGraph(2, [Option(0, 1, "a", 1.0)], [Link(None, 0, {"flops": 1.0})])  # no way to the output
    assert lonely.count() == 0 and list(lonely.chains()) == []
    assert lonely.solve() is None and lonely.solve(method="milp") is None


def test_bad_input_raises():
    options = [Option(0, 1, "a", 1.0), Option(1, 2, "b", 1.0), Option(2, 3, "c", 1.0)]
    ok = [Link(None, 0, {"flops": 1.0}), Link(0, 1, {"flops": 1.0}), Link(1, 2, {"flops": 1.0}),
          Link(2, None, {"flops": 0.0})]
    graph = ChainGraph(3, options, ok)
    assert graph.cost_names == ("flops",) and graph.count() == 1
    bad = {
        "ends at part 1 but option 2": ok + [Link(0, 2, {"flops": 1.0})],  # across a gap
        "ends at part 0 but option 1": ok + [Link(None, 1, {"flops": 1.0})],
        "the output starts at part 3": ok + [Link(0, None, {"flops": 1.0})],
        "must be finite and >= 0": ok[:-1] + [Link(2, None, {"flops": -1.0})],
        "lacks costs ['flops']": ok[:-1] + [Link(2, None, {"latency": 1.0})],
        "both join 0 -> 1": ok + [Link(0, 1, {"flops": 2.0})],
        "not an option index": ok + [Link(0, 7, {"flops": 1.0})],
        "straight to the output": ok + [Link(None, None, {"flops": 1.0})],
    }
    for message, links in bad.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            ChainGraph(3, options, links)
    with pytest.raises(ValueError, match="which is not a run"):
        ChainGraph(3, [*options, Option(2, 4, "d", 0.0)], ok)
    with pytest.raises(ValueError, match="not among the links' cost names"):
        ChainGraph(3, options, ok, base_costs={"latency": 1.0})
    with pytest.raises(ValueError, match=r"no cost named 'latency'; the cost names are \['flops'\]"):
        graph.solve({"latency": 1.0})
    with pytest.raises(ValueError, match="cannot exclude"):
        graph.solve(exclude=[(0, 2)])
    with pytest.raises(ValueError, match="method must be one of"):
        graph.solve(method="greedy")
    with pytest.raises(ValueError, match="cannot also be fixed"):
        graph.front("flops", [1.0], {"flops": 2.0})


def test_milp_answer_over_budget_within_tolerance_is_forbidden_and_solved_again():
    """HiGHS may call a chain over its budget by 1e-12 feasible: it is verified exactly, forbidden, solved again."""
    options = [Option(0, 1, "big", 2.0), Option(0, 1, "small", 1.0)]
    links = [Link(None, 0, {"flops": 10.0 * (1 + 1e-12)}), Link(None, 1, {"flops": 5.0}),
             Link(0, None, {"flops": 0.0}), Link(1, None, {"flops": 0.0})]
    graph = ChainGraph(1, options, links)
    assert graph.solve({"flops": 10.0}, method="milp").options == (1,)
    assert graph.solve({"flops": 10.0}, method="enumerate").options == (1,)


def test_an_answer_that_is_not_a_chain_raises(monkeypatch):
    graph = random_graph(1)
    both_inputs = np.array([1.0 if link.src is None else 0.0 for link in graph.links])
    for x in (np.zeros(len(graph.links)), both_inputs):
        monkeypatch.setattr(scipy.optimize, "milp",  # the solver imports it when it solves
                            lambda *a, x=x, **k: OptimizeResult(status=0, x=x, fun=0.0, message=""))
        with pytest.raises(RuntimeError, match="solver bug"):
            graph.solve(method="milp")


def test_large_graph_goes_to_milp(monkeypatch):
    """6 parts, every run of 1..6 parts with 17 options, every joinable pair linked: 17 * 18**5 chains."""
    rng = random.Random(0)
    options = [Option(start, stop, f"{start}:{stop}#{j}", rng.uniform(-1.0, 1.0))
               for start in range(6) for stop in range(start + 1, 7) for j in range(17)]
    links = [Link(src, dst, {"flops": rng.uniform(0.0, 5.0), "latency": rng.uniform(0.0, 1.0)})
             for src in [None, *range(len(options))] for dst in [*range(len(options)), None]
             if (src is not None or dst is not None)
             and (0 if src is None else options[src].stop) == (6 if dst is None else options[dst].start)]
    graph = ChainGraph(6, options, links, base_costs=BASE)
    assert graph.count() == 17 * 18**5 > 200_000
    calls = []
    real = scipy.optimize.milp
    monkeypatch.setattr(scipy.optimize, "milp", lambda *a, **k: calls.append(1) or real(*a, **k))
    free = graph.solve()
    best = [0.0] + [-math.inf] * 6  # the best value up to each part: no budgets, every pair linked
    for stop in range(1, 7):
        best[stop] = max(best[o.start] + o.value for o in options if o.stop == stop)
    assert calls and free.value == pytest.approx(best[6], abs=value_tolerance(graph))
    budgets = {"flops": 10.0}
    chain = graph.solve(budgets, method="auto")
    assert chain is not None and chain.value <= free.value
    assert chain.options[0] < 17 * 6 and graph.options[chain.options[-1]].stop == 6
    assert all(graph.options[a].stop == graph.options[b].start for a, b in zip(chain.options, chain.options[1:]))
    assert chain.value == pytest.approx(sum(graph.options[o].value for o in chain.options), abs=1e-12)
    assert all(chain.costs[name] <= b for name, b in budgets.items())
