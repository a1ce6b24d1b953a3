"""Helpers shared by the benchmark scripts: machine description, resumable JSON results, the docs' tables."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, Python {platform.python_version()}")


def commit() -> str:
    """The code version a result was made with: ``$NAS_THESEUS_COMMIT`` where set (a copy of the tree without
    its ``.git``, as on the device machine), else git's HEAD, with ``+dirty`` when tracked files have
    uncommitted changes."""
    if os.environ.get("NAS_THESEUS_COMMIT"):
        return os.environ["NAS_THESEUS_COMMIT"]
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        # results files are what a run writes: their own changes do not make the code dirty
        dirty = git("status", "--porcelain", "-uno", "--", ".", ":!benchmarks/results")
        return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here; set NAS_THESEUS_COMMIT)"


def run_meta(**extra) -> dict:
    """What every results record carries: the command, machine, date, code version (``commit``, ``+dirty``
    when tracked code had uncommitted changes) and library versions."""
    import optuna

    return {"command": command(), "machine": machine(), "date": today(), "commit": commit(),
            "versions": {"torch": torch.__version__, "optuna": optuna.__version__,
                         "python": platform.python_version()}, **extra}


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def today() -> str:
    return _dt.date.today().isoformat()


class ResultStore:
    """Results as one JSON file of {run key: record}, written after every run so a stopped benchmark resumes."""

    def __init__(self, path: Path):
        self.path = path
        stored = json.loads(path.read_text()) if path.exists() else {}
        self.records: dict[str, dict] = stored.get("runs", {})
        self.stored_meta: dict | None = stored.get("meta")  # the provenance of the last run that stored a result
        self.ran = False  # whether this process stored a result

    def provenance_meta(self, meta: dict) -> dict:
        """The provenance a table made now should name: this run's, or, when it only republished stored
        results, that of the run that made them."""
        return meta if self.ran or not self.stored_meta else self.stored_meta

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, key: str, record: dict, meta: dict) -> None:
        """Store one run's ``record``, stamped with the commit it ran at (a resumed benchmark's table can then
        say which rows came from which code)."""
        self.records[key] = {**record, "commit": meta.get("commit")}
        self.ran = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "runs": self.records}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


    def current(self, key: str, identity: str, run, meta: dict, *, publish: bool) -> dict | None:
        """The stored result of ``key`` when it was made for ``identity`` (the study it measured); else, unless
        ``publish``, ``run()``'s result, stored now; else None (not run)."""
        stored = self.get(key)
        if (stored or {}).get("identity") == identity:
            return stored
        if publish:
            return None
        print(f"== {key}", flush=True)
        self.put(key, run(), meta)
        return self.get(key)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def claim(text: str, ok: bool) -> str:
    """A line for a claim under test: holds, or (bold) does not hold."""
    return f"- {'holds' if ok else '**does not hold**'}: {text}"


def provenance(meta: dict) -> str:
    """The line every result block ends with: what ran, where, when, and at which commit."""
    code = f" — commit: {meta['commit']}" if meta.get("commit") else ""
    return f"Command: `{meta['command']}` — machine: {meta['machine']} — date: {meta['date']}{code}.\n"


def save_table(name: str, text: str) -> None:
    """Write ``results/NAME.md`` and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def publish(name: str, text: str) -> None:
    """Write ``results/NAME.md``, print it, and write the docs from the results files
    (``benchmarks/render_docs.py``: the block ``bench:NAME`` and the figures that read NAME.json)."""
    import render_docs

    save_table(name, text)
    render_docs.main([])
