"""The packs in the cache: listed by last use, and removed by `nas-theseus data clean` when unused, beyond a size,
or killed half way; never a file or folder that is not a pack's, never a pack in use."""

from __future__ import annotations

import os
import time

import pytest
from test_image_folder import write_folder

from nas_theseus.cli import main
from nas_theseus.data import load_data
from nas_theseus.data.pack_store import clean, list_packs
from nas_theseus.utils.locks import file_lock

DAY = 86400


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _pack(tmp_path, size: int):
    root = tmp_path / f"imgs{size}"
    if not root.exists():
        write_folder(root)
    return load_data("imagefolder", root=str(root), size=size, packed=True).config["packed"]


def _age(folder, days: float) -> None:
    stamp = os.path.join(folder, "verified.json")
    t = time.time() - days * DAY
    os.utime(stamp, (t, t))


def test_packs_are_listed_least_recently_used_first_and_an_open_is_a_use(tmp_path, cache, capsys):
    a, b = _pack(tmp_path, 6), _pack(tmp_path, 8)
    _age(a, 3)
    _age(b, 5)
    assert [str(p.folder) for p in list_packs()] == [b, a]
    _pack(tmp_path, 8)  # opened again: used now
    assert [str(p.folder) for p in list_packs()] == [a, b]
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "last used 3.0 days ago" in out[0] and "last used 0.0 days ago" in out[1]
    assert out[-1].startswith("2 packs, ") and out[-1].endswith(str(cache / "packed"))


def test_clean_removes_only_unused_packs_and_only_their_files(tmp_path, cache, capsys):
    old, recent = _pack(tmp_path, 6), _pack(tmp_path, 8)
    _age(old, 40)
    _age(recent, 2)
    mine = cache / "packed" / "notes.txt"
    mine.write_text("a user's file beside the packs")
    other = cache / "packed" / "my-folder"
    other.mkdir()
    (other / "train.npy").write_bytes(b"not ours: the folder is not named as a pack")
    assert main(["data", "clean", "--unused-for", "30", "--dry-run"]) == 0
    assert "would remove 1 of 2 packs" in capsys.readouterr().out and os.path.isdir(old)
    assert main(["data", "clean", "--unused-for", "30"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 of 2 packs")
    assert not os.path.exists(old) and os.path.isdir(recent)
    assert mine.exists() and (other / "train.npy").exists()


def test_a_pack_folder_holding_other_files_keeps_them_and_itself(tmp_path, cache):
    folder = _pack(tmp_path, 6)
    _age(folder, 40)
    (tmp_path / "cache" / "packed" / os.path.basename(folder) / "README").write_text("mine")
    clean(unused_for_days=30, max_size=None, dry_run=False)
    assert sorted(os.listdir(folder)) == ["README"]


def test_max_size_removes_the_least_recently_used_until_the_rest_fit(tmp_path, cache):
    small, large = _pack(tmp_path, 6), _pack(tmp_path, 8)
    _age(large, 2)  # the older one goes first, though it is the larger
    sizes = {str(p.folder): p.bytes for p in list_packs()}
    line = clean(unused_for_days=None, max_size=sizes[small], dry_run=False)
    assert line.startswith("removed 1 of 2 packs")
    assert not os.path.exists(large) and os.path.isdir(small)


def test_a_pack_killed_half_way_goes_after_an_hour_and_a_pack_in_use_stays(tmp_path, cache):
    folder = _pack(tmp_path, 6)
    os.unlink(os.path.join(folder, "manifest.json"))  # as a pack killed before its manifest leaves it
    assert clean(unused_for_days=None, max_size=None, dry_run=False).startswith("removed 0 of 1")
    t = time.time() - 2 * 3600
    for f in os.listdir(folder):
        os.utime(os.path.join(folder, f), (t, t))
    key = os.path.basename(folder).rsplit("-", 1)[1]
    with file_lock(cache / "locks" / f"pack-{key}.lock"):  # being packed or opened now
        line = clean(unused_for_days=None, max_size=None, dry_run=False)
    assert line == "removed 0 of 1 packs, 0 B freed; 1 in use or used meanwhile, kept" and os.path.isdir(folder)
    assert clean(unused_for_days=None, max_size=None, dry_run=False).startswith("removed 1 of 1")
    assert not os.path.exists(folder)


def test_unused_for_must_be_a_number_of_days(cache, capsys):
    assert main(["data", "clean", "--unused-for", "-1"]) == 2
    assert "--unused-for must be a number of days >= 0" in capsys.readouterr().err
