"""A worker's torch threads default to the cores it may use divided by the workers on the machine."""

from __future__ import annotations

import torch

from nas_theseus.study import runner
from nas_theseus.study.config import config_from_dict
from nas_theseus.utils.locks import Slot


def config(threads=None):
    study = {"name": "t", "search_space": "x.py", **({"threads": threads} if threads else {})}
    return config_from_dict({"study": study}, base_dir=".")


def test_threads_default_to_cores_divided_by_the_workers_on_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path))
    monkeypatch.setattr(runner, "usable_cores", lambda: 8)
    before = torch.get_num_threads()
    try:
        me = Slot(runner.machine_workers_dir())
        assert runner.set_threads(config()) == 8 and torch.get_num_threads() == 8
        others = [Slot(runner.machine_workers_dir()) for _ in range(2)]  # two more workers start
        assert runner.set_threads(config()) == 2
        for o in others:
            o.release()
        assert runner.set_threads(config()) == 8  # they are gone again
        assert runner.set_threads(config(threads=3)) == 3  # study.threads wins
        me.release()
    finally:
        torch.set_num_threads(before)
