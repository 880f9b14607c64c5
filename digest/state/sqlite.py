"""The state file: which subscriber got which edition, stored papers, the feed cache, the lock.

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
of disk loss. The cost is one fsync per state change (a few ms; two per message sent).

Every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction; an error rolls it back, so a
failure part-way never leaves a half-written row. Timestamps are ISO 8601 strings in UTC.
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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock

from digest.addresses import normalize_email
from digest.clock import Clock, utc_now
from digest.errors import StateError, StateLockedError
from digest.models import Paper

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5_000
"""How long a write waits for another connection's write transaction to finish, ms."""

STATE_FILE_MODE = 0o600
"""Permissions of a newly created state file: it holds subscribers' addresses."""

SKIP_LATE = "late"
"""``detail`` of a ``skipped`` row whose send window had passed (catch-up limit)."""

SKIP_NO_PAPERS = "no papers"
"""``detail`` of a ``skipped`` row whose ranked list was empty (and ``send_empty`` was off)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"


class DeliveryStatus(StrEnum):
    """The status of one (subscriber, edition) delivery row; compares equal to its string."""

    OWED = "owed"
    """Due and not yet delivered (never tried, deferred after a transient failure, reopened)."""
    SENDING = "sending"
    """Claimed by a running sender; being handed to the transport right now."""
    SENT = "sent"
    """Accepted by the transport (SMTP 250 to end of data, or written to the Maildir)."""
    FAILED = "failed"
    """Permanently refused (SMTP 5xx for the recipient or the content); never retried."""
    UNKNOWN = "unknown"
    """Was ``sending`` when its process died: may or may not have been delivered."""
    SKIPPED = "skipped"
    """Deliberately not sent; ``detail`` says why (``late``, ``no papers``)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the ``deliveries`` table: the state of one subscriber's copy of one edition.

    Attributes:
        subscriber: the subscriber's email address, lower-cased.
        edition: the edition key (``YYYY-MM-DD`` daily, ``YYYY-Www`` weekly).
        status: see :class:`DeliveryStatus`.
        detail: for ``skipped``, why (``late`` / ``no papers``); for ``sent``, the transport's
            acceptance reply (e.g. ``OK queued as 4F2A``); otherwise ``None``.
        message_id: the ``Message-ID`` (``<...@domain>``) of the last message claimed for it.
        attempts: delivery attempts (SMTP transactions or Maildir writes) made so far, all runs.
        created_at: when the row was first written (UTC).
        updated_at: when the row last changed (UTC).
        sent_at: when the transport accepted the message (UTC); ``None`` unless ``sent``.
        last_code: the last SMTP reply code seen (e.g. 250, 451, 550); ``None`` if none.
        last_error: the last failure's description (server reply text); kept when deferred.
    """

    subscriber: str
    edition: str
    status: DeliveryStatus
    detail: str | None
    message_id: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    last_code: int | None
    last_error: str | None


class SuppressionReason(StrEnum):
    """Why an address is on the suppression list; compares equal to its string."""

    UNSUBSCRIBED = "unsubscribed"
    """The subscriber unsubscribed (one-click POST, the web page)."""
    BOUNCED = "bounced"
    """Hard bounces (SMTP 5xx, a DSN with a 5.x.x status) or too many soft ones."""
    COMPLAINED = "complained"
    """An abuse complaint (ARF feedback report, RFC 5965) named the address."""
    MANUAL = "manual"
    """The operator suppressed it (``digest suppress``)."""


@dataclass(frozen=True, slots=True)
class Suppression:
    """One entry of the suppression list: an address ``send`` and the daemon never mail.

    Attributes:
        address: the normalized address (the subscriber identity key).
        reason: see :class:`SuppressionReason`.
        since: when it was suppressed (aware, UTC).
        evidence: what proves it, e.g. the SMTP reply (``550 5.1.1 no such user``), a DSN's
            ``Status``/``Diagnostic-Code``, ``one-click POST``, the operator's note.
        actor: who suppressed it: ``smtp``, ``bounces``, ``web``, ``cli:<user>``.
        lifted_at: when it was lifted (aware, UTC); ``None`` while active.
        lifted_by: who lifted it (``web`` for a new confirmed opt-in, ``cli:<user>``).
    """

    address: str
    reason: SuppressionReason
    since: datetime
    evidence: str
    actor: str
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def active(self) -> bool:
        """True while the suppression holds (not lifted)."""
        return self.lifted_at is None


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


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: tuple[Migration, ...] = (_migrate_to_v1, _migrate_to_v2)
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


class StateStore:
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

    def __init__(self, path: str | os.PathLike[str], *, now: Clock = utc_now) -> None:
        self.path = Path(path)
        self._now = now
        self._mutex = threading.RLock()
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
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error."""
        with self._mutex:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._error(e) from e
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                with suppress(sqlite3.Error):
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

    def claim(self, subscriber: str, edition: str, message_id: str) -> bool:
        """Atomically take (``subscriber``, ``edition``) for sending: absent/``owed`` → ``sending``.

        Committed (and fsynced) before returning, so it must be called *before* the message is
        handed to the transport: if the process dies after this, the row is found ``sending``
        and becomes ``unknown`` instead of being sent twice.

        Args:
            subscriber: email address (normalised to lower case).
            edition: edition key.
            message_id: the ``Message-ID`` of the message about to be sent.

        Returns:
            ``True`` if this call took the row; ``False`` if it has any other status (already
            sent, failed, skipped, unknown, or being sent by someone else).
        """
        stamp = self._stamp()
        with self._write() as db:
            cur = db.execute(
                """INSERT INTO deliveries
                       (subscriber, edition, status, message_id, attempts, created_at, updated_at)
                   VALUES (?, ?, 'sending', ?, 0, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'sending', message_id = excluded.message_id,
                           detail = NULL, updated_at = excluded.updated_at
                       WHERE deliveries.status = 'owed'""",
                (_key(subscriber), edition, message_id, stamp, stamp),
            )
            return cur.rowcount == 1

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
        self._mark_unsent(subscriber, edition, DeliveryStatus.FAILED, error, code, attempts)

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
        self._mark_unsent(subscriber, edition, DeliveryStatus.OWED, error, code, attempts)

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
        self._mark_unsent(subscriber, edition, DeliveryStatus.UNKNOWN, error, code, attempts)

    def _mark_unsent(
        self,
        subscriber: str,
        edition: str,
        status: DeliveryStatus,
        error: str,
        code: int | None,
        attempts: int,
    ) -> None:
        stamp = self._stamp()
        with self._write() as db:
            cur = db.execute(
                """INSERT INTO deliveries (subscriber, edition, status, attempts, created_at,
                       updated_at, last_code, last_error)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = excluded.status, detail = NULL,
                           attempts = deliveries.attempts + excluded.attempts,
                           updated_at = excluded.updated_at, last_code = excluded.last_code,
                           last_error = excluded.last_error
                       WHERE deliveries.status != 'sent'""",
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
                """INSERT INTO deliveries (subscriber, edition, status, detail, attempts,
                       created_at, updated_at)
                   VALUES (?, ?, 'skipped', ?, 0, ?, ?)
                   ON CONFLICT (subscriber, edition) DO UPDATE
                       SET status = 'skipped', detail = excluded.detail,
                           updated_at = excluded.updated_at
                       WHERE deliveries.status != 'sent'""",
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
                        last_error = coalesce(last_error,
                            'interrupted while sending: may or may not have been delivered')
                    WHERE status = 'sending' RETURNING {_COLUMNS}""",
                (stamp,),
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

    def _stamp_of(self, now: datetime | None) -> str:
        return self._stamp() if now is None else now.astimezone(UTC).isoformat()

    # -- papers ----------------------------------------------------------------------------
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

        Raises:
            StateError: the stored JSON is unreadable.
        """
        rows = self._query(
            "SELECT payload FROM papers WHERE day = ? AND source = ?", (day.isoformat(), source)
        )
        if not rows:
            return None
        try:
            return [Paper.from_dict(item) for item in json.loads(rows[0][0])]
        except (ValueError, TypeError, KeyError) as e:
            raise StateError(
                f"state file {self.path}: stored papers for {day} from {source} are unreadable "
                f"({e}); delete them and the next run refetches them: sqlite3 {self.path} "
                f"\"DELETE FROM papers WHERE day = '{day.isoformat()}' AND source = '{source}'\""
            ) from e

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


def address_key(address: str) -> str:
    """The identity key of an email address in the state store (rows, suppressions).

    :func:`~digest.addresses.normalize_email`: NFC, lower case, the domain in IDNA form.
    """
    return normalize_email(address)


_key = address_key


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
