"""WikiText for language modelling, as bytes: ``load_wikitext`` (the ``wikitext`` data).

Needs the optional ``datasets`` package (``pip install 'nas-theseus[datasets]'``). It reads a local copy only
and never downloads: ``path`` is

* a directory written by ``DatasetDict.save_to_disk`` (``dataset_dict.json``; splits ``train``,
  ``validation`` and ``test`` with a ``text`` column), or
* a directory in the Hugging Face Hub's parquet layout (``train-00000-of-00002.parquet``, ...,
  ``validation-*.parquet``, ``test-*.parquet``; also ``<split>.parquet`` or ``<split>/*.parquet``), read with
  ``datasets.load_dataset("parquet", data_files=...)`` (which writes its Arrow cache to the ``datasets`` cache);
  either may also sit in a ``<subset>/`` subdirectory of ``path`` (``subset``, default ``wikitext-103-raw-v1``),
  so ``path`` can be a snapshot of the Hub repository holding every subset;
* left out: the Hub repository's parquet files already in the local Hugging Face hub cache (as left there by
  ``datasets.load_dataset("Salesforce/wikitext", subset)`` or ``"wikitext"`` with ``datasets>=3``, or by
  ``huggingface_hub.snapshot_download``), found under ``huggingface_hub.constants.HF_HUB_CACHE``.

Hugging Face offline mode is forced while reading, so nothing is fetched even without ``HF_DATASETS_OFFLINE=1``.
WikiText's own train / validation / test splits are used (no 90/5/5 cut). Each split's rows are lines in file
order, each ending in ``"\\n"``; whitespace-only lines of the raw files are stored as empty rows, which are read
back as ``"\\n"`` (blank lines kept), so a split's byte stream is its raw file's text up to the whitespace on
blank lines. ``max_bytes`` caps the training split only (its first ``max_bytes`` bytes); validation and test are
always whole, so their losses stay comparable across ``max_bytes``. Windows and targets are made as for
``load_text`` (:mod:`nas_theseus.data.text`). Each split's bytes are written once, a batch of rows at a time, to
a byte file under ``$NAS_THESEUS_CACHE/tokens`` (named by the source files' paths and sizes, the subset and
``max_bytes``); a split whose windows would take more than ``IN_MEMORY_MB`` (``in_memory = "auto"``: WikiText-103's
~540 MB training split would be ~8.6 GB of int64 windows) is read from that file through a memory map, a batch
at a time, so nothing proportional to the corpus is held in RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..utils.files import atomic_write, cache_dir
from ..utils.hashing import stable_hash
from .base import TaskData
from .hub import hf_offline, import_datasets, parquet_files
from .text import VOCAB, TokenWindows, _windows, fits_in_memory

WIKITEXT_SPLITS = ("train", "validation", "test")
WIKITEXT_REPOS = ("Salesforce/wikitext", "wikitext")  # the Hub repository, and its old name (a redirect)


def _parquet_files(folder: Path) -> dict[str, list[Path]] | None:
    """The Hub's parquet files per split in ``folder``; None when there are none, an error when a split lacks them."""
    found = parquet_files(folder, WIKITEXT_SPLITS)
    if not found:
        return None
    missing = [s for s in WIKITEXT_SPLITS if s not in found]
    if missing:
        raise UserError(f"wikitext data: {folder} has parquet files for {', '.join(found)} but none for "
                        f"{', '.join(missing)} (expected {', '.join(f'{s}-*.parquet' for s in missing)})")
    return found


