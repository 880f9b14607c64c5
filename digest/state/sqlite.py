"""The SQLite connector: one state file, one sender at a time (the default backend).

``DIGEST_STATE_URL=sqlite:///path`` (or ``DIGEST_STATE_PATH``): one SQLite file (stdlib
:mod:`sqlite3`) in WAL mode. :class:`StateStore` is the :class:`~digest.state.store.Store`
over a :class:`SqliteConnector`; what only SQLite does lives here:

* Durability: ``PRAGMA synchronous=FULL``. In WAL mode ``NORMAL`` survives a process crash but
  a power loss may roll back the last commits; rolling back a committed ``sending`` (or
  ``sent``) row would send a message again. With ``FULL`` the WAL is fsynced at every commit,
  so once a claim returns ``True`` it survives anything short of disk loss. A send shares
  that fsync between the writes of its connection pool (group commit,
  :mod:`digest.state.group`).
* Every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (a savepoint of the open one
  inside ``transaction()``); an error rolls it back. Timestamps are ISO 8601 text in UTC.
* The schema version is ``PRAGMA user_version``; a file is ours by ``PRAGMA application_id``
  (another program's SQLite file is refused, untouched).
* :func:`state_lock` is the single-sender lock (``<state>.lock``, holder information in
  ``<state>.lock.json``); ``recover_unknown`` takes every ``sending`` row under it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import filelock

from digest.clock import Clock, utc_now
from digest.errors import StateError, StateLockedError
from digest.state.connector import Connector, Params, Row, migrate
from digest.state.schema import MIGRATIONS, SCHEMA_VERSION
from digest.state.store import FeedCache, Store

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5_000
"""How long a write waits for another connection's write transaction to finish, ms."""

STATE_FILE_MODE = 0o600
"""Permissions of a newly created state file: it holds subscribers' addresses."""

_SQLITE_MAGIC = b"SQLite format 3\x00"

APPLICATION_ID = 0x44475354
"""``PRAGMA application_id`` of a digest state file (``b"DGST"``). A SQLite file with another
id, or with id 0 and tables that are not ours, is another program's database and is refused;
a digest file from before the id (0, with our tables) gets it on open."""
_OWN_TABLES = frozenset({"meta", "deliveries", "papers", "feed_cache"})
"""Tables every digest schema version has: how an older file (application_id 0) is known."""
_ANY = re.compile(r"= ANY\(:(\w+)\)")


