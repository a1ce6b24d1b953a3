"""torch.compile with a fallback that says so (utils/compiling.py): where the compiler fails (in a forward, or in
a backward it compiles lazily), the conversion goes on eagerly with one warning and records where; the result is
the one the same conversion gets from a compiler that works; an error of the network's own code is raised as is.
The failures are real ones of torch.compile's machinery, from backends that raise (no GPU is needed)."""

from __future__ import annotations

import warnings

import pytest
import torch
from functorch.compile import make_boxed_func
from torch import nn
from torch._dynamo.backends.common import aot_autograd

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_mnist1d
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig
from nas_theseus.utils import compiling
from nas_theseus.utils.compiling import Compiler, raised_by_compiler

MLP8 = BlockSpec.of("mlp", width=8)


def _graph(gm, example_inputs):
    return make_boxed_func(gm.forward)  # runs the traced graph as it is


def _broken(gm, example_inputs):
    raise RuntimeError("this compiler cannot compile")


BACKENDS = {
    "works": aot_autograd(fw_compiler=_graph, bw_compiler=_graph),
    "forward fails": aot_autograd(fw_compiler=_broken, bw_compiler=_graph),
    "backward fails": aot_autograd(fw_compiler=_graph, bw_compiler=_broken),  # compiled at the first backward
}


@pytest.fixture(scope="module")
def small_data():
    return load_mnist1d(num_samples=600)


def _config():
    return ConvertConfig(steps_per_stage=6, batch_size=32, probe_size=64, refit_every=3, compile=True,
                         finetune=FitConfig(max_epochs=2, patience=2))


def _convert(data, backend, monkeypatch):
    monkeypatch.setattr(compiling, "compile_kwargs", lambda compile: {"backend": BACKENDS[backend]})
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(tiny_guide("conv1d"), Candidate((MLP8, None, MLP8)), data, _config(), progress=False)
    return result, [str(w.message) for w in caught if "torch.compile (compile" in str(w.message)]


@pytest.mark.parametrize("backend, where", [("forward fails", "the forward of Sequential"),  # the MLP block
                                            ("backward fails", "stage 1, step 1")])
def test_a_failing_compiler_falls_back_once_and_the_conversion_is_the_same(small_data, monkeypatch, backend, where):
    works, quiet = _convert(small_data, "works", monkeypatch)
    assert quiet == [] and works.compile_failed == "" and "compile_failed" not in works.summary()
    fell, said = _convert(small_data, backend, monkeypatch)
    assert len(said) == 1, said  # one warning for the whole conversion: later stages and fine-tuning run eagerly
    assert said[0].startswith(f"conversion: torch.compile (compile = true) failed in {where}")
    assert ": RuntimeError: this compiler cannot compile;" in said[0] and "run again eagerly" in said[0]
    assert fell.compile_failed.startswith(where) and fell.summary()["compile_failed"] == fell.compile_failed
    # nothing lost: the failed call was run again, so every stage and fine-tuning are the working compiler's
    assert [s.loss_curve for s in fell.stages] == [s.loss_curve for s in works.stages]
    assert fell.finetune.train_loss == works.finetune.train_loss
    assert fell.val_accuracy == works.val_accuracy


def test_fine_tuning_alone_falls_back_with_its_own_name(small_data, monkeypatch):
    from nas_theseus.training import fit_classifier

    monkeypatch.setattr(compiling, "compile_kwargs", lambda compile: {"backend": BACKENDS["backward fails"]})
    torch._dynamo.reset()
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
    with pytest.warns(UserWarning, match=r"^train: torch.compile \(compile = \"reduce-overhead\"\) failed in train "
                                         r"step 1: RuntimeError"):
        report = fit_classifier(model, small_data, FitConfig(max_epochs=1), progress=False,
                                compile="reduce-overhead")
    assert report.steps > 1 and all(map(torch.isfinite, map(torch.tensor, report.train_loss)))


class _Broken(nn.Module):
    def forward(self, x):
        raise ValueError("the network's own bug")


def test_an_error_of_the_network_itself_is_raised_as_it_is(monkeypatch):
    monkeypatch.setattr(compiling, "compile_kwargs", lambda compile: {"backend": "eager"})
    torch._dynamo.reset()
    compiler, net = Compiler(True), _Broken()
    compiler.in_place([net])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback is announced: the eager rerun raised the same error
        with pytest.raises(ValueError, match="the network's own bug"):
            compiler.run(lambda: net(torch.zeros(2)), "step 1")
    with pytest.raises(KeyError):  # not from the compiler: raised once, not rerun
        calls = []
        compiler.run(lambda: calls.append(1) or {}["missing"], "step 2")
    assert calls == [1]


def test_raised_by_compiler_reads_the_traceback_and_its_causes():
    def ours():
        raise RuntimeError("plain")

    with pytest.raises(RuntimeError) as plain:
        ours()
    assert not raised_by_compiler(plain.value)
    torch._dynamo.reset()
    with pytest.raises(Exception) as compiled:
        torch.compile(nn.Linear(2, 2), backend=BACKENDS["forward fails"])(torch.zeros(1, 2))
    assert raised_by_compiler(compiled.value)
    try:  # an error raised from a compiler's, as a wrapper would
        try:
            raise compiled.value
        except Exception as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert raised_by_compiler(wrapped)


def test_off_compiles_nothing_and_the_fallback_uncompiles_in_place():
    off = Compiler(False)
    net = nn.Linear(2, 2)
    off.in_place([net])
    assert off.forward(net) is net and net._compiled_call_impl is None
    assert off.run(lambda: 7, "step") == 7
    on = Compiler(True)
    on.in_place([net])
    assert net._compiled_call_impl is not None
    on._off()
    assert net._compiled_call_impl is None and not on.on and on.forward(net) is net
