"""Byte-level text data: the tokenizer, the documented split, windows and next-token targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_theseus.data import ByteTokenizer, load_data
from nas_theseus.errors import UserError
from nas_theseus.training import FitConfig, evaluate, fit_classifier


def test_byte_tokenizer_round_trips_unicode():
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓")
    assert ids.dtype == torch.int64 and int(ids.max()) < 256 and len(ids) == len("héllo ✓".encode())
    assert tok.decode(ids) == "héllo ✓"


def test_pydoc_corpus_split_and_windows():
    data = load_data("text", context=32)
    n = data.config["bytes"]
    assert 400_000 < n < 600_000 and data.num_classes == 256 and data.sample_shape == (32,)
    # 90 / 5 / 5 by position, windows of context+1 every `context` bytes
    n_train = n - 2 * int(n * 0.05)
    assert len(data.train) == -(-(n_train - 32) // 32)  # ceil((bytes - context) / stride) windows
    assert torch.equal(data.train.x[:, 1:], data.train.y[:, :-1])  # y is x shifted by one
    assert torch.equal(data.train.x[1, 0], data.train.y[0, -1])  # consecutive windows share one byte
    first = ByteTokenizer().decode(data.train.x[0])
    assert first == ByteTokenizer().decode(ByteTokenizer().encode(first))
    assert not torch.equal(data.val.x[0], data.train.x[0])


def test_text_file_and_bad_input(tmp_path):
    (tmp_path / "t.txt").write_text("abcdefghij" * 200, encoding="utf-8")
    data = load_data("text", source=str(tmp_path / "t.txt"), context=8, stride=4)
    assert data.config["bytes"] == 2000 and data.sample_shape == (8,)
    assert torch.equal(data.train.x[1, :4], data.train.x[0, 4:])  # stride 4 < context 8: overlapping windows
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        load_data("text", source=str(tmp_path / "bin.txt"))
    with pytest.raises(UserError, match="no such file"):
        load_data("text", source=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="shorter than one window"):
        load_data("text", source=str(tmp_path / "t.txt"), context=500)


class _Bigram(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(256, 256)

    def forward(self, x):
        return self.table(x)


def test_next_token_training_and_per_token_evaluation():
    data = load_data("text", context=16, max_bytes=40_000)
    model = _Bigram()
    acc0, loss0 = evaluate(model, data.val)
    report = fit_classifier(model, data, FitConfig(max_epochs=8, patience=8, lr=0.1, monitor="loss"),
                            progress=False)
    acc, loss = evaluate(model, data.val)
    assert loss < loss0 - 1.0 and acc > acc0 and report.best_val_loss == pytest.approx(loss)
    assert torch.exp(torch.tensor(loss)) < 20  # a bigram model of English bytes: perplexity well under 256
