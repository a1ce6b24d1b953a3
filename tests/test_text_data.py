"""Byte-level text data: the tokenizer, the documented split, windows and next-token targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_theseus.data import ByteTokenizer, Split, load_data, load_text
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


# --- WikiText through Hugging Face `datasets`, from local copies only ---------------------------------------------

# rows as in the Hub's WikiText: one line each, ending in "\n"; the raw files' blank lines are empty rows
_WIKI_ROWS = {
    "train": ["", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : "
              "戦場のヴァルキュリア3 ) is a tactical role @-@ playing video game . \n", "", " = = Gameplay = = \n", "",
              " As with previous Valkyira Chronicles games , the player takes control of a squad . \n"] * 6,
    "validation": ["", " = Homarus gammarus = \n", "", " Homarus gammarus , known as the European lobster . \n"] * 6,
    "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an English film , television and theatre "
             "actor . \n"] * 6,
}


def _wiki_bytes(split: str) -> bytes:
    return "".join(row or "\n" for row in _WIKI_ROWS[split]).encode("utf-8")


def _stream(split) -> bytes:
    """The bytes a split's windows cover (stride == context): the x rows end to end, then the last target."""
    return bytes(torch.cat([split.x.reshape(-1), split.y[-1, -1:]]).tolist())


def _dataset_dict(datasets, columns=("text",)):
    return datasets.DatasetDict({split: datasets.Dataset.from_dict({c: rows for c in columns})
                                 for split, rows in _WIKI_ROWS.items()})


def _write_parquet(datasets, folder, *, splits=("train", "validation", "test")):
    """The Hub's layout: <split>-0000i-of-0000n.parquet, the training split in two shards."""
    folder.mkdir(parents=True)
    for split in splits:
        rows = _WIKI_ROWS[split]
        shards = [rows[:20], rows[20:]] if split == "train" else [rows]
        for i, shard in enumerate(shards):
            datasets.Dataset.from_dict({"text": shard}).to_parquet(
                str(folder / f"{split}-{i:05d}-of-{len(shards):05d}.parquet"))


