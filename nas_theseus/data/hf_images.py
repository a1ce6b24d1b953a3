"""Image classification data in the Hugging Face ``datasets`` format, from a local copy (``hfimages`` data).

Needs the optional ``datasets`` package (``pip install 'nas-theseus[datasets]'``; the extra's older name,
``wikitext``, still works).
``path`` is

* a folder written by ``save_to_disk``: a ``DatasetDict`` (``dataset_dict.json``) or one ``Dataset``
  (``state.json``), or
* a folder of parquet files: ``<split>-*.parquet``, ``<split>.parquet`` or ``<split>/*.parquet`` for the splits
  ``train`` and, where present, ``validation`` and ``test`` (the Hub's layout), read with
  ``datasets.load_dataset("parquet", ...)`` (which writes its Arrow cache to the ``datasets`` cache).

Nothing is downloaded (Hugging Face offline mode is forced while reading). Arrow files are memory-mapped, and
each image (the ``image`` column: a ``datasets.Image`` feature) is decoded when read, through a ``DataLoader``,
so memory does not grow with the data set; a small one is decoded into tensors once, as image folders are
(``in_memory``). Labels are the ``label`` column (integers; a ``ClassLabel``'s names are kept as the classes).
A split that is not there is carved out of ``train`` (stratified: ``test_fraction``, then ``val_fraction``).
Images are converted, resized and standardised as an image folder's are (:mod:`nas_theseus.data.decoded_images`). The
data's fingerprint is each split's own Arrow fingerprint (``Dataset._fingerprint``: for a ``save_to_disk``
folder the one stored with it, for parquet files a hash of their paths and modification times), how splits
were carved (seed and fractions), and the options: no image is read for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .base import TaskData, stratified_indices
from .decoded_images import Images
from .hub import hf_offline, import_datasets, parquet_files
from .packed_images import packed_task

SPLITS = ("train", "validation", "test")


class HFImages(Images):
    """Rows ``rows`` of a Hugging Face ``Dataset``, its ``column`` decoded into a PIL image when read."""

    def __init__(self, dataset, column: str, rows: list[int], labels: list[int], where: str, **kwargs):
        super().__init__(labels, **kwargs)
        self.dataset, self.column, self.rows, self.where = dataset, column, rows, where

    def image(self, i: int):
        row = self.rows[i]
        try:
            im = self.dataset[row][self.column]
        except Exception as e:  # noqa: BLE001 - a damaged image is the user's to fix: name the row
            raise UserError(f"hfimages data: cannot decode row {row} of {self.where} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
        if not hasattr(im, "convert"):
            raise UserError(f"hfimages data: row {row} of {self.where} holds {type(im).__name__} in column "
                            f"{self.column!r}, not an image")
        return self._fit(im, f"hfimages data: row {row} of {self.where}")


def load_hf_images(*, path: str, image: str = "image", label: str = "label", size: int | None = 32,
                   channels: int = 3, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                   in_memory: bool | str = "auto", workers: int | None = None,
                   packed: bool | str = False) -> TaskData:
    """Images and labels of a local Hugging Face dataset (see the module docstring); never downloads.
    ``packed``: read from uint8 shards packed once (:mod:`nas_theseus.data.packed_images`)."""
    if channels not in (1, 3):
        raise UserError(f"hfimages data: channels must be 1 or 3, got {channels}")
    datasets = import_datasets("hfimages")
    folder = Path(path).expanduser()
    splits = _read(datasets, folder)
    for name, ds in splits.items():
        missing = [c for c in (image, label) if c not in ds.column_names]
        if missing:
            raise UserError(f"hfimages data: the {name} split in {folder} has no column "
                            f"{', '.join(map(repr, missing))} (columns: {', '.join(ds.column_names)}); set the "
                            "`image` and `label` options")
        splits[name] = ds.select_columns([image, label])
    train = splits["train"]
    labels = {name: _labels(ds, label, f"the {name} split in {folder}") for name, ds in splits.items()}
    rows = _rows(splits, labels["train"], val_fraction=val_fraction, test_fraction=test_fraction,
                 split_seed=split_seed)
    source = {name: splits.get(name, train) for name in SPLITS}  # carved splits read the train split's rows
    label_of = {name: labels.get(name, labels["train"]) for name in SPLITS}
    classes = _classes(train, label, labels)
    if size is None:
        first = train[0][image]
        if not hasattr(first, "size"):
            raise UserError(f"hfimages data: column {image!r} of {folder} holds {type(first).__name__}, not images")
        shape = first.size
    else:
        shape = (size, size)
    parts = [HFImages(source[name], image, rows[name], [label_of[name][r] for r in rows[name]],
                      f"the {name if name in splits else 'train'} split in {folder}", size=shape, channels=channels,
                      size_option=size) for name in SPLITS]
    carved = sorted(set(SPLITS) - set(splits))  # train's rows and the carved splits' depend on how
    carving = {"carved": carved, "split_seed": split_seed, "val_fraction": val_fraction,
               "test_fraction": test_fraction} if carved else {}
    identities = [{"arrow": source[name]._fingerprint, "split": name,
                   **(carving if name == "train" or name in carved else {})} for name in SPLITS]
    config = {"root": str(folder), "image": image, "label": label, "size": size, "channels": channels,
              "classes": classes, "splits": sorted(splits)}
    return packed_task("hfimages", parts, identities, config, packed=packed, in_memory=in_memory,
                       workers=workers, split_seed=split_seed, val_fraction=val_fraction)


def _read(datasets, folder: Path) -> dict:
    """The folder's splits by name (a single saved ``Dataset`` is ``train``); one line when unreadable."""
    if not folder.is_dir():
        raise UserError(f"hfimages data: no such folder {folder} (path is a dataset saved with save_to_disk or "
                        "a folder of parquet files)")
    parquet = {split: [str(f) for f in files] for split, files in parquet_files(folder, SPLITS).items()}
    saved = (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()
    if not saved and "train" not in parquet:
        raise UserError(f"hfimages data: {folder} holds neither a dataset saved with save_to_disk "
                        "(dataset_dict.json or state.json) nor parquet files of a train split (train-*.parquet, "
                        "train.parquet or train/*.parquet)")
    with hf_offline(datasets):
        try:
            loaded = datasets.load_from_disk(str(folder)) if saved else datasets.load_dataset("parquet",
                                                                                                data_files=parquet)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: say which folder, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"hfimages data: could not read {folder}: {type(e).__name__}: {first}") from None
    splits = {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    unknown = [s for s in splits if s not in SPLITS]
    if "train" not in splits or unknown:
        raise UserError(f"hfimages data: {folder} has splits {', '.join(splits) or 'none'}; expected train and "
                        f"optionally validation and test")
    return splits


def _rows(splits: dict, train_labels: list[int], *, val_fraction: float, test_fraction: float,
          split_seed: int) -> dict[str, list[int]]:
    """Each split's rows: all of a split the dataset has; a missing test, then validation split carved out of
    train (stratified, seeded), as image folders carve theirs."""
    rows = {name: list(range(len(ds))) for name, ds in splits.items()}
    if "test" not in splits:
        rest, carved = stratified_indices(torch.as_tensor(train_labels), test_fraction, split_seed + 1)
        rows["test"], rows["train"] = carved.tolist(), rest.tolist()
    if "validation" not in splits:
        kept = rows["train"]
        rest, carved = stratified_indices(torch.as_tensor([train_labels[r] for r in kept]), val_fraction,
                                          split_seed)
        rows["validation"], rows["train"] = [kept[i] for i in carved.tolist()], [kept[i] for i in rest.tolist()]
    return rows


def _labels(ds, column: str, where: str) -> list[int]:
    values = ds[column]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        bad = next(v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 0)
        raise UserError(f"hfimages data: the {column!r} column of {where} must hold non-negative integer labels, "
                        f"found {bad!r}")
    return list(values)


def _classes(train, column: str, labels: dict[str, list[int]]) -> list[str]:
    names = getattr(train.features[column], "names", None)
    if names:
        return list(names)
    return [str(i) for i in range(max(max(v, default=-1) for v in labels.values()) + 1)]
