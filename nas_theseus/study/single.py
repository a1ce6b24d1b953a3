"""`nas-theseus convert`: one conversion of a study's guide with fixed parameters, no search."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import torch

from ..convert import convert
from ..errors import UserError
from ..export import arch_document, check_export_target, describe_verification, write_export
from ..measure import UncountedOpsError
from ..utils.distributed import is_main
from . import ranks
from .config import StudyConfig
from .context import build_context
from .objective import measure, train_baseline
from .workdir import WorkDir


def convert_once(config: StudyConfig, workdir: Path, params: dict, *, out: Path | None = None,
                 progress: bool = True) -> dict:
    """Rebuild the candidate of ``params`` with ``FixedTrial`` and convert it (stage checkpoints reused); with
    ``out``, export the network there as ``nas-theseus export`` does (same checks, same refusal of a folder
    that is not an earlier export, before any training). Under torchrun every rank trains (data parallel) and
    rank 0 alone measures, exports and returns the summary; the other ranks return None."""
    if out is not None:
        check_export_target(out)
    ctx = build_context(config, progress=progress and is_main())
    ranks.guide_from_main(ctx.guide)
    try:
        fixed = optuna.trial.FixedTrial(params)
        candidate, cfg = ctx.candidate(fixed)
        method = ctx.method(fixed)
    except UserError:  # the search space's own one line (a UserError is a ValueError too): as it is
        raise
    except ValueError as e:  # FixedTrial: a parameter missing or out of range
        raise UserError(f"--params does not fit {ctx.space.path.name}: {e}") from None
    wd = WorkDir(workdir)
    if is_main():
        ctx.say_device()
    if method != "not":
        r = train_baseline(config, ctx, candidate, cfg, method, progress=progress)
        stages = []
    else:
        acts = wd.activations(ctx.guide, ctx.data, device=ctx.device, progress=progress) \
            if ctx.caches_activations() else None
        r = convert(ctx.guide, candidate, ctx.data, cfg, checkpoint_dir=wd.checkpoints, activations=acts,
                    device=ctx.device, progress=progress, artifacts=ctx.artifacts)
        stages = [dataclasses.asdict(s) for s in r.stages]
    if not is_main():
        return None
    try:  # counted as a study counts: an operator nothing counts is an error, not a smaller figure
        measured = measure(r.model, ctx, set(config.objectives) | set(config.constraints))
    except UncountedOpsError as e:
        raise UserError(f"convert: the network trained (its checkpoints are kept), but {e}") from None
    summary = {"candidate": candidate.describe(ctx.guide.part_names), "params": params,
               "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, **measured.values,
               "stages": [{k: s[k] for k in ("parts", "alignment", "alignment_train", "steps", "stopped",
                                             "hybrid_val_accuracy", "wall_s")}
                          for s in stages]}
    if out is not None:
        model = r.model.cpu().eval()
        x = ctx.data.test.head(32)[0]
        with torch.no_grad():
            y_ref = model(x)
        arch = arch_document(model, guide_source=ctx.guide.source, sample_shape=ctx.data.sample_shape,
                             extra={"params": params, "candidate": candidate.to_dict(),
                                    "convert": dataclasses.asdict(cfg)})
        report = write_export(model, arch, x, y_ref, out, metrics=summary, extra_report={"params": params})
        summary["exported_to"] = str(out)
        summary["verification"] = describe_verification(report)
    return summary
