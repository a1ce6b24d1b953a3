"""The optional Hugging Face ``datasets`` package, imported on demand and read offline (WikiText, image data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import UserError


def import_datasets(what: str):
    """The ``datasets`` module; a one-line error naming ``what`` data needs it when it is not installed."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{what} data needs the Hugging Face 'datasets' package: "
                        "pip install 'nas-theseus[wikitext]'") from None
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
