"""The declared floors are the versions CI installs in its minimum-versions step (.ci/min-versions)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", dep.strip())
        assert m, f"dependency {dep!r} has no plain '>=' floor for .ci/min-versions.txt to pin"
        floors[m.group(1).lower()] = m.group(2)
    return floors


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "min-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_floor_is_pinned_in_the_minimum_versions_step():
    floors, pins = _floors(), _pins()
    assert {name: pins.get(name) for name in floors} == floors
    assert set(pins) - set(floors) == {"torchvision"}  # what the minimum torch needs for timm, not ours


def test_ci_runs_the_minimum_versions_step():
    assert "bash .ci/min-versions" in (ROOT / ".ci" / "run").read_text()