class StateStore(Store):
    """The SQLite state file. Open it once per process; use it as a context manager.

    Not safe for two *senders* at once: hold :meth:`sender_lock` while sending. Readers (e.g.
    ``digest status``) may open it concurrently.

    Args:
        path: the state file; created (mode 600, parent directories too) if missing.
        now: the clock used for every timestamp (aware UTC).

    Raises:
        StateError: the file is not a SQLite database or is corrupt, is another program's,
            was written by a newer ``digest`` (schema version too high), or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, now: Clock = utc_now) -> None:
        self.path = Path(path)
        super().__init__(SqliteConnector(self.path, now), now=now)


class SqliteConnector(Connector):
    """The state file's one connection, behind a mutex (see the module docstring).

    Args:
        path: the state file (created if missing).
        now: the clock for the ``created_at`` of a new file.
    """

    dialect = "sqlite"
    shared = False

    def __init__(self, path: Path, now: Clock) -> None:
        super().__init__()
        self.path = path
        self.url = sqlite_url(path)
        self.name = f"state file {path}"
        self._mutex = threading.RLock()
        self._depth = 0  # open transaction() blocks (of the thread holding _mutex)
        self._unit = False  # a unit() is open (on the thread holding _mutex)
        self._db = self._open(now)

    @classmethod
    def translate(cls, text: str) -> str:
        """``= ANY(:list)`` becomes ``IN (SELECT value FROM json_each(:list))``."""
        return _ANY.sub(r"IN (SELECT value FROM json_each(:\1))", text)

    def time(self, when: datetime) -> str:
        """ISO 8601 text in UTC."""
        return when.astimezone(UTC).isoformat()

    def day(self, day: date) -> str:
        """``YYYY-MM-DD``."""
        return day.isoformat()

    def array(self, values: Iterable[Any]) -> str:
        """A JSON list (read with ``json_each``)."""
        return json.dumps(list(values))

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self, now: Clock) -> sqlite3.Connection:
        path = self.path
        try:
            if path.exists():
                if not path.is_file():
                    raise StateError(f"the state file {path} is not a file; set DIGEST_STATE_PATH")
                with path.open("rb") as f:
                    head = f.read(len(_SQLITE_MAGIC))
                if head and head != _SQLITE_MAGIC:
                    raise StateError(_not_a_state_file(path, "it is not a SQLite database"))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, STATE_FILE_MODE))
        except OSError as e:
            raise StateError(f"cannot open the state file {path}: {e.strerror or e}") from e
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StateError(f"cannot open the state file {path}: {e}") from e
        self._db = db
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            owned = self._check_owner(db)  # before any write: WAL mode alone changes the file
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            migrate(self, lambda: now().astimezone(UTC))
            if not owned:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except BaseException as e:
            db.close()
            if isinstance(e, StateError) and isinstance(e.__cause__, sqlite3.Error):
                e = e.__cause__
            if isinstance(e, sqlite3.OperationalError):  # permissions, read-only dir, locked
                raise StateError(f"cannot open the state file {path}: {e}") from e
            if isinstance(e, sqlite3.DatabaseError):  # "file is not a database", "malformed"
                raise StateError(_not_a_state_file(path, str(e))) from e
            raise
        return db

    def _check_owner(self, db: sqlite3.Connection) -> bool:
        """True if the file carries our application_id; raise if it is another program's.

        Raises:
            StateError: another application_id, or id 0 with tables that are not digest's.
        """
        app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        if app_id == APPLICATION_ID:
            return True
        if app_id != 0:
            raise StateError(_foreign_file(self.path, f"application_id {app_id}"))
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        tables = {str(r[0]) for r in rows}
        if tables and not tables >= _OWN_TABLES:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StateError(_foreign_file(self.path, f"tables {shown}"))
        return False

    def version(self) -> int:
        """``PRAGMA user_version``."""
        return int(self.fetch("PRAGMA user_version")[0][0])

    def migrating(self) -> AbstractContextManager[None]:
        """``BEGIN IMMEDIATE`` is the lock: one writer per file."""
        return self.unit()

    def set_version(self, version: int) -> None:
        """``PRAGMA user_version``."""
        self._db.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        """Close the file (idempotent). Later calls raise :class:`StateError`."""
        with self._mutex:
            self._db.close()

    def sender_lock(self, purpose: str, stamp: datetime) -> AbstractContextManager[dict[str, Any]]:
        """The exclusive file lock of this state file (:func:`state_lock`); one sender.

        Raises:
            StateLockedError: another process holds it; the message names the holder.
        """
        return state_lock(self.path, purpose=purpose, now=lambda: stamp)

    # -- statements and transactions -------------------------------------------------------
    def fetch(self, sql: str, params: Params | None = None, *, write: bool = False) -> list[Row]:
        """Every row of ``sql``; ``write``: in a write transaction of its own (``RETURNING``)."""
        with self.unit() if write else self._mutex:
            try:
                return self._db.execute(sql, params or {}).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from e

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one writing statement in a write transaction of its own (or of the unit)."""
        with self._mutex:
            if self._unit:  # only the mutex's holder sets it: a unit of this thread
                return int(self._db.execute(sql, params or {}).rowcount)
            with _Write(self):
                return int(self._db.execute(sql, params or {}).rowcount)

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run ``sql`` per parameter set (inside a unit); the rows changed in all."""
        with self.unit():
            return int(self._db.executemany(sql, params).rowcount)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` around the block, each write a savepoint.

        The file's mutex is held for the whole block, so other threads of this process wait
        for the commit (as they wait for any write) and never see the uncommitted rows.
        """
        with self._mutex, _Write(self):
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One write: ``BEGIN IMMEDIATE`` … ``COMMIT`` (a savepoint inside a transaction)."""
        with self._mutex:
            if self._unit:
                yield
                return
            with _Write(self):
                self._unit = True
                try:
                    yield
                finally:
                    self._unit = False

    def _error(self, e: sqlite3.Error) -> StateError:
        if isinstance(e, sqlite3.ProgrammingError) and "closed" in str(e):
            return StateError(f"the state file {self.path} is closed")
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            return StateError(
                f"the state file {self.path} stayed busy for {BUSY_TIMEOUT_MS / 1000:g} s "
                f"(another process is writing); try again"
            )
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            return StateError(_not_a_state_file(self.path, str(e)))
        return StateError(f"state file {self.path}: {e}")


class _Write:
    """``BEGIN IMMEDIATE`` (inside a transaction: a savepoint) … ``COMMIT``, rolled back on any
    error; sqlite3 errors become :class:`StateError`. Entered with the connector's mutex held."""

    __slots__ = ("_c", "_grouped")

    def __init__(self, connector: SqliteConnector) -> None:
        self._c = connector
        self._grouped = connector._depth > 0

    def __enter__(self) -> None:
        try:
            self._c._db.execute("SAVEPOINT digest_write" if self._grouped else "BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._c._error(e) from e

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, _: Any) -> None:
        db, grouped = self._c._db, self._grouped
        if e is None:
            try:
                if not grouped:
                    self._c.committing()
                db.execute("RELEASE digest_write" if grouped else "COMMIT")
                return
            except BaseException as failed:
                e = failed
        with suppress(sqlite3.Error):
            if grouped:
                db.execute("ROLLBACK TO digest_write")
                db.execute("RELEASE digest_write")
            else:
                db.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            raise self._c._error(e) from e
        if kind is None:  # the commit itself failed (not a sqlite3 error): raise it
            raise e


