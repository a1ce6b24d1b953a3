"""stream: the guide on the fly, ResNet-18 layer1 -> MLP(256), `standard` augmentation, a CIFAR-sized folder of
images read three ways: PNGs decoded by Pillow in DataLoader workers (images/s, GPU utilisation, the stage ÷ a
bare loop doing the same work, and the guide in channels_last ÷ without); the same images packed
(``packed = true``: uint8 shards, augmented on the device; the pack's own seconds); and the same pixels as JPEGs
decoded a batch at a time on the GPU (``decode = "device"``) and, for comparison, by Pillow. Goal of issue 35:
packed ≥ 80,000 images/s with the GPU ≥ 50 % busy."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import torch
from image_pack import as_jpeg
from scale import write_folder
from stage_loop import time_engine
from stream_throughput import bare_streamed

from nas_theseus.convert import ConvertConfig
from nas_theseus.convert.stream import GuideStream
from nas_theseus.data import load_data
from nas_theseus.data.jpeg_files import jpeg_decoder

from ..measure import peak_memory
from ..sizes import Sizes
from ..workload import resnet


def run(sz: Sizes, out: Path) -> dict:
    device = sz.device
    with tempfile.TemporaryDirectory() as tmp:
        png, jpeg = Path(tmp) / "png", Path(tmp) / "jpeg"
        write_folder(png, sz.stream_images)
        data = load_data("imagefolder", root=str(png), size=32, in_memory=False, augment="standard",
                         workers=sz.stream_workers)
        guide = resnet(data).to(device)
        cfg = ConvertConfig(steps_per_stage=sz.stream_steps, stage_stop="fixed", activations="stream")
        record = {"ok": True, "images": sz.stream_images, "steps": sz.stream_steps, "workers": sz.stream_workers,
                  **_timed(guide, data, cfg, device, "engine")}
        record["bare_images_per_s"] = _images(cfg, data, sz.stream_steps) / bare_streamed(guide, data, 0, cfg,
                                                                                          device)[0]
        record["engine_over_bare"] = record["bare_images_per_s"] / record["engine_images_per_s"]  # s ÷ s
        # the same stage with the guide in channels_last (ConvertConfig.channels_last): it converts the guide
        last = _timed(guide, data, cfg, device, "last", channels_last=True)
        record["channels_last_over_default"] = record["engine_images_per_s"] / last["last_images_per_s"]
        guide = resnet(data).to(device)  # back in the default layout
        fast = dataclasses.replace(cfg, steps_per_stage=sz.stream_fast_steps)
        t0 = time.perf_counter()
        packed = load_data("imagefolder", root=str(png), size=32, packed=True, augment="standard",
                           workers=sz.stream_workers)
        record["pack_s"] = time.perf_counter() - t0
        record.update(_timed(guide, packed, fast, device, "packed"))
        as_jpeg(png, jpeg)
        for decode in ("device", "pillow"):
            jpegs = load_data("imagefolder", root=str(jpeg), size=32, in_memory=False, augment="standard",
                              workers=sz.stream_workers, decode=decode)
            record.update(_timed(guide, jpegs, fast if decode == "device" else cfg, device, f"jpeg_{decode}"))
    return {**record, "stream_fast_steps": sz.stream_fast_steps, "jpeg_decoder": jpeg_decoder().library,
            **peak_memory(device)}


def _images(cfg: ConvertConfig, data, steps: int) -> int:
    return steps * min(cfg.batch_size, len(data.train))


def _timed(guide, data, cfg: ConvertConfig, device, name: str, channels_last: bool = False) -> dict:
    """The streamed stage over ``data``: ``NAME_images_per_s`` and ``NAME_gpu_pct`` (after a 2-step warm-up)."""
    feed = GuideStream(guide, data, channels_last=channels_last)
    time_engine(guide, data, feed, 0, dataclasses.replace(cfg, steps_per_stage=2), device)  # warm-up
    with Utilisation(device) as util:
        seconds = time_engine(guide, data, feed, 0, cfg, device)
    key = "gpu_utilisation_pct" if name == "engine" else f"{name}_gpu_pct"
    return {f"{name}_images_per_s": _images(cfg, data, cfg.steps_per_stage) / seconds, key: util.mean}


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
