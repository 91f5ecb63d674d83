"""A throwaway PostgreSQL cluster on loopback, from Debian's `postgresql` binaries.

Used by the test suite and the benchmarks so that PostgreSQL is exercised for real; a researcher
can also use it to try AlignLab on PostgreSQL without administering a server. PostgreSQL refuses
to run as root, so as root the cluster runs as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.network import free_port


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The newest Debian PostgreSQL bin directory (holds initdb and pg_ctl)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
            "install them with `apt-get install postgresql` (the test command does this)"
        )
    return Path(candidates[-1]).parent


@dataclass
class TemporaryPostgres:
    """`with TemporaryPostgres() as pg: pg.url` gives a `postgresql+psycopg://` URL to a fresh database."""

    database: str = "alignlab"
    max_connections: int = 200
    root: Path | None = None
    port: int = 0

    def __enter__(self) -> TemporaryPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        bin_dir = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="alignlab-pg-"))
        self.port = free_port()
        data = self.root / "data"
        self._chown_for_postgres()
        self._run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            f"-c max_connections={self.max_connections} -c fsync=off"
        )
        self._run([bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", self.root / "log", "-w", "start"])
        self._run(
            [bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database]
        )

    def stop(self) -> None:
        if self.root is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([find_pg_bin() / "pg_ctl", "-D", self.root / "data", "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _chown_for_postgres(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")

    def _run(self, args: list) -> None:
        args = [str(a) for a in args]
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        result = subprocess.run(args, capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            log = (self.root / "log").read_text() if self.root and (self.root / "log").exists() else ""
            raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr + log)
