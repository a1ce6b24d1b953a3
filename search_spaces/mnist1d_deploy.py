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
from nas_theseus.search import suggest_partition, suggest_swap_order
from nas_theseus.targets import BlockSpec

CHANNELS = [8, 16, 32, 48]
WIDTHS = [32, 64, 128, 256]
RANKS = [4, 8, 16, 32]


def _block(trial, run: str, in_shape, out_shape, flat: bool):
    kind = (trial.suggest_categorical(f"{run}.kind_flat", ["keep", "mlp", "lowrank"]) if flat else
            trial.suggest_categorical(f"{run}.kind", ["keep", "conv", "sepconv", "mlp", "lowrank"]))
    if kind == "keep":
        return None
    if kind in ("conv", "sepconv"):
        stride = max(1, math.ceil(in_shape[-1] / out_shape[-1]))
        return BlockSpec.of(f"{kind}1d", channels=trial.suggest_categorical(f"{run}.{kind}.channels", CHANNELS),
                            kernel=2 * stride - 1, stride=stride)
    if kind == "mlp":
        return BlockSpec.of("mlp", width=trial.suggest_categorical(f"{run}.mlp.width", WIDTHS))
    return BlockSpec.of("lowrank", rank=trial.suggest_categorical(f"{run}.lowrank.rank", RANKS), activation="relu")


def search_space(trial, guide):
    partition = suggest_partition(trial, len(guide.parts))
    starts = [sum(partition[:i]) for i in range(len(partition) + 1)]  # run i covers parts starts[i]..starts[i+1]
    names = [part.name for part in guide.parts]
    blocks: list = []
    for i in range(len(partition)):
        flat = bool(blocks) and blocks[-1] is not None and blocks[-1].kind == "mlp"
        blocks.append(_block(trial, "+".join(names[starts[i]:starts[i + 1]]), guide.shapes[starts[i]],
                             guide.shapes[starts[i + 1]], flat))
    order = suggest_swap_order(trial, len(blocks), prefix=f"order{len(blocks)}")
    return Candidate(tuple(blocks), tuple(order), head="guide" if blocks[-1] is None else "linear", partition=partition)
