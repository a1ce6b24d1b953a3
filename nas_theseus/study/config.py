"""Study files: TOML data read into typed sections, with type-checked ``--set key=value`` overrides.

Unknown keys fail with a "did you mean" message naming the key's full path; the resolved config (file +
overrides + defaults) is what the study stores and compares on resume.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..convert import ConvertConfig
from ..convert.config import DEFAULT_FINETUNE
from ..errors import UserError, did_you_mean
from ..library.build import LIBRARY_COSTS, LibrarySettings
from ..training import FitConfig
from ..utils.hashing import key_content, keyed_fields, stable_hash
from ..utils.sizes import parse_size
from .objectives import OBJECTIVES, costs  # the registry: one class per objective

SAMPLERS = ("tpe", "nsga2", "random")
METHODS = ("not", "scratch", "kd")
# Keys a resumed run may change without --force: budgets and where the work runs, not what is searched.
RESUMABLE_KEYS = ("study.n_trials", "study.timeout", "study.device", "study.threads", "study.heartbeat_interval",
                  "study.grace_period", "study.max_retry", "study.storage_retry", "study.checkpoint_cap")


@keyed_fields("name", "search_space", "n_trials", "timeout", "sampler", "startup_trials", "seed", "method",
              "device", "threads", "heartbeat_interval", "grace_period", "max_retry", "storage_retry")
@dataclass(frozen=True)
class StudySection:
    """name; search_space (path, relative to the study file); n_trials (finished trials the study aims for, over all
    runs and workers); timeout (seconds per run); sampler (tpe | nsga2 | random) and startup_trials (random trials
    before TPE models); seed; method (``not`` converts from the guide, ``scratch`` trains the same targets from
    scratch, ``kd`` distils the guide into them; a list such as ``["not", "kd"]`` makes the method a choice per
    trial, the categorical parameter ``method``); device (``auto``: the GPU where there is one, else the CPU;
    ``cpu``, ``cuda``, ``cuda:i``; the device used is printed once and recorded on every trial); threads (torch CPU
    threads; None = the cores this process may use divided by the workers running on this machine, re-read before
    every trial); heartbeat_interval and grace_period (seconds; a RUNNING trial whose heartbeat is older than the
    grace period, default 2 x the interval, belongs to a dead worker and is retried, at most max_retry times);
    storage_retry (seconds a worker keeps retrying an unreachable or locked database before it gives up); enqueue
    (parameter sets, as `pareto` prints them, that the study tries first: Optuna's ``enqueue_trial``, skipped if
    already tried); checkpoint_cap (a size such as ``"5G"``: after every trial, the least recently used stage
    checkpoints beyond it are removed, none in use, :mod:`nas_theseus.study.clean`; None = no cap)."""

    name: str
    search_space: str
    n_trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    startup_trials: int = 5
    seed: int = 0
    method: str | list[str] = "not"
    device: str = "auto"
    threads: int | None = None
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3
    storage_retry: float = 300.0
    enqueue: list = field(default_factory=list)
    checkpoint_cap: str | int | None = None

    def __post_init__(self):
        if self.checkpoint_cap is not None:
            parse_size(self.checkpoint_cap, "study.checkpoint_cap")


@keyed_fields("source", "weights", "seed", "options", "fit", "parts", "stem", "head")
@dataclass(frozen=True)
class GuideSection:
    """source (``builtin:<name>`` | ``timm:<model>`` | ``torch:<module>:<function>`` | ``hf:gpt2`` or
    ``hf:<directory>``); weights (``train`` | ``random`` | ``pretrained`` | a file path); seed; options
    (architecture kwargs); fit (training options for ``weights = "train"``); parts, stem, head (submodule
    paths; required parts for ``torch:``)."""

    source: str = "builtin:mnist1d_cnn"
    weights: str = "train"
    seed: int = 0
    options: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    parts: list | None = None
    stem: str | list | None = None
    head: str | list | None = None


@keyed_fields("name", "options")
@dataclass(frozen=True)
class DataSection:
    """name (``mnist1d`` | ``digits`` | ``npz`` | ``cifar10`` | ``imagefolder`` | ``hfimages`` | ``text`` |
    ``wikitext``), the loader's keyword options (paths relative to the study file), and augment: training-time
    augmentation (``none``, ``standard``, ``crop``, or a timm auto-augment policy such as ``rand-m9-mstd0.5``;
    :mod:`nas_theseus.data.augment`)."""

    name: str = "mnist1d"
    options: dict = field(default_factory=dict)
    augment: str = "none"


@keyed_fields()
@dataclass(frozen=True)
class BaselineSection:
    """How ``method = "scratch"`` and ``"kd"`` train: ``kd`` the distillation variant (``function_matching``
    | ``hinton``), ``fit`` overrides of that method's own rule (``SCRATCH_FIT`` / ``KD_VARIANTS`` in
    ``nas_theseus.convert.baseline``; not ``[convert.finetune]``, which is NoT's)."""

    kd: str = "function_matching"
    fit: dict = field(default_factory=dict)


