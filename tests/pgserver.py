"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir on a loopback port.

The server refuses to run as root, so as root it runs as the ``postgres`` user (``su postgres``). Binaries come
from PATH or Debian's ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.initdb, self.pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.root = Path(tempfile.mkdtemp(prefix="nas_theseus_pg_"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)
        self._sh(f"{self.initdb} -D {self.data} -A trust -U postgres --no-sync -E UTF8 >/dev/null")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _sh(self, command: str) -> None:
        if self.as_root:
            args = ["su", "postgres", "-s", "/bin/bash", "-c", command]
        else:
            args = ["bash", "-c", command]
        subprocess.run(args, check=True, cwd="/", timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._sh(f"{self.pg_ctl} -D {self.data} -l {self.log} -o '{opts}' -w -t 60 start >/dev/null")

    def stop(self) -> None:
        self._sh(f"{self.pg_ctl} -D {self.data} -m fast -w -t 60 stop >/dev/null")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not answer on port {self.port}")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
