"""The Network-of-Theseus engine: hybrid networks, schedules, the stage loop, checkpoints. Imports no optuna."""

from .activations import GuideActivations
from .baseline import KD_VARIANTS, SCRATCH_FIT, train_distilled, train_from_scratch
from .config import HEADS, SCHEDULES, STEMS, Candidate, ConvertConfig
from .engine import convert
from .hybrid import DeployModel, Hybrid
from .reports import ConversionResult, StageReport
from .stages import ConversionError, budget_steps, plan_stages, train_stage
from .stitching import StitchReport, stitching_penalty

__all__ = ["HEADS", "KD_VARIANTS", "SCRATCH_FIT", "SCHEDULES", "STEMS", "Candidate", "ConversionError",
           "ConversionResult", "ConvertConfig", "DeployModel", "GuideActivations", "Hybrid", "StageReport",
           "StitchReport", "budget_steps", "convert", "plan_stages", "stitching_penalty", "train_distilled",
           "train_from_scratch", "train_stage"]
