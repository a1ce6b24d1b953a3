"""Latency in a quiet slot (nas_theseus/utils/quiet.py): while one process of this machine times, none trains.
Two real processes share the machine's locks; the trainer stamps each step's end, the measurer its slot."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from nas_theseus.utils import quiet

pytestmark = pytest.mark.skipif(quiet.fcntl is None, reason="shared locks need fcntl (POSIX)")

TRAINER = """
import json, sys, time
from nas_theseus.utils import quiet
stamps = []
with quiet.training():
    print("holding", flush=True)
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        time.sleep(0.002)  # a step
        stamps.append(time.monotonic())
        quiet.pause_point()
print(json.dumps(stamps), flush=True)
"""


def test_no_step_of_a_training_process_falls_inside_a_quiet_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path))
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, "3"], stdout=subprocess.PIPE, text=True)
    assert trainer.stdout.readline().strip() == "holding"
    slots = []
    for _ in range(3):
        time.sleep(0.3)
        with quiet.quiet():  # waits for the trainer's next pause point
            start = time.monotonic()
            time.sleep(0.2)  # the timing
            slots.append((start, time.monotonic()))
    stamps = json.loads(trainer.communicate(timeout=60)[0])
    assert trainer.returncode == 0
    for start, end in slots:
        assert not [s for s in stamps if start <= s <= end]  # by construction, not by luck
        assert [s for s in stamps if s < start] and [s for s in stamps if s > end]  # it trained around them


def test_a_process_that_trains_and_times_lets_go_of_its_own_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path))
    with quiet.training():
        with quiet.quiet():  # would wait forever on its own shared hold otherwise
            pass
        quiet.pause_point()  # no measurer waits: returns at once
    with quiet.quiet():
        pass
