"""The state file: which subscriber got which edition, stored papers, the feed cache, the lock.

The embedded backend of :class:`~digest.state.base.StateBackend` (``DIGEST_STATE_URL=
sqlite:///path``, the default); the transition rules come from :mod:`digest.state.base`.
One SQLite file (stdlib :mod:`sqlite3`) in WAL mode. It is what makes "never a duplicate, never a
missed day" hold across crashes and restarts:

* a delivery row goes ``owed`` → ``sending`` (committed *before* the message is handed to the
  transport) → ``sent`` / ``failed`` / back to ``owed`` (transient failure, deferred);
* a row still ``sending`` when a run starts was in flight when the previous process died: the
  relay may or may not have accepted it, so :meth:`StateStore.recover_unknown` turns it into
  ``unknown`` and it is *not* resent automatically (``digest send --retry-unknown`` reopens it);
* ``skipped`` rows (``detail``: ``late`` or ``no papers``) and ``sent``/``failed`` rows are final
  unless :meth:`StateStore.reopen` puts them back to ``owed`` (``--resend``).

Durability: ``PRAGMA synchronous=FULL``. In WAL mode ``NORMAL`` survives a process crash but a
power loss or kernel panic may roll back the last commits. Rolling back a committed ``sending``
(or ``sent``) row would turn a message that may already be in the subscriber's inbox back into
``owed``, and the next run would send it again: a duplicate. With ``FULL`` the WAL is fsynced at
every commit, so once :meth:`StateStore.claim` returns ``True`` the claim survives anything short
of disk loss. The cost is one fsync per commit (a few ms); a send shares it between the
writes of its connection pool (group commit: :meth:`StateStore.transaction`,
:mod:`digest.state.group`), so a message costs about 2/N fsyncs with N connections.

Every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (a savepoint of the open one
inside :meth:`StateStore.transaction`); an error rolls it back, so a failure part-way never
leaves a half-written row. Timestamps are ISO 8601 strings in UTC.
Subscriber identity is the lower-cased, stripped email address. Secrets are never stored.

The schema is versioned with ``PRAGMA user_version``: :data:`MIGRATIONS` is the ordered list of
migrations, version *n* is "the first *n* applied". A file with a higher version was written by a
newer ``digest`` and is refused rather than misread.

:func:`state_lock` is the single-sender lock (``<state>.lock``, with holder information in
``<state>.lock.json``).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock

from digest.clock import Clock, utc_now
from digest.errors import StateError, StateLockedError
from digest.models import Feedback, Paper, papers_from_stored
from digest.state.base import (
    COPY_TABLES,
    INTERRUPTED,
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
)
from digest.state.records import RecordsMixin, migrate_events_signups

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


# -- schema ----------------------------------------------------------------------------------

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE deliveries (
        subscriber TEXT NOT NULL,
        edition TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('owed', 'sending', 'sent', 'failed', 'unknown', 'skipped')),
        detail TEXT,
        message_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        sent_at TEXT,
        last_code INTEGER,
        last_error TEXT,
        PRIMARY KEY (subscriber, edition)
    ) WITHOUT ROWID""",
    "CREATE INDEX deliveries_by_edition ON deliveries (edition, status)",
    "CREATE INDEX deliveries_by_status ON deliveries (status)",
    """CREATE TABLE papers (
        day TEXT NOT NULL,
        source TEXT NOT NULL,
        fetched_at TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (day, source)
    )""",
    """CREATE TABLE feed_cache (
        url TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        body BLOB,
        fetched_at TEXT NOT NULL
    )""",
)


