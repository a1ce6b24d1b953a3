"""A deployer's search space over a six-part MNIST-1D CNN guide (``builtin:mnist1d_cnn`` with ``depth = 6``): per
run of one or two consecutive parts, keep the guide's layers or replace them by something cheaper, and in which
order to swap. The block library's benchmark (benchmarks/library_vs_tpe.py) searches it; it also serves
``[library]`` (``block_options`` and ``candidate_params`` below).

Parameters (stable names, primitives only; a run is named by its parts, e.g. ``conv3`` or ``conv3+conv4``):
  partition.cut{i}        whether a new run starts after part i (runs of at most MAX_RUN parts)
  <run>.kind              keep | conv | sepconv | mlp | lowrank
  <run>.kind_flat         keep | mlp | lowrank: the choice for a run right after an MLP run (its output is flat)
  <run>.conv.channels     in CHANNELS: a conv1d with the run's stride (kernel 3 at stride 1, else 2 * stride - 1)
  <run>.sepconv.channels  in SEPCONV_CHANNELS: a depthwise-separable conv1d, the same stride and kernel
  <run>.mlp.width         in WIDTHS: one Linear+ReLU layer on the flattened input
  <run>.lowrank.rank      in RANKS: Linear(in, rank) -> Linear(rank, out), out the run's own shape
  order{n}.{i}            the swap order over the n runs as a Lehmer code
The head is the guide's own where the last run is kept, else a new linear one.
"""

import math

from nas_theseus.convert import Candidate
from nas_theseus.search import partition_params, suggest_partition, suggest_swap_order, swap_order_params
from nas_theseus.targets import BlockSpec

MAX_RUN = 2
SIZES = {"conv": [8, 16], "sepconv": [16], "mlp": [32, 128], "lowrank": [8]}
SIZE_NAMES = {"conv": "channels", "sepconv": "channels", "mlp": "width", "lowrank": "rank"}


def _spec(kind: str, size: int, in_shape, out_shape) -> BlockSpec:
    if kind in ("conv", "sepconv"):
        stride = max(1, math.ceil(in_shape[-1] / out_shape[-1]))
        return BlockSpec.of(f"{kind}1d", channels=size, kernel=3 if stride == 1 else 2 * stride - 1, stride=stride)
    if kind == "mlp":
        return BlockSpec.of("mlp", width=size)
    return BlockSpec.of("lowrank", rank=size, activation="relu")


def _runs(guide, partition):
    starts = [sum(partition[:i]) for i in range(len(partition) + 1)]
    return [("+".join(p.name for p in guide.parts[a:b]), a, b) for a, b in zip(starts, starts[1:])]


def search_space(trial, guide):
    partition = suggest_partition(trial, len(guide.parts), max_run=MAX_RUN)
    blocks: list = []
    for run, start, stop in _runs(guide, partition):
        flat = bool(blocks) and blocks[-1] is not None and blocks[-1].kind == "mlp"
        kind = (trial.suggest_categorical(f"{run}.kind_flat", ["keep", "mlp", "lowrank"]) if flat else
                trial.suggest_categorical(f"{run}.kind", ["keep", "conv", "sepconv", "mlp", "lowrank"]))
        if kind == "keep":
            blocks.append(None)
            continue
        size = trial.suggest_categorical(f"{run}.{kind}.{SIZE_NAMES[kind]}", SIZES[kind])
        blocks.append(_spec(kind, size, guide.shapes[start], guide.shapes[stop]))
    order = suggest_swap_order(trial, len(blocks), prefix=f"order{len(blocks)}")
    return Candidate(tuple(blocks), tuple(order), head="guide" if blocks[-1] is None else "linear", partition=partition)


def block_options(guide, start: int, stop: int) -> list:
    if stop - start > MAX_RUN:
        return []
    shapes = guide.shapes[start], guide.shapes[stop]
    return [None, *(_spec(kind, size, *shapes) for kind, sizes in SIZES.items() for size in sizes)]


def candidate_params(guide, candidate):
    partition = candidate.partition or (1,) * len(candidate.blocks)
    params = partition_params(partition, max_run=MAX_RUN)
    previous = None
    for (run, _, _), spec in zip(_runs(guide, partition), candidate.blocks):
        flat = previous is not None and previous.kind == "mlp"
        kind = "keep" if spec is None else {"conv1d": "conv", "sepconv1d": "sepconv"}.get(spec.kind, spec.kind)
        if flat and kind not in ("keep", "mlp", "lowrank"):
            return None
        params[f"{run}.kind_flat" if flat else f"{run}.kind"] = kind
        if spec is not None:
            params[f"{run}.{kind}.{SIZE_NAMES[kind]}"] = spec.to_dict(full=True)[SIZE_NAMES[kind]]
        previous = spec
    order = candidate.order or tuple(range(len(candidate.blocks)))
    return {**params, **swap_order_params(order, prefix=f"order{len(candidate.blocks)}")}
