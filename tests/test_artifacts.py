"""A shared artifact store: trial networks, stage checkpoints and trained guides seen from every machine."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import tarfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from workers import finished, load_study, run_worker, start_worker, write_study

from nas_theseus.cli import main
from nas_theseus.convert.checkpoints import CheckpointStore
from nas_theseus.errors import UserError
from nas_theseus.utils.artifacts import ArtifactError, ArtifactStore, seal, unseal

# --- the store itself ----------------------------------------------------------------------------------------


def test_seal_checks_the_payload():
    assert unseal(seal(b"weights")) == b"weights"
    with pytest.raises(ValueError, match="sha256"):
        unseal(seal(b"weights")[:-1] + b"X")


def test_store_urls_are_checked_in_one_line(tmp_path):
    store = ArtifactStore.open(f"file://{tmp_path}/new/store")
    assert (tmp_path / "new" / "store").is_dir()
    assert ArtifactStore.open(str(tmp_path)).url == str(tmp_path)  # a plain absolute path
    for url, says in [("relative/dir", "absolute path"), ("file://host/x", "local path"),
                      ("gs://bucket", "unknown scheme"), ("s3:///prefix", "name the bucket")]:
        with pytest.raises(UserError, match=says):
            ArtifactStore.open(url)
    with pytest.raises(UserError, match="no folder .* on this machine .*mounted"):
        ArtifactStore.open(f"file://{tmp_path}/not/mounted", create=False)  # a reader never makes the folder
    assert not (tmp_path / "not").exists()
    for bad in ("../outside", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    assert not (tmp_path / "new" / "outside").exists()


def test_file_store_writes_nested_names_atomically(tmp_path):
    store = ArtifactStore.open(str(tmp_path))
    store.put("checkpoints/abc.ckpt", b"1" * 1000)
    store.put("checkpoints/abc.ckpt", b"2" * 10)
    assert store.get("checkpoints/abc.ckpt") == b"2" * 10
    assert store.get("checkpoints/missing.ckpt") is None
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["abc.ckpt"]  # no temp file left


def test_a_store_this_machine_cannot_use_is_one_line(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    store.check("host-a")
    assert (tmp_path / "store" / "hosts" / "host-a").read_text().startswith("host-a ")
    broken = ArtifactStore.open(str(tmp_path / "other"))
    (tmp_path / "other" / "hosts").write_text("a file where the store needs a folder")
    with pytest.raises(UserError, match=r"other is not usable from this machine \((FileExists|NotADirectory)Error"):
        broken.check("host-b")


def _trial():
    study = optuna.create_study()
    return study, study.ask()


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "trials" / "0"
    (folder / "guide_code").mkdir(parents=True)
    (folder / "arch.json").write_text('{"a": 1}')
    (folder / "model.safetensors").write_bytes(b"\0" * 5000)
    (folder / "guide_code" / "net.py").write_text("x = 1\n")
    (folder / ".arch.XYZ.tmp.json").write_text("a killed writer's temp file")
    return folder


def test_a_trial_folder_round_trips_and_is_linked_to_its_trial(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    study, trial = _trial()
    info = store.upload_folder(_folder(tmp_path), name="trial-0", trial=trial)
    meta = optuna.artifacts.get_all_artifact_meta(trial)  # what the dashboard lists
    assert [(m.artifact_id, m.filename) for m in meta] == [(info["artifact_id"], "trial-0.tar")]
    dest = tmp_path / "elsewhere" / "trials" / "0"
    store.download_folder(info, dest, what="trial 0", fix="do X")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "arch.json", "guide_code/net.py", "model.safetensors"]
    assert (dest / "model.safetensors").read_bytes() == b"\0" * 5000
    assert [p.name for p in dest.parent.iterdir()] == ["0"]  # the download's temp folder is gone


def test_a_missing_or_corrupted_trial_artifact_is_one_clear_line(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    _, trial = _trial()
    info = store.upload_folder(_folder(tmp_path), name="trial-0", trial=trial)
    path = tmp_path / "store" / info["artifact_id"]
    raw = path.read_bytes()
    path.write_bytes(raw[:100] + b"X" + raw[101:])
    dest = tmp_path / "b" / "0"
    with pytest.raises(ArtifactError, match=r"trial 0 in artifact store .* is corrupted \(artifact .*sha256.*; do X"):
        store.download_folder(info, dest, what="trial 0", fix="do X")
    path.unlink()
    with pytest.raises(ArtifactError, match="trial 0 is not in artifact store .*; do X"):
        store.download_folder(info, dest, what="trial 0", fix="do X")
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_an_archive_that_would_write_outside_its_folder_is_refused(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    store.put("evil.tar", buf.getvalue())
    import hashlib

    info = {"artifact_id": "evil.tar", "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    with pytest.raises(ArtifactError, match="cannot be unpacked"):
        store.download_folder(info, tmp_path / "w" / "trials" / "0", what="trial 0", fix="do X")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_stage_checkpoints_cross_machines_through_the_store(tmp_path):
    remote = ArtifactStore.open(str(tmp_path / "store"))
    a = CheckpointStore(tmp_path / "a", remote=remote)
    a.save("k1", {"state": {"w": torch.ones(3)}})
    b = CheckpointStore(tmp_path / "b", remote=remote)
    assert torch.equal(b.load("k1")["state"]["w"], torch.ones(3))
    assert (tmp_path / "b" / "k1.ckpt").read_bytes() == (tmp_path / "a" / "k1.ckpt").read_bytes()  # kept here
    assert b.load("missing") is None
    # a damaged copy in the store: one warning, and the stage is trained here
    a.save("k2", {"state": {"w": torch.zeros(2)}})
    stored = tmp_path / "store" / "checkpoints" / "k2.ckpt"
    stored.write_bytes(stored.read_bytes()[:-4] + b"XXXX")
    with pytest.warns(UserWarning, match=r"k2.ckpt in artifact store .* is unusable .*sha256"):
        assert CheckpointStore(tmp_path / "c", remote=remote).load("k2") is None
    assert not (tmp_path / "c" / "k2.ckpt").exists()


def test_a_guide_trained_on_one_machine_is_fetched_on_another(tmp_path, monkeypatch, mnist1d):
    from nas_theseus.guides import weights as weights_mod
    from nas_theseus.training import FitConfig

    remote = ArtifactStore.open(str(tmp_path / "store"))

    def module():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))

    fit = FitConfig(max_epochs=1)
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache-a"))
    a = module()
    key = weights_mod.cached_training(a, name="tiny", key_info={"arch": 1}, data=mnist1d, fit=fit, seed=0,
                                      progress=False, artifacts=remote)
    assert sorted(p.name for p in (tmp_path / "store" / "guides").iterdir()) == [
        f"tiny-{key}.json", f"tiny-{key}.safetensors"]

    trained = []
    real_fit = weights_mod.fit_classifier
    monkeypatch.setattr(weights_mod, "fit_classifier", lambda *a, **k: trained.append(1) or real_fit(*a, **k))
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache-b"))
    b = module()
    weights_mod.cached_training(b, name="tiny", key_info={"arch": 1}, data=mnist1d, fit=fit, seed=0,
                                progress=False, artifacts=remote)
    assert not trained  # fetched, not trained
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert json.loads((tmp_path / "cache-b" / "guides" / f"tiny-{key}.json").read_text())["name"] == "tiny"
    # a damaged copy in the store: one warning, trained here, and the upload replaces the bad copy
    stored = tmp_path / "store" / "guides" / f"tiny-{key}.safetensors"
    stored.write_bytes(stored.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache-c"))
    with pytest.warns(UserWarning, match=r"tiny-.*in artifact store .* is unusable .*sha256"):
        weights_mod.cached_training(module(), name="tiny", key_info={"arch": 1}, data=mnist1d, fit=fit, seed=0,
                                    progress=False, artifacts=remote)
    assert trained == [1]
    assert unseal(stored.read_bytes()) == (tmp_path / "cache-c" / "guides" / stored.name).read_bytes()


# --- two work directories, one storage, one store ----------------------------------------------------------------


@pytest.mark.slow
def test_two_work_directories_share_networks_checkpoints_and_guide(tmp_path, capsys):
    """A and B share one SQLite storage and one file-system store, each with its own guide cache (two machines).
    Every complete trial exports from either; a trial of A killed after its first stage is resumed by B from
    A's checkpoint; a damaged network artifact is one clear line."""
    study_file = write_study(tmp_path, 4)
    db, store = tmp_path / "shared.db", tmp_path / "store"
    a, b = tmp_path / "A", tmp_path / "B"
    common = ("--storage", f"sqlite:///{db}", "--artifacts", f"file://{store}")
    env_a = {"NAS_THESEUS_CACHE": str(tmp_path / "cache-a"), "NAS_THESEUS_WORKER": "A"}
    env_b = {"NAS_THESEUS_CACHE": str(tmp_path / "cache-b"), "NAS_THESEUS_WORKER": "B"}

    rc, _, err = run_worker(study_file, a, *common, "--n-trials", "2", **env_a)
    assert rc == 0, err
    guide = [p.name for p in (tmp_path / "cache-a" / "guides").glob("*.safetensors")]
    assert guide and (store / "guides" / guide[0]).is_file()  # uploaded (sealed) under its cache key

    # A's next trial is killed while it writes its second stage checkpoint: the first is in the store
    killed = start_worker(study_file, a, *common, "--n-trials", "3", NAS_THESEUS_TEST_HOOK="before_replace:kill:2",
                          **env_a)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    time.sleep(4)  # past the study's 3-second grace period: B sees a dead worker of another machine

    rc, _, err = run_worker(study_file, b, *common, "--n-trials", "4", **env_b)
    assert rc == 0, err
    # B trained no guide: it fetched A's (byte-identical) from the store
    assert ((tmp_path / "cache-b" / "guides" / guide[0]).read_bytes()
            == (tmp_path / "cache-a" / "guides" / guide[0]).read_bytes())

    study = load_study(b)
    done = finished(study)
    assert len(done) == 4 and not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    dead = next(t for t in study.get_trials() if t.state == TrialState.FAIL)
    retry = next(t for t in done if t.system_attrs.get("retry_history", [None])[-1] == dead.number)
    assert retry.user_attrs["worker"] == "B" and retry.params == dead.params
    flags = [s["resumed"] for s in retry.user_attrs["stages"]]
    assert flags[0] is True and False in flags, flags  # stage 1 from A's checkpoint, the rest trained by B
    assert {t.user_attrs["worker"] for t in done} == {"A", "B"}

    for t in done:  # every complete trial exports from either work directory
        for wd in (a, b):
            out = tmp_path / f"export-{wd.name}-{t.number}"
            assert main(["export", str(wd), "--trial", str(t.number), "--out", str(out)]) == 0
            assert json.loads((out / "verification.json").read_text())["max_abs_diff_rebuilt"] <= 1e-5
    assert "network fetched from artifact store" in capsys.readouterr().err

    # a damaged network in the store, seen from a work directory that does not hold that trial
    theirs = next(t for t in done if t.user_attrs["worker"] == "B")
    info = theirs.user_attrs["network_artifact"]
    artifact = store / info["artifact_id"]
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"\1" * 10)
    shutil.rmtree(a / "trials" / str(theirs.number))  # fetched by the export above: forget it
    rc = main(["export", str(a), "--trial", str(theirs.number), "--out", str(tmp_path / "again")])
    err = capsys.readouterr().err
    assert rc == 2 and "is corrupted" in err and f"trial {theirs.number}" in err and str(store) in err, err
    assert "Traceback" not in err and not (tmp_path / "again").exists()


