"""A test search space with ~10^7 candidates, so that independent workers practically never draw the same one:
a repeated parameter set in a test then means a retry, or a bug."""

from nas_theseus.convert import Candidate
from nas_theseus.search import suggest_swap_order
from nas_theseus.targets import BlockSpec


def search_space(trial, guide):
    blocks = tuple(BlockSpec.of("mlp", width=trial.suggest_int(f"{name}.width", 8, 256))
                   for name in guide.part_names)
    return Candidate(blocks, tuple(suggest_swap_order(trial, len(blocks))), head="linear")