@keyed_fields()
@dataclass(frozen=True)
class PruningSection:
    """Our early stop for multi-objective trials (``nas_theseus.study.pruning``): ``enabled``; ``margin`` (how far
    ahead in hybrid validation accuracy a cheaper earlier trial must have been); ``stages`` (``last`` | ``all``:
    after which stages the rule looks)."""

    enabled: bool = False
    margin: float = 0.05
    stages: str = "last"


@keyed_fields("batch_size", "threads", "warmup", "repeats")
@dataclass(frozen=True)
class LatencySection:
    """batch_size (or a list of them); warmup forward passes, then repeats timed blocks, each of as many forward
    passes as last at least block_ms milliseconds; threads: CPU threads
    while timing (fixed, so figures compare across workers; the measurement also holds a per-machine lock);
    runtime (or a list): where the deploy network runs, ``eager`` | ``compile`` | ``onnxruntime``
    (:mod:`nas_theseus.measure.runtimes`); device: where it is timed, ``cpu`` by default whatever the study's
    device (at batch 1 a small network's GPU time is kernel-launch overhead, and other workers' training on the
    GPU pollutes it), or ``cuda`` / ``cuda:i`` (``onnxruntime`` runs on the CPU only); cores: where on the CPU,
    ``shared`` (a quiet slot: the machine's trainers pause while it times), ``reserved`` (aside, while the trial
    trains: on cores set apart for timing, the trainers pinned to the others; study/latency_aside.py) or
    ``auto`` (reserved when the study trains on a GPU and the machine has cores to spare, else shared). The
    ``latency_ms`` objective is the first runtime at the first batch size; every (runtime, batch size) figure is
    recorded on the trial (``latency_table``)."""

    batch_size: int | list = 1
    threads: int = 1
    warmup: int = 10
    repeats: int = 50
    runtime: str | list = "eager"
    block_ms: float = 2.0
    device: str = "cpu"
    cores: str = "auto"

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.batch_size) if isinstance(self.batch_size, list) else [self.batch_size]

    @property
    def runtimes(self) -> list[str]:
        return list(self.runtime) if isinstance(self.runtime, list) else [self.runtime]


@keyed_fields()
@dataclass(frozen=True)
class ArtifactsSection:
    """store: URL of a shared artifact store, ``file:///shared/nas`` (a file system every machine mounts) or
    ``s3://bucket/prefix`` (the ``s3`` extra), where complete trials' networks, stage checkpoints and trained
    guides are kept for every machine of the study (:mod:`nas_theseus.utils.artifacts`); unset: the work
    directory only. It says where results are kept, not what they are, so it is not part of the study's
    identity (``--artifacts URL`` sets it per command)."""

    store: str | None = None


