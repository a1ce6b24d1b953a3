"""What a study scores: FLOPs (fvcore, multiply-adds), parameters, latency (per sample, or per generated token in
incremental decoding for language models). Accuracy and perplexity live in training.py."""

from ..stepping import STEPPERS
from .decode import DecodeFlops, DecodeLatency, IncrementalDecoder, decode_flops, decode_latency
from .flops import (
                    CONVENTION,
                    CONVENTION_PER_TOKEN,
                    EXTRA_HANDLES,
                    ZERO_COST_OPS,
                    UncountedOpsError,
                    count_flops,
                    count_params,
)
from .latency import Latency, measure_latency

__all__ = ["CONVENTION", "CONVENTION_PER_TOKEN", "EXTRA_HANDLES", "STEPPERS", "ZERO_COST_OPS", "DecodeFlops",
           "DecodeLatency", "IncrementalDecoder", "Latency", "UncountedOpsError", "count_flops", "count_params",
           "decode_flops", "decode_latency", "measure_latency"]
