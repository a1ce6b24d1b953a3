"""One block trained alone: the guide with one run of its parts swapped for a target, trained in the independent
schedule (the target reads the guide's own input at the run's start: blockwise local distillation, as Puzzle's),
the way the block library (:mod:`nas_theseus.library`) trains and scores every block it holds.

The stage is an ordinary stage of :mod:`nas_theseus.convert.engine`: content-keyed, checkpointed where
``checkpoint_dir`` says (and in the artifact store), so a killed library build resumes block by block.
"""

from __future__ import annotations

import dataclasses

from ..align.precision import tf32_allowed
from ..data import TaskData
from ..guides import Guide
from ..targets import BlockSpec
from ..utils.artifacts import ArtifactStore
from .activations import GuideActivations
from .checkpoints import CheckpointStore
from .config import Candidate, ConvertConfig
from .engine import _Conversion, _TimedStore, guide_feed
from .hybrid import Hybrid
from .reports import StageReport
from .stages import plan_stages


def alone_candidate(n_parts: int, start: int, stop: int, spec: BlockSpec) -> Candidate:
    """The guide with parts ``start..stop-1`` replaced by ``spec`` (one run) and every other part kept, behind
    the guide's own head."""
    partition = (1,) * start + (stop - start,) + (1,) * (n_parts - stop)
    blocks = (None,) * start + (spec,) + (None,) * (n_parts - stop)
    return Candidate(blocks, head="guide", partition=partition)


def train_alone(guide: Guide, start: int, stop: int, spec: BlockSpec, data: TaskData, config: ConvertConfig, *,
                device: str, activations: GuideActivations | None = None, checkpoint_dir=None,
                artifacts: ArtifactStore | None = None, progress: bool = False) -> tuple[Hybrid, StageReport, str]:
    """Train ``spec`` in place of parts ``start..stop-1`` for one independent stage of ``config``'s steps (its
    output adapter to the next guide part, or to the guide's head, refit by ridge); returns the hybrid (the
    guide with that block in, on ``device``), the stage's report (``resumed`` where it was stored) and its
    checkpoint's key.
    ``activations``: the guide's cached activations over the training split (ungrouped), reused."""
    candidate = alone_candidate(len(guide.parts), start, stop, spec)
    config = dataclasses.replace(config, schedule="independent")
    guide.to(device)
    grouped = guide.grouped(candidate.partition)
    with tf32_allowed(config.tf32):
        feed, _, _ = guide_feed(grouped, data, config, activations, device, progress)
        run = _Conversion(grouped, candidate, data, config, feed, device, progress,
                          _TimedStore(CheckpointStore(checkpoint_dir, remote=artifacts)))
        stage = plan_stages(candidate, config)[0]
        report = run.stage(stage, [start], 1)
    return run.hybrid, report, run.store.keys[0] if run.store.keys else ""
