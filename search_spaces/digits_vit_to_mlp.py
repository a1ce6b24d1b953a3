"""Tiny ViT guide (timm) on 8x8 digits -> token-wise MLPs: each transformer block becomes a per-token channel
MLP (optionally with MLP-Mixer token mixing) or stays attention.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial):
  {part}.block         "tokenwise_mlp" or "keep" (the guide's attention block stays)
  {part}.hidden        hidden width of the channel MLP, in HIDDEN (asked only for tokenwise_mlp)
  {part}.token_mixing  whether the block also mixes tokens (asked only for tokenwise_mlp)
  order.0, ...         the swap order as a Lehmer code over all parts
A new linear head reads the flattened tokens (the guide's class-token head would need a flattened 544 x 544
bridge when the last block is swapped: 296K parameters, 8x the whole guide).
"""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_swap_order
from nas_theseus.targets import BlockSpec

HIDDEN = [16, 32, 64, 128]


def search_space(trial, guide):
    blocks = []
    for name in guide.part_names:
        kind = trial.suggest_categorical(f"{name}.block", ["tokenwise_mlp", "keep"])
        if kind == "keep":
            blocks.append(None)
            continue
        blocks.append(BlockSpec.of("tokenwise_mlp", hidden=trial.suggest_categorical(f"{name}.hidden", HIDDEN),
                                   token_mixing=trial.suggest_categorical(f"{name}.token_mixing", [False, True])))
    order = suggest_swap_order(trial, len(blocks))
    return Candidate(tuple(blocks), tuple(order), head="linear")
