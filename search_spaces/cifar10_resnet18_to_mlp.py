"""CIFAR-10 ResNet-18 guide (timm) -> MLPs: each residual stage (layer1..layer4) becomes an MLP of a searched
width and depth, or stays convolutional; the swap order is searched too.

Parameters (stable names, primitives only, so FixedTrial(params) rebuilds any trial):
  {part}.block   "mlp" or "keep"
  {part}.width   in WIDTHS (asked only for mlp)
  {part}.depth   1 or 2 (asked only for mlp)
  order.0, ...   the swap order as a Lehmer code over all parts
"""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_swap_order
from nas_theseus.targets import BlockSpec

WIDTHS = [256, 512, 1024, 2048]


def search_space(trial, guide):
    blocks = []
    for name in guide.part_names:
        if trial.suggest_categorical(f"{name}.block", ["mlp", "keep"]) == "keep":
            blocks.append(None)
            continue
        blocks.append(BlockSpec.of("mlp", width=trial.suggest_categorical(f"{name}.width", WIDTHS),
                                   depth=trial.suggest_int(f"{name}.depth", 1, 2), norm="batch"))
    return Candidate(tuple(blocks), tuple(suggest_swap_order(trial, len(blocks))), head="linear")
