"""Export folders: everything needed to deploy a converted network without the study.

A folder holds ``arch.json`` (format name and version, the guide source, input shape, and one entry per child
of the network), ``model.safetensors`` (weights), ``model.pt2`` (a ``torch.export`` program with a dynamic
batch dimension), ``model.onnx`` with the ``onnx`` extra, ``metrics.json`` and ``verification.json``.
:func:`load_exported` rebuilds the module from ``arch.json`` + weights alone; :func:`write_export` is the one
way both ``nas-theseus export`` and ``nas-theseus convert --out`` write a folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .convert.hybrid import DeployModel
from .errors import UserError
from .export_onnx import FILES as ONNX_FILES
from .export_onnx import export_onnx
from .targets import BlockSpec, create_target, make_bridge
from .targets.layers import numel
from .utils.files import atomic_write, atomic_write_text
from .utils.hashing import file_sha256

FORMAT = "nas_theseus.export"
VERSION = 1
TOLERANCE = 1e-5  # max |Δ| between the rebuilt module (and the torch.export program) and the reference outputs
GUIDE_CODE = "guide_code"  # a user's guide code (a .py file), copied into every network folder that needs it
# every name an export folder can hold: an existing folder is replaced only if it holds nothing else
EXPORT_FILES = ("arch.json", "model.safetensors", "model.pt2", *ONNX_FILES, "metrics.json", "verification.json",
                GUIDE_CODE)


def arch_document(model: DeployModel, *, guide_source: dict, sample_shape, extra: dict | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "guide": guide_source, "sample_shape": list(sample_shape),
            "input_dtype": "float32", "children": model.arch, "boundaries": model.boundaries, **(extra or {})}


def save_network(folder: Path, model: DeployModel, arch: dict, *, code_from: Path | None = None) -> None:
    """Write ``model.safetensors`` then ``arch.json`` (atomically, each); arch.json records the weights'
    sha256, so a damaged weights file is detected on load (safetensors itself has no checksum).

    A guide whose code is a ``.py`` file of the user's (``torch:file.py:fn``) has that file copied into
    ``guide_code/`` (from ``code_from``'s copy when the network comes from another folder), so the folder
    rebuilds wherever it goes and whatever becomes of the file."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # no shared (tied) storage
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(state, tmp))
    arch = {**arch, "guide": _bundle_guide_code(arch["guide"], folder, code_from),
            "weights_sha256": file_sha256(folder / "model.safetensors")}
    atomic_write_text(folder / "arch.json", json.dumps(arch, indent=2))


def _bundle_guide_code(source: dict, folder: Path, code_from: Path | None) -> dict:
    if source.get("kind") != "torch" or not (source.get("file") or source.get("bundled")):
        return source
    name = source["name"].rpartition(":")[0]
    candidates = [code_from / source["bundled"]] if code_from is not None and source.get("bundled") else []
    candidates += [Path(source["file"])] if source.get("file") else []
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"the guide's code {name} is neither bundled nor at {source.get('file')}: cannot write a "
                        f"network folder that rebuilds")
    (folder / GUIDE_CODE).mkdir(exist_ok=True)
    shutil.copyfile(found, folder / GUIDE_CODE / name)
    return {**source, "bundled": f"{GUIDE_CODE}/{name}"}


def read_arch(folder: Path) -> dict:
    path = folder / "arch.json"
    if not path.is_file():
        raise UserError(f"{folder} is not an export folder (no arch.json)")
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is corrupted ({e})") from None
    found = arch.get("format") if isinstance(arch, dict) else None
    if found != FORMAT:
        raise UserError(f"{path} is not a nas_theseus export (format {found!r}, expected {FORMAT!r})")
    if arch.get("version") != VERSION:
        raise UserError(f"{path} has export format version {arch.get('version')!r}; this nas_theseus reads version "
                        f"{VERSION}: use the nas_theseus version that wrote it")
    return arch


def build_network(arch: dict, folder: Path | None = None) -> DeployModel:
    """The module described by an ``arch.json`` document, with fresh weights (guide code bundled in
    ``folder``, the document's folder, is used from there)."""
    from .guides.guide import _as_module
    from .guides.sources import rebuild_guide_module

    guide_module = None
    children: OrderedDict[str, nn.Module] = OrderedDict()
    try:
        for c in arch["children"]:
            kind = c["kind"]
            if kind == "guide":
                if guide_module is None:
                    guide_module = rebuild_guide_module(arch["guide"], folder)
                if c["path"] is False:
                    raise UserError("the guide's stem or head was given as a module object and cannot be rebuilt")
                children[c["name"]] = _as_module(guide_module, c["path"], c["name"])
            elif kind == "target":
                children[c["name"]] = create_target(BlockSpec.from_dict(c["spec"]), tuple(c["in"]),
                                                    tuple(c.get("guide_out", c["out"])))
            elif kind == "bridge":
                children[c["name"]] = make_bridge(c["bridge"], tuple(c["in"]), tuple(c["out"]), rank=c["rank"],
                                                  tokenwise=c.get("tokenwise", False))
            elif kind == "linear" and c.get("tokenwise"):
                children[c["name"]] = nn.Sequential(nn.Linear(c["in"][-1], c["out"][-1]))
            elif kind == "linear":
                children[c["name"]] = nn.Sequential(nn.Flatten(), nn.Linear(numel(c["in"]), numel(c["out"])))
            else:
                raise UserError(f"unknown network child kind {kind!r}")
    except (KeyError, TypeError) as e:
        raise UserError(f"arch.json is corrupted: missing or bad field {e}") from None
    return DeployModel(children, arch["children"], arch["boundaries"])