@keyed_fields("study", "guide", "data", "convert", "objectives", "constraints", "hypervolume_reference",
              "latency", "base_dir")
@dataclass(frozen=True)
class StudyConfig:
    study: StudySection
    guide: GuideSection = GuideSection()
    data: DataSection = DataSection()
    convert: ConvertConfig = ConvertConfig()
    objectives: dict = field(default_factory=lambda: {"accuracy": "maximize", "flops": "minimize"})
    constraints: dict = field(default_factory=dict)
    hypervolume_reference: dict = field(default_factory=dict)
    latency: LatencySection = LatencySection()
    base_dir: str = "."
    baseline: BaselineSection = BaselineSection()
    pruning: PruningSection = PruningSection()
    artifacts: ArtifactsSection = ArtifactsSection()
    library: LibrarySettings = LibrarySettings()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d

    def baseline_fit(self, method: str):
        """The training rule of the baseline ``method`` (scratch, kd), with ``baseline.fit``."""
        from ..convert import KD_VARIANTS, SCRATCH_FIT

        rule = KD_VARIANTS[self.baseline.kd] if method == "kd" else SCRATCH_FIT
        unknown = set(self.baseline.fit) - {f.name for f in dataclasses.fields(FitConfig)}
        if unknown:
            raise UserError(f"unknown training setting(s) {sorted(unknown)}")
        return dataclasses.replace(rule, **self.baseline.fit)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods a trial may use: one, or the choices of the ``method`` parameter (``study.method`` a list)."""
        m = self.study.method
        return (m,) if isinstance(m, str) else tuple(m)

    @property
    def search_space_path(self) -> Path:
        p = Path(self.study.search_space)
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def identity(self, search_space_sha: str) -> str:
        """Hash of what the study searches (resumable keys left out) and of the search-space file."""
        d = key_content(self)
        d.pop("base_dir")
        d.pop("artifacts", None)  # where results are kept
        d.pop("library", None)  # what the study tries first, not what it searches: a library may join a study
        for key in RESUMABLE_KEYS:
            section, name = key.split(".")
            d[section].pop(name, None)
        return stable_hash({"config": d, "search_space": search_space_sha})


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(annotation):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if annotation is type(None) or annotation is None:
        return value is None, value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation in (dict, list, str, bool):
        return isinstance(value, annotation), value
    if origin in (dict, list):
        return isinstance(value, origin), value
    return isinstance(value, annotation), value


def build(cls, raw: Any, where: str):
    """Build dataclass ``cls`` from a dict, checking keys and types; errors name the key path."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "base_dir"]
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise UserError(f"unknown key {path!r}{did_you_mean(key, names)}; valid keys in "
                            f"{where or 'the study file'}: {', '.join(names)}")
        ann = hints[key]
        if dataclasses.is_dataclass(ann):
            kwargs[key] = build(ann, value, path)
            continue
        ok, value = _type_ok(value, ann)
        if not ok:
            raise UserError(f"{path} must be {_type_name(ann)}, got {type(value).__name__} {value!r}")
        kwargs[key] = value
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.name != "base_dir"
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where or 'the study file'} needs key(s) {', '.join(missing)}")
    return cls(**kwargs)


def _type_name(ann) -> str:
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as TOML, or taken as a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = json.loads(json.dumps(raw))
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text}: {k!r} is not a table")
        node[keys[-1]] = value
    return raw


