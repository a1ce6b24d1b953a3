"""A deployer's search space over a wide MNIST-1D CNN guide: per run of parts, keep the guide's layers or replace
them by something cheaper, and in which order to swap.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial; conditional ones are asked
only where they apply, and named by the run of parts they replace, so a name means the same choice in every
trial whatever the partition: `conv2.kind` is always conv2 alone, `conv2+conv3.kind` the two merged):
  partition.cut0, partition.cut1   whether a new run starts after conv1 / conv2 (suggest_partition)
  <run>.kind              keep | conv | sepconv | mlp | lowrank, <run> the run's parts, e.g. conv1 or conv2+conv3
  <run>.kind_flat         keep | mlp | lowrank: the same choice for a run right after an MLP run, whose output
                          is flat (width,), which no convolution reads (a separate name: a categorical parameter
                          must offer the same choices in every trial)
  <run>.conv.channels     in CHANNELS: a conv1d with the run's stride and kernel 2 * stride - 1 (3, as the
                          guide's, for one part)
  <run>.sepconv.channels  in CHANNELS: a depthwise-separable conv1d, same stride and kernel
  <run>.mlp.width         in WIDTHS: one Linear+ReLU layer on the flattened input
  <run>.lowrank.rank      in RANKS: Linear(in, rank) -> Linear(rank, out), out the run's own shape
  order{n}.{i}            the swap order over the n runs as a Lehmer code
The head is the guide's own where the last run is kept, else a new linear one.
A run is never dropped (the identity block): every part of this guide halves the length, so no run keeps its
shape, and a categorical parameter must offer the same choices in every trial.
"""

import math

from nas_theseus.convert import Candidate
from nas_theseus.search import partition_params, suggest_partition, suggest_swap_order, swap_order_params
from nas_theseus.targets import BlockSpec

CHANNELS = [8, 16, 32, 48]
WIDTHS = [32, 64, 128, 256]
RANKS = [4, 8, 16, 32]
SIZES = {"conv": CHANNELS, "sepconv": CHANNELS, "mlp": WIDTHS, "lowrank": RANKS}  # kind -> its size parameter's
SIZE_NAMES = {"conv": "channels", "sepconv": "channels", "mlp": "width", "lowrank": "rank"}


def _spec(kind: str, size: int, in_shape, out_shape) -> BlockSpec | None:
    """The block of ``kind`` and ``size`` for a run reading ``in_shape`` and ending at ``out_shape``."""
    if kind in ("conv", "sepconv"):
        stride = max(1, math.ceil(in_shape[-1] / out_shape[-1]))
        return BlockSpec.of(f"{kind}1d", channels=size, kernel=2 * stride - 1, stride=stride)
    if kind == "mlp":
        return BlockSpec.of("mlp", width=size)
    return BlockSpec.of("lowrank", rank=size, activation="relu")


def _block(trial, run: str, in_shape, out_shape, flat: bool):
    kind = (trial.suggest_categorical(f"{run}.kind_flat", ["keep", "mlp", "lowrank"]) if flat else
            trial.suggest_categorical(f"{run}.kind", ["keep", "conv", "sepconv", "mlp", "lowrank"]))
    if kind == "keep":
        return None
    return _spec(kind, trial.suggest_categorical(f"{run}.{kind}.{SIZE_NAMES[kind]}", SIZES[kind]), in_shape,
                 out_shape)


def _runs(guide, partition):
    """(name, start, stop) per run of ``partition``; a run's name joins its parts' names (conv2+conv3)."""
    starts = [sum(partition[:i]) for i in range(len(partition) + 1)]
    names = [part.name for part in guide.parts]
    return [("+".join(names[a:b]), a, b) for a, b in zip(starts, starts[1:])]


def search_space(trial, guide):
    partition = suggest_partition(trial, len(guide.parts))
    blocks: list = []
    for run, start, stop in _runs(guide, partition):
        flat = bool(blocks) and blocks[-1] is not None and blocks[-1].kind == "mlp"
        blocks.append(_block(trial, run, guide.shapes[start], guide.shapes[stop], flat))
    order = suggest_swap_order(trial, len(blocks), prefix=f"order{len(blocks)}")
    return Candidate(tuple(blocks), tuple(order), head="guide" if blocks[-1] is None else "linear", partition=partition)


# --- for the block library (nas_theseus.library): the blocks per run, and a candidate's parameters ------------

def block_options(guide, start: int, stop: int) -> list:
    """Every block this space offers for parts ``start..stop-1`` (as read from the guide's own input)."""
    shapes = guide.shapes[start], guide.shapes[stop]
    return [None, *(_spec(kind, size, *shapes) for kind, sizes in SIZES.items() for size in sizes)]


def candidate_params(guide, candidate):
    """The parameters of ``candidate`` (None where this space does not hold it: a convolution after an MLP)."""
    partition = candidate.partition or (1,) * len(candidate.blocks)
    params = partition_params(partition)
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
