"""Tiny GPT-2 guide on pydoc bytes -> recurrent layers: each transformer block becomes an LSTM or a GRU of a
searched hidden size, or stays attention (the guide's block, kept).

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial):
  {part}.block    "lstm", "gru" or "keep" (the guide's attention block stays)
  {part}.hidden   the recurrent state size, in HIDDEN (asked only for lstm / gru); a Linear maps it back to
                  the guide's width when smaller, and the block is residual
  order.0, ...    the swap order as a Lehmer code over all parts
The guide's embedding and its final LayerNorm + LM head are kept (head = "guide").
"""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_swap_order
from nas_theseus.targets import BlockSpec

HIDDEN = [16, 32, 64]


def search_space(trial, guide):
    blocks = []
    for name in guide.part_names:
        kind = trial.suggest_categorical(f"{name}.block", ["lstm", "gru", "keep"])
        if kind == "keep":
            blocks.append(None)
            continue
        blocks.append(BlockSpec.of(kind, hidden=trial.suggest_categorical(f"{name}.hidden", HIDDEN)))
    order = suggest_swap_order(trial, len(blocks))
    return Candidate(tuple(blocks), tuple(order), head="guide")
