"""The task data every conversion reads: train / validation / test splits held as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..utils.hashing import tensor_fingerprint


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, *sample_shape) and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class TaskData:
    """A classification task: the validation split steers training, the test split is for reporting only.

    ``name`` and ``config`` describe how the data were made; ``fingerprint`` hashes the tensors themselves, so
    caches keyed by it are invalidated when the data change.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    config: dict = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def fingerprint(self) -> str:
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            parts = (self.train.x, self.train.y, self.val.x, self.val.y, self.test.x, self.test.y)
            cached = tensor_fingerprint(*parts)
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
                f"sample shape {self.sample_shape}, {self.num_classes} classes")


def carve_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split (x, y) into train and validation by a seeded permutation, stratified by label."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    val_idx, train_idx = [], []
    for label in torch.unique(y):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = max(1, round(len(idx) * fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr = torch.cat(train_idx).sort().values
    va = torch.cat(val_idx).sort().values
    return Split(x[tr], y[tr]), Split(x[va], y[va])
