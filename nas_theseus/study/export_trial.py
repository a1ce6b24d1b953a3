"""`nas-theseus export`: a COMPLETE trial's saved network -> a verified, deployable folder.

Never retrains: the exported network is the one the trial scored. The trial's folder is first checked (the
rebuilt module reproduces the outputs stored when the trial finished); then :func:`~nas_theseus.export.
write_export` assembles the folder, verifies every format against those outputs, and moves it into place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..errors import UserError
from ..export import TOLERANCE, check_export_target, load_exported, read_arch, write_export
from ..utils.artifacts import ArtifactStore
from .objective import NETWORK_ARTIFACT
from .workdir import WorkDir, load_reference

logger = logging.getLogger(__name__)


def trial_folder(wd: WorkDir, trial, artifacts: ArtifactStore | None) -> Path:
    """The complete ``trial``'s network folder in this work directory, fetched from the study's artifact store
    (``artifacts``, else the store the trial was uploaded to) when it ran on another machine."""
    folder = wd.trial(trial.number)
    if folder.is_dir():
        return folder
    attrs = trial.user_attrs
    ran = f"worker {attrs.get('worker', '?')} (host {attrs.get('host', '?')})"
    info = attrs.get(NETWORK_ARTIFACT)
    if info is None:
        why = (f"its upload to the artifact store failed ({attrs['network_artifact_error']})"
               if "network_artifact_error" in attrs else "the study had no artifact store when it ran")
        raise UserError(f"trial {trial.number} is complete, but its network is not in this work directory "
                        f"({folder}) and {why}: it ran on {ran}; export it from that machine's work directory, "
                        f"or copy its trials/{trial.number} folder here")
    store = artifacts or ArtifactStore.open(info["store"], create=False)
    store.download_folder(info, folder, what=f"the network of trial {trial.number} (uploaded by {ran})",
                          fix="check that this machine sees the store the study uploads to (--artifacts URL), or "
                              "export the trial from that machine's work directory")
    logger.info("trial %d: network fetched from artifact store %s", trial.number, store.url)
    return folder


def export_trial(wd: WorkDir, study: optuna.Study, number: int, out: Path,
                 artifacts: ArtifactStore | None = None) -> dict:
    """Export the complete trial ``number``'s network to the folder ``out``; returns the verification report
    (:func:`~nas_theseus.export.write_export`)."""
    check_export_target(out)
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if number not in trials:
        listed = ", ".join(map(str, sorted(trials))) or "none yet"
        raise UserError(f"trial {number} is not a complete trial of this study (complete trials: {listed})")
    source = trials[number].user_attrs.get("repeat_of", number)  # a repeat's network is its original's
    folder = trial_folder(wd, trials[source], artifacts)
    model = load_exported(folder)
    x, y_ref = load_reference(folder)
    with torch.no_grad():
        delta = (model(x) - y_ref).abs().max().item()
    if not delta <= TOLERANCE:
        raise UserError(f"the rebuilt network of trial {number} differs from the trial's outputs "
                        f"(max |Δ| = {delta:.3g} > {TOLERANCE:g}): {folder} is damaged")
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{folder}/metrics.json is missing or corrupted ({type(e).__name__})") from None
    report = write_export(model, read_arch(folder), x, y_ref, out, metrics=metrics, extra_report={"trial": number},
                          code_from=folder)
    return report
