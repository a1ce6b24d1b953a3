"""A split read from any map-style ``torch.utils.data.Dataset`` through a ``DataLoader`` (:class:`DatasetSplit`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..utils.hashing import seed_from_key
from ..utils.locks import usable_cores
from .augment import Augment
from .base import Batch, Rows


def default_workers() -> int:
    """DataLoader worker processes: ``$NAS_THESEUS_DATA_WORKERS``, else the usable cores less one (at most 8),
    and none on a machine of two cores or fewer (a worker there only competes with training)."""
    env = os.environ.get("NAS_THESEUS_DATA_WORKERS")
    if env is not None:
        return max(0, int(env))
    cores = usable_cores()
    return 0 if cores <= 2 else min(8, cores - 1)


class DatasetSplit(Rows):
    """A map-style ``dataset`` whose items are ``(x, y)`` pairs (x a tensor, y an integer label or a tensor of
    next-token targets), read through a ``DataLoader``: ``workers`` processes (:func:`default_workers`), pinned
    memory when the batches go to a GPU, ``prefetch`` batches per worker. Items are made when read, so memory
    is O(batch). ``fingerprint`` identifies the rows without reading them (file names, sizes and modification
    times for files; the dataset's own fingerprint for a Hugging Face dataset): say in it what the rows are.

    An error raised by the dataset in a worker (an unreadable file) reaches the caller as one line (a
    :class:`~nas_theseus.errors.UserError` keeps its own message), not as a worker's traceback."""

    def __init__(self, dataset: Dataset, *, fingerprint: str, workers: int | None = None, prefetch: int = 2):
        self.dataset = dataset
        self._fingerprint = fingerprint
        self.workers = default_workers() if workers is None else workers
        self.prefetch = prefetch
        self._first = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _sample(self) -> tuple[torch.Tensor, object]:
        if self._first is None:
            if len(self) == 0:
                raise UserError("a data split has no rows")
            self._first = self.dataset[0]
        return self._first

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self._sample()[0].shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._sample()[0].dtype

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.dataset[int(i)] for i in torch.as_tensor(idx).flatten()]
        if not items:
            return torch.empty((0, *self.sample_shape), dtype=self.dtype), torch.empty(0, dtype=torch.long)
        return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])

    def batches(self, batch_size: int, *, order: torch.Tensor | None = None, device: torch.device | str = "cpu",
                augment: Augment | None = None, seed: int = 0) -> Iterator[Batch]:
        device = torch.device(device)
        order = torch.arange(len(self)) if order is None else order.cpu()
        keys: list = order.tolist()
        if augment is not None and augment.name != "none":  # each row's transform seeded by (pass, row)
            keys = [(i, seed_from_key(f"{seed}:{i}")) for i in keys]
        else:
            augment = None
        chunks = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
        prefetch = {"prefetch_factor": self.prefetch} if self.workers else {}
        # batches made by the DataLoader's default_collate: indices (int64), x and y stacked in their own dtypes
        loader = DataLoader(_Indexed(self.dataset, augment), batch_sampler=chunks, num_workers=self.workers,
                            pin_memory=device.type == "cuda", **prefetch)
        for idx, x, y in one_line_errors(loader):
            yield Batch(idx, x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    def fingerprint(self) -> str:
        return self._fingerprint


def one_line_errors(loader: DataLoader) -> Iterator:
    """``loader``'s batches; a worker's :class:`UserError` (it comes back with the worker's traceback in its
    message) is raised again as its own one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except UserError as e:
            raise UserError(str(e).strip().splitlines()[-1].removeprefix("nas_theseus.errors.UserError: ")
                            .removeprefix("UserError: ")) from None
        yield batch


class _Indexed(Dataset):
    """Items as ``(index, x, y)``, so a batch knows which rows it holds; a key ``(index, seed)`` asks for the
    row augmented with that seed."""

    def __init__(self, dataset: Dataset, augment: Augment | None):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            i, seed = key
            x, y = self.dataset.augmented(i, seed, self.augment)
        else:
            i = key
            x, y = self.dataset[i]
        return i, x, y

