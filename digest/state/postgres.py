"""The PostgreSQL state backend: one database shared by any number of senders and hosts.

``DIGEST_STATE_URL=postgresql://user@host:5432/dbname`` (any libpq URL; the password belongs in
``PGPASSWORD`` or ``~/.pgpass``). Through psycopg 3 with a small psycopg-pool connection pool.

Work sharing without a lock or a leader (:attr:`PostgresStore.shared` is ``True``):

* A delivery is claimed by one atomic statement, ``INSERT … ON CONFLICT (subscriber, edition)
  DO UPDATE SET status = 'sending' … WHERE deliveries.status IN ('owed') RETURNING``: of two
  processes claiming the same row at once, PostgreSQL makes the second wait for the first's
  row lock and then re-evaluates the ``WHERE`` on the new row, so exactly one gets it.
* The claim records the claimer's id (``host:pid:random``) and a lease (``lease_until``, the
  *database's* clock plus ``lease_seconds``, so hosts' clocks do not matter). A thread of the
  claiming process renews the leases of its rows in flight every third of the lease; a lease
  that has run out is never renewed.
* :meth:`PostgresStore.recover_unknown` turns ``sending`` rows whose lease has run out (their
  process died, or lost the database for longer than a lease) into ``unknown``: reported,
  resent only with ``--retry-unknown``. Any process may call it at any time; the daemon does
  at every tick, so a dead sender needs no restart anywhere.
* Papers are fetched once per (source, day) across processes: :meth:`try_lock_papers` takes a
  session-level advisory lock (released at unlock or when the process's connection ends);
  the others wait for the stored list.

Durability: every write is one transaction committed with the server's ``synchronous_commit``
(default ``on``: flushed to the WAL before the commit returns), or one savepoint of a
:meth:`PostgresStore.transaction` block committed with the block's other writes (a send's
group commit, :mod:`digest.state.group`). Timestamps are ``timestamptz``
(returned in UTC). The schema is versioned in ``meta.schema_version``; :data:`MIGRATIONS` are
applied at open under a session-level advisory lock taken before the migration's transaction
begins (so the transaction sees what a process migrating first committed): several processes
starting at once migrate once. A database with a higher version is refused.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from digest.clock import Clock, utc_now
from digest.errors import StateError
from digest.models import Feedback, Paper, papers_from_stored
from digest.state.base import (
    COPY_TABLES,
    DEFAULT_LEASE_S,
    INTERRUPTED,
    LEASE_RENEW_FRACTION,
    TRANSITIONS,
    BounceEvent,
    BounceKind,
    BounceScore,
    Delivery,
    DeliveryStatus,
    ProcessedMessage,
    StatusMap,
    Suppression,
    SuppressionReason,
    Transition,
    address_key,
    allowed_sql,
    claimer_id,
    redact_text,
    redact_url,
)
from digest.state.records import Event, Signup

log = logging.getLogger(__name__)

POOL_MAX_SIZE = 4
"""Connections per process: the state-writer thread, the event loop, the lease renewer."""
CONNECT_TIMEOUT_S = 10
"""How long opening the first connection may take, seconds."""
POOL_TIMEOUT_S = 30.0
"""How long a call waits for a free connection of the pool, seconds."""
PAPERS_LOCK_NAMESPACE = 0x64670001
"""First key of the advisory locks taken by :meth:`PostgresStore.try_lock_papers`."""
MIGRATION_LOCK_KEY = 0x6467_6D69_6772_6174
"""Advisory lock key serializing schema migrations across processes."""

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE deliveries (
        subscriber text NOT NULL,
        edition text NOT NULL,
        status text NOT NULL
            CHECK (status IN ('owed', 'sending', 'sent', 'failed', 'unknown', 'skipped')),
        detail text,
        message_id text,
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        sent_at timestamptz,
        last_code integer,
        last_error text,
        claimed_by text,
        lease_until timestamptz,
        PRIMARY KEY (subscriber, edition)
    )""",
    "CREATE INDEX deliveries_by_edition ON deliveries (edition, status)",
    "CREATE INDEX deliveries_in_flight ON deliveries (claimed_by) WHERE status = 'sending'",
    """CREATE TABLE papers (
        day date NOT NULL,
        source text NOT NULL,
        fetched_at timestamptz NOT NULL,
        payload text NOT NULL,
        PRIMARY KEY (day, source)
    )""",
    """CREATE TABLE feed_cache (
        url text PRIMARY KEY,
        etag text,
        last_modified text,
        body bytea,
        fetched_at timestamptz NOT NULL
    )""",
)

_SCHEMA_V2 = (
    # The suppression list: one row per suppression, kept after it is lifted (history); at
    # most one active (lifted_at IS NULL) row per address.
    """CREATE TABLE suppressions (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        address text NOT NULL,
        reason text NOT NULL
            CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'manual')),
        since timestamptz NOT NULL,
        evidence text NOT NULL,
        actor text NOT NULL,
        lifted_at timestamptz,
        lifted_by text
    )""",
    "CREATE UNIQUE INDEX suppressions_active ON suppressions (address) WHERE lifted_at IS NULL",
    "CREATE INDEX suppressions_by_address ON suppressions (address, since)",
)

