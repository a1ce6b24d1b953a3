"""`nas-theseus convert`: one conversion of a study's guide with fixed parameters, no search."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import optuna

from ..convert import convert, train_from_scratch
from ..errors import UserError
from ..export import arch_document, export_program, save_network
from .config import StudyConfig
from .context import build_context
from .objective import measure
from .workdir import WorkDir, save_reference


def convert_once(config: StudyConfig, workdir: Path, params: dict, *, out: Path | None = None,
                 progress: bool = True) -> dict:
    """Rebuild the candidate of ``params`` with ``FixedTrial`` and convert it (stage checkpoints reused)."""
    ctx = build_context(config, progress=progress)
    try:
        candidate, cfg = ctx.candidate(optuna.trial.FixedTrial(params))
    except ValueError as e:  # FixedTrial: a parameter missing or out of range
        raise UserError(f"--params does not fit {ctx.space.path.name}: {e}") from None
    wd = WorkDir(workdir)
    if config.study.method == "scratch":
        r = train_from_scratch(ctx.guide, candidate, ctx.data, cfg, device=config.study.device, progress=progress)
        stages = []
    else:
        acts = wd.activations(ctx.guide, ctx.data, device=config.study.device, progress=progress)
        r = convert(ctx.guide, candidate, ctx.data, cfg, checkpoint_dir=wd.checkpoints, activations=acts,
                    device=config.study.device, progress=progress)
        stages = [dataclasses.asdict(s) for s in r.stages]
    measured = measure(r.model, ctx, set(config.objectives) | set(config.constraints), strict_flops=False)
    summary = {"candidate": candidate.describe(ctx.guide.part_names), "params": params,
               "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, **measured.values,
               "stages": [{k: s[k] for k in ("parts", "alignment", "hybrid_val_accuracy", "wall_s")}
                          for s in stages]}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        model = r.model.cpu().eval()
        save_network(tmp, model, arch_document(model, guide_source=ctx.guide.source,
                                               sample_shape=ctx.data.sample_shape,
                                               extra={"params": params, "candidate": candidate.to_dict()}))
        save_reference(tmp, model, ctx.data.test.x[:32])
        export_program(model, ctx.data.test.x[:2], tmp / "model.pt2")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        summary["exported_to"] = str(out)
    return summary
