"""A study written by nas_theseus opens unchanged in optuna-dashboard: trials, user attributes and the Pareto
front render in headless Chromium (Debian's package, driven by Playwright). The screenshots are kept under
``$NAS_THESEUS_TEST_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_study_cli import load, write_study
from workers import worker_env

from nas_theseus.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _need(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("NAS_THESEUS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{what} is missing (NAS_THESEUS_REQUIRE_BROWSER=1)")
        pytest.skip(f"the optuna-dashboard browser test needs {what}; `bash .ci/system-deps` installs Chromium, "
                    f"`pip install -e '.[dev]'` Playwright")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_study_renders_in_optuna_dashboard(tmp_path):
    _need("Debian's chromium", CHROMIUM is not None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright (pip)", False)
    study_file, wd = write_study(tmp_path, n_trials=3), tmp_path / "wd"
    store = tmp_path / "store"  # the dashboard serves the trials' networks from the study's artifact store
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--artifacts", f"file://{store}"]) == 0
    study = load(wd)
    n_all, n_complete = len(study.get_trials()), len(study.get_trials(states=(TrialState.COMPLETE,)))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nas_theseus", "dashboard", str(wd), "--port", str(port)],
                              env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # (the server logs a line per request; its pipe is read only if it dies, and the test is short)
    artifacts = Path(os.environ.get("NAS_THESEUS_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert server.poll() is None, server.stdout.read()  # the server exited: its output says why
            assert time.monotonic() < deadline, "optuna-dashboard did not listen within 60 s"
            time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1")
            page.get_by_text("Pareto Front").first.wait_for(timeout=30000)
            # the Pareto-front plot draws one marker per complete trial
            page.wait_for_function(f"document.querySelectorAll('.scatterlayer .point').length >= {n_complete}",
                                   timeout=30000)
            page.screenshot(path=str(artifacts / "dashboard_study.png"), full_page=True)
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1/trials")
            page.get_by_text("User Attributes").first.wait_for(timeout=30000)
            body = page.inner_text("body")
            page.screenshot(path=str(artifacts / "dashboard_trials.png"), full_page=True)
            browser.close()
        first = study.get_trials(states=(TrialState.COMPLETE,))[0]
        info = first.user_attrs["network_artifact"]
        url = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{first._trial_id}/{info['artifact_id']}"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert hashlib.sha256(r.read()).hexdigest() == info["sha256"]  # the trial's network, downloadable
        assert f"{n_all} Trials" in body
        for attr in ("candidate", "stages", "export", "flops_convention", "worker"):
            assert attr in body, attr
        assert "nas-theseus export" in body
        assert re.search(r"trial-\d+\.tar", body), body  # the trial's network in the Artifacts card
    finally:
        server.terminate()
        server.wait(timeout=30)
