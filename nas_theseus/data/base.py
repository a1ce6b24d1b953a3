"""The task data every conversion reads: train / validation / test splits behind one small interface.

A split (:class:`Rows`) has a length, a sample shape and dtype, rows by index (:meth:`Rows.take`,
:meth:`Rows.head`: probes, held-out rows, references) and batches in a given order (:meth:`Rows.batches`: what
training and evaluation read). Two kinds:

* :class:`Split`: tensors in memory, ``x`` (N, *sample_shape) and ``y`` (N,). The fast path for small data
  (MNIST-1D, digits, npz): a batch is gathered where the tensors live, on the GPU when they fit there.
* :class:`DatasetSplit`: any map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (images decoded when
  read, windows of a memory-mapped token file, a Hugging Face dataset), read through a ``DataLoader`` with
  workers, pinned memory and prefetching: memory is O(batch), never O(data set).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from ..utils.hashing import stable_hash, tensor_fingerprint
from ..utils.transfer import resident, upload
from .augment import Augment, check_augment, make_augment


class Batch(NamedTuple):
    idx: torch.Tensor  # the rows' indices in the split (on the device the rows were gathered on)
    x: torch.Tensor
    y: torch.Tensor


class Rows:
    """What every split offers (see the module docstring)."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``x`` (float32 for signals and images, int64 for token ids)."""
        raise NotImplementedError

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` as CPU tensors (x, y), for a few rows at a time (probes, references)."""
        raise NotImplementedError

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` rows (all when fewer)."""
        return self.take(torch.arange(min(n, len(self))))

    def batches(self, batch_size: int, *, order: torch.Tensor | None = None, device: torch.device | str = "cpu",
                augment: Augment | None = None, seed: int = 0) -> Iterator[Batch]:
        """Batches of ``batch_size`` rows on ``device``, in ``order`` (row indices; default: in order), with
        ``augment`` applied (training passes only; its randomness seeded by ``seed``, so a pass is repeatable)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash that changes when the rows do (what caches of this data are keyed by)."""
        raise NotImplementedError

    def decoder_on(self, device: torch.device) -> str | None:
        """What decodes the rows of batches on ``device`` where that is not what :meth:`fingerprint` stands for
        (JPEGs decoded by nvJPEG on a GPU, not Pillow: :mod:`~nas_theseus.data.jpeg_files`), named for
        :meth:`TaskData.fingerprint_on`; None (here: always) where the rows are those fingerprinted."""
        return None

    def refuse_augment(self, augment: Augment) -> None:
        """Raise a one-line :class:`~nas_theseus.errors.UserError` where this split's batches cannot apply
        ``augment`` (JPEGs decoded a batch at a time cannot take a policy for one image at a time), so that it
        is said when the data are loaded, not at the first batch; any is accepted here."""


@dataclass(frozen=True)
class Split(Rows):
    """Inputs ``x`` (N, *sample_shape) and integer labels ``y`` (N,) held in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self._rows(self.x[idx]), self.y[idx]

    def batches(self, batch_size: int, *, order: torch.Tensor | None = None, device: torch.device | str = "cpu",
                augment: Augment | None = None, seed: int = 0) -> Iterator[Batch]:
        x, y = self._resident(device)
        n = len(self) if order is None else len(order)
        if order is not None:
            order = order.to(x.device)  # once per pass: the indices live with the rows, no copy per batch
        generator = None
        if augment is not None and augment.name != "none":  # a batch at a time, on the device
            # on the device; the meta device (the device tests) has no generator: its draws come from the CPU
            where = torch.device(device)
            generator = torch.Generator(device="cpu" if where.type == "meta" else where).manual_seed(seed)
        for i in range(0, n, batch_size):
            if order is None:  # slices: views, no gather
                idx = torch.arange(i, min(i + batch_size, n))
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)  # a[idx] costs more per call
            xb = self._rows(upload(xb, device))
            yield Batch(idx, xb if generator is None else augment.batch(xb, generator), upload(yb, device))

    def _rows(self, xb: torch.Tensor) -> torch.Tensor:
        """Gathered rows of ``x`` as the split hands them out (as held, here; see ByteImages)."""
        return xb

    def _resident(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y on ``device`` when they fit there (a copy made once per device), else where they are."""
        memo = self.__dict__.setdefault("_copies", {})
        key = str(torch.device(device))
        if key not in memo:
            memo[key] = resident(self.x, self.y, device=device)
        return memo[key]

    def fingerprint(self) -> str:
        return tensor_fingerprint(self.x, self.y)


@dataclass(frozen=True)
class TaskData:
    """A classification task: the validation split steers training, the test split is for reporting only.

    ``name`` and ``config`` describe how the data were made; ``fingerprint`` hashes what the splits hold (see
    each split's :meth:`Rows.fingerprint`), so caches keyed by it are invalidated when the data change; caches
    built on a device are keyed by :meth:`fingerprint_on` that device (the rows as decoded there).
    """

    name: str
    train: Rows
    val: Rows
    test: Rows
    num_classes: int
    config: dict = field(default_factory=dict)
    augment: str = "none"  # training-time augmentation of the training split (nas_theseus.data.augment)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape

    @property
    def augmentation(self) -> Augment:
        """The :class:`~nas_theseus.data.augment.Augment` that training passes over ``train`` apply."""
        return make_augment(self.augment)

    def with_augment(self, spec: str | None) -> TaskData:
        """This task with training-time augmentation ``spec`` (checked against the data in one line)."""
        augment = make_augment(spec)
        check_augment(augment, self.sample_shape, where=self.name, batched=isinstance(self.train, Split),
                      per_image=getattr(getattr(self.train, "dataset", None), "augmented", None) is not None)
        self.train.refuse_augment(augment)
        return replace(self, augment=augment.spec)

    @property
    def fingerprint(self) -> str:
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            splits = (self.train, self.val, self.test)
            # tensors in memory (no fingerprint of their own, unlike packed images): hashed whole, as always
            if all(isinstance(s, Split) and type(s).fingerprint is Split.fingerprint for s in splits):
                cached = tensor_fingerprint(*(t for s in splits for t in (s.x, s.y)))
            else:
                cached = stable_hash({"splits": [s.fingerprint() for s in splits]})
            if self.augment != "none":  # the same rows, trained on otherwise: whatever is trained on them differs
                cached = stable_hash({"rows": cached, "augment": self.augment})
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def fingerprint_on(self, device: torch.device | str) -> str:
        """The fingerprint of the rows as batches on ``device`` hold them, what every cache built there is keyed
        by: :attr:`fingerprint`, unless a split's rows are decoded there otherwise than it stands for (JPEGs
        decoded by nvJPEG on a GPU, rounded apart from Pillow's: :meth:`Rows.decoder_on`), which it then names,
        so that no cache mixes the two. A device must be resolved (not ``auto``)."""
        decoders = [s.decoder_on(torch.device(device)) for s in (self.train, self.val, self.test)]
        if not any(decoders):
            return self.fingerprint
        return stable_hash({"rows": self.fingerprint, "decoders": decoders})

    def describe(self) -> str:
        aug = f", augment {self.augment}" if self.augment != "none" else ""
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
                f"sample shape {self.sample_shape}, {self.num_classes} classes{aug}")


def carve_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split (x, y) into train and validation by a seeded permutation, stratified by label."""
    train_idx, val_idx = stratified_indices(y, fraction, seed)
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def stratified_indices(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, carved) row indices, sorted: ``fraction`` of each label's rows carved out by a seeded
    permutation (at least one per label)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    carved, rest = [], []
    for label in torch.unique(y):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = max(1, round(len(idx) * fraction))
        carved.append(idx[:n_val])
        rest.append(idx[n_val:])
    return torch.cat(rest).sort().values, torch.cat(carved).sort().values
