"""Guides from the ecosystem: ``timm:<model>`` and ``torch:<module>:<function>``.

``timm:<model>`` builds ``timm.create_model(model, **options)`` (``num_classes`` and ``in_chans`` default to
the data's). Parts default to the stages in the model's ``feature_info`` that hold parameters (a ResNet's
``layer1..4``, a ViT's ``blocks.i``); the stem is the top-level modules before the first part (a ViT's patch
and position embedding through the ``@timm_vit_stem`` adapter), the head the modules after the last part and
the model's own ``forward_head`` (``@timm_head``). Give ``parts`` (and ``stem`` / ``head``) to cut elsewhere.

``torch:<package.module>:<function>`` (or ``torch:<path/to/file.py>:<function>``) calls the function with
``options`` as keyword arguments; it must return an ``nn.Module``. ``parts`` are required (submodule paths in
forward order); ``stem`` and ``head`` are paths or lists of paths (default: the children of an
``nn.Sequential`` around the parts, else identity).

Either way the guide is refused unless stem -> parts -> head reproduce the model's output (max |Δ| ≤ 1e-5).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import TaskData
from ..errors import UserError, did_you_mean
from ..training import FitConfig
from .builtin import fit_config
from .guide import GUIDE_ADAPTERS, Guide, _resolve
from .weights import cached_training, check_accepts, check_weights, describe_weights, load_weights_file

DEFAULT_FIT = FitConfig(max_epochs=60, patience=15, lr=1e-3, weight_decay=0.05)
# children that a timm model's forward_head uses (its classifier side)
TIMM_HEAD_CHILDREN = ("global_pool", "attn_pool", "fc_norm", "head_drop", "pre_logits", "head", "fc", "classifier")
VIT_STEM_CHILDREN = ("patch_embed", "pos_drop", "patch_drop", "norm_pre")
VIT_STEM_PARAMS = ("pos_embed", "cls_token", "reg_token")


# --- partial clones: a stem or head that is a slice of a model's own forward ------------------------------
def partial_clone(model: nn.Module, children: tuple[str, ...], params: tuple[str, ...],
                  forward: Callable) -> nn.Module:
    """An instance of ``type(model)`` that holds only the named children and parameters (shared, not
    copied), the model's plain attributes, and ``forward`` as its forward: it can call the model's own
    methods (``_pos_embed``, ``forward_head``) while its state dict holds only what the slice uses."""
    clone = type(model).__new__(type(model))
    nn.Module.__init__(clone)
    for key, value in model.__dict__.items():
        if key not in clone.__dict__:
            clone.__dict__[key] = value
    for name in children:
        if name in model._modules:
            clone._modules[name] = model._modules[name]
    for name in params:
        if name in model._parameters:
            clone._parameters[name] = model._parameters[name]
    clone.forward = types.MethodType(forward, clone)
    return clone


def _vit_stem_forward(self, x):
    return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))


def _head_forward(self, x):
    return self.forward_head(x)


def timm_vit_stem(model: nn.Module) -> nn.Module:
    return partial_clone(model, VIT_STEM_CHILDREN, VIT_STEM_PARAMS, _vit_stem_forward)


def timm_head(model: nn.Module) -> nn.Module:
    return partial_clone(model, TIMM_HEAD_CHILDREN, (), _head_forward)


GUIDE_ADAPTERS["timm_vit_stem"] = timm_vit_stem
GUIDE_ADAPTERS["timm_head"] = timm_head


# --- timm ---------------------------------------------------------------------------------------------------
def _timm_cut(model: nn.Module, parts: list[str] | None, stem, head) -> tuple[list[str], object, object]:
    if parts is None:
        info = getattr(model, "feature_info", None)
        if not info:
            raise UserError(f"timm model {type(model).__name__} has no feature_info: give guide.parts")
        parts = [f["module"] for f in info
                 if any(True for _ in model.get_submodule(f["module"]).parameters())]
    for p in parts:
        _resolve(model, p, "part")
    tops = [n for n, _ in model.named_children()]
    first, last = parts[0].split(".")[0], parts[-1].split(".")[0]
    if first not in tops or last not in tops:
        raise UserError(f"timm parts {parts} are not under top-level modules ({', '.join(tops)}): give "
                        f"guide.stem and guide.head")
    if stem is None:
        stem = ["@timm_vit_stem"] if hasattr(model, "_pos_embed") else tops[:tops.index(first)]
    if head is None:
        after = tops[tops.index(last) + 1:]
        head = [n for n in after if n not in TIMM_HEAD_CHILDREN] + ["@timm_head"]
    return parts, stem, head


def timm_guide(name: str, data: TaskData, *, weights: str = "train", seed: int = 0, fit=None,
               progress: bool = True, device: str = "auto", parts=None, stem=None, head=None, artifacts=None,
               **options) -> Guide:
    import timm

    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models())}")
    check_weights(weights)
    options = {"num_classes": data.num_classes, **options}
    if len(data.sample_shape) == 3:
        options.setdefault("in_chans", data.sample_shape[0])
    try:
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=weights == "pretrained", **options)
    except TypeError as e:
        raise UserError(f"bad option for timm model {name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - pretrained weights unavailable offline, and the like
        if weights != "pretrained":
            raise
        raise UserError(f"timm could not load pretrained weights for {name!r} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); without network use a local weights path") from None
    source = {"kind": "timm", "name": name, "options": options, **describe_weights(weights), "seed": seed}
    _set_weights(model, source, data, weights, fit, seed, device, progress, key_info={"timm": name, "options": options},
                 artifacts=artifacts)
    parts, stem, head = _timm_cut(model, parts, stem, head)
    return Guide.from_module(model, parts, sample_shape=data.sample_shape, stem=stem, head=head, source=source)


# --- torch: a user function -----------------------------------------------------------------------------------
def _import_function(spec: str) -> tuple[Callable, str, Path | None]:
    """``package.module:function`` or ``path/to/file.py:function`` -> (function, sha256 of its module's file,
    the file for a ``.py`` spec)."""
    target, sep, fname = spec.rpartition(":")
    if not sep or not target or not fname:
        raise UserError(f"torch guide source must be 'torch:package.module:function' or "
                        f"'torch:path/to/file.py:function', got 'torch:{spec}'")
    path = None
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"torch guide source: no such file {path}")
        mod_spec = importlib.util.spec_from_file_location(f"nas_theseus_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError:
            sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as e:
                raise UserError(f"torch guide source: cannot import {target!r} ({e})") from None
            finally:
                sys.path.remove(str(Path.cwd()))
    fn = getattr(module, fname, None)
    if not callable(fn):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise UserError(f"torch guide source: {target} has no function {fname!r}{did_you_mean(fname, names)}")
    file = getattr(module, "__file__", None)
    digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16] if file else "builtin"
    return fn, digest, path


def torch_guide(spec: str, data: TaskData, *, weights: str = "train", seed: int = 0, fit=None,
                progress: bool = True, device: str = "auto", parts=None, stem=None, head=None, artifacts=None,
                **options) -> Guide:
    if not parts:
        raise UserError("a torch: guide needs guide.parts: the submodule paths to swap, in forward order")
    check_weights(weights)
    if weights == "pretrained":
        raise UserError("a torch: guide has no 'pretrained' weights: use 'train', 'random' or a weights file")
    fn, code, path = _import_function(spec)
    torch.manual_seed(seed)
    try:
        model = fn(**options)
    except TypeError as e:
        raise UserError(f"torch:{spec} does not take these options {sorted(options)}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"torch:{spec} returned {type(model).__name__}, not an nn.Module")
    # a file enters identities and keys by its name and content, not where it lies ("file" is a location)
    name = spec if path is None else f"{path.name}:{spec.rpartition(':')[2]}"
    source = {"kind": "torch", "name": name, "code": code, **({"file": str(path)} if path else {}),
              "options": options, **describe_weights(weights), "seed": seed, "parts": list(parts), "stem": stem,
              "head": head}
    _set_weights(model, source, data, weights, fit, seed, device, progress,
                 key_info={"torch": name, "code": code, "options": options}, artifacts=artifacts)
    return Guide.from_module(model, list(parts), sample_shape=data.sample_shape, stem=stem, head=head,
                             source=source)


def _set_weights(model, source, data, weights, fit, seed, device, progress, *, key_info, artifacts) -> None:
    check_accepts(model, data, f"{source['kind']}:{source['name']}")  # one line, before any training or loading
    if weights == "train":
        source["cache_key"] = cached_training(model, name=source["name"], key_info=key_info, data=data,
                                              fit=fit_config(DEFAULT_FIT, fit), seed=seed, device=device,
                                              progress=progress, artifacts=artifacts)
    elif weights not in ("random", "pretrained"):
        load_weights_file(model, weights)


def rebuild_external(source: dict, folder: Path | None = None) -> nn.Module | None:
    """The module of a timm or torch guide source with fresh weights (for rebuilding exports). A torch guide
    from a ``.py`` file is imported from the copy bundled in ``folder`` (see :func:`~nas_theseus.export.
    save_network`) when there is one, else from where the file was."""
    if source.get("kind") == "timm":
        import timm

        return timm.create_model(source["name"], **source.get("options", {}))
    if source.get("kind") == "torch":
        fn_name = source["name"].rpartition(":")[2]
        bundled = folder / source["bundled"] if folder is not None and source.get("bundled") else None
        if bundled is not None and bundled.is_file():
            spec = f"{bundled}:{fn_name}"
        elif source.get("file"):
            spec = f"{source['file']}:{fn_name}"
        else:
            spec = source["name"]
        fn, code, _ = _import_function(spec)
        if source.get("code") not in (None, code):
            raise UserError(f"the guide code for {source['name']} ({spec.rpartition(':')[0]}) is not the code "
                            f"the network was built with (sha256 differs)")
        return fn(**source.get("options", {}))
    return None
