"""The README's "Bring your own model" recipe, run word for word in an empty folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas_theseus import load_exported

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.slow


def recipe() -> tuple[dict[str, str], list[str]]:
    text = README.read_text()
    files = dict(re.findall(r"<!-- byo-file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))
    commands = re.search(r"<!-- byo-commands -->\n```bash\n(.*?)```", text, flags=re.S).group(1)
    return files, [c for c in commands.splitlines() if c.strip()]


def test_bring_your_own_model_recipe(tmp_path):
    files, commands = recipe()
    assert set(files) == {"mymodel.py", "make_data.py", "myspace.py", "mystudy.toml"} and len(commands) == 4
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {**os.environ, "NAS_THESEUS_PROGRESS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    front = json.loads(outputs[2])
    assert front and all(0.0 <= row["accuracy"] <= 1.0 for row in front)
    model = load_exported(tmp_path / "runs" / "byo" / "exports" / "trial-0")
    import numpy as np
    import torch

    x = torch.as_tensor(np.load(tmp_path / "data.npz")["X"][:5])
    assert model(x).shape == (5, 4)


def test_the_same_study_in_another_folder_gives_the_same_results_and_exports_travel(tmp_path, monkeypatch):
    """Identities and keys come from content (the guide's code, the data), not from where the files lie: the
    recipe copied to a second folder reuses the first folder's trained guide and reproduces its trial; an
    export of a `torch:` guide rebuilds after the guide's .py file is gone."""
    import shutil

    import numpy as np
    import torch

    from nas_theseus.cli import main

    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache"))
    files, commands = recipe()
    first = tmp_path / "first"
    first.mkdir()
    for name, body in files.items():
        (first / name).write_text(body)
    subprocess.run([sys.executable, "make_data.py"], cwd=first, check=True)
    second = tmp_path / "elsewhere" / "second"
    shutil.copytree(first, second)
    metrics = []
    for folder in (first, second):
        assert main(["run", str(folder / "mystudy.toml"), "--workdir", str(folder / "wd"), "--no-progress",
                     "--n-trials", "1"]) == 0
        metrics.append(json.loads((folder / "wd" / "trials" / "0" / "metrics.json").read_text()))
    guides = sorted((tmp_path / "cache" / "guides").glob("*.safetensors"))
    assert len(guides) == 1, guides  # trained once, found again from the other folder
    assert metrics[0]["val_accuracy"] == metrics[1]["val_accuracy"]
    assert metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"]
    assert sorted(p.name for p in (first / "wd" / "checkpoints").glob("*.ckpt")) == \
        sorted(p.name for p in (second / "wd" / "checkpoints").glob("*.ckpt"))
    assert main(["export", str(second / "wd"), "--trial", "0", "--out", str(tmp_path / "export")]) == 0
    for folder in (first, second):
        (folder / "mymodel.py").unlink()
    shutil.move(tmp_path / "export", tmp_path / "moved")
    model = load_exported(tmp_path / "moved")
    x = torch.as_tensor(np.load(second / "data.npz")["X"][:5])
    assert model(x).shape == (5, 4)
    assert (tmp_path / "moved" / "guide_code" / "mymodel.py").is_file()
