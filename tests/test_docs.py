"""The README's links and the docs' files: what `mkdocs build --strict` (in `.ci/run`) cannot see, since the
README is not a page of the site."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_relative_link_and_image_in_the_readme_exists():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    assert targets, "the README links to its docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_stays_a_front_door():
    """Reference and history live in docs/: the README stays short enough to read (issue 24: about 300 lines)."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_bring_your_own_page_includes_the_readme_recipe():
    """One source for the recipe that tests/test_readme_byo.py runs: the docs page includes the README's section."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count("--8<-- [start:byo]") == 1 and readme.count("--8<-- [end:byo]") == 1
    assert '--8<-- "README.md:byo"' in (ROOT / "docs" / "bring-your-own.md").read_text()


def test_every_benchmark_block_in_the_docs_has_its_results_file():
    """A table on the benchmarks page is the copy of a results file a script wrote (benchmarks/_common.publish)."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    names = re.findall(r"^<!-- bench:(\w+) -->$", page, flags=re.M)
    assert names
    for name in names:
        result = ROOT / "benchmarks" / "results" / f"{name}.md"
        assert result.exists(), name
        block = page.split(f"<!-- bench:{name} -->", 1)[1].split(f"<!-- /bench:{name} -->", 1)[0].strip()
        assert block.startswith(result.read_text().strip()), f"docs/benchmarks.md's block {name} is not {result.name}"


def test_every_table_and_figure_is_what_the_results_files_say():
    """The benchmarks page and the README's results are written by benchmarks/render_docs.py from the results
    files (tables, their provenance, and every inline figure): a number typed by hand, or a results file changed
    without re-rendering, fails here. Fix: `python benchmarks/render_docs.py`."""
    run = subprocess.run([sys.executable, "benchmarks/render_docs.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_figure_typed_by_hand_is_written_back_from_its_results_file():
    """The check catches a changed number: the renderer writes the value its function computes, not the page's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render_docs

    text = (ROOT / "README.md").read_text()
    edited = re.sub(r"(<!-- fig:deploy_front\.start_flops [^>]*-->)[^<]*", r"\g<1>0.1×", text, count=1)
    assert edited != text
    assert render_docs.render(edited) == text


def test_every_registered_figure_is_on_a_page_or_waits_for_its_record():
    """No figure function without a page to fill, except those of a record not yet made (quickstart.json, by
    benchmarks/quickstart_timing.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render_docs

    used = {m.group(1) for page in render_docs.PAGES for m in render_docs.FIG.finditer(page.read_text())}
    waiting = {n for n, f in render_docs.FIGURES.items() if not (render_docs.RESULTS / f"{f.source}.json").exists()}
    assert set(render_docs.FIGURES) - used <= waiting


def test_every_table_names_its_commit():
    """Each table says the commit it ran at, or that none was recorded (and which commit added its file)."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for name, body in re.findall(r"^<!-- bench:(\w+) -->$(.*?)^<!-- /bench:\1 -->$", page, flags=re.M | re.S):
        assert re.search(r"[Cc]ommit", body), f"the table {name} names no commit"
