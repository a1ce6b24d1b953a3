"""stream: the guide on the fly: a CIFAR-sized folder of PNGs read through a DataLoader with workers, standard
augmentation, ResNet-18 layer1 -> MLP(256): images/s, GPU utilisation, the stage ÷ a bare loop doing the same
work, and the stage with the guide in channels_last ÷ without."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import torch
from scale import write_folder
from stage_loop import time_engine
from stream_throughput import bare_streamed

from nas_theseus.convert import ConvertConfig
from nas_theseus.convert.stream import GuideStream
from nas_theseus.data import load_data

from ..measure import peak_memory
from ..sizes import Sizes
from ..workload import resnet


def run(sz: Sizes, out: Path) -> dict:
    device = sz.device
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "imgs", sz.stream_images)
        data = load_data("imagefolder", root=str(Path(tmp) / "imgs"), size=32, in_memory=False, augment="standard",
                         workers=sz.stream_workers)
        guide = resnet(data).to(device)
        cfg = ConvertConfig(steps_per_stage=sz.stream_steps, stage_stop="fixed", activations="stream")
        feed = GuideStream(guide, data)
        time_engine(guide, data, feed, 0, dataclasses.replace(cfg, steps_per_stage=2), device)  # warm-up
        with Utilisation(device) as util:
            engine_s = time_engine(guide, data, feed, 0, cfg, device)
        bare_s = bare_streamed(guide, data, 0, cfg, device)[0]
        # the same stage with the guide in channels_last (ConvertConfig.channels_last), last: it converts the guide
        last = GuideStream(guide, data, channels_last=True)
        time_engine(guide, data, last, 0, dataclasses.replace(cfg, steps_per_stage=2), device)
        channels_last_s = time_engine(guide, data, last, 0, cfg, device)
    images = sz.stream_steps * min(cfg.batch_size, len(data.train))
    return {"ok": True, "images": sz.stream_images, "steps": sz.stream_steps, "workers": sz.stream_workers,
            "engine_images_per_s": images / engine_s, "bare_images_per_s": images / bare_s,
            "engine_over_bare": engine_s / bare_s, "gpu_utilisation_pct": util.mean,
            "channels_last_over_default": channels_last_s / engine_s, **peak_memory(device)}


class Utilisation:
    """NVML's GPU utilisation sampled every 100 ms while active (no figure without NVML or a GPU)."""

    def __init__(self, device):
        self.device, self.samples, self._stop = torch.device(device), [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # noqa: BLE001 - no NVML here: no figure
                return
            time.sleep(0.1)

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
