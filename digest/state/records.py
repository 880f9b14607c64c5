"""Events and pending sign-ups in the state file (written by the web app, :mod:`digest.web`).

Two tables, added by schema migration :func:`migrate_events_signups`:

* ``events``: one row per change a person or a process made to a subscription: who (``actor``:
  ``web``, ``cli:<user>``...), what (``action``: ``unsubscribe``, ``resubscribe``,
  ``preferences``, ``signup``, ``confirm``), to whom (the normalized address), when (UTC), from
  which request (``request``: a request id and the client address) and a ``detail`` (JSON).
  Tokens and secrets are never stored.
* ``signups``: a double opt-in sign-up waiting for its confirmation (48 h), with the name and
  keywords given in the form; ``confirmed_at`` is set once confirmed. Also the record the
  sign-up rate limits count (per target address, per client address).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from digest.addresses import normalize_email

_SCHEMA = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        request TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX events_by_subscriber ON events (subscriber, id)",
    """CREATE TABLE signups (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        name TEXT,
        keywords TEXT NOT NULL DEFAULT '[]',
        client TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        confirmed_at TEXT
    )""",
    "CREATE INDEX signups_by_address ON signups (address, created_at)",
    "CREATE INDEX signups_by_client ON signups (client, created_at)",
)


def migrate_events_signups(db: sqlite3.Connection) -> None:
    """Schema migration: the ``events`` and ``signups`` tables."""
    for statement in _SCHEMA:
        db.execute(statement)


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded change to a subscription.

    Attributes:
        id: increasing row id.
        at: when (UTC).
        actor: who made it (``web``, ``cli:<user>``, ``bounces``...).
        action: ``unsubscribe``, ``resubscribe``, ``preferences``, ``signup``, ``confirm``...
        subscriber: the normalized address.
        request: the request it came from (``req=<id> client=<address>``), or ``""``.
        detail: more about it (e.g. the changed field names, ``"one-click"``).
    """

    id: int
    at: datetime
    actor: str
    action: str
    subscriber: str
    request: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Signup:
    """A sign-up waiting for (or having had) its confirmation.

    Attributes:
        id: random id (hex), carried in the confirmation token's data.
        address: the normalized address to subscribe.
        name: the name given in the form, or ``None``.
        keywords: the keywords given in the form.
        client: the client address the form was sent from.
        created_at, expires_at: UTC; the confirmation link stops working at ``expires_at``.
        confirmed_at: when it was confirmed (UTC), or ``None``.
    """

    id: str
    address: str
    name: str | None
    keywords: tuple[str, ...]
    client: str
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


class RecordsMixin:
    """Events and sign-ups; mixed into :class:`digest.state.StateStore`."""

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]: ...
        def _stamp(self) -> str: ...

    # -- events ----------------------------------------------------------------------------
    def record_event(
        self,
        subscriber: str,
        action: str,
        *,
        actor: str,
        request: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one event (timestamp: the store's clock, UTC).

        Args:
            subscriber: the address (normalized here: stripped, lower-cased).
            action: what happened (``unsubscribe``...).
            actor: who did it (``web``...).
            request: where it came from (request id, client address); never a token.
            detail: JSON-serializable facts (field names, ``one-click``...).
        """
        with self._write() as db:
            db.execute(
                "INSERT INTO events (at, actor, action, subscriber, request, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._stamp(),
                    actor,
                    action,
                    normalize_email(subscriber),
                    request,
                    json.dumps(detail or {}, sort_keys=True),
                ),
            )

    def events(self, subscriber: str | None = None) -> builtins.list[Event]:
        """Events in the order they happened, all or one subscriber's."""
        sql = "SELECT id, at, actor, action, subscriber, request, detail FROM events"
        params: tuple[str, ...] = ()
        if subscriber is not None:
            sql += " WHERE subscriber = ?"
            params = (normalize_email(subscriber),)
        rows = self._query(sql + " ORDER BY id", params)
        return [
            Event(r[0], _utc(r[1]) or datetime.min, r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in rows
        ]

    # -- sign-ups --------------------------------------------------------------------------
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
        """Record a pending sign-up (its confirmation mail is sent by the caller)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO signups (id, address, name, keywords, client, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    signup_id,
                    normalize_email(address),
                    name,
                    json.dumps(list(keywords)),
                    client,
                    self._stamp(),
                    _iso(expires_at),
                ),
            )

    def signup(self, signup_id: str) -> Signup | None:
        """The sign-up with this id, or ``None``."""
        rows = self._query(
            "SELECT id, address, name, keywords, client, created_at, expires_at, confirmed_at "
            "FROM signups WHERE id = ?",
            (signup_id,),
        )
        if not rows:
            return None
        r = rows[0]
        created, expires = _utc(r[5]), _utc(r[6])
        assert created is not None and expires is not None  # NOT NULL columns
        return Signup(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], created, expires, _utc(r[7]))

    def confirm_signup(self, signup_id: str) -> bool:
        """Mark a sign-up confirmed; ``False`` if it was already (or does not exist)."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE signups SET confirmed_at = ? WHERE id = ? AND confirmed_at IS NULL",
                (self._stamp(), signup_id),
            )
            return cur.rowcount == 1

    def count_signups(
        self, *, since: datetime, address: str | None = None, client: str | None = None
    ) -> int:
        """Sign-ups created at or after ``since`` for one address and/or one client."""
        where = ["created_at >= ?"]
        params: list[str] = [_iso(since)]
        if address is not None:
            where.append("address = ?")
            params.append(normalize_email(address))
        if client is not None:
            where.append("client = ?")
            params.append(client)
        rows = self._query(f"SELECT COUNT(*) FROM signups WHERE {' AND '.join(where)}", params)
        return int(rows[0][0])

    def sent_editions(self, *, limit: int = 60) -> builtins.list[tuple[str, datetime]]:
        """``(edition key, first sent at UTC)`` of editions sent to anyone, newest first."""
        rows = self._query(
            "SELECT edition, MIN(COALESCE(sent_at, updated_at)) FROM deliveries "
            "WHERE status = 'sent' GROUP BY edition ORDER BY edition DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], _utc(r[1]) or datetime.min.replace(tzinfo=UTC)) for r in rows]

    def signup_addresses(self) -> Iterator[str]:
        """Every address with a sign-up on record (to resolve confirm tokens)."""
        for (address,) in self._query("SELECT DISTINCT address FROM signups"):
            yield address
