"""The declared floors are the versions CI installs in its minimum-versions step (.ci/min-versions)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    assert set(pins) == set(floors)


def test_ci_runs_the_minimum_versions_step():
    assert "bash .ci/min-versions" in (ROOT / ".ci" / "run").read_text()


def test_help_imports_no_torch():
    """`nas-theseus --help` and a command's --help answer without importing torch (the package's public names
    are imported on first use), and those names still import as before."""
    import subprocess
    import sys

    code = ("import sys\nfrom nas_theseus.cli import main\n"
            "for argv in (['--help'], ['run', '--help'], ['export', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "import nas_theseus.study.runner\n"  # imports the subpackage nas_theseus.convert first
            "from nas_theseus import BlockSpec, UserError, convert, load_exported\n"
            "assert convert.__module__ == 'nas_theseus.convert.engine' and 'torch' in sys.modules\n"
            "from nas_theseus.convert import engine\n"
            "assert engine.convert is convert\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: nas-theseus" in proc.stdout


def _python_floor() -> tuple[int, int]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert m, f"requires-python {spec!r} is not a plain '>=X.Y' floor"
    return int(m.group(1)), int(m.group(2))


def test_the_python_floor_is_the_python_ci_runs():
    """The floor pyproject.toml and the README claim is the Python CI tests: older fails to run, newer leaves the
    claim untested (tomllib, for one, is 3.11+). Outside CI only "not older" can be checked."""
    import os
    import sys

    floor = _python_floor()
    readme = re.findall(r"Python ≥ (\d+)\.(\d+)", (ROOT / "README.md").read_text())
    assert readme and {(int(a), int(b)) for a, b in readme} == {floor}, f"the README's Python floor is not {floor}"
    assert sys.version_info[:2] >= floor, f"Python {sys.version_info[:2]} is older than the floor {floor}"
    assert "NAS_THESEUS_CI=1" in (ROOT / ".ci" / "run").read_text()
    if os.environ.get("NAS_THESEUS_CI") == "1":
        assert sys.version_info[:2] == floor, (
            f"CI runs Python {sys.version_info[:2]} but the floor is {floor}: test the floor, or raise it")
