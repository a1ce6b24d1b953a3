"""The optional Hugging Face ``datasets`` package, imported on demand and read offline (WikiText, image data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError


def import_datasets(what: str):
    """The ``datasets`` module; a one-line error naming ``what`` data needs it when it is not installed."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{what} data needs the Hugging Face 'datasets' package: "
                        "pip install 'nas-theseus[datasets]'") from None
    return datasets


@contextmanager
def hf_offline(datasets) -> Iterator[None]:
    """Hugging Face offline mode for the duration (``datasets`` reads it from its config at call time)."""
    cfg = datasets.config
    saved = {k: getattr(cfg, k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(cfg, k)}
    try:
        for k in saved:
            setattr(cfg, k, True)
        yield
    finally:
        for k, v in saved.items():
            setattr(cfg, k, v)


PARQUET_PATTERNS = ("{}-*.parquet", "{}.parquet", "{}/*.parquet")  # the Hub's layouts of a split's files


def parquet_files(folder: Path, splits) -> dict[str, list[Path]]:
    """The parquet files of each of ``splits`` found in ``folder`` (``<split>-*.parquet``, ``<split>.parquet``
    or ``<split>/*.parquet``, the first that matches); splits without any are left out.

    Not ``datasets``' own split detection (``datasets.data_files.get_data_patterns``), on purpose: it searches
    every subfolder (a WikiText folder holding ``wikitext-2-raw-v1/`` and ``wikitext-103-raw-v1/`` would give
    each split both subsets' files), takes any file type (a ``validation.csv`` joins ``dev.parquet`` in one
    split) and more names (``dev``, ``eval``), and calls a folder of other files one ``train`` split; here a
    split is the Hub's parquet files of exactly that name, in this folder."""
    found = {}
    for split in splits:
        for pattern in PARQUET_PATTERNS:
            files = sorted(folder.glob(pattern.format(split)))
            if files:
                found[split] = files
                break
    return found