def load_study_config(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Read a study file, apply ``--set`` overrides, check every key and type."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None
    raw = apply_overrides(raw, list(overrides))
    if isinstance(raw.get("convert"), dict) and "seed" in raw["convert"]:
        # the conversion seed is the study's: one key, so no setting is silently replaced
        raise UserError(f"{path.name}: convert.seed cannot be set in a study; the conversion seed is study.seed "
                        f"(set that instead)")
    return config_from_dict(raw, base_dir=str(path.resolve().parent), where=path.name)


def config_from_dict(raw: dict, *, base_dir: str, where: str = "study") -> StudyConfig:
    raw = dict(raw)
    conv = raw.pop("convert", {})
    if not isinstance(conv, dict):
        raise UserError(f"convert must be a table, got {conv!r}")
    conv = dict(conv)
    finetune = build(FitConfig, {**dataclasses.asdict(DEFAULT_FINETUNE), **conv.pop("finetune", {})},
                     "convert.finetune")
    convert = build(ConvertConfig, {**conv, "finetune": finetune}, "convert")
    try:
        cfg = build(StudyConfig, {**raw, "convert": convert}, "")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    cfg = dataclasses.replace(cfg, base_dir=base_dir)
    _check_semantics(cfg, where)
    return cfg


def _check_semantics(cfg: StudyConfig, where: str) -> None:
    """Whatever the types alone do not say: names that must be known, numbers in range, settings that agree;
    the first mistake is one line naming the study file and the key."""
    def bad(msg):
        raise UserError(f"{where}: {msg}")

    _check_study(cfg, bad)
    _check_objectives(cfg, bad)
    _check_latency(cfg.latency, bad)
    _check_pruning(cfg, bad)
    _check_baseline(cfg, bad)
    _check_library(cfg, bad)
    _check_numbers(cfg, bad)


# counts and seconds with a floor (None, where a key may be unset, means "not set"); study.timeout is apart: > 0
MINIMUMS = (("study.n_trials", 1), ("study.startup_trials", 0), ("study.threads", 1),
            ("study.heartbeat_interval", 1), ("study.grace_period", 1), ("study.max_retry", 0),
            ("study.storage_retry", 0), ("latency.threads", 1), ("latency.warmup", 0), ("latency.repeats", 1),
            ("library.steps", 1), ("library.latency_repeats", 1))


def _check_numbers(cfg: StudyConfig, bad) -> None:
    """A budget or count below its floor (``n_trials = -3``, ``timeout = 0``) is refused before any work: it would
    otherwise run nothing and exit as if done, or fail far from its cause."""
    for key, least in MINIMUMS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and value < least:
            bad(f"{key} must be >= {least}, got {value}")
    timeout = cfg.study.timeout
    if timeout is not None and not timeout > 0:  # NaN included
        bad(f"study.timeout must be > 0 (seconds), got {timeout}")


def _check_study(cfg: StudyConfig, bad) -> None:
    if cfg.study.sampler not in SAMPLERS:
        bad(f"unknown sampler {cfg.study.sampler!r}{did_you_mean(cfg.study.sampler, SAMPLERS)}; "
            f"valid: {', '.join(SAMPLERS)}")
    methods = cfg.methods
    if not methods or len(set(methods)) != len(methods) or not all(isinstance(m, str) for m in methods):
        bad(f"study.method must be a method or a list of distinct methods, got {cfg.study.method!r}")
    for m in methods:
        if m not in METHODS:
            bad(f"unknown method {m!r}{did_you_mean(m, METHODS)}; valid: {', '.join(METHODS)}")


def _check_objectives(cfg: StudyConfig, bad) -> None:
    if not cfg.objectives:
        bad("objectives is empty: name at least one of " + ", ".join(OBJECTIVES))
    for name, direction in cfg.objectives.items():
        if name not in OBJECTIVES:
            bad(f"unknown objective {name!r}{did_you_mean(name, OBJECTIVES)}; valid: {', '.join(OBJECTIVES)}")
        if direction not in ("minimize", "maximize"):
            bad(f"objectives.{name} must be 'minimize' or 'maximize', got {direction!r}")
    for name, bound in {**cfg.constraints, **cfg.hypervolume_reference}.items():
        if name not in OBJECTIVES:
            bad(f"unknown objective {name!r} in constraints/hypervolume_reference{did_you_mean(name, OBJECTIVES)}")
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            bad(f"the bound for {name} must be a number, got {bound!r}")


def _check_latency(latency: LatencySection, bad) -> None:
    from ..measure.runtimes import RUNTIMES

    sizes, runtimes = latency.batch_sizes, latency.runtimes
    if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes):
        bad(f"latency.batch_size must be a positive integer or a list of them, got {latency.batch_size!r}")
    for name in runtimes or [None]:
        if name not in RUNTIMES:
            bad(f"unknown latency.runtime {name!r}{did_you_mean(str(name), RUNTIMES)}; valid: {', '.join(RUNTIMES)}")
    try:
        latency_device = torch.device(latency.device)
    except (RuntimeError, ValueError):
        bad(f"latency.device must be cpu, cuda or cuda:i, got {latency.device!r}")
    if latency_device.type not in ("cpu", "cuda"):
        bad(f"latency.device must be cpu, cuda or cuda:i, got {latency.device!r}")
    cpu_only = [name for name in runtimes if RUNTIMES[name].cpu_only]
    if latency_device.type != "cpu" and cpu_only:
        bad(f"latency.runtime {cpu_only[0]!r} runs on the CPU only, but latency.device is "
            f"{latency.device!r}: time it on the CPU (latency.device = \"cpu\", the default) or use "
            f"'eager' or 'compile'")
    if latency.cores not in ("auto", "shared", "reserved"):
        bad(f"latency.cores must be auto, shared or reserved, got {latency.cores!r}")
    elif latency.cores == "reserved" and latency_device.type != "cpu":
        bad(f"latency.cores = \"reserved\" sets CPU cores apart for timing, but latency.device is "
            f"{latency.device!r}: use \"auto\" or \"shared\" there")
    if latency.block_ms < 0:
        bad(f"latency.block_ms must be >= 0 (milliseconds), got {latency.block_ms!r}")


