"""The study's work directory: where its storage, caches, stage checkpoints and trial networks live.

    DIR/study.json              storage URL, study name, identity and resolved config (written once valid)
    DIR/study.db                the default SQLite storage
    DIR/cache/activations-*.f32/   the guide's activations over the training split (one per guide+data),
                                   float32 .npy files every worker memory-maps
    DIR/checkpoints/*.ckpt      content-keyed stage checkpoints (shared by every trial and worker; what
                                `nas-theseus clean` and study.checkpoint_cap trim, :mod:`.clean`)
    DIR/trials/N/               arch.json, model.safetensors, reference.safetensors, metrics.json per COMPLETE trial
    DIR/exports/trial-N/        what `nas-theseus export` writes
    DIR/report/                 what `nas-theseus report` writes

With a shared artifact store ([artifacts] store, :mod:`nas_theseus.utils.artifacts`) this folder is the local
copy: stage checkpoints and trial networks are uploaded there too, and fetched from there when missing here.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..convert import GuideActivations
from ..data import TaskData
from ..errors import UserError
from ..guides import Guide
from ..utils.files import atomic_write, atomic_write_text
from ..utils.hashing import stable_hash
from ..utils.locks import file_lock


@dataclass(frozen=True)
class WorkDir:
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "study.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def trial(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def default_storage(self) -> str:
        return f"sqlite:///{(self.root / 'study.db').resolve()}"

    def read_meta(self) -> dict | None:
        if not self.meta.is_file():
            return None
        try:
            return json.loads(self.meta.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{self.meta} is corrupted; restore it or start a new --workdir") from None

    def require_meta(self) -> dict:
        meta = self.read_meta()
        if meta is None:
            raise UserError(f"{self.root} is not a study work directory (no study.json); run `nas-theseus run` first")
        return meta

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.meta, json.dumps(meta, indent=2))

    def activations(self, guide: Guide, data: TaskData, *, device: str, progress: bool) -> GuideActivations:
        """The guide's activations over ``data.train``: computed once per study, then read from the cache
        (``activations-<key>.f32/``, float32 files that the workers of a machine share through memory maps, or
        the float16 folder ``activations-<key>/`` for caches beyond the memory budget, see
        :mod:`nas_theseus.convert.activations`)."""
        key = stable_hash({"guide": guide.identity, "data": data.fingerprint_on(device)})
        # workers sharing this work directory compute the cache once: the first holds the lock, the rest
        # wait and then read what it published
        with file_lock(self.root / "cache" / f"activations-{key}.lock"):
            return self._activations(key, guide, data, device=device, progress=progress)

    def _activations(self, key: str, guide: Guide, data: TaskData, *, device: str, progress: bool):
        path = self.root / "cache" / f"activations-{key}.safetensors"  # written by earlier versions
        shared = self.root / "cache" / f"activations-{key}.f32"
        folder = self.root / "cache" / f"activations-{key}"
        n = len(guide.parts) + 2
        for stale in (self.root / "cache").glob(f".activations-{key}.*"):  # a killed writer's temp folder
            shutil.rmtree(stale, ignore_errors=True)
        try:
            if folder.is_dir():
                acts = GuideActivations.open_mapped(folder, n)
            elif shared.is_dir():
                acts = GuideActivations.open_shared(shared, n)
            elif path.is_file():
                tensors = load_file(str(path))
                acts = GuideActivations([tensors[f"a{i}"] for i in range(n)], key)
            else:
                acts = None
            if acts is not None:
                if len(acts) == len(data.train):
                    return acts
                raise ValueError("row count differs from the training split")
        except Exception as e:  # noqa: BLE001 - a bad cache is recomputed
            warnings.warn(f"guide-activation cache for {key} is unreadable ({e}); recomputing", stacklevel=2)
        acts = GuideActivations.compute(guide, data.train, data_key=data.fingerprint_on(device), device=device,
                                        progress=progress, mmap_dir=folder)
        if not acts.mapped:
            acts.save_shared(shared)
            acts = GuideActivations.open_shared(shared, n)  # the machine's one copy, in the OS's file cache
        return acts


def save_reference(folder: Path, model: torch.nn.Module, x: torch.Tensor) -> None:
    """Store a probe input and the model's outputs on it, to verify rebuilt networks against."""
    model.eval()
    with torch.no_grad():
        y = model(x)
    tensors = {"x": x.detach().cpu().contiguous(), "y": y.detach().cpu().contiguous()}
    atomic_write(folder / "reference.safetensors", lambda tmp: save_file(tensors, tmp))


def load_reference(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        t = load_file(str(folder / "reference.safetensors"))
        return t["x"], t["y"]
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{folder}/reference.safetensors is missing or corrupted ({type(e).__name__})") from None
