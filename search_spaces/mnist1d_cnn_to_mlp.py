"""MNIST-1D CNN guide -> an MLP: each conv part becomes one Linear+ReLU layer of a searched width.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial):
  {part}.width   in WIDTHS, for each guide part (conv1, conv2, conv3)
  order.0, order.1   the swap order as a Lehmer code over the three parts
"""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_swap_order
from nas_theseus.targets import BlockSpec

WIDTHS = [16, 32, 64, 128, 256]


def search_space(trial, guide):
    blocks = tuple(BlockSpec.of("mlp", width=trial.suggest_categorical(f"{name}.width", WIDTHS))
                   for name in guide.part_names)
    order = suggest_swap_order(trial, len(blocks))
    return Candidate(blocks, tuple(order), head="linear")