_SCHEMA_V3 = (
    # Bounces and complaints, one row each (SMTP-time refusals and DSN/ARF reports).
    """CREATE TABLE bounces (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        address text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
        at timestamptz NOT NULL,
        edition text,
        message_id text,
        evidence text NOT NULL,
        source text NOT NULL,
        scored integer NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX bounces_by_address ON bounces (address, at)",
    # The bounce score of each address (policy in digest.bounces.policy).
    """CREATE TABLE bounce_scores (
        address text PRIMARY KEY,
        hard integer NOT NULL DEFAULT 0,
        soft double precision NOT NULL DEFAULT 0,
        last_scored_day date,
        last_bounce_at timestamptz
    )""",
    # Bounce-mailbox messages already handled (key: sha256 of the raw bytes): exactly once.
    """CREATE TABLE processed_messages (
        key text PRIMARY KEY,
        message_id text,
        at timestamptz NOT NULL,
        outcome text NOT NULL,
        detail text NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX deliveries_by_message_id ON deliveries (message_id)",
)

_SCHEMA_V4 = (
    # Events and pending sign-ups of the web app (see digest.state.records).
    """CREATE TABLE events (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        subscriber text NOT NULL,
        request text NOT NULL DEFAULT '',
        detail text NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX events_by_subscriber ON events (subscriber, id)",
    """CREATE TABLE signups (
        id text PRIMARY KEY,
        address text NOT NULL,
        name text,
        keywords text NOT NULL DEFAULT '[]',
        client text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        confirmed_at timestamptz
    )""",
    "CREATE INDEX signups_by_address ON signups (address, created_at)",
    "CREATE INDEX signups_by_client ON signups (client, created_at)",
)

_SCHEMA_V5 = (
    # Which papers (bare arXiv ids) each delivery carried, written with its claim.
    """CREATE TABLE delivery_papers (
        subscriber text NOT NULL,
        edition text NOT NULL,
        arxiv_id text NOT NULL,
        PRIMARY KEY (subscriber, edition, arxiv_id)
    )""",
    "CREATE INDEX delivery_papers_by_paper ON delivery_papers (arxiv_id)",
    # 👍/👎 from the email: the latest verdict per (subscriber, paper).
    """CREATE TABLE feedback (
        subscriber text NOT NULL,
        arxiv_id text NOT NULL,
        verdict text NOT NULL CHECK (verdict IN ('like', 'dislike')),
        at timestamptz NOT NULL,
        PRIMARY KEY (subscriber, arxiv_id)
    )""",
    # Single papers fetched by id (a liked paper no stored day lists).
    """CREATE TABLE known_papers (
        arxiv_id text PRIMARY KEY,
        fetched_at timestamptz NOT NULL,
        payload text NOT NULL
    )""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _SCHEMA_V1,
    _SCHEMA_V2,
    _SCHEMA_V3,
    _SCHEMA_V4,
    _SCHEMA_V5,
)
"""Ordered schema migrations (SQL statements each); version *n* = the first *n* applied.
Append only. Numbered like :data:`digest.state.sqlite.MIGRATIONS`: the same version holds the
same tables in both backends."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this ``digest`` writes."""

_COLUMNS = (
    "subscriber, edition, status, detail, message_id, attempts, created_at, updated_at, "
    "sent_at, last_code, last_error"
)
_SUPPRESSION_COLUMNS = "address, reason, since, evidence, actor, lifted_at, lifted_by"
_COPY_COLUMNS: dict[str, tuple[str, ...]] = {
    "deliveries": tuple(c.strip() for c in _COLUMNS.split(",")),
    "suppressions": ("id", *(c.strip() for c in _SUPPRESSION_COLUMNS.split(","))),
    "papers": ("day", "source", "fetched_at", "payload"),
    "feed_cache": ("url", "etag", "last_modified", "body", "fetched_at"),
    "bounces": (
        "id",
        "address",
        "kind",
        "at",
        "edition",
        "message_id",
        "evidence",
        "source",
        "scored",
    ),
    "bounce_scores": ("address", "hard", "soft", "last_scored_day", "last_bounce_at"),
    "processed_messages": ("key", "message_id", "at", "outcome", "detail"),
    "events": ("id", "at", "actor", "action", "subscriber", "request", "detail"),
    "delivery_papers": ("subscriber", "edition", "arxiv_id"),
    "feedback": ("subscriber", "arxiv_id", "verdict", "at"),
    "known_papers": ("arxiv_id", "fetched_at", "payload"),
    "signups": (
        "id",
        "address",
        "name",
        "keywords",
        "client",
        "created_at",
        "expires_at",
        "confirmed_at",
    ),
}
_IDENTITY_TABLES = frozenset({"suppressions", "bounces", "events"})
"""Tables whose ``id`` is an identity column (its sequence is moved past copied rows)."""
_SCORE_COLUMNS = "address, hard, soft, last_scored_day, last_bounce_at"
_INSERT_PROCESSED = """INSERT INTO processed_messages (key, message_id, at, outcome, detail)
    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING"""
_LEASE = "clock_timestamp() + make_interval(secs => %(lease)s)"


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


class PostgresStore:
    """The state in a PostgreSQL database; implements :class:`~digest.state.base.StateBackend`.

    Open one per process (it holds a small connection pool and a lease-renewal thread); use
    it as a context manager. All methods are synchronous, thread-safe and one transaction each
    (or savepoints of one :meth:`transaction` block).

    Args:
        url: a libpq connection URL (``postgresql://user@host:5432/db``).
        now: the clock for the timestamps written (aware UTC); leases use the database's clock.
        lease_seconds: how long a claim lasts unless renewed, seconds (> 0).

    Raises:
        StateError: the database cannot be reached, or its schema is newer than this ``digest``.
    """

    shared = True
    """Any number of senders: claims arbitrate, :meth:`sender_lock` is not exclusive."""

    def __init__(
        self, url: str, *, now: Clock = utc_now, lease_seconds: float = DEFAULT_LEASE_S
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.url = redact_url(url)
        self.claimer = claimer_id()
        self.lease_seconds = lease_seconds
        self._now = now
        self._in_flight: set[tuple[str, str]] = set()
        self._in_flight_mutex = threading.Lock()
        self._locks_mutex = threading.Lock()
        self._locks_conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._local = threading.local()  # .conn: this thread's open transaction() connection
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
                self._migrate(conn)
        except psycopg.Error as e:
            # Not chained: libpq may quote the URL's password (--debug shows causes).
            raise StateError(
                f"cannot reach the state database {self.url}: {_why(e, url)}"
            ) from None
        self._url = url
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
        self.feed_cache = PgFeedCache(self)
        """The conditional-GET cache for feed sources, stored in this database."""

    # -- lifecycle -------------------------------------------------------------------------
    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state database {self.url} was created by a newer digest (schema version "
                f"{version}, this one understands up to {SCHEMA_VERSION}); upgrade digest"
            )
        if version == SCHEMA_VERSION:
            return
        # The lock is taken before the transaction, not inside it: a transaction's start is
        # where the server reads the catalog changes other sessions committed. Taken inside,
        # a process that had waited for another's migration still found no `meta` (its
        # catalog cache remembered the table missing) and failed creating it again.
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            with conn.transaction():
                version = _version(conn)  # another process may have migrated meanwhile
                if version > SCHEMA_VERSION:
                    raise StateError(
                        f"the state database {self.url} was created by a newer digest (schema "
                        f"version {version}, this one understands up to {SCHEMA_VERSION}); "
                        "upgrade digest"
                    )
                for number in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[number]:
                        conn.execute(statement)
                    log.info(
                        "state database %s: migrated to schema version %d", self.url, number + 1
                    )
                conn.execute(
                    """INSERT INTO meta (key, value) VALUES ('schema_version', %s)
                       ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                    (str(SCHEMA_VERSION),),
                )
                if version == 0:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('created_at', %s) "
                        "ON CONFLICT (key) DO NOTHING",
                        (self._stamp().isoformat(),),
                    )
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

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
            if self._locks_conn is not None:
                self._locks_conn.close()
                self._locks_conn = None
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the database (``meta.schema_version``)."""
        with self._conn() as conn:
            return _version(conn)

    def sender_lock(self, *, purpose: str) -> AbstractContextManager[dict[str, Any]]:
        """Nothing exclusive: any number of senders share the database; claims arbitrate.

        Yields:
            This process's holder information (pid, host, purpose, claimer, since).
        """
        return self._sender(purpose)

    @contextmanager
    def _sender(self, purpose: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "purpose": purpose,
            "command": " ".join(sys.argv),
            "claimer": self.claimer,
            "since": self._stamp().isoformat(timespec="seconds"),
        }
        log.info("%s as claimer %s on the shared state %s", purpose, self.claimer, self.url)
        yield info

    # -- helpers ---------------------------------------------------------------------------
    def _stamp(self) -> datetime:
        return self._now().astimezone(UTC)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group this thread's writes inside the block into one transaction (one commit).

        The block holds one pooled connection inside ``BEGIN`` … ``COMMIT``; every call of
        this thread inside it uses that connection, each write in a savepoint of its own (one
        that raises is rolled back alone). Other threads and processes see the writes at the
        commit; a row claimed in the block stays locked until then (another claimer of it
        waits, then finds it taken). A nested block is a savepoint. See
        :meth:`~digest.state.base.StateBackend.transaction`.

        Raises:
            StateError: the database could not begin or commit (the block's writes are
                rolled back), or the store is closed.
        """
        held: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if held is not None:
            with self._conn() as conn:  # a savepoint of the open transaction
                del conn
                yield
            return
        if self._closed:
            raise StateError(f"the state database {self.url} is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
        except psycopg.Error as e:
            raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
        except PoolTimeout as e:
            raise StateError(
                f"state database {self.url}: no connection within {POOL_TIMEOUT_S:g} s ({e})"
            ) from e

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: each statement is its own transaction).

        Inside :meth:`transaction`: the block's connection, in a savepoint of its own.
        """
        if self._closed:
            raise StateError(f"the state database {self.url} is closed")
        held: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if held is not None:
            try:
                with held.transaction():
                    yield held
            except psycopg.Error as e:
                raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
        except PoolTimeout as e:
            raise StateError(
                f"state database {self.url}: no connection within {POOL_TIMEOUT_S:g} s ({e})"
            ) from e

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside a transaction of its own (a savepoint inside :meth:`transaction`)."""
        if getattr(self._local, "conn", None) is not None:
            with self._conn() as conn:  # already a savepoint of the block
                yield conn
            return
        with self._conn() as conn, conn.transaction():
            yield conn

    def _query(self, query: Any, params: Any = None) -> builtins.list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(query, params).fetchall()

    def _execute(self, query: Any, params: Any = None) -> int:
        with self._conn() as conn:
            return conn.execute(query, params).rowcount

    # -- deliveries ------------------------------------------------------------------------
    def get(self, subscriber: str, edition: str) -> Delivery | None:
        """The row for (``subscriber``, ``edition``), or ``None`` if there is none."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM deliveries WHERE subscriber = %s AND edition = %s",
            (address_key(subscriber), edition),
        )
        return _delivery(rows[0]) if rows else None

    def statuses(
        self, editions: Iterable[str], subscribers: Iterable[str] | None = None
    ) -> StatusMap:
        """The status of every row of ``editions`` (of ``subscribers`` only, if given); one query.

        Returns:
            ``{(subscriber, edition): status}``; absent rows are absent.
        """
        keys = sorted(set(editions))
        if not keys:
            return {}
        if subscribers is None:
            rows = self._query(
                "SELECT subscriber, edition, status FROM deliveries WHERE edition = ANY(%s)",
                (keys,),
            )
        else:
            rows = self._query(
                "SELECT subscriber, edition, status FROM deliveries "
                "WHERE edition = ANY(%s) AND subscriber = ANY(%s)",
                (keys, sorted({address_key(s) for s in subscribers})),
            )
        return {(r[0], r[1]): DeliveryStatus(r[2]) for r in rows}

    def claim(
        self, subscriber: str, edition: str, message_id: str, papers: Sequence[str] = ()
    ) -> bool:
        """Atomically take (``subscriber``, ``edition``): absent/``owed`` → ``sending``.

        One statement; the row records :attr:`claimer` and a lease of :attr:`lease_seconds`
        (database clock), renewed by this process until the row is marked.

        Returns:
            ``True`` if this call took the row; ``False`` if any process has it, or it is
            ``sent``, ``failed``, ``skipped`` or ``unknown``.
        """
        stamp = self._stamp()
        key = (address_key(subscriber), edition)
        with self._tx() as conn:
            rows = conn.execute(
                f"""INSERT INTO deliveries (subscriber, edition, status, message_id, attempts,
                    created_at, updated_at, claimed_by, lease_until)
                VALUES (%(subscriber)s, %(edition)s, 'sending', %(message_id)s, 0, %(stamp)s,
                    %(stamp)s, %(claimer)s, {_LEASE})
                ON CONFLICT (subscriber, edition) DO UPDATE
                    SET status = 'sending', message_id = excluded.message_id, detail = NULL,
                        updated_at = excluded.updated_at, claimed_by = excluded.claimed_by,
                        lease_until = excluded.lease_until
                    WHERE {allowed_sql(Transition.CLAIM)}
                RETURNING 1""",
                {
                    "subscriber": key[0],
                    "edition": edition,
                    "message_id": message_id,
                    "stamp": stamp,
                    "claimer": self.claimer,
                    "lease": self.lease_seconds,
                },
            ).fetchall()
            if rows:  # the papers the message carries, replacing an earlier attempt's
                conn.execute(
                    "DELETE FROM delivery_papers WHERE subscriber = %s AND edition = %s", key
                )
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO delivery_papers VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        [(*key, p) for p in papers],
                    )
        if rows:
            with self._in_flight_mutex:
                self._in_flight.add(key)
        return bool(rows)

    def _settled(self, subscriber: str, edition: str) -> None:
        with self._in_flight_mutex:
            self._in_flight.discard((address_key(subscriber), edition))

    def mark_sent(
        self,
        subscriber: str,
        edition: str,
        reply: str = "",
        *,
        code: int | None = None,
        attempts: int = 1,
    ) -> None:
        """Record that the transport accepted the message: → ``sent``, ``sent_at`` = now.

        Unconditional (creates the row; overrides even ``unknown``, e.g. a lease that ran out
        while this process was still sending): the message is out, whatever the row said.
        """
        stamp = self._stamp()
        self._execute(
            f"""INSERT INTO deliveries (subscriber, edition, status, detail, attempts,
                    created_at, updated_at, sent_at, last_code, last_error)
                VALUES (%s, %s, 'sent', %s, %s, %s, %s, %s, %s, NULL)
                ON CONFLICT (subscriber, edition) DO UPDATE
                    SET status = 'sent', detail = excluded.detail,
                        attempts = deliveries.attempts + excluded.attempts,
                        updated_at = excluded.updated_at, sent_at = excluded.sent_at,
                        last_code = excluded.last_code, lease_until = NULL
                    WHERE {allowed_sql(Transition.SENT)}""",
            (address_key(subscriber), edition, reply or None, attempts, stamp, stamp, stamp, code),
        )
        self._settled(subscriber, edition)

    def mark_failed(
        self,
        subscriber: str,
        edition: str,
        error: str,
        code: int | None = None,
        *,
        attempts: int = 1,
    ) -> None:
        """Record a permanent failure: → ``failed``; never over ``sent`` (logged, ignored)."""
        self._mark_unsent(subscriber, edition, Transition.FAILED, error, code, attempts)

    def mark_deferred(
        self,
        subscriber: str,
        edition: str,
        error: str,
        code: int | None = None,
        *,
        attempts: int = 1,
    ) -> None:
        """Record a transient failure (or hand back an unsent claim): → ``owed``; not over sent."""
        self._mark_unsent(subscriber, edition, Transition.DEFERRED, error, code, attempts)

    def mark_unknown(
        self,
        subscriber: str,
        edition: str,
        error: str,
        code: int | None = None,
        *,
        attempts: int = 1,
    ) -> None:
        """Record that the outcome cannot be known: → ``unknown``; never over ``sent``."""
        self._mark_unsent(subscriber, edition, Transition.UNKNOWN, error, code, attempts)

    def _mark_unsent(
        self,
        subscriber: str,
        edition: str,
        transition: Transition,
        error: str,
        code: int | None,
        attempts: int,
    ) -> None:
        status = TRANSITIONS[transition].target
        stamp = self._stamp()
        count = self._execute(
            f"""INSERT INTO deliveries (subscriber, edition, status, attempts, created_at,
                    updated_at, last_code, last_error)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (subscriber, edition) DO UPDATE
                    SET status = excluded.status, detail = NULL,
                        attempts = deliveries.attempts + excluded.attempts,
                        updated_at = excluded.updated_at, last_code = excluded.last_code,
                        last_error = excluded.last_error, lease_until = NULL
                    WHERE {allowed_sql(transition)}""",
            (address_key(subscriber), edition, str(status), attempts, stamp, stamp, code, error),
        )
        self._settled(subscriber, edition)
        if count == 0:
            log.warning(
                "%s: edition %s is already sent; not marking it %s (%s)",
                subscriber,
                edition,
                status,
                error,
            )

    def mark_skipped(self, subscriber: str, edition: str, detail: str) -> None:
        """Record that the edition is deliberately not sent: → ``skipped``; never over ``sent``."""
        stamp = self._stamp()
        count = self._execute(
            f"""INSERT INTO deliveries (subscriber, edition, status, detail, attempts,
                    created_at, updated_at)
                VALUES (%s, %s, 'skipped', %s, 0, %s, %s)
                ON CONFLICT (subscriber, edition) DO UPDATE
                    SET status = 'skipped', detail = excluded.detail,
                        updated_at = excluded.updated_at, lease_until = NULL
                    WHERE {allowed_sql(Transition.SKIPPED)}""",
            (address_key(subscriber), edition, detail, stamp, stamp),
        )
        self._settled(subscriber, edition)
        if count == 0:
            log.warning("%s: edition %s is already sent; not skipping it", subscriber, edition)

    def recover_unknown(self) -> builtins.list[Delivery]:
        """Turn ``sending`` rows whose lease ran out (their process died) into ``unknown``.

        Safe at any time from any process: rows of live senders keep a fresh lease.

        Returns:
            The rows changed, now ``unknown``, ordered by (edition, subscriber).
        """
        rows = self._query(
            f"""UPDATE deliveries SET status = 'unknown', updated_at = %s,
                    last_error = coalesce(last_error, %s), lease_until = NULL
                WHERE {allowed_sql(Transition.EXPIRE, "status")}
                    AND (lease_until IS NULL OR lease_until < clock_timestamp())
                RETURNING {_COLUMNS}""",
            (self._stamp(), INTERRUPTED),
        )
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.edition, d.subscriber))

    def reopen(self, subscriber: str, edition: str) -> None:
        """Put (``subscriber``, ``edition``) back to ``owed`` whatever its status (creates it)."""
        stamp = self._stamp()
        self._execute(
            """INSERT INTO deliveries (subscriber, edition, status, attempts, created_at,
                    updated_at)
                VALUES (%s, %s, 'owed', 0, %s, %s)
                ON CONFLICT (subscriber, edition) DO UPDATE
                    SET status = 'owed', detail = NULL, updated_at = excluded.updated_at,
                        lease_until = NULL""",
            (address_key(subscriber), edition, stamp, stamp),
        )
        self._settled(subscriber, edition)

    # -- leases ----------------------------------------------------------------------------
    def renew_leases(self) -> int:
        """Extend the lease of this process's rows in flight; returns how many.

        A lease that has already run out is not renewed: another process may have counted
        the row as a dead sender's (``unknown``) meanwhile.
        """
        with self._in_flight_mutex:
            if not self._in_flight:
                return 0
        return self._execute(
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

    # -- suppression list ------------------------------------------------------------------
    def suppress(
        self,
        address: str,
        reason: SuppressionReason | str,
        *,
        evidence: str,
        actor: str,
        now: datetime | None = None,
    ) -> bool:
        """Put ``address`` on the suppression list (idempotent); True if newly suppressed.

        Raises:
            ValueError: ``reason`` is not a :class:`SuppressionReason`.
        """
        why = SuppressionReason(reason)
        return (
            self._execute(
                """INSERT INTO suppressions (address, reason, since, evidence, actor)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (address) WHERE lifted_at IS NULL DO NOTHING""",
                (address_key(address), str(why), self._stamp_of(now), evidence, actor),
            )
            > 0
        )

    def unsuppress(self, address: str, *, actor: str, now: datetime | None = None) -> bool:
        """Lift the active suppression of ``address`` (kept in the history); True if lifted."""
        return (
            self._execute(
                """UPDATE suppressions SET lifted_at = %s, lifted_by = %s
                   WHERE address = %s AND lifted_at IS NULL""",
                (self._stamp_of(now), actor, address_key(address)),
            )
            > 0
        )

    def suppression(self, address: str) -> Suppression | None:
        """The active suppression of ``address``, or ``None`` if it may be mailed."""
        rows = self._query(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "
            "WHERE address = %s AND lifted_at IS NULL",
            (address_key(address),),
        )
        return _suppression(rows[0]) if rows else None

    def suppressions(self) -> dict[str, Suppression]:
        """Every active suppression, by normalized address."""
        rows = self._query(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE lifted_at IS NULL"
        )
        return {r[0]: _suppression(r) for r in rows}

    def suppression_history(self, address: str | None = None) -> builtins.list[Suppression]:
        """Every suppression ever recorded (lifted ones too), oldest first."""
        where, params = (
            ("", ()) if address is None else (" WHERE address = %s", (address_key(address),))
        )
        rows = self._query(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions{where} ORDER BY since, id", params
        )
        return [_suppression(r) for r in rows]

    # -- bounces ---------------------------------------------------------------------------
    def record_bounces(
        self,
        items: Sequence[tuple[BounceEvent, BounceScore, Suppression | None]],
        *,
        processed: ProcessedMessage | None = None,
    ) -> builtins.list[bool]:
        """Record bounces, their new scores, suppressions and the processed message at once.

        One transaction: all of it or none of it, so a bounce message whose result is
        committed is never counted twice, whichever host reads the bounce mailbox.

        Returns:
            For each item, True if its suppression was newly added.

        Raises:
            StateError: the message was already processed (nothing written).
        """
        added: builtins.list[bool] = []
        with self._tx() as conn:
            if processed is not None:
                cur = conn.execute(_INSERT_PROCESSED, _processed_params(processed))
                if cur.rowcount == 0:
                    raise StateError(f"bounce message {processed.key} was already processed")
            for event, score, suppression in items:
                address = address_key(event.address)
                conn.execute(
                    """INSERT INTO bounces (address, kind, at, edition, message_id, evidence,
                           source, scored)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    (
                        address,
                        str(event.kind),
                        event.at.astimezone(UTC),
                        event.edition,
                        event.message_id,
                        event.evidence,
                        event.source,
                        int(event.scored),
                    ),
                )
                conn.execute(
                    """INSERT INTO bounce_scores (address, hard, soft, last_scored_day,
                           last_bounce_at)
                       VALUES (%s, %s, %s, %s, %s)
                       ON CONFLICT (address) DO UPDATE
                           SET hard = excluded.hard, soft = excluded.soft,
                               last_scored_day = excluded.last_scored_day,
                               last_bounce_at = excluded.last_bounce_at""",
                    (address, score.hard, score.soft, score.last_scored_day, score.last_bounce_at),
                )
                new = False
                if suppression is not None:
                    cur = conn.execute(
                        """INSERT INTO suppressions (address, reason, since, evidence, actor)
                           VALUES (%s, %s, %s, %s, %s)
                           ON CONFLICT (address) WHERE lifted_at IS NULL DO NOTHING""",
                        (
                            address,
                            str(suppression.reason),
                            suppression.since.astimezone(UTC),
                            suppression.evidence,
                            suppression.actor,
                        ),
                    )
                    new = cur.rowcount > 0
                added.append(new)
        return added

    def mark_processed(self, processed: ProcessedMessage) -> bool:
        """Mark a bounce-mailbox message handled without a bounce; False if it already was."""
        return self._execute(_INSERT_PROCESSED, _processed_params(processed)) > 0

    def processed(self, key: str) -> ProcessedMessage | None:
        """The record of the bounce-mailbox message ``key`` (``sha256:<hex>``), or ``None``."""
        rows = self._query(
            "SELECT key, message_id, at, outcome, detail FROM processed_messages WHERE key = %s",
            (key,),
        )
        if not rows:
            return None
        r = rows[0]
        return ProcessedMessage(r[0], r[1], r[2].astimezone(UTC), r[3], r[4])

    def bounce_score(self, address: str) -> BounceScore | None:
        """The stored bounce score of ``address`` (not yet decayed), or ``None``."""
        rows = self._query(
            f"SELECT {_SCORE_COLUMNS} FROM bounce_scores WHERE address = %s",
            (address_key(address),),
        )
        return _score(rows[0]) if rows else None

    def bounce_scores(self) -> dict[str, BounceScore]:
        """Every stored bounce score, by address."""
        return {r[0]: _score(r) for r in self._query(f"SELECT {_SCORE_COLUMNS} FROM bounce_scores")}

    def bounce_events(self, address: str | None = None) -> builtins.list[BounceEvent]:
        """Recorded bounces and complaints, oldest first (optionally of one address)."""
        query = (
            "SELECT address, kind, at, edition, message_id, evidence, source, scored FROM bounces"
        )
        params: tuple[str, ...] = ()
        if address is not None:
            query += " WHERE address = %s"
            params = (address_key(address),)
        return [
            BounceEvent(
                r[0], BounceKind(r[1]), r[2].astimezone(UTC), r[3], r[4], r[5], r[6], bool(r[7])
            )
            for r in self._query(query + " ORDER BY at, id", params)
        ]

    def find_message(self, message_id: str) -> Delivery | None:
        """The delivery whose last claimed ``Message-ID`` is ``message_id`` (``<...>``)."""
        mid = message_id.strip()
        if not mid.startswith("<"):
            mid = f"<{mid}>"
        rows = self._query(f"SELECT {_COLUMNS} FROM deliveries WHERE message_id = %s", (mid,))
        return _delivery(rows[0]) if rows else None

    def last_delivery_to(self, address: str) -> Delivery | None:
        """The most recent ``sent`` (or ``failed``) delivery to ``address``, or ``None``."""
        rows = self._query(
            f"""SELECT {_COLUMNS} FROM deliveries
                WHERE subscriber = %s AND status IN ('sent', 'failed')
                ORDER BY coalesce(sent_at, updated_at) DESC LIMIT 1""",
            (address_key(address),),
        )
        return _delivery(rows[0]) if rows else None

    # -- events and sign-ups (digest.web) --------------------------------------------------
    def record_event(
        self,
        subscriber: str,
        action: str,
        *,
        actor: str,
        request: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one event: who (``actor``), what (``action``), when (now), from which
        ``request``; never a token. ``detail`` is stored as JSON."""
        self._execute(
            "INSERT INTO events (at, actor, action, subscriber, request, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                self._stamp(),
                actor,
                action,
                address_key(subscriber),
                request,
                json.dumps(detail or {}, sort_keys=True),
            ),
        )

    def events(self, subscriber: str | None = None) -> builtins.list[Event]:
        """Events in the order they happened, all or one subscriber's."""
        query = "SELECT id, at, actor, action, subscriber, request, detail FROM events"
        params: tuple[str, ...] = ()
        if subscriber is not None:
            query += " WHERE subscriber = %s"
            params = (address_key(subscriber),)
        return [
            Event(int(r[0]), r[1].astimezone(UTC), r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in self._query(query + " ORDER BY id", params)
        ]

    def add_signup(
        self,
        signup_id: str,
        address: str,
        *,
        name: str | None,
        keywords: Sequence[str],
        client: str,
        expires_at: datetime,
    ) -> None:
        """Record a pending double opt-in sign-up (its confirmation mail is the caller's)."""
        self._execute(
            "INSERT INTO signups (id, address, name, keywords, client, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                signup_id,
                address_key(address),
                name,
                json.dumps(list(keywords)),
                client,
                self._stamp(),
                expires_at.astimezone(UTC),
            ),
        )

    def signup(self, signup_id: str) -> Signup | None:
        """The sign-up with this id, or ``None``."""
        rows = self._query(
            "SELECT id, address, name, keywords, client, created_at, expires_at, confirmed_at "
            "FROM signups WHERE id = %s",
            (signup_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Signup(
            r[0],
            r[1],
            r[2],
            tuple(json.loads(r[3])),
            r[4],
            r[5].astimezone(UTC),
            r[6].astimezone(UTC),
            _utc(r[7]),
        )

    def confirm_signup(self, signup_id: str) -> bool:
        """Mark a sign-up confirmed; ``False`` if it already was (or does not exist)."""
        count = self._execute(
            "UPDATE signups SET confirmed_at = %s WHERE id = %s AND confirmed_at IS NULL",
            (self._stamp(), signup_id),
        )
        return count == 1

    def count_signups(
        self, *, since: datetime, address: str | None = None, client: str | None = None
    ) -> int:
        """Sign-ups created at or after ``since`` for one address and/or one client."""
        where = ["created_at >= %s"]
        params: builtins.list[Any] = [since.astimezone(UTC)]
        if address is not None:
            where.append("address = %s")
            params.append(address_key(address))
        if client is not None:
            where.append("client = %s")
            params.append(client)
        rows = self._query(f"SELECT count(*) FROM signups WHERE {' AND '.join(where)}", params)
        return int(rows[0][0])

    def sent_editions(self, *, limit: int = 60) -> builtins.list[tuple[str, datetime]]:
        """``(edition key, first sent at UTC)`` of editions sent to anyone, newest first."""
        rows = self._query(
            "SELECT edition, min(coalesce(sent_at, updated_at)) FROM deliveries "
            "WHERE status = 'sent' GROUP BY edition ORDER BY edition DESC LIMIT %s",
            (limit,),
        )
        return [(r[0], r[1].astimezone(UTC)) for r in rows]

    def signup_addresses(self) -> Iterator[str]:
        """Every address with a sign-up on record (to resolve confirm tokens)."""
        for (address,) in self._query("SELECT DISTINCT address FROM signups"):
            yield address

    def _stamp_of(self, now: datetime | None) -> datetime:
        return self._stamp() if now is None else now.astimezone(UTC)

    # -- papers ----------------------------------------------------------------------------
    def try_lock_papers(self, day: date, source: str) -> bool:
        """Try to become the one process fetching (``day``, ``source``); never blocks.

        A session-level advisory lock on a connection of its own: released by
        :meth:`unlock_papers`, or by the server when this process dies.
        """
        with self._locks_mutex:
            conn = self._lock_connection()
            try:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(current_schema() || %s))",
                    (PAPERS_LOCK_NAMESPACE, f" {day.isoformat()} {source}"),
                ).fetchone()
            except psycopg.Error as e:
                self._drop_lock_connection()
                raise StateError(f"state database {self.url}: {_why(e, self._url)}") from e
            return bool(row and row[0])

    def unlock_papers(self, day: date, source: str) -> None:
        """Release the advisory lock :meth:`try_lock_papers` took (no-op if not held)."""
        with self._locks_mutex:
            if self._locks_conn is None:
                return
            try:
                self._locks_conn.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(current_schema() || %s))",
                    (PAPERS_LOCK_NAMESPACE, f" {day.isoformat()} {source}"),
                )
            except psycopg.Error as e:  # the connection is gone: so is its lock
                log.debug("unlocking papers %s %s: %s", day, source, e)
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

    def save_papers(self, day: date, source: str, papers: Iterable[Paper]) -> None:
        """Store (replace) the papers ``source`` listed for the UTC day ``day`` (JSON)."""
        payload = json.dumps([p.to_dict() for p in papers], ensure_ascii=False)
        self._execute(
            """INSERT INTO papers (day, source, fetched_at, payload) VALUES (%s, %s, %s, %s)
               ON CONFLICT (day, source) DO UPDATE
                   SET fetched_at = excluded.fetched_at, payload = excluded.payload""",
            (day, source, self._stamp(), payload),
        )

    def load_papers(self, day: date, source: str) -> builtins.list[Paper] | None:
        """The papers stored for (``day``, ``source``); ``None`` if never stored (``[]`` = none).

        Each item is validated again (:func:`~digest.models.papers_from_stored`): one that is
        refused now is dropped with a warning, the others are returned.

        Raises:
            StateError: the stored JSON is unreadable (not a JSON list).
        """
        rows = self._query(
            "SELECT payload FROM papers WHERE day = %s AND source = %s", (day, source)
        )
        if not rows:
            return None
        origin = f"state database {self.url}: papers of {day} from {source}"
        try:
            items = json.loads(rows[0][0])
            if not isinstance(items, builtins.list):
                raise TypeError(f"a JSON {type(items).__name__}, not a list")
        except (ValueError, TypeError, RecursionError) as e:
            raise StateError(
                f"{origin} are unreadable ({e}); replace them with "
                f"`digest papers --date {day.isoformat()} --source {source} --refetch`"
            ) from e
        return papers_from_stored(items, origin=origin)

    # -- personal ranking: send history, feedback, single papers ---------------------------
    def sent_papers(
        self, arxiv_ids: Iterable[str], *, except_edition: str | None = None
    ) -> dict[str, frozenset[str]]:
        """Which of ``arxiv_ids`` each subscriber received (deliveries ``sent``/``unknown``
        that carried them, other than ``except_edition``): subscriber → ids."""
        ids = sorted(set(arxiv_ids))
        if not ids:
            return {}
        rows = self._query(
            """SELECT dp.subscriber, dp.arxiv_id FROM delivery_papers dp
               JOIN deliveries d ON d.subscriber = dp.subscriber AND d.edition = dp.edition
               WHERE dp.arxiv_id = ANY(%s) AND d.status IN ('sent', 'unknown')
                 AND dp.edition IS DISTINCT FROM %s""",
            (ids, except_edition),
        )
        out: dict[str, set[str]] = {}
        for who, arxiv_id in rows:
            out.setdefault(who, set()).add(arxiv_id)
        return {k: frozenset(v) for k, v in out.items()}

    def delivery_papers(self, subscriber: str, edition: str) -> builtins.list[str]:
        """The bare arXiv ids the last claimed message of the row carried, sorted."""
        rows = self._query(
            "SELECT arxiv_id FROM delivery_papers WHERE subscriber = %s AND edition = %s "
            "ORDER BY arxiv_id",
            (address_key(subscriber), edition),
        )
        return [r[0] for r in rows]

    def record_feedback(self, subscriber: str, arxiv_id: str, verdict: str) -> bool:
        """Record ``like`` (👍) or ``dislike`` (👎) for a paper (latest wins); ``True`` if it
        changed what is recorded.

        Raises:
            ValueError: ``verdict`` is neither.
        """
        if verdict not in ("like", "dislike"):
            raise ValueError(f"verdict must be 'like' or 'dislike', not {verdict!r}")
        count = self._execute(
            """INSERT INTO feedback (subscriber, arxiv_id, verdict, at) VALUES (%s, %s, %s, %s)
               ON CONFLICT (subscriber, arxiv_id) DO UPDATE
                   SET verdict = excluded.verdict, at = excluded.at
                   WHERE feedback.verdict != excluded.verdict""",
            (address_key(subscriber), arxiv_id, verdict, self._stamp()),
        )
        return count == 1

    def feedback(self, subscriber: str | None = None) -> dict[str, Feedback]:
        """👍/👎 per subscriber (all, or one), oldest first."""
        query = "SELECT subscriber, arxiv_id, verdict FROM feedback"
        params: tuple[str, ...] = ()
        if subscriber is not None:
            query += " WHERE subscriber = %s"
            params = (address_key(subscriber),)
        likes: dict[str, builtins.list[str]] = {}
        dislikes: dict[str, builtins.list[str]] = {}
        for who, arxiv_id, verdict in self._query(query + " ORDER BY at, arxiv_id", params):
            (likes if verdict == "like" else dislikes).setdefault(who, []).append(arxiv_id)
            likes.setdefault(who, [])
            dislikes.setdefault(who, [])
        return {w: Feedback(tuple(likes[w]), tuple(dislikes[w])) for w in likes}

    def save_paper(self, paper: Paper) -> None:
        """Store one paper fetched by id (a liked paper no stored day lists)."""
        self._execute(
            """INSERT INTO known_papers (arxiv_id, fetched_at, payload) VALUES (%s, %s, %s)
               ON CONFLICT (arxiv_id) DO UPDATE
                   SET fetched_at = excluded.fetched_at, payload = excluded.payload""",
            (paper.arxiv_id, self._stamp(), json.dumps(paper.to_dict(), ensure_ascii=False)),
        )

    def find_papers(self, arxiv_ids: Iterable[str]) -> dict[str, Paper]:
        """Stored papers by bare arXiv id (single papers, then every stored day, newest first);
        an unreadable stored entry is skipped."""
        wanted = sorted(set(arxiv_ids))
        out: dict[str, Paper] = {}
        if not wanted:
            return out
        rows = self._query("SELECT payload FROM known_papers WHERE arxiv_id = ANY(%s)", (wanted,))
        rows += self._query(
            """SELECT j.value::text FROM papers,
                   LATERAL json_array_elements(papers.payload::json) AS j
               WHERE j.value->>'arxiv_id' = ANY(%s) ORDER BY papers.day DESC""",
            (wanted,),
        )
        for (payload,) in rows:
            try:
                paper = Paper.from_dict(json.loads(payload))
            except (ValueError, TypeError, KeyError):
                continue
            out.setdefault(paper.arxiv_id, paper)
        return out

    # -- operations ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per copied table (:data:`~digest.state.base.COPY_TABLES`)."""
        out = {}
        for table in COPY_TABLES:
            rows = self._query(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            out[table] = int(rows[0][0])
        return out

    def export_rows(self, table: str) -> tuple[tuple[str, ...], builtins.list[tuple[Any, ...]]]:
        """Every row of ``table`` (timestamps as aware UTC datetimes, days as dates).

        Raises:
            StateError: ``table`` is not one of :data:`~digest.state.base.COPY_TABLES`.
        """
        columns = _copy_columns(table)
        query = sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
        )
        rows = [tuple(_utc(v) for v in row) for row in self._query(query)]
        return columns, rows

    def import_rows(
        self, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
    ) -> int:
        """Copy exported rows into the empty ``table`` (one transaction, ``COPY``).

        Raises:
            StateError: unknown table or column, the table is not empty, or a row is refused.
        """
        known = _copy_columns(table)
        if not set(columns) <= set(known):
            raise StateError(f"{table}: unknown columns {sorted(set(columns) - set(known))}")
        ident = sql.Identifier(table)
        count = 0
        with self._tx() as conn:
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(ident))
            existing = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            if existing and existing[0]:
                raise StateError(f"state database {self.url}: table {table} is not empty")
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                ident, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
            if table in _IDENTITY_TABLES and "id" in columns:  # new ids follow the copied ones
                conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({t}, 'id'), "
                        "coalesce((SELECT max(id) FROM {i}), 0) + 1, false)"
                    ).format(t=sql.Literal(table), i=ident)
                )
        return count

    # -- listing (last: the method name shadows the builtin in this class body) ------------
    def list(
        self,
        edition: str | None = None,
        subscriber: str | None = None,
        statuses: Iterable[str] | None = None,
    ) -> builtins.list[Delivery]:
        """Rows matching every given filter, ordered by (edition, subscriber)."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if edition is not None:
            where.append("edition = %s")
            params.append(edition)
        if subscriber is not None:
            where.append("subscriber = %s")
            params.append(address_key(subscriber))
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            if not wanted:
                return []
            where.append("status = ANY(%s)")
            params.append(wanted)
        query = f"SELECT {_COLUMNS} FROM deliveries"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY edition, subscriber"
        return [_delivery(r) for r in self._query(query, params)]


class PgFeedCache:
    """Conditional-GET cache for feed sources, in the shared database (``feed_cache`` table)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def get(self, url: str) -> tuple[str | None, str | None, bytes] | None:
        """``(etag, last_modified, body)`` last stored for ``url``, or ``None``."""
        rows = self._store._query(
            "SELECT etag, last_modified, body FROM feed_cache WHERE url = %s", (url,)
        )
        if not rows:
            return None
        etag, last_modified, body = rows[0]
        return etag, last_modified, bytes(body or b"")

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes) -> None:
        """Store (replace) the validators and body of a ``200`` response for ``url``."""
        self._store._execute(
            """INSERT INTO feed_cache (url, etag, last_modified, body, fetched_at)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (url) DO UPDATE
                   SET etag = excluded.etag, last_modified = excluded.last_modified,
                       body = excluded.body, fetched_at = excluded.fetched_at""",
            (url, etag, last_modified, body, self._store._stamp()),
        )