def test_wikitext_save_to_disk_round_trip(tmp_path, hf_offline):
    was_offline = hf_offline.config.HF_HUB_OFFLINE
    _dataset_dict(hf_offline).save_to_disk(str(tmp_path / "wt"))
    data = load_data("wikitext", path=str(tmp_path / "wt"), context=16)
    assert data.name == "wikitext" and data.num_classes == 256 and data.sample_shape == (16,)
    assert hf_offline.config.HF_HUB_OFFLINE == was_offline  # offline mode is forced only while reading
    for name, split in (("train", data.train), ("validation", data.val), ("test", data.test)):
        raw = _wiki_bytes(name)  # WikiText's own splits, not a 90/5/5 cut
        assert data.config["bytes"][name] == len(raw)
        assert len(split) == -(-(len(raw) - 16) // 16) and split.x.dtype == torch.int64
        assert torch.equal(split.x[:, 1:], split.y[:, :-1])
        covered = _stream(split)
        assert covered == raw[:len(covered)] and len(raw) - len(covered) < 16
    text = ByteTokenizer().decode(_stream(data.train))
    assert text.startswith("\n = Valkyria Chronicles III = \n\n Senjō no Valkyria 3")  # blank lines kept
    assert "戦場のヴァルキュリア3" in text
    cfg = data.config
    assert cfg["format"] == "save_to_disk" and cfg["path"] == str((tmp_path / "wt").resolve()) and cfg["subset"] is None
    assert [f for f, _ in cfg["files"]["train"]] == ["train/data-00000-of-00001.arrow"]
    assert all(size > 0 for files in cfg["files"].values() for _, size in files)


def test_wikitext_parquet_layout_and_max_bytes(tmp_path, hf_offline):
    _write_parquet(hf_offline, tmp_path / "snapshot" / "wikitext-2-raw-v1")
    data = load_data("wikitext", path=str(tmp_path / "snapshot"), subset="wikitext-2-raw-v1", context=8)
    assert data.config["format"] == "parquet" and data.config["subset"] == "wikitext-2-raw-v1"
    assert [f for f, _ in data.config["files"]["train"]] == ["train-00000-of-00002.parquet",
                                                            "train-00001-of-00002.parquet"]
    for name, split in (("train", data.train), ("validation", data.val), ("test", data.test)):
        covered = _stream(split)  # the shards in order, rows joined as lines
        assert data.config["bytes"][name] == len(_wiki_bytes(name)) and covered == _wiki_bytes(name)[:len(covered)]
    # the subset folder itself works too; max_bytes cuts the training split only
    capped = load_data("wikitext", path=str(tmp_path / "snapshot" / "wikitext-2-raw-v1"), context=8, max_bytes=300)
    assert capped.config["bytes"] == {"train": 300, "validation": len(_wiki_bytes("validation")),
                                      "test": len(_wiki_bytes("test"))}
    assert torch.equal(capped.train.x, data.train.x[:len(capped.train)]) and torch.equal(capped.val.x, data.val.x)
    assert capped.fingerprint != data.fingerprint


def test_wikitext_from_the_hub_cache(tmp_path, hf_offline):
    """path left out: the Hub repository's parquet files already in the local hub cache, never a download."""
    with pytest.raises(UserError, match="no local copy of 'wikitext-103-raw-v1'.*nothing is downloaded"):
        load_data("wikitext")
    repo = tmp_path / "hf-hub-cache" / "datasets--Salesforce--wikitext"
    _write_parquet(hf_offline, tmp_path / "files")
    snapshot = repo / "snapshots" / "0123abc" / "wikitext-103-raw-v1"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, f in enumerate(sorted((tmp_path / "files").iterdir())):  # as the hub cache stores them: links to blobs
        f.rename(repo / "blobs" / f"blob{i}")
        (snapshot / f.name).symlink_to(f"../../../blobs/blob{i}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    data = load_data("wikitext", context=8)
    assert data.config["format"] == "hub-cache" and data.config["path"].endswith("0123abc/wikitext-103-raw-v1")
    covered = _stream(data.test)
    assert data.config["bytes"]["test"] == len(_wiki_bytes("test")) and covered == _wiki_bytes("test")[:len(covered)]
    assert data.config["files"]["test"][0][0] == "test-00000-of-00001.parquet"


def test_wikitext_bad_input(tmp_path, hf_offline):
    with pytest.raises(UserError, match="no such directory"):
        load_data("wikitext", path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a DatasetDict saved with save_to_disk"):
        load_data("wikitext", path=str(tmp_path / "empty"))
    _dataset_dict(hf_offline, columns=("content",)).save_to_disk(str(tmp_path / "nocol"))
    with pytest.raises(UserError, match="no 'text' column \\(columns: content\\)"):
        load_data("wikitext", path=str(tmp_path / "nocol"))
    hf_offline.Dataset.from_dict({"text": ["a\n"]}).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(UserError, match="holds one saved Dataset"):
        load_data("wikitext", path=str(tmp_path / "one"))
    _write_parquet(hf_offline, tmp_path / "partial", splits=("train", "validation"))
    with pytest.raises(UserError, match="none for test"):
        load_data("wikitext", path=str(tmp_path / "partial"))
    _dataset_dict(hf_offline).save_to_disk(str(tmp_path / "wt"))
    with pytest.raises(UserError, match="wikitext validation split of .* shorter than one window"):
        load_data("wikitext", path=str(tmp_path / "wt"), context=1000)
    with pytest.raises(UserError, match="unknown option 'val_fraction'"):  # WikiText has its own splits
        load_data("wikitext", path=str(tmp_path / "wt"), val_fraction=0.1)


def test_wikitext_without_datasets(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(UserError, match=r"pip install 'nas-theseus\[datasets\]'"):
        load_data("wikitext", path=str(tmp_path))


def _rows(split) -> tuple[torch.Tensor, torch.Tensor]:
    return split.take(torch.arange(len(split)))


def test_a_text_file_read_through_a_memory_map_gives_the_rows_held_in_memory(tmp_path):
    from nas_theseus.data.text import TokenWindows

    path = tmp_path / "corpus.txt"
    path.write_text(("Ünïcode lines of text, " * 40 + "\n") * 30, encoding="utf-8")
    held = load_text(source=str(path), context=16, in_memory=True)
    mapped = load_text(source=str(path), context=16, in_memory=False)
    assert isinstance(mapped.train, TokenWindows) and mapped.config["in_memory"] is False
    for a, b in ((held.train, mapped.train), (held.val, mapped.val), (held.test, mapped.test)):
        assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(_rows(a), _rows(b)))
    order = torch.randperm(len(held.train), generator=torch.Generator().manual_seed(0))
    for a, b in zip(held.train.batches(32, order=order), mapped.train.batches(32, order=order)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    first = mapped.fingerprint
    path.write_text(path.read_text(encoding="utf-8").replace("lines", "LINES"), encoding="utf-8")
    assert load_text(source=str(path), context=16, in_memory=False).fingerprint != first


def test_bad_text_files_are_one_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(("café " * 100).encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8 \(byte 3"):
        load_text(source=str(bad), in_memory=False)
    short = tmp_path / "short.txt"
    short.write_text("a" * 400)
    with pytest.raises(UserError, match="text val split of 20 bytes is shorter than one window"):
        load_text(source=str(short), context=64, in_memory=False)
    with pytest.raises(UserError, match="in_memory must be"):
        load_text(source=str(short), in_memory="maybe")


def test_wikitext_read_through_a_memory_map_gives_the_rows_held_in_memory(tmp_path, hf_offline):
    _dataset_dict(hf_offline).save_to_disk(str(tmp_path / "wt"))
    held = load_data("wikitext", path=str(tmp_path / "wt"), context=16, in_memory=True)
    mapped = load_data("wikitext", path=str(tmp_path / "wt"), context=16, in_memory=False)
    for a, b in ((held.train, mapped.train), (held.val, mapped.val), (held.test, mapped.test)):
        assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(_rows(a), _rows(b)))


def test_the_pydoc_text_cut_per_batch_holds_the_windows_held_in_memory():
    """in_memory = false takes the path a large corpus takes (TokenWindows) with the same rows."""
    from nas_theseus.data.text import TokenWindows

    lazy, held = load_text(in_memory=False), load_text()
    assert isinstance(lazy.train, TokenWindows) and isinstance(held.train, Split)
    order = torch.randperm(len(held.train), generator=torch.Generator().manual_seed(0))[:64]
    a, b = next(lazy.train.batches(64, order=order)), next(held.train.batches(64, order=order))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert load_text(in_memory=False).fingerprint == lazy.fingerprint != held.fingerprint
