"""Write every benchmark table and every inline figure of the docs from the results files, or check them.

A number a user reads on the benchmarks page or in the README's results is only as good as the step that
copied it there. Here there is no copying by hand: a table block ``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->``
is ``benchmarks/results/NAME.md`` (what the benchmark wrote) plus the provenance its ``NAME.json`` holds (its
commit, or that none was recorded; a dirty tree; per-run commits), and an inline figure
``<!-- fig:NAME COMMIT -->VALUE<!-- /fig -->`` is computed from its results file by the function registered
under NAME in ``benchmarks/_figures.py`` (the one registry of figures). HTML comments render as nothing on
GitHub and in MkDocs, so a reader sees the value; the comment names the figure and the commit of the record it
came from.

    python benchmarks/render_docs.py           # rewrite the pages
    python benchmarks/render_docs.py --check   # exit 1 and name what differs (tests/test_docs.py runs this)

A benchmark's ``publish`` (benchmarks/_common.py) writes its block through ``block`` here, so a page is the
same whether a benchmark or this script wrote it. Standard library only: the check is fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _figures import FIGURES, RESULTS, ROOT, Reading, load  # noqa: E402

PAGES = [ROOT / p for p in ("docs/benchmarks.md", "README.md", "docs/studies.md", "docs/method.md", "docs/index.md",
                                     "docs/python-api.md", "docs/library.md")]
BLOCK = re.compile(r"^<!-- bench:(\w+) -->\n.*?^<!-- /bench:\1 -->$", re.S | re.M)
FIG = re.compile(r"<!-- fig:([\w.]+)[^>]*-->(.*?)<!-- /fig -->", re.S)


def meta_of(data: dict) -> dict:
    """A record's provenance: its ``meta``, or the top level of the oldest records, which have none."""
    return data.get("meta", data)


def commit_of(data: dict, runs: list[str]) -> str:
    """The commit a figure names: those of the runs it read (when the record stamps runs), else the record's,
    else what is known of it (the commits that added and last changed the file)."""
    stamped = dict.fromkeys(c for r in runs if (c := (data["runs"].get(r) or {}).get("commit")))
    meta = meta_of(data)
    if stamped or meta.get("commit"):
        return ", ".join(stamped) or meta["commit"]
    known = [f"{what} {meta[key].split()[0]}"
             for what, key in (("added", "added_in"), ("last changed", "last_changed_in")) if meta.get(key)]
    return "commit unknown" + (f" (file {', '.join(known)})" if known else "")


def provenance_note(name: str, table: str) -> str:
    """What ``NAME.json`` says of the table's provenance that its own text does not: the commit (or that none
    was recorded), a dirty tree, the runs' commits when they differ or were stamped by hand, and a note."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return ""
    data = load(name)
    meta, lines = meta_of(data), []
    commit = meta.get("commit")
    if not commit:
        added = f"; the results file was added to the repository in commit {meta['added_in']}" \
            if meta.get("added_in") else ""
        last = f" and last changed in {meta['last_changed_in']}" if meta.get("last_changed_in") else ""
        lines.append(f"Commit: not recorded (the run predates the commit stamp){added}{last}.")
    elif commit not in table:
        lines.append(f"Commit: {commit}.")
    runs = data.get("runs")
    stamps = [r.get("commit") for r in runs.values() if isinstance(r, dict)] if isinstance(runs, dict) else []
    counts = {c: stamps.count(c) for c in dict.fromkeys(stamps) if c}
    if counts and (len(counts) > 1 or any("+dirty" in c or "(" in c for c in counts)):
        lines.append("Runs per commit: " + "; ".join(f"{c}: {n} of {len(stamps)}" for c, n in counts.items()) + ".")
    committed = [r.get("committed_in") for r in runs.values()] if isinstance(runs, dict) else []
    if any(committed):
        lines.append("Rows by the commit that committed them (git history; the code they ran is not recorded): "
                     + "; ".join(f"{c or 'unknown'}: {committed.count(c)} of {len(committed)}"
                                 for c in dict.fromkeys(committed)) + ".")
    dirty = [c for c in [commit, *counts] if c and "+dirty" in c]
    if dirty:
        lines.append("A commit marked +dirty means tracked code had uncommitted changes when that run ran: "
                     "the commit alone does not reproduce it.")
    if meta.get("note"):
        lines.append(meta["note"])
    return "\n".join(lines)


def block(name: str) -> str:
    """The text between a table's markers: the benchmark's table, then the provenance its JSON adds."""
    table = (RESULTS / f"{name}.md").read_text().strip()
    note = provenance_note(name, table)
    return f"<!-- bench:{name} -->\n{table}\n" + (f"\n{note}\n" if note else "") + f"<!-- /bench:{name} -->"


def render_figure(name: str) -> str:
    fig = FIGURES[name]
    data = load(fig.source)
    runs = data["runs"] = Reading(data.get("runs", {}))
    value = fig.value(data)
    return f"<!-- fig:{name} {commit_of(data, runs.read)} -->{value}<!-- /fig -->"


def render(text: str) -> str:
    """``text`` with every table block and figure written from the results files. A figure never starts a line:
    there Markdown (GitHub's and MkDocs') reads the comment as an HTML block and breaks the paragraph, so such a
    line is joined to the one before."""
    text = BLOCK.sub(lambda m: block(m.group(1)), text)
    text = re.sub(r"(?<=\S)\n[ \t]*(?=<!-- fig:)", " ", text)
    return FIG.sub(lambda m: render_figure(m.group(1)), text)


def faults(text: str) -> list[str]:
    """What this script cannot write right: a figure with no registered function, one that starts a paragraph."""
    unknown = [f"no registered figure {m.group(1)}" for m in FIG.finditer(text) if m.group(1) not in FIGURES]
    return unknown + [f"a paragraph starts with figure {m.group(1)}"
                      for m in re.finditer(r"(?:\A|\n[ \t]*\n)[ \t]*<!-- fig:([\w.]+)", text)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs")
    args = ap.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text()
        if faults(text):
            sys.exit(f"{page.relative_to(ROOT)}: {'; '.join(faults(text))}")
        new = render(text)
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new)
    verb = "differ from what benchmarks/render_docs.py writes" if args.check else "rewritten"
    print(f"{', '.join(stale)}: {verb}" if stale else "every page is what the results files say")
    return 1 if stale and args.check else 0

if __name__ == "__main__":
    sys.exit(main())
