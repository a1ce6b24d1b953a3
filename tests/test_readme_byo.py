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