def _check_pruning(cfg: StudyConfig, bad) -> None:
    if cfg.pruning.stages not in ("last", "all"):
        bad(f"pruning.stages must be 'last' or 'all', got {cfg.pruning.stages!r}")
    if cfg.pruning.enabled and not costs(cfg.objectives, before_training=True):
        bad(f"pruning.enabled: the rule compares costs known before training ("
            f"{', '.join(costs(OBJECTIVES, before_training=True))}), and this study's objectives "
            f"({', '.join(cfg.objectives)}) have none, so it could never prune; add one or set enabled = false")
    if cfg.pruning.enabled and "not" not in cfg.methods:
        bad(f"pruning.enabled: the rule looks at conversion stages, and method = {cfg.study.method!r} has none, "
            f"so it could never prune; set enabled = false")


def _check_baseline(cfg: StudyConfig, bad) -> None:
    from ..convert import KD_VARIANTS

    if cfg.baseline.kd not in KD_VARIANTS:
        bad(f"unknown baseline.kd {cfg.baseline.kd!r}{did_you_mean(cfg.baseline.kd, KD_VARIANTS)}; valid: "
            f"{', '.join(KD_VARIANTS)}")
    try:
        cfg.baseline_fit(next((m for m in cfg.methods if m != "not"), "scratch"))
    except (TypeError, UserError) as e:
        bad(f"baseline.fit: {e}")


def _check_library(cfg: StudyConfig, bad) -> None:
    lib = cfg.library
    if lib.cost not in LIBRARY_COSTS:
        bad(f"unknown library.cost {lib.cost!r}{did_you_mean(lib.cost, LIBRARY_COSTS)}; valid: "
            f"{', '.join(LIBRARY_COSTS)}")
    if not lib.levels or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                 for v in lib.levels):
        bad(f"library.levels must be a list of ratios to the guide's {lib.cost} above 0, got {lib.levels!r}")
    if lib.enabled and "not" not in cfg.methods:
        bad(f"library.enabled: the library's candidates are converted by Network of Theseus, and method = "
            f"{cfg.study.method!r} does not convert; set enabled = false")
