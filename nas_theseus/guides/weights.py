"""Where a guide's weights come from, the same for every guide source (``weights = ...`` in a study):

* ``"train"`` (default): the toolkit trains the guide on the task data, once, and caches the weights under
  ``$NAS_THESEUS_CACHE/guides`` by a hash of everything that shapes them (source, options, training options,
  seed, the data's fingerprint); training metrics are stored beside them. With a shared artifact store, a
  guide missing here is fetched from the store's ``guides/`` (checked), and one trained here is uploaded
  there, so the machines of a study train it once and convert the same guide.
* ``"random"``: untrained (seeded random init), frozen.
* a local path: ``*.safetensors``, or a ``torch.save`` file read with ``torch.load(weights_only=True)``
  (a state dict, or a dict holding one under ``state_dict`` / ``model``).
* ``"pretrained"``: the source library's own loading (timm, transformers), for users with network access or
  a local Hugging Face cache; sources that have no such loading refuse it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import TaskData
from ..errors import UserError
from ..training import FitConfig, evaluate, fit_classifier
from ..utils.artifacts import ArtifactStore
from ..utils.devices import module_device, resolve_device
from ..utils.distributed import from_main, is_main
from ..utils.files import atomic_write, atomic_write_text, cache_dir
from ..utils.hashing import stable_hash

KEYWORDS = ("train", "random", "pretrained")


def describe_weights(weights: str) -> dict:
    """The ``weights`` entry of a guide's source: a keyword as is; a file as ``"file"`` with its path under
    ``weights_file``, a location that no identity or key reads (the weights' fingerprint stands for them)."""
    if weights in KEYWORDS:
        return {"weights": weights}
    return {"weights": "file", "weights_file": str(Path(weights).expanduser().resolve())}


def cached_training(module: nn.Module, *, name: str, key_info: dict, data: TaskData, fit: FitConfig, seed: int,
                    device: str = "auto", progress: bool = True, artifacts: ArtifactStore | None = None) -> str:
    """Load ``module``'s trained weights from the cache (or from ``artifacts``, a shared store), or train it on
    ``data`` and cache them (uploading them to ``artifacts``); returns the cache key. ``key_info`` describes the
    architecture (JSON-able); ``name`` prefixes the file name. Trained on ``device`` (``auto``: the GPU where
    there is one); the module is left on the CPU, where a guide is built (a study then moves it)."""
    device = resolve_device(device)  # the rows are keyed as decoded there (TaskData.fingerprint_on)
    key = stable_hash({"name": name, **key_info, "fit": fit, "seed": seed, "data": data.fingerprint_on(device)})
    path = cache_dir() / "guides" / f"{_file_safe(name)}-{key}.safetensors"
    check_accepts(module, data, name)  # before any training: a shape mismatch is one line, not a traceback
    loaded = _load_cached(module, path) or bool(artifacts and _from_store(artifacts, module, path))
    # under torchrun, rank 0's cache decides: every rank trains (data parallel) or none does (a rank that found
    # no copy of its own is handed rank 0's weights, see nas_theseus.study.ranks.guide_from_main)
    if from_main(lambda: not loaded):
        torch.manual_seed(seed)
        report = fit_classifier(module, data, fit, seed=seed, device=device, progress=progress,
                                desc=f"guide {name}")
        module.cpu()
        if not is_main():  # rank 0 writes the cache and uploads
            return key
        test_acc = evaluate(module, data.test)[0]
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}  # no shared (tied) storage
        atomic_write(path, lambda tmp: save_file(state, tmp))
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"name": name, **key_info, "fit": asdict(fit), "seed": seed, "data": data.fingerprint_on(device),
             "val_accuracy": report.best_val_accuracy, "test_accuracy": test_acc, "epochs": report.epochs,
             "wall_s": round(report.wall_s, 2), "device": device},
            indent=2, default=str))
        # first upload wins: when another machine uploaded this guide while it trained here, the study
        # converts that one everywhere (training is only bit-identical at equal thread counts)
        if artifacts and not _from_store(artifacts, module, path):
            _to_store(artifacts, path)
    return key


def _from_store(store: ArtifactStore, module: nn.Module, path: Path) -> bool:
    meta = path.with_suffix(".json")
    try:
        if not store.fetch_sealed(f"guides/{meta.name}", meta):  # metrics first: the weights mark it whole
            return False
        if not store.fetch_sealed(f"guides/{path.name}", path):
            return False
    except Exception as e:  # noqa: BLE001 - a guide that cannot be fetched is trained here
        warnings.warn(f"cached guide {path.name} in artifact store {store.url} is unusable ({type(e).__name__}: "
                      f"{e}); training it here", stacklevel=3)
        return False
    return _load_cached(module, path)


def _to_store(store: ArtifactStore, path: Path) -> None:
    try:
        store.put_sealed(f"guides/{path.with_suffix('.json').name}", path.with_suffix(".json"))
        store.put_sealed(f"guides/{path.name}", path)
    except Exception as e:  # noqa: BLE001 - other machines train their own copy
        warnings.warn(f"trained guide {path.name} was not uploaded to artifact store {store.url} "
                      f"({type(e).__name__}: {e})", stacklevel=3)


def check_accepts(module: nn.Module, data: TaskData, name: str) -> None:
    """Refuse, in one line naming the data's sample shape, a guide whose forward cannot read the data (the
    samples are read on the module's own device, so a guide on a GPU is asked about shapes, not devices)."""
    x = data.train.head(2)[0].to(module_device(module))
    was = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    except Exception as e:  # noqa: BLE001 - a module that cannot read these samples: the user's to fix
        hint = ""
        if data.name == "imagefolder":
            hint = (f" (image folders are read at size = {data.config.get('size')}, channels = "
                    f"{data.config.get('channels')}: set them to what the guide reads)")
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise UserError(f"guide {name} does not accept the data's samples of shape {tuple(data.sample_shape)} "
                        f"(dtype {str(data.train.dtype).removeprefix('torch.')}){hint}: {type(e).__name__}: "
                        f"{first}") from None
    finally:
        module.train(was)


def metrics_path(name: str, key: str) -> Path:
    return cache_dir() / "guides" / f"{_file_safe(name)}-{key}.json"


def load_weights_file(module: nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``module`` (strict): safetensors, or torch.load(weights_only=True)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"guide weights: no such file {p} (weights is 'train', 'random', 'pretrained' or a path)")
    try:
        if p.suffix == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = state.get("state_dict") or state.get("model") or state
        module.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - a file that does not fit is the user's to fix
        raise UserError(f"guide weights {p} do not load into the guide ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300]})") from None


def check_weights(weights) -> None:
    if not isinstance(weights, str) or not weights:
        raise UserError(f"guide weights must be one of {', '.join(KEYWORDS)} or a file path, got {weights!r}")


def _load_cached(module: nn.Module, path: Path) -> bool:
    if not path.exists():
        return False
    try:
        module.load_state_dict(load_file(str(path)))
        return True
    except Exception as e:  # noqa: BLE001 - an unreadable cache entry is retrained, never a crash
        warnings.warn(f"ignoring unreadable cached guide {path} ({type(e).__name__}: {e}); retraining",
                      stacklevel=3)
        return False


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
