"""Export folders (`write_export`, shared by `export` and `convert --out`): the guard around a user's folder,
self-contained ONNX verified in ONNX Runtime, and an ONNX failure that leaves the rest of the export intact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nas_theseus import export_onnx as onnx_mod
from nas_theseus.convert import Candidate, ConvertConfig
from nas_theseus.convert.baseline import scratch_model
from nas_theseus.errors import UserError
from nas_theseus.export import arch_document, load_exported, write_export
from nas_theseus.targets import BlockSpec

needs_onnx = pytest.mark.skipif(bool(onnx_mod.missing_packages()),
                                reason="ONNX export tests need pip install 'nas-theseus[onnx]'")


@pytest.fixture(scope="module")
def network(mnist1d_guide, mnist1d):
    cand = Candidate((BlockSpec.of("mlp", width=32), None, BlockSpec.of("mlp", width=16)))
    model = scratch_model(mnist1d_guide, cand, ConvertConfig()).eval()
    x = mnist1d.test.x[:16]
    with torch.no_grad():
        y = model(x)
    arch = arch_document(model, guide_source=mnist1d_guide.source, sample_shape=mnist1d.sample_shape)
    return model, arch, x, y


def export(network, out, **kwargs):
    model, arch, x, y = network
    return write_export(model, arch, x, y, out, metrics={"accuracy": 0.5}, **kwargs)


def test_a_users_folder_is_never_replaced(network, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="is not an earlier export"):
        export(network, user)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temp folder left behind

    out = tmp_path / "export"
    export(network, out)
    first = (out / "model.safetensors").read_bytes()
    export(network, out)  # an earlier export is replaced
    assert (out / "model.safetensors").read_bytes() == first
    (out / "notes.txt").write_text("added by the user")
    with pytest.raises(UserError, match="also holds notes.txt"):
        export(network, out)
    assert (out / "notes.txt").read_text() == "added by the user"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine"]


@needs_onnx
def test_onnx_is_one_file_verified_in_onnx_runtime(network, tmp_path, capfd):
    import onnxruntime as ort

    model, _, x, y = network
    capfd.readouterr()
    report = export(network, tmp_path / "export")
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", printed  # the exporter's progress lines stay quiet
    assert report["onnx"]["written"] and report["onnx"]["max_abs_diff"] <= report["onnx"]["tolerance"]
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert names == ["arch.json", "metrics.json", "model.onnx", "model.pt2", "model.safetensors",
                     "verification.json"]
    # the file alone (copied away from its folder) runs, with any batch size, and matches PyTorch
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(tmp_path / "export" / "model.onnx", alone / "model.onnx")
    session = ort.InferenceSession(str(alone / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x[:5].numpy()})[0]
    np.testing.assert_allclose(got, y[:5].numpy(), atol=1e-4)
    assert json.loads((tmp_path / "export" / "verification.json").read_text())["onnx"]["written"]


def test_onnx_without_its_extra_is_one_reason_and_the_rest_is_written(network, tmp_path, monkeypatch):
    real = onnx_mod.importlib.util.find_spec
    monkeypatch.setattr(onnx_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    report = export(network, tmp_path / "export")
    assert not report["onnx"]["written"]
    reason = report["onnx"]["reason"]
    assert "missing: " in reason and "onnxscript" in reason.split("missing: ")[1] and "nas-theseus[onnx]" in reason
    assert (tmp_path / "export" / "model.pt2").is_file() and not (tmp_path / "export" / "model.onnx").exists()
    load_exported(tmp_path / "export")


@needs_onnx
def test_onnx_that_fails_or_differs_is_not_kept(network, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        print("[torch.onnx] Translate the graph into ONNX... ❌")
        raise RuntimeError("unsupported operator aten::weird")

    monkeypatch.setattr(torch.onnx, "export", broken)
    report = export(network, tmp_path / "a")
    assert not report["onnx"]["written"] and "aten::weird" in report["onnx"]["reason"]
    assert (tmp_path / "a" / "model.pt2").is_file()
    assert not [p for p in (tmp_path / "a").iterdir() if "onnx" in p.name]
    monkeypatch.undo()

    monkeypatch.setattr(onnx_mod, "_run_onnxruntime", lambda path, x: np.zeros((len(x), 10), np.float32))
    report = export(network, tmp_path / "b")
    assert not report["onnx"]["written"] and "differ from PyTorch's" in report["onnx"]["reason"]
    assert not (tmp_path / "b" / "model.onnx").exists()
