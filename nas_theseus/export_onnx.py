"""ONNX in an export folder (the ``onnx`` extra: onnx, onnxscript, onnxruntime), verified in ONNX Runtime.

``model.onnx`` is one self-contained file (weights inside) unless the weights pass ONNX's 2 GB protobuf limit;
then they go to ``model.onnx.data`` beside it, a stable name that copying the folder keeps. The file is written
with torch's ``torch.export``-based exporter, its progress lines and warnings kept out of the terminal, and
kept only if ONNX Runtime reproduces the PyTorch outputs on the stored inputs (see :func:`export_onnx`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

EXTRA = ("onnx", "onnxscript", "onnxruntime")
PROTOBUF_LIMIT = 2 * 1024**3
RELATIVE_TOLERANCE = 1e-4  # max |Δ| ≤ this × max(1, max |y|): ONNX Runtime fuses and reorders float32 sums
FILES = ("model.onnx", "model.onnx.data")


def missing_packages() -> list[str]:
    """The packages of the ``onnx`` extra that are not installed."""
    return [name for name in EXTRA if importlib.util.find_spec(name) is None]


def export_onnx(model: nn.Module, x: torch.Tensor, y_ref: torch.Tensor, folder: Path) -> dict:
    """Write ``folder/model.onnx`` and check it in ONNX Runtime against ``y_ref = model(x)``.

    Returns what happened, for ``verification.json``: ``{"written": True, "max_abs_diff": ..., "tolerance":
    ..., "external_data": ...}``, or ``{"written": False, "reason": ...}`` when the extra is missing, the
    exporter fails, or ONNX Runtime's outputs differ (then nothing ONNX is left in ``folder``).
    """
    missing = missing_packages()
    if missing:
        return {"written": False, "reason": f"the onnx extra is not installed (missing: {', '.join(missing)}; "
                                            f"pip install 'nas-theseus[onnx]')"}
    path = folder / "model.onnx"
    external = sum(t.numel() * t.element_size() for t in model.state_dict().values()) >= PROTOBUF_LIMIT
    try:
        with _quiet() as log:
            torch.onnx.export(model, (x[:2],), str(path), input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                              dynamo=True, external_data=external, verbose=False)
    except Exception as e:  # noqa: BLE001 - an operator the exporter cannot translate: no ONNX, say why
        _remove(folder)
        detail = _last_line(log.getvalue()) if "log" in locals() else ""
        return {"written": False, "reason": f"the ONNX exporter failed ({type(e).__name__}: {_last_line(str(e))}"
                                            f"{'; ' + detail if detail else ''})"}
    if external and not (folder / "model.onnx.data").is_file():
        _remove(folder)
        return {"written": False, "reason": "the ONNX exporter did not write its weights to model.onnx.data"}
    try:
        y = _run_onnxruntime(path, x)
    except Exception as e:  # noqa: BLE001 - a file ONNX Runtime cannot load is not kept
        _remove(folder)
        return {"written": False, "reason": f"ONNX Runtime cannot run the exported file ({type(e).__name__}: "
                                            f"{_last_line(str(e))})"}
    delta = float((torch.from_numpy(y) - y_ref.detach().cpu()).abs().max())
    tolerance = RELATIVE_TOLERANCE * max(1.0, float(y_ref.abs().max()))
    if not delta <= tolerance:
        _remove(folder)
        return {"written": False, "reason": f"ONNX Runtime's outputs differ from PyTorch's (max |Δ| = {delta:.3g} "
                                            f"> {tolerance:.3g}); model.onnx was not kept"}
    return {"written": True, "max_abs_diff": delta, "tolerance": tolerance, "external_data": external,
            "runtime": "onnxruntime CPUExecutionProvider"}


def _run_onnxruntime(path: Path, x: torch.Tensor):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.detach().cpu().numpy()})[0]


@contextlib.contextmanager
def _quiet():
    """The exporter's print()s, warnings and log lines go to a buffer (its last line names a failure)."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def _remove(folder: Path) -> None:
    for name in FILES:
        (folder / name).unlink(missing_ok=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
