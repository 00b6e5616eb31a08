"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests and the
storage benchmark: `initdb` into a fresh folder as an unprivileged user (PostgreSQL
refuses to run as root), started on 127.0.0.1 with a free port and a socket folder of
its own, stopped and removed at the end."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def find_binaries() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or Debian's versioned one."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    if find_binaries() is None:
        return "PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and no 'postgres' or 'nobody' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[tune]')"
    return None


def _server_user() -> str | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster; `url(db)` is a SQLAlchemy URL for one of its databases."""

    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user,
                               dbname=database, autocommit=True)

    def create_database(self, name: str) -> str:
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def connections(self, database: str) -> int:
        """Client connections to `database` now, not counting the one that asks."""
        with self.connect() as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                (database,)).fetchone()
        return int(row[0])


@contextlib.contextmanager
def throwaway_cluster(max_connections: int = 100) -> Iterator[Cluster]:
    """Start a cluster in a fresh folder; stop it and remove the folder on exit."""
    binaries = find_binaries()
    assert binaries is not None, unavailable_reason()
    # Not under pytest's tmp folders: those are private to root, and the server's user
    # must reach its data folder.
    base = Path(tempfile.mkdtemp(prefix="cnnzoo-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = _server_user()
        assert user is not None
        entry = pwd.getpwnam(user)
        for path in (base, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    db_user = "cnnzoo"
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True,
                       cwd=base, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", db_user, "--auth=trust",
            "--no-sync", "-E", "UTF8")
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={max_connections} -c fsync=off")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
            "-o", options, "-w", "-t", "60", "start")
        try:
            yield Cluster(port=port, user=db_user)
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
