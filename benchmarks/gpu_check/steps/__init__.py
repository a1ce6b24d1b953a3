"""The check's steps, in the order it runs them (value per second first), each with its time limit in seconds on
a GPU (a dry run has none). The limits sum to 580 s, under the device tool's 10 minutes a command; seen on an
H200 12-04: 245 s for the steps but readme, which took 128 s there before its limit was set (stage 38 s, e2e 31 s;
stream 29 s before it read the images packed and as JPEGs too).

Each step is the module here named for it, whose ``run(sizes, out)`` returns its record: ``ok`` and its
figures (with ``reason`` where it skipped or failed). The registry imports none of them (they import torch), so
the harness and the records read it for nothing between steps.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    limit_s: int  # on a GPU, under `timeout`

    def run(self, sizes, out: Path) -> dict:
        """The step's record, its module imported only now (in the step's own process)."""
        return importlib.import_module(f"{__name__}.{self.name}").run(sizes, out)


STEPS = (Step("tests", 60), Step("readme", 150), Step("cka", 20), Step("stage", 45), Step("e2e", 45),
         Step("workers", 45), Step("memory", 20), Step("study", 75), Step("stream", 60), Step("ddp", 60))
NAMES = tuple(step.name for step in STEPS)
BY_NAME = {step.name: step for step in STEPS}
