"""The README's first command timed as a new user runs it: a fresh clone, an empty venv, install and study apart.

The command is read from README.md (the line after ``<!-- quickstart-command -->``, as ``.ci/run`` reads the
test command after ``<!-- test-command -->``) and split where the study begins (``nas-theseus run``): the part
before it (venv, ``pip install -e .``) is the install, the rest the study. Both run in ``git clone`` of this
repository's HEAD in a temporary folder, with an empty guide cache and, unless ``--pip-cache``, no pip cache
(a fresh machine has none: every wheel is downloaded).

    python benchmarks/quickstart_timing.py               # about 10 minutes on 2 cores, network needed
    python benchmarks/quickstart_timing.py --pip-cache   # wheels from pip's cache (not a fresh machine: said so)

Writes ``benchmarks/results/quickstart.{json,md}``: the two parts' times, and the run's guide, trials and front
(its work directory is the study's default, ``runs/<study>``); the README's quickstart figures are written from
the JSON by ``benchmarks/render_docs.py`` (figures ``quickstart.*`` in ``_figures.py``). Uncommitted changes are not in
the clone: the record names HEAD, the code that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, provenance, publish, run_meta  # noqa: E402
from readme_study import study_outcome  # noqa: E402

MARKER = "<!-- quickstart-command -->"
STUDY_STARTS = "nas-theseus run "


def readme_command() -> tuple[str, str]:
    """The README's first command, split into its install part and its study part."""
    lines = (ROOT / "README.md").read_text().splitlines()
    i = lines.index(MARKER)
    command = lines[i + 2].strip()  # the marker, the ```bash fence, the command
    install, sep, study = command.partition(f" && {STUDY_STARTS}")
    if not sep:
        sys.exit(f"README.md's quickstart command has no '&& {STUDY_STARTS}': {command}")
    return install, STUDY_STARTS + study


def timed(command: str, cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True)
    return time.perf_counter() - t0, proc


def measure(pip_cache: bool) -> dict:
    install, study = readme_command()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "nas_theseus"
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(NAS_THESEUS_CACHE=str(Path(tmp) / "cache"), NAS_THESEUS_PROGRESS="0")
        if not pip_cache:
            env["PIP_NO_CACHE_DIR"] = "1"
        record = {"install_command": install, "study_command": study, "pip_cache": pip_cache}
        record["install_s"], proc = timed(install, clone, env)
        if proc.returncode != 0:
            return {**record, "ok": False, "failed": "install", "tail": (proc.stdout + proc.stderr)[-3000:]}
        record["study_s"], proc = timed(f". .venv/bin/activate && {study}", clone, env)
        if proc.returncode == 0:  # the run's own front and guide: the README's figures come from this run
            name = tomllib.loads((clone / study.split()[-1]).read_text())["study"]["name"]
            workdir = clone / "runs" / name  # the default work directory, as the README's next commands use it
            record.update(study_outcome(workdir, Path(tmp) / "cache", [str(clone / ".venv" / "bin" / "nas-theseus")],
                                        env))
        versions = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                                   "import platform, optuna, torch; print(platform.python_version(), "
                                   "torch.__version__, optuna.__version__)"],
                                  capture_output=True, text=True).stdout.split()
        record["venv_versions"] = dict(zip(("python", "torch", "optuna"), versions))
        if proc.returncode != 0:
            return {**record, "ok": False, "failed": "study", "tail": (proc.stdout + proc.stderr)[-3000:]}
    return {**record, "ok": True, "total_s": record["install_s"] + record["study_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pip-cache", action="store_true", help="let pip use its cache (not a fresh machine)")
    args = ap.parse_args()
    meta = run_meta()
    r = measure(args.pip_cache)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart.json").write_text(json.dumps({"meta": meta, "runs": {"run0": {**r, "commit": meta[
        "commit"]}}}, indent=1, sort_keys=True))
    if not r["ok"]:
        sys.exit(f"the {r['failed']} failed:\n{r['tail']}")
    cache = "pip's cache used" if r["pip_cache"] else "no pip cache (every wheel downloaded)"
    text = (f"The README's first command in a fresh clone, empty venv and guide cache, {cache}.\n\n"
            "| part | command | wall s |\n|---|---|---|\n"
            f"| install | `{r['install_command']}` | {r['install_s']:.0f} |\n"
            f"| study | `{r['study_command']}` | {r['study_s']:.0f} |\n"
            f"| both | | {r['total_s']:.0f} |\n\n" + provenance(meta))
    publish("quickstart", text)


if __name__ == "__main__":
    main()
