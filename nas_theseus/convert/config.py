"""Conversion settings and the candidate architecture (what replaces each guide part, in which order)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from ..errors import UserError, did_you_mean
from ..targets import BRIDGES, BlockSpec
from ..training import FitConfig
from ..utils.compiling import check_compile
from ..utils.hashing import key_content, keyed_fields

SCHEDULES = ("progressive", "sequential", "independent", "joint")
STAGE_STOPS = ("plateau", "fixed")
ACTIVATIONS = ("auto", "cache", "stream")
PLATEAU_SETTINGS = ("min_steps", "eval_every", "stop_patience", "stop_tolerance", "heldout_size", "lr_drops",
                    "lr_drop_factor")
HEADS = ("linear", "guide")
STEMS = ("guide", "relearn")


# NoT's fine-tuning rule (chosen on validation in benchmarks/conversion_mnist1d.py: a rate tuned for training
# from scratch, 3e-3, erases the alignment); a partial `finetune` (a dict, in Python or a study file) fills
# from it. The from-scratch and distillation baselines have rules of their own (convert/baseline.py).
DEFAULT_FINETUNE = FitConfig(max_epochs=100, patience=20, lr=1e-3)


@keyed_fields("schedule", "alignment", "steps_per_stage", "batch_size", "lr", "weight_decay", "bridge",
              "bridge_rank", "ridge", "refit_every", "bn_recalibrate", "probe_size", "dmnn_k", "dmnn_tau",
              "finetune", "seed", legacy={"stage_stop": "fixed"})
@dataclass(frozen=True)
class ConvertConfig:
    """How a conversion trains. Every field is a primitive (or a FitConfig), so configs hash and round-trip.

    Attributes:
        schedule: ``progressive`` (default) | ``sequential`` | ``independent`` | ``joint`` (docs/method.md).
        alignment: ``cka`` | ``cka_unbiased`` | ``dmnn`` | ``mse``.
        steps_per_stage: optimizer steps per swapped part: the most a stage trains (exactly this many with
            ``stage_stop = "fixed"``); ``joint`` runs K x steps in its single stage, so all schedules have the
            same alignment budget.
        stage_stop: ``plateau`` (the alignment loss on held-out rows, mean over the loss's parts, is evaluated
            every ``eval_every`` steps; after ``stop_patience`` evaluations without an improvement of more than
            ``stop_tolerance`` the learning rate is cut by ``lr_drop_factor``, and at the plateau after
            ``lr_drops`` cuts the stage ends, never before ``min_steps``; the best evaluated state is kept) or
            ``fixed`` (``steps_per_stage`` steps with a cosine decay to lr / 10).
        heldout_size: validation rows on which stages are stopped and alignment is reported (the guide's own
            activations on them are computed once per conversion).
        autocast: None, or ``"bf16"``: the stage forward under ``torch.autocast`` in bfloat16 (the similarity
            itself stays float32); opt-in, for GPUs; its accuracy effect is measured in benchmarks/gpu_check.sh.
        activations: where a stage's guide activations come from: ``cache`` (computed once over the training split
            and read per batch), ``stream`` (the guide run on each batch the targets see, augmented as they are, up
            to the deepest level the stage reads) or ``auto`` (the default: the cache when augmentation is off and
            it fits the memory budget, else the stream; the choice and why are printed once and recorded).
        channels_last: the streamed guide's convolutions and its image batches in ``channels_last`` memory format
            on CUDA (no effect on the CPU or with the cache; the values are the same, only kernels change). Off by
            default until benchmarks/gpu_check.sh's stream step has measured whether it pays.
        tf32: allow TF32 matmuls and convolutions on CUDA in the networks' forward and backward during the
            conversion (no effect on the CPU; the similarity losses always run in full float32, and the process's
            own setting comes back afterwards).
        compile: ``torch.compile`` the trained targets in place (as ``nn.Module.compile`` does) and the
            fine-tuned network's training forward: true (inductor's default mode), or a mode by name
            (``"reduce-overhead"``: each step's forward and backward replayed as CUDA graphs on a GPU;
            :mod:`nas_theseus.utils.compiling`). Worth it for long stages on a GPU; off by default until
            ``benchmarks/cuda_graphs.py`` has measured where it pays. Where the compiler fails, the call is run
            again eagerly and the conversion goes on without it (one warning; ``ConversionResult.compile_failed``
            says where and why). ``tf32`` and ``compile`` are in the stage keys where they change results
            (:meth:`stage_settings`).
        bridge: adapters between targets and guide parts (``lowrank`` | ``stitch``); ``bridge_rank``: their rank
            (None = full).
        refit_every: steps between closed-form refits of the adapters that feed guide parts (0: stage ends
            only).
        bn_recalibrate: recompute BatchNorm statistics of the targets on the training data after each stage.
        probe_size: fixed training rows used to fit adapters and to report alignment (same for every stage).
        finetune: the end-to-end task training after the last stage (early stopping on validation, best state
            kept; :data:`DEFAULT_FINETUNE`); with ``distill`` / ``mixup`` set the guide is its teacher.
    """

    schedule: str = "progressive"
    alignment: str = "cka"
    steps_per_stage: int = 4000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    bridge: str = "lowrank"
    bridge_rank: int | None = None
    ridge: float = 1e-3
    refit_every: int = 100
    bn_recalibrate: bool = True
    probe_size: int = 1024
    dmnn_k: int = 10
    dmnn_tau: float = 0.05
    finetune: FitConfig = field(default_factory=lambda: DEFAULT_FINETUNE)
    seed: int = 0
    stage_stop: str = "plateau"
    min_steps: int = 200
    eval_every: int = 50
    stop_patience: int = 6
    stop_tolerance: float = 5e-5
    heldout_size: int = 1024
    lr_drops: int = 2
    lr_drop_factor: float = 0.3
    autocast: str | None = None
    tf32: bool = True
    compile: bool | str = False
    activations: str = "auto"
    channels_last: bool = False

    def __post_init__(self) -> None:
        from ..align import ALIGNMENTS

        for name, choices in (("schedule", SCHEDULES), ("alignment", ALIGNMENTS), ("bridge", BRIDGES),
                              ("stage_stop", STAGE_STOPS), ("activations", ACTIVATIONS)):
            value = getattr(self, name)
            if value not in choices:
                raise UserError(f"unknown {name} {value!r}{did_you_mean(str(value), choices)}; "
                                f"valid: {', '.join(choices)}")
        for name in ("steps_per_stage", "batch_size", "probe_size", "eval_every", "stop_patience", "heldout_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_compile(self.compile)
        if self.autocast not in (None, "bf16"):
            raise UserError(f"autocast must be None or 'bf16', got {self.autocast!r}")
        if self.min_steps < 0 or self.stop_tolerance < 0:
            raise UserError("min_steps and stop_tolerance must be >= 0")
        if self.batch_size < 4:
            raise UserError("batch_size must be >= 4 (similarity losses compare samples within a batch)")
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", fit_config(self.finetune))

    def precision(self, device="cpu") -> str:
        """The arithmetic the networks' forward and backward run in on ``device``: ``bf16`` (autocast),
        ``tf32`` (float32 matmuls in TF32: only on CUDA) or ``fp32``."""
        if self.autocast == "bf16":
            return "bf16"
        return "tf32" if self.tf32 and torch.device(device).type == "cuda" else "fp32"

    def stage_settings(self, device="cpu") -> dict:
        """The settings that shape the alignment stages on ``device`` (everything but fine-tuning). With the
        plateau rule every setting of the rule is keyed, so a later change of one of their defaults moves the
        keys. Precision is keyed as it acts on ``device`` (TF32 changes results on CUDA only), beside ``fp32``;
        ``compile`` is keyed when on (fused kernels round differently)."""
        d = key_content(self)
        d.pop("finetune")
        d.pop("tf32", None)
        d.pop("autocast", None)
        d.pop("activations", None)  # the same batches either way (tests/test_stream.py)
        d.pop("channels_last", None)  # a memory format: the same values
        if self.precision(device) != "fp32":
            d["precision"] = self.precision(device)
        if self.stage_stop == "plateau":
            d.update({name: getattr(self, name) for name in PLATEAU_SETTINGS})
            if self.alignment != "cka":  # such stages stop on their own loss on held-out rows, not on CKA
                d["heldout_score"] = "loss"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ConvertConfig:
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise UserError(f"unknown conversion setting {k!r}{did_you_mean(k, names)}")
        return cls(**d)


def fit_config(d: dict) -> FitConfig:
    """A fine-tuning rule from a partial dict: what it does not set comes from :data:`DEFAULT_FINETUNE` (the
    same rule a study file's ``[convert.finetune]`` follows)."""
    names = {f.name for f in fields(FitConfig)}
    for k in d:
        if k not in names:
            raise UserError(f"unknown fine-tuning setting {k!r}{did_you_mean(k, names)}")
    return FitConfig(**{**asdict(DEFAULT_FINETUNE), **d})


@dataclass(frozen=True)
class Candidate:
    """A target architecture for a guide: one :class:`BlockSpec` per part (None keeps the guide part).

    ``order``: the order in which swapped parts are replaced, as part indices (kept parts may appear and are
    skipped); None means input -> output. ``head``: ``linear`` (a new linear classifier on the last part's
    output, initialised by least squares to the guide's logits) or ``guide`` (the guide's own head, behind an
    adapter when the last part is a target). ``stem``: ``guide`` (the guide's stem, e.g. a language model's
    embedding, frozen during alignment and fine-tuned with the rest) or ``relearn`` (the same architecture with
    fresh weights, trained with the first part's target from its first stage on; needs part 0 swapped).
    ``partition``: run lengths over the guide's parts (e.g. ``(2, 1)`` for three parts: one block replaces the
    first two, aligned at the second's output); then ``blocks`` and ``order`` are per run. None (or all 1s):
    one block per part.
    """

    blocks: tuple[BlockSpec | None, ...]
    order: tuple[int, ...] | None = None
    head: str = "linear"
    stem: str = "guide"
    partition: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.partition is not None:
            runs = tuple(self.partition)
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in runs):
                raise UserError(f"partition {list(runs)} must be run lengths of at least 1 part")
            if len(runs) != len(self.blocks):
                raise UserError(f"partition {list(runs)} has {len(runs)} runs but the candidate has "
                                f"{len(self.blocks)} blocks (one per run)")
            object.__setattr__(self, "partition", None if all(n == 1 for n in runs) else runs)
        if self.head not in HEADS:
            raise UserError(f"unknown head {self.head!r}{did_you_mean(self.head, HEADS)}; valid: {', '.join(HEADS)}")
        if self.stem not in STEMS:
            raise UserError(f"unknown stem {self.stem!r}{did_you_mean(self.stem, STEMS)}; valid: {', '.join(STEMS)}")
        if self.stem == "relearn" and self.blocks and self.blocks[0] is None:
            raise UserError("stem = 'relearn' needs the first part swapped: a kept first part reads the guide's "
                            "own stem")
        if self.order is not None:
            order = tuple(int(i) for i in self.order)
            if sorted(set(order)) != sorted(order) or any(not 0 <= i < len(self.blocks) for i in order):
                raise UserError(f"swap order {list(order)} must list distinct part indices in "
                                f"0..{len(self.blocks) - 1}")
            missing = [i for i in self.swapped_parts_forward if i not in order]
            if missing:
                raise UserError(f"swap order {list(order)} leaves out swapped parts {missing}")
            object.__setattr__(self, "order", order)

    @property
    def swapped_parts_forward(self) -> list[int]:
        return [i for i, b in enumerate(self.blocks) if b is not None]

    @property
    def swap_order(self) -> list[int]:
        """Swapped part indices in the order they are replaced."""
        if self.order is None:
            return self.swapped_parts_forward
        return [i for i in self.order if self.blocks[i] is not None]

    def to_dict(self) -> dict:
        # the default stem is left out, so content keys (and seeds) of earlier candidates stay as they were
        return {"blocks": [None if b is None else b.to_dict() for b in self.blocks],
                "order": None if self.order is None else list(self.order), "head": self.head,
                **({"stem": self.stem} if self.stem != "guide" else {}),
                **({"partition": list(self.partition)} if self.partition is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        blocks = tuple(None if b in (None, "keep") else BlockSpec.from_dict(b) for b in d["blocks"])
        return cls(blocks, tuple(d["order"]) if d.get("order") is not None else None, d.get("head", "linear"),
                   d.get("stem", "guide"), tuple(d["partition"]) if d.get("partition") is not None else None)

    def describe(self, part_names: list[str] | None = None) -> str:
        names = part_names or [str(i) for i in range(sum(self.partition or [1] * len(self.blocks)))]
        if self.partition is not None:  # the guide's part names, joined per run
            ends = [sum(self.partition[:i + 1]) for i in range(len(self.partition))]
            names = ["+".join(names[e - n:e]) for n, e in zip(self.partition, ends)]
        parts = ", ".join(f"{n}={'keep' if b is None else b}" for n, b in zip(names, self.blocks))
        order = " > ".join(names[i] for i in self.swap_order)
        stem = "; stem relearned" if self.stem == "relearn" else ""
        return f"{parts}; order {order}; head {self.head}{stem}"
