"""Where a deploy network's latency is measured: one registered class per runtime.

* ``eager``: the PyTorch module as is (``torch.inference_mode``).
* ``compile``: ``torch.compile`` of the module (Inductor; on the CPU it needs a C++ compiler); compilation
  happens in the warm-up and its time is recorded, not timed.
* ``onnxruntime``: the network exported to ONNX the way ``nas-theseus export`` writes ``model.onnx`` (and
  checked against PyTorch the same way), run in an ONNX Runtime CPU session with the measurement's thread
  count (``intra_op_num_threads``); needs the ``onnx`` extra.

A runtime ``prepare(model, x, threads)``s a callable that runs one forward pass on ``x``; the timing loop
(:func:`nas_theseus.measure.latency.timed_runs`) is the same for every runtime.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..utils.registry import Registry

RUNTIMES: Registry = Registry("latency runtime")


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    return RUNTIMES.add(cls.name, cls)


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.lookup(name)()


class Runtime:
    name = ""
    cpu_only = False

    def prepare(self, model: nn.Module, x: torch.Tensor, threads: int) -> tuple[Callable[[], object], dict]:
        """A callable that runs ``model`` on ``x`` in this runtime, and what preparing it recorded."""
        raise NotImplementedError


@register_runtime
class Eager(Runtime):
    """The PyTorch module as is."""

    name = "eager"

    def prepare(self, model, x, threads):
        return (lambda: model(x)), {}


@register_runtime
class Compiled(Runtime):
    """``torch.compile`` (Inductor); the first calls compile."""

    name = "compile"

    def prepare(self, model, x, threads):
        compiled = torch.compile(model, dynamic=False)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                compiled(x)
        except Exception as e:  # noqa: BLE001 - no compiler, an op Inductor cannot lower: say so in one line
            raise UserError(f"torch.compile could not compile the network for latency ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); use "
                            f"latency.runtime = \"eager\"") from None
        return (lambda: compiled(x)), {"compile_s": round(time.perf_counter() - t0, 3)}


@register_runtime
class OnnxRuntime(Runtime):
    """ONNX Runtime on the network as ``nas-theseus export`` writes it (the ``onnx`` extra)."""

    name = "onnxruntime"
    cpu_only = True

    def prepare(self, model, x, threads):
        import numpy as np

        from ..export_onnx import export_onnx

        with torch.no_grad():
            y = model(x)
        with tempfile.TemporaryDirectory(prefix="nas-theseus-latency-") as tmp:
            t0 = time.perf_counter()
            result = export_onnx(model.cpu(), x.cpu(), y.cpu(), Path(tmp))  # written and checked as in an export
            if not result["written"]:
                raise UserError(f"latency.runtime = \"onnxruntime\": {result['reason']}")
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(Path(tmp) / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])  # loaded: the file may go
            export_s = time.perf_counter() - t0
        feed = {"x": np.ascontiguousarray(x.detach().cpu().numpy())}
        return (lambda: session.run(None, feed)), {"export_s": round(export_s, 3),
                                                   "onnx_max_abs_diff": result["max_abs_diff"]}
