"""Representational similarity measures and the alignment losses built on them."""

from .cka import linear_cka, unbiased_linear_cka
from .losses import ALIGNMENTS, AlignmentLoss, make_alignment, token_rows
from .mnn import dmnn, knn_mask, mutual_knn

__all__ = ["ALIGNMENTS", "AlignmentLoss", "dmnn", "knn_mask", "linear_cka", "make_alignment", "mutual_knn",
           "token_rows", "unbiased_linear_cka"]
