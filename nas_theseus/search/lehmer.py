"""Swap orders as Lehmer codes: one integer per position, so every order is a set of plain Optuna parameters.

A permutation of n items is encoded as c_0..c_{n−1} with 0 ≤ c_i ≤ n−1−i: c_i is the index of the i-th item
among the items not yet used. Every code is a valid permutation, and a parameter keeps the same range in
every trial (Optuna needs both).

>>> lehmer_decode([2, 0, 0])
[2, 0, 1]
>>> lehmer_encode([2, 0, 1])
[2, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence


def lehmer_decode(code: Sequence[int]) -> list[int]:
    n = len(code)
    pool = list(range(n))
    out = []
    for i, c in enumerate(code):
        if not 0 <= c < n - i:
            raise ValueError(f"Lehmer digit {i} must lie in 0..{n - 1 - i}, got {c}")
        out.append(pool.pop(c))
    return out


def lehmer_encode(perm: Sequence[int]) -> list[int]:
    pool = sorted(perm)
    if pool != list(range(len(perm))):
        raise ValueError(f"{list(perm)} is not a permutation of 0..{len(perm) - 1}")
    code = []
    for p in perm:
        code.append(pool.index(p))
        pool.remove(p)
    return code


def suggest_swap_order(trial, n_parts: int, prefix: str = "order") -> list[int]:
    """Suggest a swap order over ``n_parts`` parts as ``{prefix}.{i}`` integer parameters (Lehmer code).

    The last digit has a single value and is not suggested.
    """
    code = [trial.suggest_int(f"{prefix}.{i}", 0, n_parts - 1 - i) for i in range(n_parts - 1)]
    return lehmer_decode([*code, 0])


def swap_order_params(order, prefix: str = "order") -> dict:
    """The parameters :func:`suggest_swap_order` takes to return ``order`` (its inverse, for ``enqueue_trial``)."""
    code = lehmer_encode(order)
    return {f"{prefix}.{i}": c for i, c in enumerate(code[:-1])}
