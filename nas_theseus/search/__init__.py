"""Search spaces (define-by-run files) and the swap-order encoding."""

from .lehmer import lehmer_decode, lehmer_encode, suggest_swap_order
from .space import SearchSpace, load_search_space

__all__ = ["SearchSpace", "lehmer_decode", "lehmer_encode", "load_search_space", "suggest_swap_order"]
