"""The PostgreSQL connector: one database shared by any number of senders and hosts.

``DIGEST_STATE_URL=postgresql://user@host:5432/dbname`` (any libpq URL; the password belongs in
``PGPASSWORD`` or ``~/.pgpass``). Through psycopg 3 with a small psycopg-pool connection pool;
:class:`PostgresStore` is the :class:`~digest.state.store.Store` over a :class:`PostgresConnector`.

Work sharing without a lock or a leader (:attr:`PostgresConnector.shared` is ``True``):

* A delivery is claimed by one atomic statement, ``INSERT … ON CONFLICT (subscriber, edition)
  DO UPDATE SET status = 'sending' … WHERE deliveries.status IN ('owed')``: of two
  processes claiming the same row at once, PostgreSQL makes the second wait for the first's
  row lock and then re-evaluates the ``WHERE`` on the new row, so exactly one gets it.
* The claim records the claimer's id (``host:pid:random``) and a lease (``lease_until``, the
  *database's* clock plus ``lease_seconds``, so hosts' clocks do not matter). A thread of the
  claiming process renews the leases of its rows in flight every third of the lease; a lease
  that has run out is never renewed.
* ``recover_unknown`` turns ``sending`` rows whose lease has run out (their
  process died, or lost the database for longer than a lease) into ``unknown``: reported,
  resent only with ``--retry-unknown``. Any process may call it at any time; the daemon does
  at every tick, so a dead sender needs no restart anywhere.
* Papers are fetched once per (source, day) across processes: ``try_lock_papers`` takes a
  session-level advisory lock (released at unlock or when the process's connection ends);
  the others wait for the stored list.

Durability: every write is one transaction committed with the server's ``synchronous_commit``
(default ``on``: flushed to the WAL before the commit returns), or one savepoint of a
``transaction()`` block committed with the block's other writes (a send's
group commit, :mod:`digest.state.group`). Timestamps are ``timestamptz``
(returned in UTC). The schema is versioned in ``meta.schema_version``; the migrations are
applied at open under a session-level advisory lock taken before the migration's transaction
begins (so the transaction sees what a process migrating first committed): several processes
starting at once migrate once. A database with a higher version is refused.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from digest.clock import Clock, utc_now
from digest.errors import StateError
from digest.redact import redact_text, redact_url
from digest.state.base import DEFAULT_LEASE_S, LEASE_RENEW_FRACTION
from digest.state.connector import Connector, Params, Row, migrate, nothing
from digest.state.store import Store

log = logging.getLogger(__name__)

POOL_MAX_SIZE = 4
"""Connections per process: the state-writer thread, the event loop, the lease renewer."""
CONNECT_TIMEOUT_S = 10
"""How long opening the first connection may take, seconds."""
POOL_TIMEOUT_S = 30.0
"""How long a call waits for a free connection of the pool, seconds."""
PAPERS_LOCK_NAMESPACE = 0x64670001
"""First key of the advisory locks taken by ``try_lock_papers``."""
MIGRATION_LOCK_KEY = 0x6467_6D69_6772_6174
"""Advisory lock key serializing schema migrations across processes."""
_IDENTITY_TABLES = frozenset({"suppressions", "bounces", "events", "subscriber_outbox", "pauses"})
"""Tables whose ``id`` is an identity column (its sequence is moved past copied rows)."""
_LEASE = "clock_timestamp() + make_interval(secs => %(lease)s)"
_PARAM = re.compile(r"(?<!:):(\w+)")
_STREAMS = itertools.count(1)
"""Numbers the server-side cursors of :meth:`PostgresConnector.stream` (names are per session)."""


class PostgresStore(Store):
    """The state in a PostgreSQL database; see the module docstring.

    Open one per process (it holds a small connection pool and a lease-renewal thread); use
    it as a context manager.

    Args:
        url: a libpq connection URL (``postgresql://user@host:5432/db``).
        now: the clock for the timestamps written (aware UTC); leases use the database's clock.
        lease_seconds: how long a claim lasts unless renewed, seconds (> 0).

    Raises:
        StateError: the database cannot be reached, or its schema is newer than this ``digest``.
    """

    def __init__(
        self, url: str, *, now: Clock = utc_now, lease_seconds: float = DEFAULT_LEASE_S
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self._pg = PostgresConnector(url, now, lease_seconds)
        self.lease_seconds = lease_seconds
        super().__init__(self._pg, now=now)

    def renew_leases(self) -> int:
        """Extend the lease of this process's rows in flight; returns how many.

        A lease that has already run out is not renewed: another process may have counted
        the row as a dead sender's (``unknown``) meanwhile.
        """
        return self._pg.renew_leases()


class _Local(threading.local):
    conn: psycopg.Connection[Any] | None = None
    """This thread's connection of an open transaction() or unit()."""
    unit = False
    """A unit() of this thread is open: its statements run plain on ``conn``."""


class PostgresConnector(Connector):
    """A connection pool, the leases of this process's claims and their renewer thread.

    Args:
        url: a libpq connection URL.
        now: the clock for the ``created_at`` of a new schema.
        lease_seconds: how long a claim lasts unless renewed, seconds.
    """

    dialect = "postgres"
    shared = True
    unlease = ", lease_until = NULL"

    def __init__(self, url: str, now: Clock, lease_seconds: float) -> None:
        super().__init__()
        self.url = redact_url(url)
        self.name = f"state database {self.url}"
        self.lease_seconds = lease_seconds
        self._url = url
        self._in_flight: set[tuple[str, str]] = set()
        self._in_flight_mutex = threading.Lock()
        self._locks_mutex = threading.Lock()
        self._locks_conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._local = _Local()
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
                self._local.conn, self._local.unit = conn, True
                try:
                    migrate(self, lambda: now().astimezone(UTC))
                finally:
                    self._local.conn, self._local.unit = None, False
        except psycopg.Error as e:
            # Not chained: libpq may quote the URL's password (--debug shows causes).
            raise StateError(
                f"cannot reach the state database {self.url}: {_why(e, url)}"
            ) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="digest-state",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as e:
            self._pool.close()
            raise StateError(f"cannot reach the state database {self.url}: {e}") from e
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="digest-lease", daemon=True)
        self._renewer.start()

    @classmethod
    def translate(cls, text: str) -> str:
        """``:name`` becomes ``%(name)s`` (a literal ``%`` doubled)."""
        return _PARAM.sub(r"%(\1)s", text.replace("%", "%%"))

    # -- lifecycle ---------------------------------------------------------------------------
    def version(self) -> int:
        """``meta.schema_version`` (0: no ``digest`` tables yet)."""
        with self._conn() as conn:
            return _version(conn)

    @contextmanager
    def migrating(self) -> Iterator[None]:
        """A session-level advisory lock, then the migration's transaction.

        The lock is taken before the transaction, not inside it: a transaction's start is
        where the server reads the catalog changes other sessions committed. Taken inside,
        a process that had waited for another's migration still found no `meta` (its catalog
        cache remembered the table missing) and failed creating it again.
        """
        conn = self._local.conn
        assert conn is not None  # migrate() runs on the opening connection
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            with conn.transaction():
                yield
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    def set_version(self, version: int) -> None:
        """``meta.schema_version``."""
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %(v)s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            {"v": str(version)},
        )

    def close(self) -> None:
        """Stop renewing leases and close the connections (idempotent).

        Rows still ``sending`` keep their lease until it runs out, then count as a dead
        process's (``unknown``). Later calls raise :class:`StateError`.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._renewer.join(timeout=POOL_TIMEOUT_S)
        with self._locks_mutex:
            self._drop_lock_connection()
        self._pool.close()

    @contextmanager
    def sender_lock(self, purpose: str, stamp: datetime) -> Iterator[dict[str, Any]]:
        """Nothing exclusive: any number of senders share the database; claims arbitrate.

        Yields:
            This process's holder information (pid, host, purpose, claimer, since).
        """
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "purpose": purpose,
            "command": " ".join(sys.argv),
            "claimer": self.claimer,
            "since": stamp.astimezone(UTC).isoformat(timespec="seconds"),
        }
        log.info("%s as claimer %s on the shared state %s", purpose, self.claimer, self.url)
        yield info

    # -- statements and transactions -------------------------------------------------------
    def fetch(self, sql: str, params: Params | None = None, *, write: bool = False) -> list[Row]:
        """Every row of ``sql`` (one statement: autocommit, or a savepoint of the block)."""
        if write and self._local.conn is None:
            self.committing()  # a statement of its own commits
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement (autocommit, or a savepoint of the block, or plain in a unit)."""
        if self._local.conn is None:
            self.committing()  # a statement of its own commits
        with self._conn() as conn:
            return conn.execute(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run ``sql`` per parameter set (inside a unit); the rows changed in all."""
        with self._conn() as conn, conn.cursor() as cur:
            cur.executemany(sql, params)
            return int(cur.rowcount)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One pooled connection inside ``BEGIN`` … ``COMMIT`` for the block.

        Every call of this thread inside it uses that connection, each write in a savepoint
        of its own. Other threads and processes see the writes at the commit; a row claimed
        in the block stays locked until then (another claimer of it waits, then finds it
        taken). A nested block is a savepoint.
        """
        if self._local.conn is not None:
            with self._conn():  # a savepoint of the open transaction
                yield
            return
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None
            self.committing()

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One write: a transaction on a pooled connection (a savepoint inside a block)."""
        local = self._local
        if local.unit:
            yield
            return
        outer = local.conn
        with self._conn() as conn, conn.transaction() if outer is None else nothing():
            local.conn, local.unit = conn, True
            try:
                yield
            finally:
                local.conn, local.unit = outer, False
            if outer is None:
                self.committing()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: each statement is its own transaction).

        Inside :meth:`transaction`: the block's connection, in a savepoint of its own; inside
        :meth:`unit`: the unit's connection as it is.
        """
        held = self._local.conn
        if held is not None and self._local.unit:
            yield held
            return
        if held is not None:
            with self._errors(), held.transaction():
                yield held
            return
        with self._errors(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors as :class:`StateError` (a closed store raises it at once)."""
        if self._closed:
            raise StateError(f"the state database {self.url} is closed")
        try:
            yield
        except psycopg.Error as e:
            raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
        except PoolTimeout as e:
            raise StateError(
                f"state database {self.url}: no connection within {POOL_TIMEOUT_S:g} s ({e})"
            ) from e

    # -- leases ----------------------------------------------------------------------------
    def claim_params(self) -> dict[str, Any]:
        """The claimer and the lease a claim records."""
        return {"claimer": self.claimer, "lease": self.lease_seconds}

    def claimed(self, key: tuple[str, str]) -> None:
        """Renew the lease of ``key`` until it is settled."""
        with self._in_flight_mutex:
            self._in_flight.add(key)

    def settled(self, key: tuple[str, str]) -> None:
        """``key`` was marked: its lease is over."""
        with self._in_flight_mutex:
            self._in_flight.discard(key)

    def renew_leases(self) -> int:
        """Extend the unexpired leases of this process's rows in flight; how many."""
        with self._in_flight_mutex:
            if not self._in_flight:
                return 0
        return self.execute(
            f"""UPDATE deliveries SET lease_until = {_LEASE}
                WHERE claimed_by = %(claimer)s AND status = 'sending'
                    AND lease_until >= clock_timestamp()""",
            {"claimer": self.claimer, "lease": self.lease_seconds},
        )

    def _renew_loop(self) -> None:
        interval = self.lease_seconds * LEASE_RENEW_FRACTION
        while not self._stop.wait(interval):
            try:
                self.renew_leases()
            except StateError as e:  # the next round retries; the lease bounds the damage
                log.warning("could not renew the leases of messages in flight: %s", e)

    # -- the papers lock -------------------------------------------------------------------
    def try_lock(self, key: str) -> bool:
        """A session-level advisory lock on a connection of its own: released by
        :meth:`unlock`, or by the server when this process dies."""
        with self._locks_mutex:
            conn = self._lock_connection()
            try:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(current_schema() || %s))",
                    (PAPERS_LOCK_NAMESPACE, key),
                ).fetchone()
            except psycopg.Error as e:
                self._drop_lock_connection()
                raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
            return bool(row and row[0])

    def unlock(self, key: str) -> None:
        """Release the advisory lock :meth:`try_lock` took (no-op if not held)."""
        with self._locks_mutex:
            if self._locks_conn is None:
                return
            try:
                self._locks_conn.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(current_schema() || %s))",
                    (PAPERS_LOCK_NAMESPACE, key),
                )
            except psycopg.Error as e:  # the connection is gone: so is its lock
                log.debug("unlocking papers%s: %s", key, e)
                self._drop_lock_connection()

    def _lock_connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StateError(f"the state database {self.url} is closed")
        if self._locks_conn is None or self._locks_conn.closed:
            try:
                self._locks_conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.Error as e:
                raise StateError(
                    f"cannot reach the state database {self.url}: {_why(e, self._url)}"
                ) from None
        return self._locks_conn

    def _drop_lock_connection(self) -> None:
        if self._locks_conn is not None:
            self._locks_conn.close()
            self._locks_conn = None

    # -- reading in chunks -----------------------------------------------------------------
    def stream(
        self, sql: str, params: Params, size: int, after: Callable[[Row], Params]
    ) -> Iterator[list[Row]]:
        """Every row of ``sql`` in chunks of ``size``: a server-side cursor (``DECLARE``) in a
        transaction of a pooled connection (one snapshot; the rows stay on the server until
        fetched). ``after`` is not needed (the statement's PostgreSQL variant has no pages)."""
        del after
        name = f"digest_stream_{next(_STREAMS)}"
        with self._conn() as conn, conn.transaction(), conn.cursor(name=name) as cur:
            cur.itersize = size
            cur.execute(sql, params)
            while True:
                rows = cur.fetchmany(size)
                if not rows:
                    return
                yield rows

    # -- copying in ------------------------------------------------------------------------
    def lock_table(self, table: str) -> None:
        """``LOCK TABLE … IN EXCLUSIVE MODE`` (inside a unit)."""
        self.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")  # one of COPY_TABLES

    def copy_in(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> int:
        """``COPY … FROM STDIN`` (inside a unit)."""
        ident = sql.Identifier(table)
        count = 0
        with self._conn() as conn:
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                ident, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count

    def imported(self, table: str) -> None:
        """New ids of an identity column follow the copied ones."""
        if table in _IDENTITY_TABLES:
            self.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )


def probe(url: str) -> int:
    """The schema version of the database ``url`` (0: no ``digest`` tables yet); no changes.

    Raises:
        StateError: the database cannot be reached.
    """
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            return _version(conn)
    except psycopg.Error as e:
        # Not chained: libpq may quote the URL's password in its message (--debug shows causes).
        raise StateError(
            f"cannot reach the state database {redact_url(url)}: {_why(e, url)}"
        ) from None


def _version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _why(e: psycopg.Error, url: str) -> str:
    """The driver's message on one line, without the secrets of ``url`` it may quote."""
    return redact_text(" ".join(str(e).split()), url) or type(e).__name__
