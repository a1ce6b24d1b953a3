"""`nas-theseus export`: a COMPLETE trial's saved network -> a verified, deployable folder.

Never retrains: the exported network is the one the trial scored. The folder is assembled in a temporary
directory and moved into place only after the rebuilt module and the ``torch.export`` program both reproduce
the trial's stored outputs (max |Δ| ≤ 1e-5), so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..errors import UserError
from ..export import export_onnx, export_program, load_exported
from ..utils.files import atomic_write_text
from .workdir import WorkDir, load_reference

TOLERANCE = 1e-5


def export_trial(wd: WorkDir, study: optuna.Study, number: int, out: Path) -> dict:
    complete = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    folder = wd.trial(number)
    if number not in complete or not folder.is_dir():
        listed = ", ".join(map(str, sorted(complete))) or "none yet"
        raise UserError(f"trial {number} is not a complete trial of this study (complete trials: {listed})")
    if out.exists() and not (out / "verification.json").is_file():
        raise UserError(f"{out} exists and is not an earlier export; choose another --out (an earlier export "
                        f"there would be replaced)")
    model = load_exported(folder)
    x, y_ref = load_reference(folder)
    with torch.no_grad():
        delta = (model(x) - y_ref).abs().max().item()
    if not delta <= TOLERANCE:
        raise UserError(f"the rebuilt network of trial {number} differs from the trial's outputs "
                        f"(max |Δ| = {delta:.3g} > {TOLERANCE:g}): {folder} is damaged")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name in ("arch.json", "model.safetensors", "metrics.json"):
            shutil.copy2(folder / name, tmp / name)
        export_program(model, x[:2], tmp / "model.pt2")
        program = torch.export.load(str(tmp / "model.pt2")).module()
        with torch.no_grad():
            delta_pt2 = (program(x) - y_ref).abs().max().item()
        if not delta_pt2 <= TOLERANCE:
            raise UserError(f"the torch.export program differs from the trial's outputs (max |Δ| = {delta_pt2:.3g})")
        onnx = export_onnx(model, x[:2], tmp / "model.onnx")
        report = {"trial": number, "max_abs_diff_rebuilt": delta, "max_abs_diff_program": delta_pt2,
                  "tolerance": TOLERANCE, "onnx": onnx,
                  "files": sorted(p.name for p in tmp.iterdir())}
        atomic_write_text(tmp / "verification.json", json.dumps(report, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"exported trial {number} to {out}")
    print(f"verified: rebuilt module max |Δ| = {delta:.2g}, torch.export program max |Δ| = {delta_pt2:.2g} "
          f"(≤ {TOLERANCE:g}) on {len(x)} stored test inputs"
          + ("" if onnx else "; no ONNX (install the `onnx` extra for model.onnx)"))
    return report