def _migrate_to_v1(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


_SCHEMA_V2 = (
    # The suppression list: one row per suppression, kept after it is lifted (history).
    # At most one active (lifted_at IS NULL) row per address.
    """CREATE TABLE suppressions (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        reason TEXT NOT NULL
            CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'manual')),
        since TEXT NOT NULL,
        evidence TEXT NOT NULL,
        actor TEXT NOT NULL,
        lifted_at TEXT,
        lifted_by TEXT
    )""",
    "CREATE UNIQUE INDEX suppressions_active ON suppressions (address) WHERE lifted_at IS NULL",
    "CREATE INDEX suppressions_by_address ON suppressions (address, since)",
)


def _migrate_to_v2(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        db.execute(statement)


_SCHEMA_V3 = (
    # Bounces and complaints, one row each (SMTP-time refusals and DSN/ARF reports).
    """CREATE TABLE bounces (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
        at TEXT NOT NULL,
        edition TEXT,
        message_id TEXT,
        evidence TEXT NOT NULL,
        source TEXT NOT NULL,
        scored INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX bounces_by_address ON bounces (address, at)",
    # The bounce score of each address (policy in digest.bounces.policy).
    """CREATE TABLE bounce_scores (
        address TEXT PRIMARY KEY,
        hard INTEGER NOT NULL DEFAULT 0,
        soft REAL NOT NULL DEFAULT 0,
        last_scored_day TEXT,
        last_bounce_at TEXT
    ) WITHOUT ROWID""",
    # Bounce-mailbox messages already handled (key: sha256 of the raw bytes): exactly once.
    """CREATE TABLE processed_messages (
        key TEXT PRIMARY KEY,
        message_id TEXT,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    "CREATE INDEX deliveries_by_message_id ON deliveries (message_id)",
)


def _migrate_to_v3(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V3:
        db.execute(statement)


_SCHEMA_V2_PERSONAL = (
    # Which papers (bare arXiv ids) each delivery carried, written with its claim: the send
    # history that keeps a paper from reaching the same subscriber twice.
    """CREATE TABLE delivery_papers (
        subscriber TEXT NOT NULL,
        edition TEXT NOT NULL,
        arxiv_id TEXT NOT NULL,
        PRIMARY KEY (subscriber, edition, arxiv_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX delivery_papers_by_paper ON delivery_papers (arxiv_id)",
    # 👍/👎 from the email: the latest verdict per (subscriber, paper).
    """CREATE TABLE feedback (
        subscriber TEXT NOT NULL,
        arxiv_id TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('like', 'dislike')),
        at TEXT NOT NULL,
        PRIMARY KEY (subscriber, arxiv_id)
    ) WITHOUT ROWID""",
    # Single papers fetched by id (a liked paper no stored day lists).
    """CREATE TABLE known_papers (
        arxiv_id TEXT PRIMARY KEY,
        fetched_at TEXT NOT NULL,
        payload TEXT NOT NULL
    )""",
)


def _migrate_personal(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2_PERSONAL:
        db.execute(statement)


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: tuple[Migration, ...] = (
    _migrate_to_v1,
    _migrate_to_v2,
    _migrate_to_v3,
    migrate_events_signups,
    _migrate_personal,
)
"""Ordered schema migrations; after applying the first *n*, ``user_version`` is *n*.

Append only: never edit or reorder a released migration. Each runs inside the same transaction
as the ``user_version`` bump, so an interrupted upgrade leaves the file at the old version.
"""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this ``digest`` writes."""

_COLUMNS = (
    "subscriber, edition, status, detail, message_id, attempts, created_at, updated_at, "
    "sent_at, last_code, last_error"
)


class StateStore(RecordsMixin):
    """The SQLite state file. Open it once per process; use it as a context manager.

    Not safe for two *senders* at once: hold :func:`state_lock` while sending. Readers (e.g.
    ``digest status``) may open it concurrently. All methods are synchronous and short (one
    transaction each); callers on an event loop may call them directly.

    Args:
        path: the state file; created (mode 600, parent directories too) if missing.
        now: the clock used for every timestamp (aware UTC).

    Raises:
        StateError: the file is not a SQLite database or is corrupt, was written by a newer
            ``digest`` (schema version too high), or cannot be opened or created.
    """

    shared = False
    """One sender per file (:meth:`sender_lock`); see :class:`~digest.state.base.StateBackend`."""

    def __init__(self, path: str | os.PathLike[str], *, now: Clock = utc_now) -> None:
        self.path = Path(path)
        self.url = sqlite_url(self.path)
        self.claimer = claimer_id()
        self._now = now
        self._mutex = threading.RLock()
        self._depth = 0  # open transaction() blocks (of the thread holding _mutex)
        self._db = self._open()
        self.feed_cache = FeedCache(self)
        """The conditional-GET cache for feed sources, stored in this file."""

    # -- lifecycle -------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
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
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            owned = self._check_owner(db)  # before any write: WAL mode alone changes the file
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
            if not owned:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except StateError:
            db.close()
            raise
        except sqlite3.OperationalError as e:  # permissions, read-only directory, locked
            db.close()
            raise StateError(f"cannot open the state file {path}: {e}") from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
            db.close()
            raise StateError(_not_a_state_file(path, str(e))) from e
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

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state file {self.path} was created by a newer digest (schema version "
                f"{version}, this one understands up to {SCHEMA_VERSION}); upgrade digest"
            )
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write transaction: another process may have migrated meanwhile.
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](db)
                log.info("state file %s: migrated to schema version %d", self.path, number + 1)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if version == 0:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('created_at', ?)",
                    (self._stamp(),),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the file (idempotent). Later calls raise :class:`StateError`."""
        with self._mutex:
            self._db.close()

    def __enter__(self) -> StateStore:
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
        """The schema version of the open file (``PRAGMA user_version``)."""
        return int(self._query("PRAGMA user_version")[0][0])

    # -- helpers ---------------------------------------------------------------------------
    def _stamp(self) -> str:
        return self._now().astimezone(UTC).isoformat()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group this thread's writes inside the block into one transaction (one fsync).

        ``BEGIN IMMEDIATE`` … ``COMMIT``; each write inside is a savepoint (atomic on its
        own: one that raises is rolled back alone). The file's mutex is held for the whole
        block, so other threads of this process wait for the commit (as they wait for any
        write) and never see the uncommitted rows. A nested block is a savepoint. See
        :meth:`~digest.state.base.StateBackend.transaction`.

        Raises:
            StateError: ``BEGIN`` or ``COMMIT`` failed (the block's writes are rolled back).
        """
        with self._mutex:
            if self._depth:
                with self._write():
                    self._depth += 1
                    try:
                        yield
                    finally:
                        self._depth -= 1
                return
            with self._write():
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error.

        Inside :meth:`transaction`: a savepoint of the open transaction instead (released,
        or rolled back to on any error); the commit is the block's.
        """
        with self._mutex:
            grouped = self._depth > 0
            try:
                self._db.execute("SAVEPOINT digest_write" if grouped else "BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._error(e) from e
            try:
                yield self._db
                self._db.execute("RELEASE digest_write" if grouped else "COMMIT")
            except BaseException as e:
                with suppress(sqlite3.Error):
                    if grouped:
                        self._db.execute("ROLLBACK TO digest_write")
                        self._db.execute("RELEASE digest_write")
                    else:
                        self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise self._error(e) from e
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        with self._mutex:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from e

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

    # -- deliveries ------------------------------------------------------------------------
    def get(self, subscriber: str, edition: str) -> Delivery | None:
        """The row for (``subscriber``, ``edition``), or ``None`` if there is none."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM deliveries WHERE subscriber = ? AND edition = ?",
            (_key(subscriber), edition),
        )
        return _delivery(rows[0]) if rows else None

    def claim(
        self,
        subscriber: str,
        edition: str,
        message_id: str,
        papers: Sequence[str] = (),
    ) -> bool:
        """Atomically take (``subscriber``, ``edition``) for sending: absent/``owed`` → ``sending``.

        Committed (and fsynced) before returning, so it must be called *before* the message is
        handed to the transport: if the process dies after this, the row is found ``sending``
        and becomes ``unknown`` instead of being sent twice.

        Args:
            subscriber: email address (normalised to lower case).
            edition: edition key.
            message_id: the ``Message-ID`` of the message about to be sent.
            papers: bare arXiv ids of the papers the message carries, recorded with the
                claim (replacing an earlier attempt's) for :meth:`sent_papers`.

        Returns:
            ``True`` if this call took the row; ``False`` if it has any other status (already
            sent, failed, skipped, unknown, or being sent by someone else).
        """
        stamp = self._stamp()
        with self._write() as db:
            cur = db.execute(
                f"""INSERT INTO deliveries
                       (subscriber, edition, status, message_id, attempts, created_at, updated_at)
                   VALUES (?, ?, 'sending', ?, 0, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'sending', message_id = excluded.message_id,
                           detail = NULL, updated_at = excluded.updated_at
                       WHERE {allowed_sql(Transition.CLAIM)}""",
                (_key(subscriber), edition, message_id, stamp, stamp),
            )
            claimed = cur.rowcount == 1
            if claimed:
                db.execute(
                    "DELETE FROM delivery_papers WHERE subscriber = ? AND edition = ?",
                    (_key(subscriber), edition),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO delivery_papers VALUES (?, ?, ?)",
                    [(_key(subscriber), edition, p) for p in papers],
                )
            return claimed

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

        Unconditional (creates the row if missing): the message is out, whatever the row said.

        Args:
            subscriber: email address.
            edition: edition key.
            reply: the acceptance reply (e.g. ``2.0.0 Ok: queued as 4F2A``), kept in ``detail``.
            code: the SMTP reply code (250), if any.
            attempts: attempts made in this run, added to the row's count.
        """
        stamp = self._stamp()
        with self._write() as db:
            db.execute(
                """INSERT INTO deliveries (subscriber, edition, status, detail, attempts,
                       created_at, updated_at, sent_at, last_code, last_error)
                   VALUES (?, ?, 'sent', ?, ?, ?, ?, ?, ?, NULL)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'sent', detail = excluded.detail,
                           attempts = deliveries.attempts + excluded.attempts,
                           updated_at = excluded.updated_at, sent_at = excluded.sent_at,
                           last_code = excluded.last_code""",
                (_key(subscriber), edition, reply or None, attempts, stamp, stamp, stamp, code),
            )

    def mark_failed(
        self,
        subscriber: str,
        edition: str,
        error: str,
        code: int | None = None,
        *,
        attempts: int = 1,
    ) -> None:
        """Record a permanent failure (e.g. SMTP 550 for the recipient): → ``failed``.

        Never overwrites a ``sent`` row (logged and ignored): a message already accepted must not
        be reported as failed.

        Args:
            subscriber: email address.
            edition: edition key.
            error: the server's reply text or the error description (``last_error``).
            code: the SMTP reply code (5xx), or ``None`` for non-SMTP failures.
            attempts: attempts made in this run, added to the row's count.
        """
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
        """Record a transient failure: → ``owed`` (the next run retries), keeping ``last_error``.

        Also used to hand back a claimed row that was never sent (configuration error, stop).
        Never overwrites a ``sent`` row.

        Args:
            subscriber: email address.
            edition: edition key.
            error: why (server reply text such as ``451 4.7.1 try later``, or ``timeout``).
            code: the SMTP reply code (4xx), or ``None``.
            attempts: attempts made in this run (0 if it was never tried), added to the count.
        """
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
        """Record that the outcome cannot be known (unexpected error mid-delivery): → ``unknown``.

        Like a crash while ``sending``: not resent automatically. Never overwrites ``sent``.

        Args:
            subscriber: email address.
            edition: edition key.
            error: the error description.
            code: the SMTP reply code, if any.
            attempts: attempts made in this run, added to the row's count.
        """
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
        with self._write() as db:
            cur = db.execute(
                f"""INSERT INTO deliveries (subscriber, edition, status, attempts, created_at,
                       updated_at, last_code, last_error)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = excluded.status, detail = NULL,
                           attempts = deliveries.attempts + excluded.attempts,
                           updated_at = excluded.updated_at, last_code = excluded.last_code,
                           last_error = excluded.last_error
                       WHERE {allowed_sql(transition)}""",
                (_key(subscriber), edition, str(status), attempts, stamp, stamp, code, error),
            )
            if cur.rowcount == 0:
                log.warning(
                    "%s: edition %s is already sent; not marking it %s (%s)",
                    subscriber,
                    edition,
                    status,
                    error,
                )

    def mark_skipped(self, subscriber: str, edition: str, detail: str) -> None:
        """Record that the edition is deliberately not sent: → ``skipped`` with ``detail``.

        Never overwrites a ``sent`` row.

        Args:
            subscriber: email address.
            edition: edition key.
            detail: why: :data:`SKIP_LATE` (``late``) or :data:`SKIP_NO_PAPERS` (``no papers``).
        """
        stamp = self._stamp()
        with self._write() as db:
            cur = db.execute(
                f"""INSERT INTO deliveries (subscriber, edition, status, detail, attempts,
                       created_at, updated_at)
                   VALUES (?, ?, 'skipped', ?, 0, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'skipped', detail = excluded.detail,
                           updated_at = excluded.updated_at
                       WHERE {allowed_sql(Transition.SKIPPED)}""",
                (_key(subscriber), edition, detail, stamp, stamp),
            )
            if cur.rowcount == 0:
                log.warning("%s: edition %s is already sent; not skipping it", subscriber, edition)

    def recover_unknown(self) -> builtins.list[Delivery]:
        """Turn every ``sending`` row into ``unknown``; call at start-up while holding the lock.

        A row still ``sending`` was in flight when its process died: the relay may or may not
        have accepted it, so it is neither resent (duplicate risk) nor forgotten.

        Returns:
            The rows changed, now ``unknown``, ordered by (edition, subscriber).
        """
        stamp = self._stamp()
        with self._write() as db:
            rows = db.execute(
                f"""UPDATE deliveries SET status = 'unknown', updated_at = ?,
                        last_error = coalesce(last_error, ?)
                    WHERE {allowed_sql(Transition.EXPIRE, "status")} RETURNING {_COLUMNS}""",
                (stamp, INTERRUPTED),
            ).fetchall()
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.edition, d.subscriber))

    def reopen(self, subscriber: str, edition: str) -> None:
        """Put (``subscriber``, ``edition``) back to ``owed`` whatever its status (creates it).

        For ``digest send --resend`` (any row) and ``--retry-unknown`` (``unknown`` rows); the
        history columns (``attempts``, ``last_error``, ``sent_at``) are kept.
        """
        stamp = self._stamp()
        with self._write() as db:
            db.execute(
                """INSERT INTO deliveries (subscriber, edition, status, attempts, created_at,
                       updated_at)
                   VALUES (?, ?, 'owed', 0, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'owed', detail = NULL, updated_at = excluded.updated_at""",
                (_key(subscriber), edition, stamp, stamp),
            )

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
        """Put ``address`` on the suppression list; ``send`` and the daemon skip it from now on.

        Idempotent: an address already suppressed keeps its first (active) entry, reason and
        evidence included.

        Args:
            address: the email address (normalized here: the subscriber identity key).
            reason: see :class:`SuppressionReason`.
            evidence: what proves it (SMTP reply, DSN ``Status``/``Diagnostic-Code``, ...).
            actor: who: ``smtp``, ``bounces``, ``web``, ``cli:<user>``.
            now: the time to record (aware); default the store's clock.

        Returns:
            True if the address was newly suppressed, False if it already was.

        Raises:
            ValueError: ``reason`` is not a :class:`SuppressionReason`.
        """
        why = SuppressionReason(reason)
        stamp = self._stamp_of(now)
        with self._write() as db:
            cur = db.execute(
                """INSERT INTO suppressions (address, reason, since, evidence, actor)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (address) WHERE lifted_at IS NULL DO NOTHING""",
                (_key(address), str(why), stamp, evidence, actor),
            )
            return cur.rowcount > 0

    def unsuppress(self, address: str, *, actor: str, now: datetime | None = None) -> bool:
        """Lift the active suppression of ``address``; the entry stays in the history.

        Args:
            address: the email address.
            actor: who lifts it: ``web`` (a new confirmed opt-in) or ``cli:<user>``.
            now: the time to record (aware); default the store's clock.

        Returns:
            True if a suppression was lifted, False if the address was not suppressed.
        """
        stamp = self._stamp_of(now)
        with self._write() as db:
            cur = db.execute(
                """UPDATE suppressions SET lifted_at = ?, lifted_by = ?
                   WHERE address = ? AND lifted_at IS NULL""",
                (stamp, actor, _key(address)),
            )
            return cur.rowcount > 0

    def suppression(self, address: str) -> Suppression | None:
        """The active suppression of ``address``, or ``None`` if it may be mailed."""
        rows = self._query(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "
            "WHERE address = ? AND lifted_at IS NULL",
            (_key(address),),
        )
        return _suppression(rows[0]) if rows else None

    def suppressions(self) -> dict[str, Suppression]:
        """Every active suppression, by normalized address."""
        rows = self._query(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE lifted_at IS NULL"
        )
        return {r[0]: _suppression(r) for r in rows}

    def suppression_history(self, address: str | None = None) -> builtins.list[Suppression]:
        """Every suppression ever recorded (lifted ones too), oldest first.

        Args:
            address: only this address.
        """
        sql = f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions"
        params: tuple[str, ...] = ()
        if address is not None:
            sql += " WHERE address = ?"
            params = (_key(address),)
        return [_suppression(r) for r in self._query(sql + " ORDER BY since, id", params)]

    # -- bounces ---------------------------------------------------------------------------
    def record_bounces(
        self,
        items: Sequence[tuple[BounceEvent, BounceScore, Suppression | None]],
        *,
        processed: ProcessedMessage | None = None,
    ) -> builtins.list[bool]:
        """Record bounces, their new scores, suppressions and the processed message at once.

        One transaction: a crash leaves either all of it or none of it, so a bounce message
        whose result is committed is never counted twice (see :meth:`processed`).

        Args:
            items: ``(event, new score of its address, suppression to add or None)``.
            processed: the bounce-mailbox message these came from, marked processed.

        Returns:
            For each item, True if its suppression was newly added.

        Raises:
            StateError: the message was already processed (nothing written).
        """
        added: builtins.list[bool] = []
        with self._write() as db:
            if processed is not None:
                cur = db.execute(
                    """INSERT INTO processed_messages (key, message_id, at, outcome, detail)
                       VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
                    (
                        processed.key,
                        processed.message_id,
                        processed.at.astimezone(UTC).isoformat(),
                        processed.outcome,
                        processed.detail,
                    ),
                )
                if cur.rowcount == 0:
                    raise StateError(f"bounce message {processed.key} was already processed")
            for event, score, suppression in items:
                address = _key(event.address)
                db.execute(
                    """INSERT INTO bounces (address, kind, at, edition, message_id, evidence,
                           source, scored)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        address,
                        str(event.kind),
                        event.at.astimezone(UTC).isoformat(),
                        event.edition,
                        event.message_id,
                        event.evidence,
                        event.source,
                        int(event.scored),
                    ),
                )
                db.execute(
                    """INSERT INTO bounce_scores (address, hard, soft, last_scored_day,
                           last_bounce_at)
                       VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT (address) DO UPDATE
                           SET hard = excluded.hard, soft = excluded.soft,
                               last_scored_day = excluded.last_scored_day,
                               last_bounce_at = excluded.last_bounce_at""",
                    (
                        address,
                        score.hard,
                        score.soft,
                        score.last_scored_day.isoformat() if score.last_scored_day else None,
                        score.last_bounce_at.astimezone(UTC).isoformat()
                        if score.last_bounce_at
                        else None,
                    ),
                )
                new = False
                if suppression is not None:
                    cur = db.execute(
                        """INSERT INTO suppressions (address, reason, since, evidence, actor)
                           VALUES (?, ?, ?, ?, ?)
                           ON CONFLICT (address) WHERE lifted_at IS NULL DO NOTHING""",
                        (
                            address,
                            str(suppression.reason),
                            suppression.since.astimezone(UTC).isoformat(),
                            suppression.evidence,
                            suppression.actor,
                        ),
                    )
                    new = cur.rowcount > 0
                added.append(new)
        return added

    def mark_processed(self, processed: ProcessedMessage) -> bool:
        """Mark a bounce-mailbox message handled without any bounce (ignored, unrecognised).

        Returns:
            True if newly marked, False if it already was.
        """
        with self._write() as db:
            cur = db.execute(
                """INSERT INTO processed_messages (key, message_id, at, outcome, detail)
                   VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
                (
                    processed.key,
                    processed.message_id,
                    processed.at.astimezone(UTC).isoformat(),
                    processed.outcome,
                    processed.detail,
                ),
            )
            return cur.rowcount > 0

    def processed(self, key: str) -> ProcessedMessage | None:
        """The record of the bounce-mailbox message ``key`` (``sha256:<hex>``), or ``None``."""
        rows = self._query(
            "SELECT key, message_id, at, outcome, detail FROM processed_messages WHERE key = ?",
            (key,),
        )
        if not rows:
            return None
        at = _when(rows[0][2])
        assert at is not None
        return ProcessedMessage(rows[0][0], rows[0][1], at, rows[0][3], rows[0][4])

    def bounce_score(self, address: str) -> BounceScore | None:
        """The stored bounce score of ``address`` (not yet decayed), or ``None``."""
        rows = self._query(
            f"SELECT {_SCORE_COLUMNS} FROM bounce_scores WHERE address = ?", (_key(address),)
        )
        return _score(rows[0]) if rows else None

    def bounce_scores(self) -> dict[str, BounceScore]:
        """Every stored bounce score, by address."""
        return {r[0]: _score(r) for r in self._query(f"SELECT {_SCORE_COLUMNS} FROM bounce_scores")}

    def bounce_events(self, address: str | None = None) -> builtins.list[BounceEvent]:
        """Recorded bounces and complaints, oldest first (optionally of one address)."""
        sql = "SELECT address, kind, at, edition, message_id, evidence, source, scored FROM bounces"
        params: tuple[str, ...] = ()
        if address is not None:
            sql += " WHERE address = ?"
            params = (_key(address),)
        out: builtins.list[BounceEvent] = []
        for r in self._query(sql + " ORDER BY at, id", params):
            at = _when(r[2])
            assert at is not None
            out.append(BounceEvent(r[0], BounceKind(r[1]), at, r[3], r[4], r[5], r[6], bool(r[7])))
        return out

    def find_message(self, message_id: str) -> Delivery | None:
        """The delivery whose last claimed ``Message-ID`` is ``message_id`` (``<...>``)."""
        mid = message_id.strip()
        if not mid.startswith("<"):
            mid = f"<{mid}>"
        rows = self._query(f"SELECT {_COLUMNS} FROM deliveries WHERE message_id = ?", (mid,))
        return _delivery(rows[0]) if rows else None

    def last_delivery_to(self, address: str) -> Delivery | None:
        """The most recent ``sent`` (or ``failed``) delivery to ``address``, or ``None``."""
        rows = self._query(
            f"""SELECT {_COLUMNS} FROM deliveries
                WHERE subscriber = ? AND status IN ('sent', 'failed')
                ORDER BY coalesce(sent_at, updated_at) DESC LIMIT 1""",
            (_key(address),),
        )
        return _delivery(rows[0]) if rows else None

    def _stamp_of(self, now: datetime | None) -> str:
        return self._stamp() if now is None else now.astimezone(UTC).isoformat()

    def statuses(
        self, editions: Iterable[str], subscribers: Iterable[str] | None = None
    ) -> StatusMap:
        """The status of every row of ``editions`` (of ``subscribers`` only, if given).

        One query (the daemon's tick asks for every subscriber over the look-back editions).

        Returns:
            ``{(subscriber, edition): status}``; absent rows are absent.
        """
        keys = sorted(set(editions))
        if not keys:
            return {}
        sql = (
            "SELECT subscriber, edition, status FROM deliveries "
            f"WHERE edition IN ({', '.join('?' * len(keys))})"
        )
        rows = self._query(sql, keys)
        wanted = None if subscribers is None else {_key(s) for s in subscribers}
        return {
            (r[0], r[1]): DeliveryStatus(r[2]) for r in rows if wanted is None or r[0] in wanted
        }

    # -- the sender lock -------------------------------------------------------------------
    def sender_lock(self, *, purpose: str) -> AbstractContextManager[dict[str, Any]]:
        """The exclusive file lock of this state file (:func:`state_lock`); one sender.

        Raises:
            StateLockedError: another process holds it; the message names the holder.
        """
        return state_lock(self.path, purpose=purpose, now=self._now)

    # -- papers ----------------------------------------------------------------------------
    def try_lock_papers(self, day: date, source: str) -> bool:
        """Always ``True``: one process sends from a file (its fetches need no coordination)."""
        del day, source
        return True

    def unlock_papers(self, day: date, source: str) -> None:
        """Nothing to release (see :meth:`try_lock_papers`)."""
        del day, source

    def save_papers(self, day: date, source: str, papers: Iterable[Paper]) -> None:
        """Store (replace) the papers ``source`` listed for the UTC day ``day``.

        Args:
            day: the UTC day.
            source: the source's spec (``hf``, ``file:PATH``, ``feed:URL``).
            papers: the papers, stored as JSON (:meth:`Paper.to_dict`) in this order.
        """
        payload = json.dumps([p.to_dict() for p in papers], ensure_ascii=False)
        with self._write() as db:
            db.execute(
                """INSERT INTO papers (day, source, fetched_at, payload) VALUES (?, ?, ?, ?)
                   ON CONFLICT (day, source) DO UPDATE
                       SET fetched_at = excluded.fetched_at, payload = excluded.payload""",
                (day.isoformat(), source, self._stamp(), payload),
            )

    def load_papers(self, day: date, source: str) -> builtins.list[Paper] | None:
        """The papers stored for (``day``, ``source``); ``None`` if never stored (``[]`` = none).

        Each item is validated again (:func:`~digest.models.papers_from_stored`): one that is
        refused now is dropped with a warning, the others are returned.

        Raises:
            StateError: the stored JSON is unreadable (not a JSON list).
        """
        rows = self._query(
            "SELECT payload FROM papers WHERE day = ? AND source = ?", (day.isoformat(), source)
        )
        if not rows:
            return None
        origin = f"state file {self.path}: papers of {day} from {source}"
        try:
            items = json.loads(rows[0][0])
            if not isinstance(items, builtins.list):
                raise TypeError(f"a JSON {type(items).__name__}, not a list")
        except (ValueError, TypeError, RecursionError) as e:
            raise StateError(
                f"{origin} are unreadable ({e}); replace them with "
                f"`digest papers --date {day.isoformat()} --source {source} --refetch`"
            ) from e
        # Validated again, item by item: a day stored by an older digest may hold items that
        # are refused now (a javascript: link, upvotes 10**400); those are dropped, not fatal.
        return papers_from_stored(items, origin=origin)

    # -- operations ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per copied table (:data:`~digest.state.base.COPY_TABLES`)."""
        return {t: int(self._query(f"SELECT count(*) FROM {t}")[0][0]) for t in COPY_TABLES}

    def export_rows(self, table: str) -> tuple[tuple[str, ...], builtins.list[tuple[Any, ...]]]:
        """Every row of ``table`` with timestamps as aware datetimes and days as dates.

        Raises:
            StateError: ``table`` is not one of :data:`~digest.state.base.COPY_TABLES`.
        """
        columns = _copy_columns(table)
        rows = self._query(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2")
        kinds = [_COLUMN_KINDS.get(c) for c in columns]
        return columns, [
            tuple(_from_sqlite(kind, v) for kind, v in zip(kinds, row, strict=True)) for row in rows
        ]

    def import_rows(
        self, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
    ) -> int:
        """Insert exported rows into the empty ``table``; returns how many.

        Raises:
            StateError: unknown table or column, the table is not empty, or a row is refused.
        """
        known = _copy_columns(table)
        if not set(columns) <= set(known):
            raise StateError(f"{table}: unknown columns {sorted(set(columns) - set(known))}")
        kinds = [_COLUMN_KINDS.get(c) for c in columns]
        count = 0
        with self._write() as db:
            if db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                raise StateError(f"state file {self.path}: table {table} is not empty")
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            for row in rows:
                db.execute(sql, [_to_sqlite(kind, v) for kind, v in zip(kinds, row, strict=True)])
                count += 1
        return count

    # -- personal ranking: send history, feedback, single papers ---------------------------
    def sent_papers(
        self, arxiv_ids: Iterable[str], *, except_edition: str | None = None
    ) -> dict[str, frozenset[str]]:
        """Which of ``arxiv_ids`` each subscriber already received.

        A paper counts as received when a delivery that carried it is ``sent`` or ``unknown``
        (it may have arrived).

        Args:
            arxiv_ids: bare arXiv ids (an edition's papers).
            except_edition: an edition key whose deliveries do not count (the one being sent,
                when resending it).

        Returns:
            Subscriber address → the ids among ``arxiv_ids`` sent to them; subscribers who got
            none are absent.
        """
        ids = sorted(set(arxiv_ids))
        out: dict[str, set[str]] = {}
        chunk = 500
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            marks = ",".join("?" * len(part))
            rows = self._query(
                f"""SELECT dp.subscriber, dp.arxiv_id FROM delivery_papers dp
                    JOIN deliveries d ON d.subscriber = dp.subscriber AND d.edition = dp.edition
                    WHERE dp.arxiv_id IN ({marks}) AND d.status IN ('sent', 'unknown')
                      AND dp.edition IS NOT ?""",
                (*part, except_edition),
            )
            for subscriber, arxiv_id in rows:
                out.setdefault(subscriber, set()).add(arxiv_id)
        return {k: frozenset(v) for k, v in out.items()}

    def delivery_papers(self, subscriber: str, edition: str) -> builtins.list[str]:
        """The bare arXiv ids the last claimed message of (``subscriber``, ``edition``) carried."""
        rows = self._query(
            "SELECT arxiv_id FROM delivery_papers WHERE subscriber = ? AND edition = ? "
            "ORDER BY arxiv_id",
            (_key(subscriber), edition),
        )
        return [r[0] for r in rows]

    def record_feedback(self, subscriber: str, arxiv_id: str, verdict: str) -> bool:
        """Record 👍 (``like``) or 👎 (``dislike``) of ``subscriber`` for a paper; latest wins.

        Args:
            subscriber: email address.
            arxiv_id: bare arXiv id.
            verdict: ``"like"`` or ``"dislike"``.

        Returns:
            ``True`` if this changed what is recorded (a new or different verdict).

        Raises:
            ValueError: ``verdict`` is neither.
        """
        if verdict not in ("like", "dislike"):
            raise ValueError(f"verdict must be 'like' or 'dislike', not {verdict!r}")
        with self._write() as db:
            cur = db.execute(
                """INSERT INTO feedback (subscriber, arxiv_id, verdict, at) VALUES (?, ?, ?, ?)
                   ON CONFLICT (subscriber, arxiv_id) DO UPDATE
                       SET verdict = excluded.verdict, at = excluded.at
                       WHERE feedback.verdict != excluded.verdict""",
                (_key(subscriber), arxiv_id, verdict, self._stamp()),
            )
            return cur.rowcount == 1

    def feedback(self, subscriber: str | None = None) -> dict[str, Feedback]:
        """👍/👎 recorded per subscriber (all of them, or one), oldest first.

        Returns:
            Subscriber address → :class:`Feedback` (``likes``, ``dislikes``: bare ids).
        """
        sql = "SELECT subscriber, arxiv_id, verdict FROM feedback"
        params: tuple[str, ...] = ()
        if subscriber is not None:
            sql += " WHERE subscriber = ?"
            params = (_key(subscriber),)
        likes: dict[str, builtins.list[str]] = {}
        dislikes: dict[str, builtins.list[str]] = {}
        for who, arxiv_id, verdict in self._query(sql + " ORDER BY at, arxiv_id", params):
            (likes if verdict == "like" else dislikes).setdefault(who, []).append(arxiv_id)
            likes.setdefault(who, [])
            dislikes.setdefault(who, [])
        return {w: Feedback(tuple(likes[w]), tuple(dislikes[w])) for w in likes}

    def save_paper(self, paper: Paper) -> None:
        """Store one paper fetched by id (e.g. a liked paper no stored day lists)."""
        payload = json.dumps(paper.to_dict(), ensure_ascii=False)
        with self._write() as db:
            db.execute(
                """INSERT INTO known_papers (arxiv_id, fetched_at, payload) VALUES (?, ?, ?)
                   ON CONFLICT (arxiv_id) DO UPDATE
                       SET fetched_at = excluded.fetched_at, payload = excluded.payload""",
                (paper.arxiv_id, self._stamp(), payload),
            )

    def find_papers(self, arxiv_ids: Iterable[str]) -> dict[str, Paper]:
        """Stored papers by bare arXiv id: single papers first, then every stored day's list.

        Ids found nowhere are absent from the result; an unreadable stored entry is skipped.
        """
        wanted = set(arxiv_ids)
        out: dict[str, Paper] = {}
        if not wanted:
            return out
        marks = ",".join("?" * len(wanted))
        rows = self._query(
            f"SELECT payload FROM known_papers WHERE arxiv_id IN ({marks})", tuple(wanted)
        )
        rows += self._query(
            f"""SELECT j.value FROM papers, json_each(papers.payload) AS j
                WHERE json_extract(j.value, '$.arxiv_id') IN ({marks})
                ORDER BY papers.day DESC""",
            tuple(wanted),
        )
        for (payload,) in rows:
            try:
                paper = Paper.from_dict(json.loads(payload))
            except (ValueError, TypeError, KeyError):
                continue
            out.setdefault(paper.arxiv_id, paper)
        return out

    # -- listing (last: the method name shadows the builtin in this class body) ------------
    def list(
        self,
        edition: str | None = None,
        subscriber: str | None = None,
        statuses: Iterable[str] | None = None,
    ) -> builtins.list[Delivery]:
        """Rows matching every given filter, ordered by (edition, subscriber).

        Args:
            edition: only this edition key.
            subscriber: only this email address.
            statuses: only rows whose status is one of these.
        """
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if edition is not None:
            where.append("edition = ?")
            params.append(edition)
        if subscriber is not None:
            where.append("subscriber = ?")
            params.append(_key(subscriber))
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            if not wanted:
                return []
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        sql = f"SELECT {_COLUMNS} FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY edition, subscriber"
        return [_delivery(r) for r in self._query(sql, params)]


class FeedCache:
    """Conditional-GET cache for feed sources (``ETag`` / ``Last-Modified``), in the state file.

    Get it as :attr:`StateStore.feed_cache`.
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def get(self, url: str) -> tuple[str | None, str | None, bytes] | None:
        """``(etag, last_modified, body)`` last stored for ``url``, or ``None``."""
        rows = self._store._query(
            "SELECT etag, last_modified, body FROM feed_cache WHERE url = ?", (url,)
        )
        if not rows:
            return None
        etag, last_modified, body = rows[0]
        return etag, last_modified, bytes(body or b"")

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes) -> None:
        """Store (replace) the validators and body of a ``200`` response for ``url``."""
        store = self._store
        with store._write() as db:
            db.execute(
                """INSERT INTO feed_cache (url, etag, last_modified, body, fetched_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (url) DO UPDATE
                       SET etag = excluded.etag, last_modified = excluded.last_modified,
                           body = excluded.body, fetched_at = excluded.fetched_at""",
                (url, etag, last_modified, body, store._stamp()),
            )


_key = address_key


_SCORE_COLUMNS = "address, hard, soft, last_scored_day, last_bounce_at"


def _score(row: Sequence[Any]) -> BounceScore:
    return BounceScore(
        address=row[0],
        hard=int(row[1]),
        soft=float(row[2]),
        last_scored_day=date.fromisoformat(row[3]) if row[3] else None,
        last_bounce_at=_when(row[4]),
    )


_SUPPRESSION_COLUMNS = "address, reason, since, evidence, actor, lifted_at, lifted_by"


def _suppression(row: Sequence[Any]) -> Suppression:
    since = _when(row[2])
    assert since is not None  # NOT NULL column
    return Suppression(
        address=row[0],
        reason=SuppressionReason(row[1]),
        since=since,
        evidence=row[3],
        actor=row[4],
        lifted_at=_when(row[5]),
        lifted_by=row[6],
    )


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
    "bounce_scores": tuple(c.strip() for c in _SCORE_COLUMNS.split(",")),
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
_COLUMN_KINDS = {
    "created_at": "time",
    "updated_at": "time",
    "sent_at": "time",
    "fetched_at": "time",
    "since": "time",
    "lifted_at": "time",
    "at": "time",
    "last_bounce_at": "time",
    "last_scored_day": "day",
    "expires_at": "time",
    "confirmed_at": "time",
    "day": "day",
    "body": "bytes",
}


def _copy_columns(table: str) -> tuple[str, ...]:
    try:
        return _COPY_COLUMNS[table]
    except KeyError:
        raise StateError(f"no table {table!r} to copy (one of {', '.join(COPY_TABLES)})") from None


def _from_sqlite(kind: str | None, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return _when(value)
    if kind == "day":
        return date.fromisoformat(value)
    if kind == "bytes":
        return bytes(value)
    return value


def _to_sqlite(kind: str | None, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return value.astimezone(UTC).isoformat()
    if kind == "day":
        return value.isoformat()
    return value


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _delivery(row: Sequence[Any]) -> Delivery:
    created = _when(row[6])
    updated = _when(row[7])
    assert created is not None and updated is not None  # NOT NULL columns
    return Delivery(
        subscriber=row[0],
        edition=row[1],
        status=DeliveryStatus(row[2]),
        detail=row[3],
        message_id=row[4],
        attempts=int(row[5]),
        created_at=created,
        updated_at=updated,
        sent_at=_when(row[8]),
        last_code=row[9],
        last_error=row[10],
    )


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
