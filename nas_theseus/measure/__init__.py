"""What a study scores: FLOPs (fvcore, multiply-adds), parameters, latency. Accuracy lives in training.py."""

from .flops import CONVENTION, EXTRA_HANDLES, ZERO_COST_OPS, UncountedOpsError, count_flops, count_params
from .latency import Latency, measure_latency

__all__ = ["CONVENTION", "EXTRA_HANDLES", "ZERO_COST_OPS", "Latency", "UncountedOpsError", "count_flops",
           "count_params", "measure_latency"]
