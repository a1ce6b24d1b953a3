"""MNIST-1D CNN guide -> an MLP whose layers may each replace a run of the guide's conv parts.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial):
  partition.cut0, partition.cut1   whether a new run starts after conv1 / conv2 (suggest_partition)
  run{i}.width   in WIDTHS, for each run (one Linear+ReLU layer replaces the whole run)
  order{n}.{i}   the swap order over the n runs as a Lehmer code (named by n: its ranges differ with n)
"""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_partition, suggest_swap_order
from nas_theseus.targets import BlockSpec

WIDTHS = [16, 32, 64, 128, 256]


def search_space(trial, guide):
    partition = suggest_partition(trial, len(guide.parts))
    blocks = tuple(BlockSpec.of("mlp", width=trial.suggest_categorical(f"run{i}.width", WIDTHS))
                   for i in range(len(partition)))
    order = suggest_swap_order(trial, len(blocks), prefix=f"order{len(blocks)}")
    return Candidate(blocks, tuple(order), head="linear", partition=partition)
