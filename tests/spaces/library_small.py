"""A small space the block library can read (tests/test_library.py): per run of at most two parts, keep, an MLP
layer, a low-rank layer or (where the input is not flat) a narrow convolution; swapped input to output."""

import math

from nas_theseus.convert import Candidate
from nas_theseus.search import partition_params, suggest_partition
from nas_theseus.targets import BlockSpec

MAX_RUN = 2


def _spec(kind, in_shape, out_shape):
    if kind == "conv":
        stride = max(1, math.ceil(in_shape[-1] / out_shape[-1]))
        return BlockSpec.of("conv1d", channels=8, kernel=2 * stride - 1, stride=stride)
    return BlockSpec.of("mlp", width=32) if kind == "mlp" else BlockSpec.of("lowrank", rank=4, activation="relu")


def _runs(guide, partition):
    starts = [sum(partition[:i]) for i in range(len(partition) + 1)]
    return [("+".join(p.name for p in guide.parts[a:b]), a, b) for a, b in zip(starts, starts[1:])]


def search_space(trial, guide):
    partition = suggest_partition(trial, len(guide.parts), max_run=MAX_RUN)
    blocks = []
    for run, a, b in _runs(guide, partition):
        flat = bool(blocks) and blocks[-1] is not None and blocks[-1].kind == "mlp"
        kind = trial.suggest_categorical(f"{run}.{'kind_flat' if flat else 'kind'}",
                                         ["keep", "mlp", "lowrank"] if flat else ["keep", "conv", "mlp", "lowrank"])
        blocks.append(None if kind == "keep" else _spec(kind, guide.shapes[a], guide.shapes[b]))
    return Candidate(tuple(blocks), head="guide" if blocks[-1] is None else "linear", partition=partition)


def block_options(guide, start, stop):
    if stop - start > MAX_RUN:
        return []
    return [None, *(_spec(k, guide.shapes[start], guide.shapes[stop]) for k in ("conv", "mlp", "lowrank"))]


def candidate_params(guide, candidate):
    partition = candidate.partition or (1,) * len(candidate.blocks)
    params = partition_params(partition, max_run=MAX_RUN)
    previous = None
    for (run, _, _), spec in zip(_runs(guide, partition), candidate.blocks):
        flat = previous is not None and previous.kind == "mlp"
        kind = "keep" if spec is None else {"conv1d": "conv"}.get(spec.kind, spec.kind)
        if flat and kind == "conv":
            return None
        params[f"{run}.{'kind_flat' if flat else 'kind'}"] = kind
        previous = spec
    return params
