"""hf: guides (GPT-2 family from a config table or a local directory), offline, on byte-level text."""

from __future__ import annotations

import pytest
import torch

from nas_theseus.data import load_data
from nas_theseus.errors import UserError
from nas_theseus.guides import guide_metrics, load_guide

TINY = dict(n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def text():
    return load_data("text", context=32, max_bytes=60_000)


def test_gpt2_from_a_config_table_is_a_causal_chain(text):
    guide = load_guide("hf:gpt2", text, weights="random", **TINY)
    assert guide.part_names == ["parts.0", "parts.1"] and guide.shapes == [(32, 32)] * 3
    assert guide.output_shape == (32, 256)
    ids = text.val.x[:4]
    acts = guide.activations(ids)
    changed = ids.clone()
    changed[:, 20:] = 0
    for a, b in zip(acts, guide.activations(changed)):
        assert torch.allclose(a[:, :20], b[:, :20], atol=1e-5)  # nothing before t sees tokens after t
    grouped = load_guide("hf:gpt2", text, weights="random", group=2, **TINY)
    assert grouped.part_names == ["parts.0"]


def test_gpt2_trains_once_and_beats_uniform(text):
    guide = load_guide("hf:gpt2", text, fit={"max_epochs": 2}, progress=False, **TINY)
    metrics = guide_metrics(guide)
    assert metrics is not None and metrics["epochs"] == 2
    from nas_theseus.training import evaluate

    _, loss = evaluate(guide.module, text.val)
    assert loss < 5.0  # uniform over 256 bytes is ln 256 = 5.55 nats


def test_local_directory_and_bad_input(text, tmp_path, digits):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    saved = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=32, tie_word_embeddings=False, **TINY))
    saved.save_pretrained(tmp_path / "tiny-gpt2")
    guide = load_guide(f"hf:{tmp_path / 'tiny-gpt2'}", text, weights="pretrained")
    with torch.no_grad():
        assert torch.allclose(guide.module(text.val.x[:2]), saved.eval()(text.val.x[:2]).logits, atol=1e-5)
    # where the folder lies is not part of the guide: a copy elsewhere has the same identity, and the
    # architecture recorded in the source rebuilds the module once the folder is gone
    import shutil

    from nas_theseus.guides.sources import rebuild_guide_module

    shutil.copytree(tmp_path / "tiny-gpt2", tmp_path / "other" / "tiny-gpt2")
    assert load_guide(f"hf:{tmp_path / 'other' / 'tiny-gpt2'}", text, weights="pretrained").identity == guide.identity
    shutil.rmtree(tmp_path / "tiny-gpt2")
    shutil.rmtree(tmp_path / "other")
    rebuilt = rebuild_guide_module(guide.source)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in guide.module.parameters())
    with pytest.raises(UserError, match="give 'hf:gpt2'"):
        load_guide("hf:gpt-3", text, weights="random")
    with pytest.raises(UserError, match="read token sequences"):
        load_guide("hf:gpt2", digits, weights="random", **TINY)
    with pytest.raises(UserError, match="must divide"):
        load_guide("hf:gpt2", text, weights="random", group=3, **TINY)
    with pytest.raises(UserError, match="bad hf:gpt2 config option 'n_lyer' \\(did you mean 'n_layer'\\?\\)"):
        load_guide("hf:gpt2", text, weights="random", n_embd=32, n_layer=2, n_head=2, n_lyer=3)