def _copy_columns(table: str) -> tuple[str, ...]:
    try:
        return _COPY_COLUMNS[table]
    except KeyError:
        raise StateError(f"no table {table!r} to copy (one of {', '.join(COPY_TABLES)})") from None


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        subscriber=row[0],
        edition=row[1],
        status=DeliveryStatus(row[2]),
        detail=row[3],
        message_id=row[4],
        attempts=int(row[5]),
        created_at=row[6].astimezone(UTC),
        updated_at=row[7].astimezone(UTC),
        sent_at=_utc(row[8]),
        last_code=row[9],
        last_error=row[10],
    )


def _score(row: Sequence[Any]) -> BounceScore:
    return BounceScore(
        address=row[0],
        hard=int(row[1]),
        soft=float(row[2]),
        last_scored_day=row[3],
        last_bounce_at=_utc(row[4]),
    )


def _processed_params(processed: ProcessedMessage) -> tuple[Any, ...]:
    return (
        processed.key,
        processed.message_id,
        processed.at.astimezone(UTC),
        processed.outcome,
        processed.detail,
    )


def _suppression(row: Sequence[Any]) -> Suppression:
    return Suppression(
        address=row[0],
        reason=SuppressionReason(row[1]),
        since=row[2].astimezone(UTC),
        evidence=row[3],
        actor=row[4],
        lifted_at=_utc(row[5]),
        lifted_by=row[6],
    )