def load_exported(path: str | Path) -> DeployModel:
    """Rebuild an exported (or saved trial) network from its folder, in eval mode.

    >>> model = load_exported("runs/mnist1d_cnn_to_mlp/exports/trial-3")  # doctest: +SKIP
    """
    folder = Path(path)
    model_arch = read_arch(folder)
    model = build_network(model_arch, folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder} has no model.safetensors")
    expected = model_arch.get("weights_sha256")
    if expected is not None and file_sha256(weights) != expected:
        raise UserError(f"{weights} is corrupted or does not match arch.json (sha256 differs from the one "
                        f"recorded when it was written)")
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix, not a crash
        raise UserError(f"{weights} is corrupted or does not match arch.json ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]})") from None
    model.eval()
    return model


def export_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save a ``torch.export`` program of ``model`` with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings():  # RNN modules re-assign their flat weights while traced: harmless here
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    atomic_write(path, lambda tmp: torch.export.save(program, tmp))


def check_export_target(out: Path) -> None:
    """Refuse ``out`` unless it is absent or an earlier export holding only files an export writes."""
    if not out.exists():
        return
    if not out.is_dir() or not (out / "verification.json").is_file():
        raise UserError(f"{out} exists and is not an earlier export; choose another --out (nothing was written)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
    if foreign:
        raise UserError(f"{out} is an earlier export but also holds {', '.join(foreign[:5])}"
                        f"{' …' if len(foreign) > 5 else ''}, which an export does not write; choose another "
                        f"--out or move them (nothing was written)")


def write_export(model: DeployModel, arch: dict, x: torch.Tensor, y_ref: torch.Tensor, out: Path, *,
                 metrics: dict, extra_report: dict | None = None, code_from: Path | None = None) -> dict:
    """Write a verified export folder at ``out``; returns what ``verification.json`` records.

    The folder is assembled next to ``out`` and moved into place only once the module rebuilt from its files
    and the ``torch.export`` program reproduce ``y_ref`` on ``x`` (max |Δ| ≤ :data:`TOLERANCE`); ONNX (the
    ``onnx`` extra) is kept only if ONNX Runtime reproduces them too. ``out`` may be absent or an earlier
    export (see :func:`check_export_target`); anything else is refused before anything is written.
    """
    check_export_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_network(tmp, model, {k: v for k, v in arch.items() if k != "weights_sha256"}, code_from=code_from)
        rebuilt = load_exported(tmp)
        with torch.no_grad():
            delta = (rebuilt(x) - y_ref).abs().max().item()
        if not delta <= TOLERANCE:
            raise UserError(f"the network rebuilt from the export differs from the reference outputs "
                            f"(max |Δ| = {delta:.3g} > {TOLERANCE:g})")
        export_program(rebuilt, x[:2], tmp / "model.pt2")
        program = torch.export.load(str(tmp / "model.pt2")).module()
        with torch.no_grad():
            delta_pt2 = (program(x) - y_ref).abs().max().item()
        if not delta_pt2 <= TOLERANCE:
            raise UserError(f"the torch.export program differs from the reference outputs (max |Δ| = "
                            f"{delta_pt2:.3g} > {TOLERANCE:g})")
        onnx = export_onnx(rebuilt, x, y_ref, tmp)
        atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=2))
        report = {**(extra_report or {}), "max_abs_diff_rebuilt": delta, "max_abs_diff_program": delta_pt2,
                  "tolerance": TOLERANCE, "reference_inputs": len(x), "onnx": onnx}
        report["files"] = sorted([p.name for p in tmp.iterdir()] + ["verification.json"])
        atomic_write_text(tmp / "verification.json", json.dumps(report, indent=2))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _move_into_place(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out``; an earlier export there (checked to hold only our files) is removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    check_export_target(out)
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
    os.replace(out, old / "export")
    os.replace(tmp, out)
    shutil.rmtree(old)


def describe_verification(report: dict) -> str:
    """One line for the terminal: what was checked, and whether ONNX was written (or why not)."""
    onnx = report["onnx"]
    tail = (f"; model.onnx verified in ONNX Runtime (max |Δ| = {onnx['max_abs_diff']:.2g})" if onnx["written"]
            else f"; no model.onnx: {onnx['reason']}")
    return (f"verified: rebuilt module max |Δ| = {report['max_abs_diff_rebuilt']:.2g}, torch.export program max "
            f"|Δ| = {report['max_abs_diff_program']:.2g} (≤ {report['tolerance']:g}) on "
            f"{report['reference_inputs']} reference inputs{tail}")
