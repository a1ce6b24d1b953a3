"""Studies: study files, the Optuna runner, the Pareto front, trial export. Only this package talks to Optuna."""

from .config import OBJECTIVES, StudyConfig, load_study_config
from .runner import run_study

__all__ = ["OBJECTIVES", "StudyConfig", "load_study_config", "run_study"]
