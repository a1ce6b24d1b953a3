"""What a study's trials share: the data, the guide, the search space and the conversion settings.

Built once per process from a :class:`StudyConfig` (the composition root: library code below never sees the
config object).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from torch import nn

from ..convert import Candidate, ConvertConfig, Hybrid
from ..convert.activations import choose_activations
from ..data import TaskData, load_data
from ..errors import UserError, did_you_mean
from ..guides import Guide, load_guide
from ..library.build import refusal
from ..measure.latency import Runners
from ..search import SearchSpace, load_search_space
from ..training import FitConfig
from ..utils.artifacts import ArtifactStore
from ..utils.devices import describe_device, resolve_device, take_memory_share
from ..utils.distributed import init_from_env
from .config import StudyConfig
from .latency_aside import Aside, layout_for

logger = logging.getLogger(__name__)


@dataclass
class StudyContext:
    config: StudyConfig
    space: SearchSpace
    data: TaskData
    guide: Guide  # on ``device`` from the start
    device: str  # where trials train: study.device resolved (``auto`` -> cuda or cpu)
    artifacts: ArtifactStore | None = None  # the study's shared store ([artifacts] store), if any
    guide_figures: dict | None = None  # the guide's own figures (guide_reference.py), once the study has them
    _runners: Runners | None = dataclasses.field(default=None, repr=False)
    _aside: Aside | bool | None = dataclasses.field(default=None, repr=False)  # False: none (a quiet slot)

    def guide_network(self) -> nn.Module:
        """stem -> parts -> head of the guide: the network the trials convert (shares the guide's modules)."""
        g = self.guide
        return nn.Sequential(g.stem, *(p.module for p in g.parts), g.head)

    def guide_runner(self, runtime: str, x: torch.Tensor, threads: int):
        """The guide prepared in ``runtime`` on ``x``, on ``x``'s device (made once per process: an ONNX export,
        a compile; on a copy of the guide where that device is not the guide's, which stays where it is)."""
        if self._runners is None:
            self._runners = Runners(self.guide_network)
        return self._runners(runtime, x, threads)

    def aside(self) -> Aside | None:
        """This process's measurer on reserved cores (``[latency] cores``, latency_aside.py), or None: latency
        is timed in a quiet slot. Decided once per process; its trainers are pinned off those cores
        (:meth:`trainer_cores`)."""
        if self._aside is None:
            layout = layout_for(self.config, self.device)
            self._aside = Aside(layout) if layout is not None else False
        return self._aside or None

    def trainer_cores(self) -> tuple[int, ...] | None:
        """The cores this process trains on when latency is timed aside (all but the reserved), else None."""
        aside = self.aside()
        return aside.layout.rest if aside is not None else None

    def say_device(self) -> None:
        """One line (INFO), when work starts (also with --no-progress): where the trials train."""
        auto = " (auto)" if self.config.study.device == "auto" else ""
        logger.info("device: %s%s", describe_device(self.device), auto)
        if self.aside() is not None:
            logger.info("%s (latency.cores = %r)", self.aside().layout.describe(), self.config.latency.cores)

    def caches_activations(self) -> bool:
        """Whether the study's conversions read a cache of the guide's activations (``convert.activations``),
        which the work directory then keeps for every worker; else they run the guide on the fly."""
        return "not" in self.config.methods and \
            choose_activations(self.config.convert.activations, self.data, self.guide)[0] == "cache"

    def method(self, trial) -> str:
        """How a trial trains its candidate: the study's method, or its ``method`` parameter when the study
        lists several (a categorical choice, so ``FixedTrial`` rebuilds it from the trial's parameters)."""
        methods = self.config.methods
        return methods[0] if len(methods) == 1 else trial.suggest_categorical("method", list(methods))

    def candidate(self, trial) -> tuple[Candidate, ConvertConfig]:
        """Ask the search space for a trial's candidate and its conversion settings."""
        candidate, overrides = self.space(trial, self.guide)
        base = dataclasses.asdict(self.config.convert)
        unknown = [k for k in overrides if k not in base or k == "seed"]
        if unknown:
            raise UserError(f"{self.space.path.name} overrides unknown conversion setting(s) {unknown}")
        if "finetune" in overrides:
            wrong = [k for k in overrides["finetune"] if k not in base["finetune"]]
            if wrong:
                raise UserError(f"{self.space.path.name} overrides unknown fine-tuning setting(s) {wrong}"
                                f"{did_you_mean(wrong[0], base['finetune'])}; valid: {', '.join(base['finetune'])}")
            overrides["finetune"] = FitConfig(**{**base["finetune"], **overrides["finetune"]})
        cfg = dataclasses.replace(self.config.convert, **overrides, seed=self.config.study.seed)
        return candidate, cfg

    def dry_run(self) -> None:
        """Check the search space once before a study starts: it runs and its candidates fit the guide."""
        directions = ["minimize"]
        probe = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
        trial = probe.ask()
        candidate, cfg = self.candidate(trial)
        Hybrid(self.guide, candidate, cfg)
        why = refusal(self.space, self.guide) if self.config.library.enabled else None
        if why:  # [library] enabled on a space it cannot read: said before any trial
            raise UserError(f"library.enabled: {why}")
        for params in self.config.study.enqueue:
            if not isinstance(params, dict):
                raise UserError(f"study.enqueue holds parameter tables, got {params!r}")
            try:
                candidate, cfg = self.candidate(optuna.trial.FixedTrial(params))
            except UserError:  # the search space's own one line (a UserError is a ValueError too): as it is
                raise
            except ValueError as e:  # FixedTrial: a parameter missing or out of range
                raise UserError(f"study.enqueue: {params} does not fit {self.space.path.name}: {e}") from None
            Hybrid(self.guide, candidate, cfg)


def build_context(config: StudyConfig, *, progress: bool = True) -> StudyContext:
    space = load_search_space(config.search_space_path)
    artifacts = open_artifacts(config)
    if artifacts is not None:  # before the guide, which it may hold: a store this machine cannot use is one line
        artifacts.check(socket.gethostname())
    data = load_data(config.data.name, augment=config.data.augment,
                     **_relative_to(config.data.options, Path(config.base_dir)))
    # under torchrun: joins the process group, and "cuda" is this rank's GPU (cuda:LOCAL_RANK)
    device = str(init_from_env(torch.device(resolve_device(config.study.device))))
    take_memory_share(device)  # a worker sharing its GPU with others (--workers): its share of the memory
    resolve_device(config.latency.device)  # a latency.device this machine lacks: one line, before any work
    options = dict(config.guide.options)
    g, base = config.guide, Path(config.base_dir)
    weights, source = g.weights, g.source
    if weights not in ("train", "random", "pretrained"):  # a file path, relative to the study file
        weights = str((base / Path(weights).expanduser()).resolve())
    kind, _, rest = source.partition(":")
    target, sep, fn = rest.rpartition(":")
    if kind == "torch" and target.endswith(".py"):  # torch:file.py:function, relative to the study file
        source = f"torch:{(base / Path(target).expanduser()).resolve()}:{fn}"
    guide = load_guide(source, data, weights=weights, seed=g.seed, fit=g.fit or None, progress=progress,
                       device=device, parts=g.parts, stem=g.stem, head=g.head, artifacts=artifacts, **options)
    guide.to(device)  # every trial's hybrid, cache and measurement is built where the guide lives
    return StudyContext(config, space, data, guide, device, artifacts)


def open_artifacts(config: StudyConfig, *, create: bool = True) -> ArtifactStore | None:
    """The study's shared artifact store, or None when ``[artifacts] store`` is unset (``create``: see
    :meth:`ArtifactStore.open`)."""
    return ArtifactStore.open(config.artifacts.store, create=create) if config.artifacts.store else None


def _relative_to(options: dict, base: Path) -> dict:
    """Data options naming local files (``path``, ``root``, a text ``source``) are relative to the study file."""
    def is_file_option(k, v):
        return isinstance(v, str) and (k in ("path", "root") or (k == "source" and v != "pydoc"))

    return {k: str((base / Path(v).expanduser()).resolve()) if is_file_option(k, v) else v
            for k, v in options.items()}
