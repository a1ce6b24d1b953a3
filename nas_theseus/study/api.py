"""Studies from Python, as the CLI runs them (for notebooks and scripts):

>>> study = nas_theseus.run_study("studies/mnist1d_cnn_to_mlp.toml", overrides={"study.n_trials": 5})  # doctest: +SKIP
>>> nas_theseus.pareto_front("runs/mnist1d_cnn_to_mlp")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
import pandas as pd

from ..errors import UserError
from .config import StudyConfig, apply_overrides, config_from_dict, load_study_config
from .pareto import front
from .runner import open_storage
from .runner import run_study as _run
from .workdir import WorkDir


def run_study(study_file: str | Path, workdir: str | Path | None = None, *,
              overrides: Mapping[str, object] | Sequence[str] = (), n_trials: int | None = None,
              timeout: float | None = None, storage: str | None = None, force: bool = False,
              progress: bool = True) -> optuna.Study:
    """Run (or continue) the study of ``study_file`` as ``nas-theseus run`` does, and return the Optuna study.

    ``workdir``: default ``runs/<study name>``. ``overrides``: study-file keys to set, as ``--set`` does:
    ``{"study.n_trials": 5, "convert.steps_per_stage": 300}`` or ``["study.n_trials=5"]``. The other keywords
    are ``run``'s options."""
    config = load_study_config(study_file, _as_set(overrides))
    return _run(config, Path(workdir) if workdir else Path("runs") / config.study.name, storage=storage,
                force=force, progress=progress, n_trials=n_trials, timeout=timeout)


def open_study(workdir: str | Path, artifacts: str | None = None) -> tuple[WorkDir, StudyConfig, optuna.Study]:
    """A study's work directory, its configuration (as recorded there) and its Optuna study; ``artifacts``:
    this machine's URL of the study's shared store."""
    wd = WorkDir(Path(workdir))
    meta = wd.require_meta()
    raw = meta["config"]
    if artifacts:
        raw = {**raw, "artifacts": {**raw.get("artifacts", {}), "store": artifacts}}
    config = config_from_dict(raw, base_dir=meta.get("base_dir", "."))
    storage = open_storage(config, meta["storage"], create=False)
    try:
        study = optuna.load_study(study_name=meta["study_name"], storage=storage)
    except KeyError:
        raise UserError(f"study {meta['study_name']!r} not found in {meta['storage']}") from None
    return wd, config, study


def recorded_config(workdir: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """The study configuration recorded in a work directory (as its study file was when the study began), with
    ``--set``-style ``overrides``: what continuing a study from its work directory alone runs."""
    meta = WorkDir(Path(workdir)).require_meta()
    return config_from_dict(apply_overrides(meta["config"], list(overrides)), base_dir=meta.get("base_dir", "."))


def pareto_front(workdir: str | Path) -> pd.DataFrame:
    """The study's Pareto-optimal feasible trials as ``nas-theseus pareto`` lists them: one row per trial
    (``trial``, the objectives, test accuracy, the candidate, its parameters), sorted by the first objective."""
    _, config, study = open_study(workdir)
    return front(study, list(config.objectives), list(config.objectives.values()), config.hypervolume_reference)[0]


def _as_set(overrides: Mapping[str, object] | Sequence[str]) -> list[str]:
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)