def _hub_cache_folder(subset: str) -> Path | None:
    """The ``subset`` folder of a WikiText snapshot in the local hub cache (the ``main`` ref first, then newest)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    for repo in WIKITEXT_REPOS:
        repo_dir = root / f"datasets--{repo.replace('/', '--')}"
        snapshots = [d for d in (repo_dir / "snapshots").glob("*") if (d / subset).is_dir()]
        ref = repo_dir / "refs" / "main"
        main = ref.read_text().strip() if ref.is_file() else None
        snapshots.sort(key=lambda d: (d.name == main, d.stat().st_mtime), reverse=True)
        for snap in snapshots:
            try:
                if _parquet_files(snap / subset):
                    return snap / subset
            except UserError:  # an incomplete download: try the next snapshot
                continue
    return None


def _resolve_wikitext(path: str | None, subset: str) -> tuple[str, Path, dict[str, list[Path]] | None]:
    """``(format, folder, parquet files or None)`` for a local WikiText copy; a UserError when there is none."""
    if path is None:
        folder = _hub_cache_folder(subset)
        if folder is None:
            from huggingface_hub import constants

            raise UserError(f"wikitext data: no local copy of {subset!r} in the Hugging Face hub cache "
                            f"{constants.HF_HUB_CACHE} (nothing is downloaded); give path = a DatasetDict saved with "
                            "save_to_disk or a folder of the Hub's parquet files")
        return "hub-cache", folder, _parquet_files(folder)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"wikitext data: no such directory {root} (path is a DatasetDict saved with save_to_disk "
                        "or a folder of the Hub's parquet files)")
    for folder in (root, root / subset):
        if (folder / "dataset_dict.json").is_file():
            return "save_to_disk", folder, None
        if (folder / "state.json").is_file():
            raise UserError(f"wikitext data: {folder} holds one saved Dataset; save a DatasetDict with splits "
                            f"{', '.join(WIKITEXT_SPLITS)}")
        files = _parquet_files(folder) if folder.is_dir() else None
        if files:
            return "parquet", folder, files
    raise UserError(f"wikitext data: {root} holds neither a DatasetDict saved with save_to_disk (dataset_dict.json) "
                    f"nor the Hub's parquet files (train-*.parquet, validation-*.parquet, test-*.parquet), "
                    f"there or in {subset}/")


def _split_file(ds, split: str, folder: Path, limit: int | None, key: str) -> Path:
    """A split's text as UTF-8 bytes in a file of the cache (written once, a batch of rows at a time): its rows
    in order (empty rows read as blank lines), cut at ``limit`` bytes."""
    path = cache_dir() / "tokens" / f"wikitext-{key}-{split}.bin"
    if path.is_file():
        return path
    if "text" not in ds.column_names:
        raise UserError(f"wikitext data: the {split} split in {folder} has no 'text' column "
                        f"(columns: {', '.join(ds.column_names) or 'none'})")
    dtype = getattr(ds.features["text"], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise UserError(f"wikitext data: the 'text' column of the {split} split in {folder} holds {dtype}, not strings")

    def write(tmp: str) -> None:
        n = 0
        with open(tmp, "wb") as f:
            for batch in ds.with_format(columns=["text"]).iter(batch_size=10_000):
                part = "".join(row or "\n" for row in batch["text"]).encode("utf-8")
                if limit is not None:
                    part = part[:max(0, limit - n)]
                f.write(part)
                n += len(part)
                if limit is not None and n >= limit:
                    break

    atomic_write(path, write)
    return path


def load_wikitext(*, path: str | None = None, subset: str = "wikitext-103-raw-v1", context: int = 64,
                  stride: int | None = None, max_bytes: int | None = None, in_memory: bool | str = "auto") -> TaskData:
    """Byte-level WikiText from a local copy, with its own splits (see the module docstring); never downloads."""
    if context < 1:
        raise UserError(f"wikitext context must be >= 1, got {context}")
    if max_bytes is not None and max_bytes < context + 1:
        raise UserError(f"wikitext max_bytes must be at least one window ({context + 1} bytes), got {max_bytes}")
    datasets = import_datasets("wikitext")
    fmt, folder, parquet = _resolve_wikitext(path, subset)
    with hf_offline(datasets):
        try:
            if parquet is None:
                splits = datasets.load_from_disk(str(folder))
            else:
                data_files = {split: [str(f) for f in files] for split, files in parquet.items()}
                splits = datasets.load_dataset("parquet", data_files=data_files)
        except Exception as e:  # a damaged or foreign file: say which folder, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"wikitext data: could not read {folder}: {type(e).__name__}: {first}") from None
    if not isinstance(splits, datasets.DatasetDict):
        raise UserError(f"wikitext data: {folder} holds one saved Dataset; save a DatasetDict with splits "
                        f"{', '.join(WIKITEXT_SPLITS)}")
    missing = [s for s in WIKITEXT_SPLITS if s not in splits]
    if missing:
        raise UserError(f"wikitext data: {folder} has splits {', '.join(splits) or 'none'}; "
                        f"missing {', '.join(missing)}")
    stride = stride or context
    out, sizes, files = {}, {}, {}
    for split in WIKITEXT_SPLITS:
        paths = parquet[split] if parquet is not None else [Path(f["filename"]) for f in splits[split].cache_files]
        files[split] = [[_relative(f, folder), os.path.getsize(f)] for f in paths]
        limit = max_bytes if split == "train" else None
        mtimes = [os.stat(f).st_mtime_ns for f in paths]  # with the paths and sizes: the bytes file's name
        key = stable_hash({"path": str(folder.resolve()), "files": files[split], "mtimes": mtimes, "subset": subset,
                           "split": split, "limit": limit})
        file = _split_file(splits[split], split, folder, limit, key)
        sizes[split] = file.stat().st_size
        what = f"wikitext {split} split"
        if fits_in_memory(sizes[split], context, stride, in_memory):
            ids = torch.from_numpy(np.fromfile(file, dtype=np.uint8).astype(np.int64))
            out[split] = _windows(ids, context, stride, what=what)
        else:
            ids = np.memmap(file, dtype=np.uint8, mode="r") if sizes[split] else np.zeros(0, np.uint8)
            out[split] = TokenWindows(ids, context, stride, what=what,
                                      fingerprint=stable_hash({"bytes_of": key, "context": context, "stride": stride}))
    config = {"source": "wikitext", "format": fmt, "path": str(folder.resolve()),
              "subset": subset if folder.name == subset else None,
              "files": files, "context": context, "stride": stride, "max_bytes": max_bytes, "bytes": sizes}
    return TaskData("wikitext", out["train"], out["validation"], out["test"], num_classes=VOCAB, config=config)


def _relative(file: Path, folder: Path) -> str:
    """``file`` relative to ``folder`` where it lies inside it (hub-cache files are links: not resolved first)."""
    for f, d in ((Path(file), folder), (Path(file).resolve(), folder.resolve())):
        try:
            return f.relative_to(d).as_posix()
        except ValueError:
            pass
    return str(file)
