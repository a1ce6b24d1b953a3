"""A deployer's search space over a wide MNIST-1D CNN guide: per run of parts, keep the guide's layers or replace
them by something cheaper, and in which order to swap.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial; conditional ones are asked
only for the kind that reads them, and named by it):
  partition.cut0, partition.cut1   whether a new run starts after conv1 / conv2 (suggest_partition)
  run{i}.kind             keep | conv | sepconv | mlp | lowrank
  run{i}.conv.channels    in CHANNELS: a conv1d with the run's stride and kernel 2 * stride - 1 (3, as the
                          guide's, for one part)
  run{i}.sepconv.channels in CHANNELS: a depthwise-separable conv1d, same stride and kernel
  run{i}.mlp.width        in WIDTHS: one Linear+ReLU layer on the flattened input
  run{i}.lowrank.rank     in RANKS: Linear(in, rank) -> Linear(rank, out), out the run's own shape
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


def _block(trial, run: str, in_shape, out_shape):
    kind = trial.suggest_categorical(f"{run}.kind", ["keep", "conv", "sepconv", "mlp", "lowrank"])
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
    blocks = tuple(_block(trial, f"run{i}", guide.shapes[starts[i]], guide.shapes[starts[i + 1]])
                   for i in range(len(partition)))
    order = suggest_swap_order(trial, len(blocks), prefix=f"order{len(blocks)}")
    return Candidate(blocks, tuple(order), head="guide" if blocks[-1] is None else "linear", partition=partition)
