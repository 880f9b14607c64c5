"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

The server is Debian's (``/usr/lib/postgresql/<version>/bin``, package ``postgresql``; `.ci/run`
installs it). It listens only on a Unix socket in its own temporary directory (no TCP port to
collide with), trusts local connections, and runs with ``fsync=off`` (the tests check logic,
not the disk). ``initdb`` refuses to run as root: as root, the server's files belong to, and
its processes run as, the ``postgres`` user (created by the Debian package), else ``nobody``.

Each test gets its own schema (:meth:`PostgresServer.fresh_url`): the URL sets ``search_path``,
so tests never see each other's tables and no database has to be created per test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg

START_TIMEOUT_S = 60
DATABASE = "digest"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``, or ``None``."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


class PostgresServer:
    """One PostgreSQL cluster for the test session; a context manager.

    Args:
        bin_dir: where ``initdb``, ``pg_ctl`` and ``postgres`` are.
        durable: keep PostgreSQL's default durability (fsync, synchronous commit) instead of
            the tests' fast settings: for benchmarks.
    """

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(self.root, entry.pw_uid, entry.pw_gid)
                break
        os.chmod(self.root, 0o755)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{log}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        settings = [f"-k {self.root}", "-c listen_addresses=''", "-c max_connections=200"]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options = " ".join(settings)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        return self

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """A libpq URL over the Unix socket (user ``postgres``, trusted)."""
        url = f"postgresql://postgres@/{database}?host={quote(str(self.root), safe='')}"
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}", safe="")
        return url

    def fresh_url(self) -> str:
        """The URL of a new, empty schema of its own (created here)."""
        schema = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)

    def restore(self, dump: str, schema: str) -> str:
        """Run a ``pg_dump --inserts`` text of ``schema`` into a new schema; its URL.

        Args:
            dump: the dump (its ``CREATE SCHEMA`` included; psql's ``\\`` lines are skipped).
            schema: the schema name the dump uses, replaced by a fresh one.
        """
        fresh = f"t_{secrets.token_hex(6)}"
        lines = [line for line in dump.splitlines() if not line.startswith("\\")]
        text = "\n".join(lines).replace(f"{schema}.", f"{fresh}.")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(text.replace(f"CREATE SCHEMA {schema};", f"CREATE SCHEMA {fresh};"))
        return self.url(schema=fresh)

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
