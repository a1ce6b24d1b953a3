"""Search spaces (define-by-run files), the swap-order encoding and searchable partitions."""

from .lehmer import lehmer_decode, lehmer_encode, suggest_swap_order, swap_order_params
from .partition import partition_params, suggest_partition
from .space import SearchSpace, load_search_space

__all__ = ["SearchSpace", "lehmer_decode", "lehmer_encode", "load_search_space", "partition_params",
           "suggest_partition", "suggest_swap_order", "swap_order_params"]
