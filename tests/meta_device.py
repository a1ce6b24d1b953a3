"""The ``meta`` device standing in for a GPU on the CPU: a run there computes every shape and stops at the first
read of a value, so a test can run a study's code paths on a "device" and see where they stop.

How a run fails instead: a module called with a batch on another device than its own weights (the module guard
of :func:`device_guard`), an operation given tensors on two devices (its operation guard; a copy from one device
to another is the one operation that may), or PyTorch's own "expected device" errors. :func:`until_a_value_is_read`
names where a run stopped, so a test asserts that it got as far as it should (the stage loop's first loss read,
say), not merely that it stopped somewhere on the meta device.
"""

from __future__ import annotations

import contextlib
import itertools
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas_theseus.utils.devices import devices_of

META = torch.device("meta")
# the messages of a value read on the meta device (a copy to the host, .item(), a Python bool or float)
VALUE_READS = ("Cannot copy out of meta tensor", "cannot be called on meta tensors", "on meta tensors")
# operations that move data between devices (the one legitimate mix of devices in one call)
COPIES = {"aten::_to_copy", "aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize", "aten::lift_fresh",
          "aten::lift_fresh_copy", "aten::to"}


class MixedDevices(AssertionError):
    pass


class _SameDevice(TorchDispatchMode):
    """Every operation's tensor arguments on one device (0-d CPU tensors, which PyTorch reads as numbers,
    aside); copies between devices allowed."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._schema.name not in COPIES:
            found = {t.device for t in tree_leaves((args, kwargs))
                     if isinstance(t, torch.Tensor) and not (t.dim() == 0 and t.device.type == "cpu")}
            if len(found) > 1:
                raise MixedDevices(f"{func._schema.name} was given tensors on {sorted(map(str, found))}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def device_guard():
    """Inside the block, every module call checks that its tensor inputs are on the device of its own parameters
    and buffers, and every operation that its tensors are on one device; yields the list of module classes
    called (so a test can tell how far a forward got)."""
    called = []

    def pre_hook(module, args):
        own = {t.device for t in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False))}
        given = {a.device for a in args if isinstance(a, torch.Tensor)}
        if own and given and own != given:
            raise MixedDevices(f"{type(module).__name__} on {own} was called with inputs on {given}")
        called.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        with _SameDevice():
            yield called
    finally:
        handle.remove()


def until_a_value_is_read(fn) -> str | None:
    """Run ``fn`` (on meta tensors) until it reads a value; returns where, as ``"file.py:function"`` of the
    innermost frame of nas_theseus, or None when ``fn`` read none. A device mismatch raises
    :class:`MixedDevices`; any other error is raised as it is."""
    try:
        fn()
    except MixedDevices:
        raise
    except Exception as e:  # noqa: BLE001 - told apart below: a value read, a device mismatch, anything else
        for cause in _chain(e):  # a value read that the code wrapped in an error of its own counts too
            if isinstance(cause, MixedDevices):
                raise cause from e
            text = str(cause)
            if "expected device" in text or "same device" in text:
                raise MixedDevices(text) from e
            if isinstance(cause, (NotImplementedError, RuntimeError)) and any(m in text for m in VALUE_READS):
                return _where(cause)
        raise
    return None


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _where(e: BaseException) -> str:
    """``file.py:function`` of the innermost frame of nas_theseus; a shared helper of ``nas_theseus/utils`` (the
    loss window both training loops read through) is named with its caller: ``loss_window.py:read from
    stages.py:_window_sum``."""
    ours = [f for f in traceback.extract_tb(e.__traceback__) if "/nas_theseus/" in f.filename.replace("\\", "/")]
    if not ours:
        return "outside nas_theseus"
    where = _frame(ours[-1])
    if "/nas_theseus/utils/" in ours[-1].filename.replace("\\", "/") and len(ours) > 1:
        where += f" from {_frame(ours[-2])}"
    return where


def _frame(frame) -> str:
    return f"{frame.filename.replace(chr(92), '/').rsplit('/', 1)[-1]}:{frame.name}"


def one_device(module: torch.nn.Module) -> torch.device:
    found = devices_of(module)
    assert len(found) == 1, f"{type(module).__name__} is on several devices: {found}"
    return found.pop()
