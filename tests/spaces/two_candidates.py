"""A test search space of exactly two candidates: repeated proposals are certain."""

from nas_theseus.convert import Candidate
from nas_theseus.targets import BlockSpec


def search_space(trial, guide):
    width = trial.suggest_categorical("width", [8, 16])
    return Candidate((BlockSpec.of("mlp", width=width), None, None), head="linear")
