"""Stable content hashes: the same content gives the same key on every machine and Python run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch

_KEYED = "__keyed_fields__"
_LEGACY = "__nas_theseus_legacy_values__"


def keyed_fields(*names: str, legacy: dict | None = None):
    """Class decorator for a settings dataclass that content keys hash: ``names`` are the fields its keys have
    always held. A field added later is hashed only while it differs from its default, so adding a setting
    shifts no existing key, seed or checkpoint (tests/test_hashing.py pins today's keys). ``legacy`` names, for
    a later field whose default is a new behaviour, the value that reproduces what keys meant before it
    existed: such a field is left out only at that value (so the new default is keyed, and old keys stay)."""

    def wrap(cls):
        unknown = (set(names) | set(legacy or {})) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
        setattr(cls, _KEYED, frozenset(names))
        setattr(cls, _LEGACY, dict(legacy or {}))
        return cls

    return wrap


def _at_default(f: dataclasses.Field, value: Any, legacy: dict) -> bool:
    if f.name in legacy:
        return value == legacy[f.name]
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def key_content(obj: Any) -> Any:
    """What a content key hashes of ``obj``: JSON-able data, dataclasses as dicts without the later-added
    fields that are at their defaults (see :func:`keyed_fields`)."""
    return _jsonable(obj)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        keyed, legacy = getattr(type(obj), _KEYED, None), getattr(type(obj), _LEGACY, {})
        pairs = ((f, getattr(obj, f.name)) for f in dataclasses.fields(obj))
        return {f.name: _jsonable(v) for f, v in pairs
                if keyed is None or f.name in keyed or not _at_default(f, v, legacy)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot hash a {type(obj).__name__}; give primitives, lists, dicts or dataclasses")


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (dataclasses, dicts, lists and primitives), hex-truncated."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_fingerprint(*tensors: torch.Tensor | np.ndarray, length: int = 16) -> str:
    """sha256 over the dtype, shape and bytes of the given arrays."""
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().cpu().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:length]


def module_fingerprint(module: torch.nn.Module, length: int = 16) -> str:
    """Hash of a module's state (names, shapes and values of every parameter and buffer)."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_fingerprint(value, length=64).encode())
    return h.hexdigest()[:length]


def file_sha256(path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seed_from_key(key: str) -> int:
    """A 63-bit integer seed derived from a hex key, for generators seeded by content."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)
