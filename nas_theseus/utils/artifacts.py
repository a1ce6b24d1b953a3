"""A shared artifact store behind the work directory, for a study whose workers run on several machines.

Built on Optuna's artifact stores (``optuna.artifacts``), chosen by URL:

* ``file:///shared/nas`` (or a plain path): :class:`optuna.artifacts.FileSystemArtifactStore` on a file system
  every machine mounts (NFS, a cluster's shared disk); writes are atomic here (temp file + ``os.replace``).
* ``s3://bucket/prefix``: :class:`optuna.artifacts.Boto3ArtifactStore` (the ``s3`` extra: boto3); transient
  errors are retried by boto3 itself (``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS``), and an S3-compatible server
  (MinIO, Ceph, ...) is reached through boto3's own configuration (``AWS_ENDPOINT_URL``, credentials, region).

What a study keeps there, every name under the URL's prefix (nothing outside it is read or written):

* ``checkpoints/<key>.ckpt``: stage checkpoints, by content key (their file format carries its sha256);
* ``guides/<name>-<key>.safetensors`` and ``.json``: trained guides, by cache key, sealed with their sha256;
* ``hosts/<host>``: a line per machine that used the store (written and read back when a run starts);
* one ``trial-N.tar`` per complete trial (its ``trials/N`` folder: weights, ``arch.json``, reference outputs,
  metrics), uploaded with :func:`optuna.artifacts.upload_artifact` so the dashboard lists and serves it; its
  id, sha256 and size are the trial's ``network_artifact`` attribute.

Every download is checked against its sha256 and written atomically. The work directory stays the local copy:
what is here is used as is, and without a store nothing changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from ..errors import UserError
from .files import atomic_write
from .hashing import file_sha256

DIGEST = 64  # hex characters of a sha256 at the head of a sealed artifact


class ArtifactError(UserError):
    """An artifact that is missing or damaged; the message names it, the store and what to do."""


def seal(data: bytes) -> bytes:
    """``data`` behind its sha256 (64 hex characters): the format of stage checkpoints and sealed artifacts."""
    return hashlib.sha256(data).hexdigest().encode() + data


def unseal(raw: bytes) -> bytes:
    """The payload of a sealed blob; ``ValueError`` when it does not match its sha256."""
    digest, data = raw[:DIGEST], raw[DIGEST:]
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise ValueError("sha256 mismatch")
    return data


class _AtomicFileSystemStore:
    """Optuna's file-system store with atomic writes (a reader on another machine never sees half a file) and
    the folders of nested names created on demand."""

    def __init__(self, base: Path):
        from optuna.artifacts import FileSystemArtifactStore

        self.base = base
        self._store = FileSystemArtifactStore(base)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self._store._get_filepath(artifact_id)  # Optuna's own check that the name stays inside base

        def copy(tmp: str) -> None:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(content_body, f)

        atomic_write(path, copy)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)


class _Prefixed:
    """An artifact store seen under a prefix: every name is ``prefix/name``."""

    def __init__(self, store, prefix: str):
        self._store, self.prefix = store, prefix

    def _id(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(self._id(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store.write(self._id(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(self._id(artifact_id))


def _check_name(name: str) -> str:
    """A store-relative name: no absolute paths, no ``..``, nothing that leaves the prefix."""
    norm = posixpath.normpath(name)
    if not name or name.startswith("/") or norm != name or norm.startswith(".."):
        raise ValueError(f"invalid artifact name {name!r}")
    return name


class ArtifactStore:
    """The study's shared store (see the module docs); ``backend`` is the Optuna artifact store (prefixed) that
    ``upload_artifact`` and the dashboard use."""

    def __init__(self, url: str, backend):
        self.url, self.backend = url, backend

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> ArtifactStore:
        """The store at ``url``; a file store's folder is made when missing unless ``create`` is False (a
        machine that only reads, e.g. to export, must see the study's folder, not an empty new one)."""
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
                raise UserError(f"artifact store {url!r}: a file URL names a local path (file:///shared/nas)")
            path = Path(unquote(parsed.path) if parsed.scheme else url).expanduser()
            if not path.is_absolute():
                raise UserError(f"artifact store {url!r}: give an absolute path (file:///shared/nas), the same "
                                f"on every machine")
            if not create and not path.is_dir():
                raise UserError(f"artifact store {url}: no folder {path} on this machine (is the shared file "
                                f"system mounted here? --artifacts URL gives this machine's path)")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"artifact store {url}: cannot create {path} ({e.strerror})") from None
            return cls(url, _AtomicFileSystemStore(path))
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise UserError(f"artifact store {url!r}: name the bucket, s3://bucket/prefix")
            try:
                import boto3
            except ImportError:
                raise UserError("an s3:// artifact store needs boto3: pip install 'nas-theseus[s3]'") from None
            from optuna.artifacts import Boto3ArtifactStore

            store = Boto3ArtifactStore(parsed.netloc, client=boto3.client("s3"))  # boto3 retries what is transient
            return cls(url, _Prefixed(store, parsed.path.strip("/")))
        raise UserError(f"artifact store {url!r}: unknown scheme {parsed.scheme!r}; use file:///path or "
                        f"s3://bucket/prefix")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def check(self, host: str) -> None:
        """Write and read back ``hosts/<host>`` (which machines use the store, and when): a store this machine
        cannot use is one line before any work, not a warning per checkpoint."""
        name = f"hosts/{host}"
        stamp = f"{host} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode()
        try:
            self.put(name, stamp)
            ok = self.get(name) == stamp
        except Exception as e:  # noqa: BLE001 - whatever the client raises, the user's fix is the same
            raise UserError(f"artifact store {self.url} is not usable from this machine ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300] if str(e) else ''}); check the URL, that the path is "
                            f"mounted or the bucket exists, and the credentials") from None
        if not ok:
            raise UserError(f"artifact store {self.url} does not return what this machine wrote to {name}")

    # --- content-keyed blobs: stage checkpoints, trained guides -----------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        """Write ``data`` under ``name`` (callers seal what has no checksum of its own)."""
        self.backend.write(_check_name(name), io.BytesIO(data))

    def get(self, name: str) -> bytes | None:
        """The bytes under ``name``, or None when the store has none."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            reader = self.backend.open_reader(_check_name(name))
        except ArtifactNotFound:
            return None
        with contextlib.closing(reader):
            return reader.read()

    def fetch_sealed(self, name: str, dest: Path) -> bool:
        """Download the sealed blob ``name`` into ``dest`` (atomically, checked); False when the store has
        none. A copy that fails its check raises :class:`ArtifactError`."""
        raw = self.get(name)
        if raw is None:
            return False
        try:
            data = unseal(raw)
        except ValueError:
            raise ArtifactError(f"{name} in artifact store {self.url} is corrupted (sha256 mismatch)") from None

        def write(tmp: str) -> None:
            Path(tmp).write_bytes(data)

        atomic_write(dest, write)
        return True

    def put_sealed(self, name: str, path: Path) -> None:
        self.put(name, seal(Path(path).read_bytes()))

    # --- a trial's network folder, linked to its Optuna trial --------------------------------------------------

    def upload_folder(self, folder: Path, *, name: str, trial) -> dict:
        """Upload ``folder`` as one tar file linked to ``trial`` (optuna.artifacts: the dashboard lists it);
        returns what :meth:`download_folder` needs: the artifact id, its sha256 and size, and this store's URL."""
        from optuna.artifacts import upload_artifact

        with tempfile.TemporaryDirectory(prefix="nas-theseus-upload-") as tmp:
            archive = Path(tmp) / f"{name}.tar"
            with tarfile.open(archive, "w") as tar:
                for path in sorted(folder.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):  # no temp files of atomic writes
                        tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
            sha = file_sha256(archive)
            artifact_id = upload_artifact(artifact_store=self.backend, file_path=str(archive), study_or_trial=trial,
                                          mimetype="application/x-tar")
            return {"store": self.url, "artifact_id": artifact_id, "sha256": sha, "bytes": archive.stat().st_size}

    def download_folder(self, info: dict, dest: Path, *, what: str, fix: str) -> None:
        """Fetch the folder that :meth:`upload_folder` described in ``info`` into ``dest`` (checked, unpacked
        into a temp folder beside it, then moved into place). ``what`` names it and ``fix`` says what to do, in
        the one-line error of a missing or corrupted artifact."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        artifact_id = info["artifact_id"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.download-") as tmp:
            archive = Path(tmp) / "folder.tar"
            try:
                reader = self.backend.open_reader(_check_name(artifact_id))
            except ArtifactNotFound:
                raise ArtifactError(f"{what} is not in artifact store {self.url} (artifact {artifact_id}); "
                                    f"{fix}") from None
            with contextlib.closing(reader), open(archive, "wb") as f:
                shutil.copyfileobj(reader, f)
            sha = file_sha256(archive)
            if sha != info["sha256"]:
                raise ArtifactError(f"{what} in artifact store {self.url} is corrupted (artifact {artifact_id}: "
                                    f"sha256 {sha[:12]}…, expected {info['sha256'][:12]}…); {fix}")
            unpacked = Path(tmp) / "folder"
            try:
                _unpack(archive, unpacked)
            except (tarfile.TarError, OSError, ValueError) as e:
                raise ArtifactError(f"{what} in artifact store {self.url} cannot be unpacked (artifact "
                                    f"{artifact_id}: {type(e).__name__}: {e}); {fix}") from None
            try:
                os.replace(unpacked, dest)
            except OSError:
                if not dest.is_dir():  # else another process put the same folder there first
                    raise


def _unpack(archive: Path, dest: Path) -> None:
    """Extract a folder archive: regular files and folders only, every name inside ``dest``."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()) or _check_name(m.name) != m.name:
                raise ValueError(f"unexpected member {m.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the standard library checks it too
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)