# --- S3 through a local S3-compatible server (moto, a stand-in for a real object store) --------------------------


@pytest.fixture
def s3_bucket(monkeypatch):
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] (the dev extra) is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                 "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="nas")
    yield client
    server.stop()


def test_s3_store_keeps_everything_under_its_prefix(s3_bucket, tmp_path):
    store = ArtifactStore.open("s3://nas/team/study1")
    store.check("host-a")
    remote = CheckpointStore(tmp_path / "a", remote=store)
    remote.save("k1", {"w": torch.arange(4)})
    assert torch.equal(CheckpointStore(tmp_path / "b", remote=store).load("k1")["w"], torch.arange(4))
    _, trial = _trial()
    info = store.upload_folder(_folder(tmp_path), name="trial-0", trial=trial)
    store.download_folder(info, tmp_path / "c" / "0", what="trial 0", fix="do X")
    assert (tmp_path / "c" / "0" / "guide_code" / "net.py").read_text() == "x = 1\n"
    keys = sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket="nas")["Contents"])
    assert keys == sorted(["team/study1/hosts/host-a", "team/study1/checkpoints/k1.ckpt",
                           f"team/study1/{info['artifact_id']}"])
    s3_bucket.put_object(Bucket="nas", Key=f"team/study1/{info['artifact_id']}", Body=b"not a tar")
    with pytest.raises(ArtifactError, match="s3://nas/team/study1 is corrupted"):
        store.download_folder(info, tmp_path / "d" / "0", what="trial 0", fix="do X")


def test_s3_store_with_a_missing_bucket_is_one_line(s3_bucket):
    with pytest.raises(UserError, match=r"s3://no-such-bucket/x is not usable from this machine \(.*NoSuchBucket"):
        ArtifactStore.open("s3://no-such-bucket/x").check("host-a")
