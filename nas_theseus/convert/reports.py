"""What a conversion reports: one :class:`StageReport` per stage and the :class:`ConversionResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..training import FitReport
from .config import Candidate, ConvertConfig


@dataclass
class StageReport:
    """One alignment stage.

    ``alignment`` is linear CKA on the held-out rows (validation, ``heldout_size``) between each swapped
    target's output and the guide's activation at that part (the same measure whatever the training loss, so
    stages and trials compare; over batch·token rows for a token guide); ``alignment_train`` the same on the
    fixed probe of training rows (higher: it is what the stage fitted). ``steps`` is how many optimizer steps
    the stage took, of at most ``max_steps``; ``stopped`` says why it ended (``fixed`` step count, ``plateau``
    of the held-out alignment, or ``max_steps`` reached first). ``loss_curve`` is the training loss averaged
    over ~50 equal windows; ``hybrid_val_accuracy`` is the half-converted network's validation accuracy after
    the stage.
    """

    index: int
    parts: list[str]
    swapped: list[str]
    steps: int
    wall_s: float
    loss_curve: list[float] = field(default_factory=list)
    alignment: dict[str, float] = field(default_factory=dict)
    hybrid_val_accuracy: float = float("nan")
    resumed: bool = False
    alignment_train: dict[str, float] = field(default_factory=dict)
    max_steps: int = 0
    stopped: str = "fixed"


@dataclass
class ConversionResult:
    """The converted network (``model``), per-stage reports, fine-tuning report, accuracies and losses."""

    model: object
    candidate: Candidate
    config: ConvertConfig
    stages: list[StageReport]
    finetune: FitReport
    pre_finetune_val_accuracy: float
    val_accuracy: float
    test_accuracy: float
    wall_s: float
    finetune_resumed: bool = False
    val_loss: float = float("nan")   # mean cross-entropy (per token for language models: perplexity = exp)
    test_loss: float = float("nan")
    timings: dict = field(default_factory=dict)  # wall seconds: align_s, finetune_s, checkpoint_s (this call's)
    activations: dict = field(default_factory=dict)  # where the guide's activations came from: mode and why
    checkpoints: list = field(default_factory=list)  # content keys of its stages, then fine-tuning
    compile_failed: str = ""  # where torch.compile failed and why, after which the conversion ran eagerly

    def summary(self) -> dict:
        """JSON-able summary (everything but the model)."""
        return {"candidate": self.candidate.to_dict(), "config": asdict(self.config),
                "stages": [asdict(s) for s in self.stages], "finetune": asdict(self.finetune),
                "pre_finetune_val_accuracy": self.pre_finetune_val_accuracy, "val_accuracy": self.val_accuracy,
                "test_accuracy": self.test_accuracy, "val_loss": self.val_loss, "test_loss": self.test_loss,
                "wall_s": self.wall_s, "timings": self.timings, "activations": self.activations,
                **({"compile_failed": self.compile_failed} if self.compile_failed else {})}
