"""A throwaway PostgreSQL 15 cluster on a free loopback port, for the tests that need a real server.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and started as the
`postgres` user (the data folder is handed to it); as any other user it runs as that user. Authentication is
`trust` on loopback only, the cluster lives in a temporary folder, and `stop()` removes it.

    with postgres_cluster() as pg:
        url = pg.create_database("log")            # postgresql://evergreen@127.0.0.1:PORT/log
        url = pg.url("log", driver="psycopg")      # postgresql+psycopg://... for SQLAlchemy
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port

USER = "evergreen"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) if p.exists()), None
    )
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt install postgresql)")
    return found


def _as_owner(command: list[str]) -> list[str]:
    """Run as `postgres` when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class PostgresCluster:
    folder: Path
    port: int
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres", driver: str | None = None) -> str:
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{USER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database (a fresh one per test keeps tests apart); returns its plain URL."""
        subprocess.run(
            _as_owner([_binary("createdb"), "-h", self.host, "-p", str(self.port), "-U", USER, name]),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            _as_owner([_binary("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"]),
            capture_output=True, text=True,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(max_connections: int = 200) -> PostgresCluster:
    folder = Path(tempfile.mkdtemp(prefix="evergreen-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_owner([_binary("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections={max_connections} -c fsync=on"
    started = subprocess.run(
        _as_owner([_binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        capture_output=True, text=True,
    )  # fmt: skip
    if started.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
    return PostgresCluster(folder=folder, port=port)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
