"""Tiny guides and contract checks that every registered block (and later, loss and guide source) runs through."""

from .contracts import SHAPE_CASES, check_block, check_causal, check_causal_model
from .guides import tiny_guide

__all__ = ["SHAPE_CASES", "check_block", "check_causal", "check_causal_model", "tiny_guide"]