def probe(path: str | os.PathLike[str]) -> int | None:
    """The schema version of the state file ``path`` (``None``: no such file); read-only.

    Raises:
        StateError: the file is not a SQLite database or cannot be read.
    """
    file = Path(path)
    if not file.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error as e:
        raise StateError(_not_a_state_file(file, str(e))) from e


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The ``DIGEST_STATE_URL`` of a state file: ``sqlite:///relative`` or ``sqlite:////abs``."""
    return f"sqlite:///{os.fspath(path)}"


def _foreign_file(path: Path, what: str) -> str:
    return (
        f"the state file {path} is another program's SQLite database ({what}), not a digest "
        f"state file; it was left unchanged: set DIGEST_STATE_PATH to a file of digest's own"
    )


def _not_a_state_file(path: Path, why: str) -> str:
    return (
        f"the state file {path} is not a digest state file or is corrupt ({why}); "
        f"move it aside (or restore a backup) and run again to start a new one"
    )


# -- the single-sender lock ------------------------------------------------------------------


def lock_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The lock file and its holder-information sidecar for the state file ``path``.

    Returns:
        ``(<state>.lock, <state>.lock.json)``.
    """
    return Path(f"{os.fspath(path)}.lock"), Path(f"{os.fspath(path)}.lock.json")


@contextmanager
def state_lock(
    path: str | os.PathLike[str], *, purpose: str, now: Clock = utc_now
) -> Iterator[dict[str, Any]]:
    """Hold the exclusive sender lock of the state file ``path`` (non-blocking).

    The lock is an OS file lock (``flock``) on ``<state>.lock`` taken with ``filelock``: the
    kernel releases it when the holder exits, even on ``SIGKILL``, so a dead holder never blocks.
    While held, ``<state>.lock.json`` describes the holder (pid, host, command, purpose, start
    time UTC); it is information only: a stale one left by a killed process is overwritten.

    Args:
        path: the state file.
        purpose: what the holder does, shown to contenders (e.g. ``send``, ``run``).
        now: clock for the start time (aware UTC).

    Yields:
        The holder information written to the sidecar.

    Raises:
        StateLockedError: another process holds the lock; its message names the holder.
        StateError: the lock file cannot be created.
    """
    lock_path, info_path = lock_paths(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(lock_path, timeout=0)
        lock.acquire()
    except filelock.Timeout:
        holder = _read_holder(info_path)
        if holder is None:
            raise StateLockedError(
                f"another digest process holds {path}; wait for it or stop it"
            ) from None
        what, desc = holder
        raise StateLockedError(
            f"another digest {what} ({desc}) holds {path}; wait for it or stop it", holder=desc
        ) from None
    except OSError as e:
        raise StateError(f"cannot create the lock file {lock_path}: {e.strerror or e}") from e
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "purpose": purpose,
        "command": " ".join(sys.argv),
        "since": now().astimezone(UTC).isoformat(timespec="seconds"),
    }
    try:
        try:
            tmp = info_path.with_name(f"{info_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, info_path)
        except OSError as e:  # information only: never fail a run over it
            log.warning("could not write lock holder information %s: %s", info_path, e)
        yield info
    finally:
        try:
            if _read_pid(info_path) == os.getpid():
                info_path.unlink()
        except OSError:
            pass
        lock.release()


def _read_holder(info_path: Path) -> tuple[str, str] | None:
    """``(purpose, "pid N on HOST, since T")`` from the sidecar, or ``None`` if unreadable."""
    try:
        data = json.loads(info_path.read_text(encoding="utf-8"))
        desc = f"pid {data['pid']} on {data['hostname']}, since {data['since']}"
        return str(data.get("purpose") or "process"), desc
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_pid(info_path: Path) -> int | None:
    try:
        return int(json.loads(info_path.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATE_FILE_MODE",
    "FeedCache",
    "SqliteConnector",
    "StateStore",
    "lock_paths",
    "probe",
    "sqlite_url",
    "state_lock",
]
