"""The state store, written once: a mixin per domain over one :class:`~.connector.Connector`.

``Store(DeliveriesMixin, BouncesMixin, PapersMixin, RecordsMixin, OpsMixin,
SubscribersMixin, StoreBase)``: each method of the state store is written here once, with its
SQL named from
``queries.sql``; what the databases really do differently is a connector hook. The backends
are this class over a connector: :class:`~digest.state.sqlite.StateStore` (a file) and
:class:`~digest.state.postgres.PostgresStore` (a shared database).

Every write is one transaction (a savepoint inside :meth:`StoreBase.transaction`), committed
durably before the method returns; an error rolls it back and raises
:class:`~digest.errors.StateError`. Subscriber addresses are keys (:func:`address_key`);
timestamps are aware UTC datetimes (the store's clock; leases use the database's).
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self

from digest.clock import Clock
from digest.errors import StateError
from digest.models import FeedbackTable, Paper, papers_from_stored
from digest.state.base import (
    COPY_TABLES,
    INTERRUPTED,
    PAUSED_ERROR,
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
)
from digest.state.connector import Connector, Row, as_day, aware
from digest.state.figures import DomainCount, EditionCount, Pause, StateFigures
from digest.state.records import Event, Signup, StoredList, StoredSubscriber
from digest.state.schema import COPY_COLUMNS, KINDS

log = logging.getLogger(__name__)

_key = address_key

FEEDBACK_CHUNK = 200
"""Addresses whose 👍/👎 one statement reads (:meth:`RecordsMixin.feedback`): at most a few
thousand rows at once (200 readers who rated 40 papers each: ~2.5 MB of rows)."""

SUBSCRIBER_CHUNK = 1000
"""Subscribers read per chunk when the list in the state is read whole (a send, an export)."""


class StoreBase:
    """The lifecycle, the clock and the transactions of a store over ``connector``.

    Args:
        connector: the open, migrated database.
        now: the clock for every timestamp written (aware UTC).

    Attributes:
        url: where the state lives, for messages (no password).
        shared: whether several senders may share it (claims with leases; PostgreSQL).
        claimer: this process's claimer id (``host:pid:random``).
        feed_cache: the conditional-GET cache for feed sources, in this state.
    """

    def __init__(self, connector: Connector, *, now: Clock) -> None:
        self._db = connector
        self._q = connector.queries
        self._now = now
        self.url = connector.url
        self.shared = connector.shared
        self.claimer = connector.claimer
        self.feed_cache = FeedCache(self)

    def close(self) -> None:
        """Release the connection(s) (idempotent); later calls raise ``StateError``."""
        self._db.close()

    def __enter__(self) -> Self:
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
        """The schema version of the open state."""
        return self._db.version()

    def transaction(self) -> AbstractContextManager[None]:
        """Group this thread's writes inside the block into one transaction (one commit).

        Each write inside is a savepoint (one that raises is rolled back alone); an exception
        leaving the block rolls all back; a nested block is a savepoint. SQLite: ``BEGIN
        IMMEDIATE``, other threads wait for the commit; PostgreSQL: one pooled connection,
        others read the committed state. See ``StateBackend.transaction``.

        Raises:
            StateError: the transaction could not begin or commit (nothing was written).
        """
        return self._db.transaction()

    def sender_lock(self, *, purpose: str) -> AbstractContextManager[dict[str, Any]]:
        """Be allowed to send; hold it around a ``send`` or ``run``.

        SQLite: the exclusive file lock (:func:`~digest.state.sqlite.state_lock`; a second
        sender gets :class:`~digest.errors.StateLockedError` naming the holder). PostgreSQL:
        nothing exclusive (claims arbitrate); it logs this process's claimer id.

        Args:
            purpose: what the holder does (``send``, ``run``), shown to contenders.
        """
        return self._db.sender_lock(purpose, self._now())

    def _of(self, name: str, column: str, address: str | None) -> builtins.list[Row]:
        """The rows of the statement ``name`` (all), or of ``name_of`` for one ``address``."""
        if address is None:
            return self._db.fetch(self._q[name])
        return self._db.fetch(self._q[f"{name}_of"], {column: _key(address)})

    def _stamp(self, when: datetime | None = None) -> Any:
        """``when`` (default: now) as the database stores a timestamp."""
        return self._db.time(self._now() if when is None else when)

    # -- operations --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per copied table (:data:`~digest.state.base.COPY_TABLES`)."""
        return {t: int(self._db.fetch(f"SELECT count(*) FROM {t}")[0][0]) for t in COPY_TABLES}

    def export_rows(self, table: str) -> tuple[tuple[str, ...], builtins.list[Row]]:
        """Every row of ``table``: timestamps as aware UTC datetimes, days as dates, bodies
        as bytes (plain Python values whichever database it comes from).

        Raises:
            StateError: ``table`` is not one of :data:`~digest.state.base.COPY_TABLES`.
        """
        columns = _copy_columns(table)
        kinds = [_FROM_DB.get(KINDS.get(c, ""), _same) for c in columns]
        rows = self._db.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2")
        return columns, [tuple(f(v) for f, v in zip(kinds, row, strict=True)) for row in rows]

    def import_rows(self, table: str, columns: tuple[str, ...], rows: Iterable[Row]) -> int:
        """Insert rows exported by another state into the empty ``table`` (one transaction);
        returns how many. New ids (identity columns) follow the copied ones.

        Raises:
            StateError: unknown table or column, the table is not empty, or a row is refused.
        """
        known = _copy_columns(table)
        if not set(columns) <= set(known):
            raise StateError(f"{table}: unknown columns {sorted(set(columns) - set(known))}")
        to_db: dict[str, Callable[[Any], Any]] = {"time": self._db.time, "day": self._db.day}
        kinds = [to_db.get(KINDS.get(c, ""), _same) for c in columns]
        converted = (
            tuple(None if v is None else f(v) for f, v in zip(kinds, row, strict=True))
            for row in rows
        )
        with self._db.unit():
            self._db.lock_table(table)
            if self._db.fetch(f"SELECT count(*) FROM {table}", write=True)[0][0]:
                raise StateError(f"{self._db.name}: table {table} is not empty")
            count = self._db.copy_in(table, columns, converted)
            self._db.imported(table)
        return count


class DeliveriesMixin(StoreBase):
    """Delivery rows: claims, marks, recovery, and what each delivery carried."""

    def get(self, subscriber: str, edition: str) -> Delivery | None:
        """The row for (``subscriber``, ``edition``), or ``None`` if there is none."""
        rows = self._db.fetch(self._q["get"], {"subscriber": _key(subscriber), "edition": edition})
        return _delivery(rows[0]) if rows else None

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
        params = {"editions": self._db.array(keys)}
        if subscribers is None:
            rows = self._db.fetch(self._q["statuses"], params)
            return {(r[0], r[1]): DeliveryStatus(r[2]) for r in rows}
        wanted = {_key(s) for s in subscribers}
        params["subscribers"] = self._db.array(wanted)
        rows = self._db.fetch(self._q["statuses_of"], params)
        return {(r[0], r[1]): DeliveryStatus(r[2]) for r in rows if r[0] in wanted}

    def claim(
        self, subscriber: str, edition: str, message_id: str, papers: Sequence[str] = ()
    ) -> bool:
        """Atomically take (``subscriber``, ``edition``) for sending: absent/``owed`` → ``sending``.

        Committed (durably) before returning, so call it *before* the message is handed to
        the transport: if the process dies after this, the row is found ``sending`` and
        becomes ``unknown`` instead of being sent twice. On a shared state the row records
        :attr:`claimer` and a lease (database clock) this process renews until the row is
        marked; of two processes claiming at once, exactly one gets it.

        Args:
            subscriber: email address (normalised).
            edition: edition key.
            message_id: the ``Message-ID`` of the message about to be sent.
            papers: bare arXiv ids of the papers the message carries, recorded with the
                claim (replacing an earlier attempt's) for :meth:`sent_papers`.

        Returns:
            ``True`` if this call took the row; ``False`` if it has any other status (already
            sent, failed, skipped, unknown, or being sent by someone else).
        """
        key = (_key(subscriber), edition)
        row = {"subscriber": key[0], "edition": edition}
        params = {**row, "message_id": message_id, "stamp": self._stamp()}
        with self._db.unit():
            claimed = self._db.execute(self._q["claim"], params | self._db.claim_params()) == 1
            if claimed:
                self._db.execute(self._q["forget_papers"], row)
                self._db.executemany(self._q["add_paper"], [row | {"arxiv_id": p} for p in papers])
        if claimed:
            self._db.claimed(key)
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

        Unconditional (creates the row; overrides even ``unknown``, e.g. a lease that ran
        out while this process was still sending): the message is out, whatever the row said.

        Args:
            subscriber: email address.
            edition: edition key.
            reply: the acceptance reply (e.g. ``2.0.0 Ok: queued as 4F2A``), kept in ``detail``.
            code: the SMTP reply code (250), if any.
            attempts: attempts made in this run, added to the row's count.
        """
        key = (_key(subscriber), edition)
        params = {"detail": reply or None, "attempts": attempts, "code": code}
        params |= {"subscriber": key[0], "edition": edition, "stamp": self._stamp()}
        self._db.execute(self._q[Transition.SENT], params)
        self._db.settled(key)

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

        Never overwrites a ``sent`` row (logged and ignored): a message already accepted must
        not be reported as failed.

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

        Also hands back a claimed row that was never sent (configuration error, stop).
        Never overwrites a ``sent`` row. Arguments as :meth:`mark_failed` (``code``: 4xx;
        ``attempts``: 0 if it was never tried).
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
        Arguments as :meth:`mark_failed`.
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
        key = (_key(subscriber), edition)
        params = {"status": str(status), "error": error, "code": code, "attempts": attempts}
        params |= {"subscriber": key[0], "edition": edition, "stamp": self._stamp()}
        count = self._db.execute(self._q[transition], params)
        self._db.settled(key)
        if count == 0:
            msg = "%s: edition %s is already sent; not marking it %s (%s)"
            log.warning(msg, subscriber, edition, status, error)

    def mark_skipped(self, subscriber: str, edition: str, detail: str) -> None:
        """Record that the edition is deliberately not sent: → ``skipped`` with ``detail``.

        Never overwrites a ``sent`` row.

        Args:
            subscriber: email address.
            edition: edition key.
            detail: why: :data:`SKIP_LATE` (``late``) or :data:`SKIP_NO_PAPERS` (``no papers``).
        """
        key = (_key(subscriber), edition)
        params = {"subscriber": key[0], "edition": edition, "detail": detail}
        count = self._db.execute(self._q[Transition.SKIPPED], params | {"stamp": self._stamp()})
        self._db.settled(key)
        if count == 0:
            log.warning("%s: edition %s is already sent; not skipping it", subscriber, edition)

    def recover_unknown(self) -> builtins.list[Delivery]:
        """Turn the ``sending`` rows of dead processes into ``unknown``.

        A row still ``sending`` was in flight when its process died: the relay may or may not
        have accepted it, so it is neither resent (duplicate risk) nor forgotten. SQLite (call
        at start-up, holding :meth:`sender_lock`): every ``sending`` row. A shared state: the
        rows whose lease ran out, so any process may call it at any time.

        Returns:
            The rows changed, now ``unknown``, ordered by (edition, subscriber).
        """
        params = {"stamp": self._stamp(), "interrupted": INTERRUPTED}
        rows = self._db.fetch(self._q[Transition.EXPIRE], params, write=True)
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.edition, d.subscriber))

    def reopen(self, subscriber: str, edition: str) -> None:
        """Put (``subscriber``, ``edition``) back to ``owed`` whatever its status (creates it).

        For ``digest send --resend`` (any row) and ``--retry-unknown`` (``unknown`` rows); the
        history columns (``attempts``, ``last_error``, ``sent_at``) are kept.
        """
        key = (_key(subscriber), edition)
        params = {"subscriber": key[0], "edition": edition, "stamp": self._stamp()}
        self._db.execute(self._q[Transition.REOPEN], params)
        self._db.settled(key)

    def find_message(self, message_id: str) -> Delivery | None:
        """The delivery whose last claimed ``Message-ID`` is ``message_id`` (``<...>``)."""
        mid = message_id.strip()
        if not mid.startswith("<"):
            mid = f"<{mid}>"
        rows = self._db.fetch(self._q["find_message"], {"message_id": mid})
        return _delivery(rows[0]) if rows else None

    def last_delivery_to(self, address: str) -> Delivery | None:
        """The most recent ``sent`` (or ``failed``) delivery to ``address``, or ``None``."""
        rows = self._db.fetch(self._q["last_delivery_to"], {"subscriber": _key(address)})
        return _delivery(rows[0]) if rows else None

    def sent_editions(self, *, limit: int = 60) -> builtins.list[tuple[str, datetime]]:
        """``(edition key, first sent at UTC)`` of editions sent to anyone, newest first."""
        rows = self._db.fetch(self._q["sent_editions"], {"limit": limit})
        return [(r[0], aware(r[1])) for r in rows]

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
        if not ids:
            return {}
        params = {"ids": self._db.array(ids), "except_edition": except_edition}
        out: dict[str, set[str]] = {}
        for subscriber, arxiv_id in self._db.fetch(self._q["sent_papers"], params):
            out.setdefault(subscriber, set()).add(arxiv_id)
        return {k: frozenset(v) for k, v in out.items()}

    def delivery_papers(self, subscriber: str, edition: str) -> builtins.list[str]:
        """The bare arXiv ids the last claimed message of (``subscriber``, ``edition``) carried."""
        params = {"subscriber": _key(subscriber), "edition": edition}
        return [r[0] for r in self._db.fetch(self._q["delivery_papers"], params)]

    # last: the method name shadows the builtin in the class body
    def list(
        self,
        edition: str | None = None,
        subscriber: str | None = None,
        statuses: Iterable[str] | None = None,
        *,
        edition_prefix: str | None = None,
    ) -> builtins.list[Delivery]:
        """Rows matching every given filter, ordered by (edition, subscriber).

        Args:
            edition: only this edition key.
            subscriber: only this email address.
            statuses: only rows whose status is one of these.
            edition_prefix: only edition keys that start with this (``welcome:``), filtered
                in the database (other editions' rows are not sent to this process).
        """
        where: builtins.list[str] = []
        params: dict[str, Any] = {"edition": edition, "statuses": None}
        if edition is not None:
            where.append("edition = :edition")
        if subscriber is not None:
            where.append("subscriber = :subscriber")
            params["subscriber"] = _key(subscriber)
        if edition_prefix:  # substr, not a range or LIKE: exact under any collation
            where.append("substr(edition, 1, :prefix_length) = :prefix")
            params |= {"prefix": edition_prefix, "prefix_length": len(edition_prefix)}
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            if not wanted:
                return []
            where.append("status = ANY(:statuses)")
            params["statuses"] = self._db.array(wanted)
        sql = self._db.statements["list"] + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db.fetch(self._db.sql(sql + " ORDER BY edition, subscriber"), params)
        return [_delivery(r) for r in rows]


class BouncesMixin(StoreBase):
    """The suppression list, bounces and their scores, processed bounce messages."""

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
        params = self._suppression(address, why, evidence, actor, now)
        return self._db.execute(self._q["suppress"], params) > 0

    def _suppression(
        self, address: str, reason: str, evidence: str, actor: str, since: datetime | None
    ) -> dict[str, Any]:
        return {
            "address": _key(address),
            "reason": str(reason),
            "since": self._stamp(since),
            "evidence": evidence,
            "actor": actor,
        }

    def unsuppress(self, address: str, *, actor: str, now: datetime | None = None) -> bool:
        """Lift the active suppression of ``address``; the entry stays in the history.

        Args:
            address: the email address.
            actor: who lifts it: ``web`` (a new confirmed opt-in) or ``cli:<user>``.
            now: the time to record (aware); default the store's clock.

        Returns:
            True if a suppression was lifted, False if the address was not suppressed.
        """
        params = {"stamp": self._stamp(now), "actor": actor, "address": _key(address)}
        return self._db.execute(self._q["unsuppress"], params) > 0

    def suppression(self, address: str) -> Suppression | None:
        """The active suppression of ``address``, or ``None`` if it may be mailed."""
        rows = self._db.fetch(self._q["suppression"], {"address": _key(address)})
        return _suppression(rows[0]) if rows else None

    def suppressions(self) -> dict[str, Suppression]:
        """Every active suppression, by normalized address."""
        return {r[0]: _suppression(r) for r in self._db.fetch(self._q["suppressions"])}

    def suppression_history(self, address: str | None = None) -> builtins.list[Suppression]:
        """Every suppression ever recorded (lifted ones too), oldest first (of ``address``)."""
        rows = self._of("suppression_history", "address", address)
        return [_suppression(r) for r in rows]

    def record_bounces(
        self,
        items: Sequence[tuple[BounceEvent, BounceScore, Suppression | None]],
        *,
        processed: ProcessedMessage | None = None,
    ) -> builtins.list[bool]:
        """Record bounces, their new scores, suppressions and the processed message at once.

        One transaction: a crash leaves either all of it or none of it, so a bounce message
        whose result is committed is never counted twice, whichever host reads the mailbox.

        Args:
            items: ``(event, new score of its address, suppression to add or None)``.
            processed: the bounce-mailbox message these came from, marked processed.

        Returns:
            For each item, True if its suppression was newly added.

        Raises:
            StateError: the message was already processed (nothing written).
        """
        db = self._db
        added: builtins.list[bool] = []
        with db.unit():
            if processed is not None and not db.execute(
                self._q["mark_processed"], self._processed(processed)
            ):
                raise StateError(f"bounce message {processed.key} was already processed")
            for event, score, suppression in items:
                address = _key(event.address)
                bounce = {"address": address, "kind": str(event.kind), "at": self._stamp(event.at)}
                bounce |= {"edition": event.edition, "message_id": event.message_id}
                bounce |= {"evidence": event.evidence, "source": event.source}
                db.execute(self._q["add_bounce"], bounce | {"scored": int(event.scored)})
                day, last = score.last_scored_day, score.last_bounce_at
                db.execute(
                    self._q["set_score"],
                    {
                        "address": address,
                        "hard": score.hard,
                        "soft": score.soft,
                        "last_scored_day": None if day is None else db.day(day),
                        "last_bounce_at": None if last is None else db.time(last),
                    },
                )
                new = False
                if suppression is not None:
                    params = self._suppression(
                        address,
                        suppression.reason,
                        suppression.evidence,
                        suppression.actor,
                        suppression.since,
                    )
                    new = db.execute(self._q["suppress"], params) > 0
                added.append(new)
        return added

    def _processed(self, processed: ProcessedMessage) -> dict[str, Any]:
        return {
            "key": processed.key,
            "message_id": processed.message_id,
            "at": self._stamp(processed.at),
            "outcome": processed.outcome,
            "detail": processed.detail,
        }

    def mark_processed(self, processed: ProcessedMessage) -> bool:
        """Mark a bounce-mailbox message handled without any bounce (ignored, unrecognised).

        Returns:
            True if newly marked, False if it already was.
        """
        return self._db.execute(self._q["mark_processed"], self._processed(processed)) > 0

    def processed(self, key: str) -> ProcessedMessage | None:
        """The record of the bounce-mailbox message ``key`` (``sha256:<hex>``), or ``None``."""
        rows = self._db.fetch(self._q["processed"], {"key": key})
        if not rows:
            return None
        r = rows[0]
        return ProcessedMessage(r[0], r[1], aware(r[2]), r[3], r[4])

    def bounce_score(self, address: str) -> BounceScore | None:
        """The stored bounce score of ``address`` (not yet decayed), or ``None``."""
        rows = self._db.fetch(self._q["bounce_score"], {"address": _key(address)})
        return _score(rows[0]) if rows else None

    def bounce_scores(self) -> dict[str, BounceScore]:
        """Every stored bounce score, by address."""
        return {r[0]: _score(r) for r in self._db.fetch(self._q["bounce_scores"])}

    def bounce_events(self, address: str | None = None) -> builtins.list[BounceEvent]:
        """Recorded bounces and complaints, oldest first (optionally of one address)."""
        return [
            BounceEvent(r[0], BounceKind(r[1]), aware(r[2]), r[3], r[4], r[5], r[6], bool(r[7]))
            for r in self._of("bounce_events", "address", address)
        ]


class PapersMixin(StoreBase):
    """Papers stored per day and source, single papers, the papers lock."""

    def try_lock_papers(self, day: date, source: str) -> bool:
        """Try to become the one process fetching (``day``, ``source``); never blocks.

        A shared state: a database advisory lock, released by :meth:`unlock_papers` or when
        this process dies. SQLite (one process per file): always ``True``.
        """
        return self._db.try_lock(f" {day.isoformat()} {source}")

    def unlock_papers(self, day: date, source: str) -> None:
        """Release what :meth:`try_lock_papers` took (no-op if not held)."""
        self._db.unlock(f" {day.isoformat()} {source}")

    def save_papers(self, day: date, source: str, papers: Iterable[Paper]) -> None:
        """Store (replace) the papers ``source`` listed for the UTC day ``day``.

        Args:
            day: the UTC day.
            source: the source's spec (``hf``, ``file:PATH``, ``feed:URL``).
            papers: the papers, stored as JSON (:meth:`Paper.to_dict`) in this order.
        """
        payload = json.dumps([p.to_dict() for p in papers], ensure_ascii=False)
        params = {"day": self._db.day(day), "source": source, "payload": payload}
        self._db.execute(self._q["save_papers"], params | {"stamp": self._stamp()})

    def load_papers(self, day: date, source: str) -> builtins.list[Paper] | None:
        """The papers stored for (``day``, ``source``); ``None`` if never stored (``[]`` = none).

        Each item is validated again (:func:`~digest.models.papers_from_stored`): one that is
        refused now is dropped with a warning, the others are returned.

        Raises:
            StateError: the stored JSON is unreadable (not a JSON list).
        """
        params = {"day": self._db.day(day), "source": source}
        rows = self._db.fetch(self._q["load_papers"], params)
        if not rows:
            return None
        origin = f"{self._db.name}: papers of {day} from {source}"
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

    def save_paper(self, paper: Paper) -> None:
        """Store one paper fetched by id (e.g. a liked paper no stored day lists)."""
        payload = json.dumps(paper.to_dict(), ensure_ascii=False)
        params = {"arxiv_id": paper.arxiv_id, "stamp": self._stamp(), "payload": payload}
        self._db.execute(self._q["save_paper"], params)

    def find_papers(self, arxiv_ids: Iterable[str]) -> dict[str, Paper]:
        """Stored papers by bare arXiv id: single papers first, then every stored day's list
        (newest first). Ids found nowhere are absent; an unreadable stored entry is skipped."""
        wanted = sorted(set(arxiv_ids))
        out: dict[str, Paper] = {}
        if not wanted:
            return out
        params = {"ids": self._db.array(wanted)}
        rows = self._db.fetch(self._q["known_papers"], params)
        rows += self._db.fetch(self._q["listed_papers"], params)
        for (payload,) in rows:
            try:
                paper = Paper.from_dict(json.loads(payload))
            except (ValueError, TypeError, KeyError):
                continue
            out.setdefault(paper.arxiv_id, paper)
        return out


class RecordsMixin(StoreBase):
    """Events and sign-ups of the web app (:mod:`digest.state.records`), 👍/👎 feedback."""

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
            subscriber: the address (normalized here).
            action: what happened (``unsubscribe``...).
            actor: who did it (``web``...).
            request: where it came from (request id, client address); never a token.
            detail: JSON-serializable facts (field names, ``one-click``...).
        """
        params = {"actor": actor, "action": action, "subscriber": _key(subscriber)}
        params |= {"request": request, "detail": json.dumps(detail or {}, sort_keys=True)}
        self._db.execute(self._q["record_event"], params | {"stamp": self._stamp()})

    def events(self, subscriber: str | None = None) -> builtins.list[Event]:
        """Events in the order they happened, all or one subscriber's."""
        return [
            Event(int(r[0]), aware(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in self._of("events", "subscriber", subscriber)
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
        params = {"id": signup_id, "address": _key(address), "name": name, "client": client}
        params |= {"keywords": json.dumps(list(keywords)), "expires_at": self._stamp(expires_at)}
        self._db.execute(self._q["add_signup"], params | {"stamp": self._stamp()})

    def signup(self, signup_id: str) -> Signup | None:
        """The sign-up with this id, or ``None``."""
        rows = self._db.fetch(self._q["signup"], {"id": signup_id})
        if not rows:
            return None
        r = rows[0]
        keywords = tuple(json.loads(r[3]))
        return Signup(r[0], r[1], r[2], keywords, r[4], aware(r[5]), aware(r[6]), aware(r[7]))

    def confirm_signup(self, signup_id: str) -> bool:
        """Mark a sign-up confirmed; ``False`` if it already was (or does not exist)."""
        params = {"stamp": self._stamp(), "id": signup_id}
        return self._db.execute(self._q["confirm_signup"], params) == 1

    def count_signups(
        self, *, since: datetime, address: str | None = None, client: str | None = None
    ) -> int:
        """Sign-ups created at or after ``since`` for one address and/or one client."""
        sql, params = self._db.statements["count_signups"], {"since": self._stamp(since)}
        if address is not None:
            sql, params["address"] = sql + " AND address = :address", _key(address)
        if client is not None:
            sql, params["client"] = sql + " AND client = :client", client
        return int(self._db.fetch(self._db.sql(sql), params)[0][0])

    def signup_addresses(self) -> Iterator[str]:
        """Every address with a sign-up on record (to resolve confirm tokens)."""
        for (address,) in self._db.fetch(self._q["signup_addresses"]):
            yield address

    def record_feedback(self, subscriber: str, arxiv_id: str, verdict: str) -> bool:
        """Record 👍 (``like``) or 👎 (``dislike``) of ``subscriber`` for a paper; latest wins.

        Returns:
            ``True`` if this changed what is recorded (a new or different verdict).

        Raises:
            ValueError: ``verdict`` is neither.
        """
        if verdict not in ("like", "dislike"):
            raise ValueError(f"verdict must be 'like' or 'dislike', not {verdict!r}")
        params = {"subscriber": _key(subscriber), "arxiv_id": arxiv_id, "verdict": verdict}
        return self._db.execute(self._q["record_feedback"], params | {"stamp": self._stamp()}) == 1

    def feedback(self, subscribers: str | Iterable[str] | None = None) -> FeedbackTable:
        """👍/👎 recorded per subscriber, oldest first: of one address, of several (a send
        reads its owed subscribers'), or of all (``None``).

        The rows are read :data:`FEEDBACK_CHUNK` addresses at a time, found by the primary
        key (only each subscriber's own rows are sorted, by time), into a
        :class:`~digest.models.FeedbackTable`: a send of 100,000 subscribers with 200,000
        ratings never holds more than one chunk's rows, and keeps ~4 bytes per rating and
        each paper id once (readers rate the same few hundred papers).

        Returns:
            Subscriber address (normalized) → :class:`Feedback` (``likes``, ``dislikes``:
            bare ids, each paper id one shared string); addresses without a rating are
            absent.
        """
        if subscribers is None:
            wanted: Iterable[str] = [w for (w,) in self._db.fetch(self._q["feedback_subscribers"])]
        elif isinstance(subscribers, str):
            wanted = [subscribers]
        else:
            wanted = subscribers
        out = FeedbackTable()
        todo = iter(wanted)
        while chunk := [_key(s) for s in itertools.islice(todo, FEEDBACK_CHUNK)]:
            rows = self._db.fetch(self._q["feedback"], {"subscribers": self._db.array(chunk)})
            for who, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                likes: builtins.list[str] = []
                dislikes: builtins.list[str] = []
                for _, arxiv_id, verdict in group:
                    (likes if verdict == "like" else dislikes).append(arxiv_id)
                out.add(who, likes, dislikes)
        return out

    def forget(
        self, subscriber: str, items: Iterable[str], *, actor: str, now: datetime | None = None
    ) -> int:
        """Record that ``subscriber`` removed ``items`` (``origin:key``: ``thumbs-up:ID``,
        ``library:…``) from what shapes their ranking (the preferences page); every host's
        next send leaves them out.

        Args:
            subscriber: the address.
            items: the removed examples' items.
            actor: who asked (``web``, ``cli:<user>``).
            now: when (aware); default the store's clock.

        Returns:
            How many items were newly removed.
        """
        who, at = _key(subscriber), self._stamp(now)
        rows = [{"subscriber": who, "item": i, "at": at, "actor": actor} for i in items]
        return self._db.executemany(self._q["forget"], rows) if rows else 0

    def unforget(self, subscriber: str, items: Iterable[str]) -> int:
        """Count removed items again (a paper rated anew); how many were removed and are not."""
        who = _key(subscriber)
        rows = [{"subscriber": who, "item": i} for i in items]
        return self._db.executemany(self._q["unforget"], rows) if rows else 0

    def forgotten(self, subscribers: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """The removed items per subscriber (of all, or of those given: read
        :data:`FEEDBACK_CHUNK` addresses at a time); addresses without any are absent."""
        out: dict[str, set[str]] = {}
        if subscribers is None:
            rows: Iterable[Row] = self._db.fetch(self._q["forgotten_all"])
        else:
            todo, found = iter(subscribers), builtins.list[Row]()
            while chunk := [_key(s) for s in itertools.islice(todo, FEEDBACK_CHUNK)]:
                params = {"subscribers": self._db.array(chunk)}
                found.extend(self._db.fetch(self._q["forgotten"], params))
            rows = found
        for who, item in rows:
            out.setdefault(who, set()).add(item)
        return {k: frozenset(v) for k, v in out.items()}


class OpsMixin(StoreBase):
    """What operators watch (:mod:`digest.state.figures`): figures for the metrics, counts
    for the sender rates and the edition report, and the pauses of domain groups."""

    def state_figures(self, editions: Iterable[str]) -> StateFigures:
        """Delivery rows of ``editions`` by status and their oldest ``owed`` row, active
        suppressions by reason, active pauses: one query (by the editions' index), for a
        metrics scrape.

        Args:
            editions: the edition keys counted (the daemon's look-back: rows older than it
                are never sent again).
        """
        statuses: dict[str, int] = {}
        suppressions: dict[str, int] = {}
        paused: dict[str, datetime] = {}
        oldest_owed = None
        params = {"editions": self._db.array(sorted(set(editions)))}
        for kind, key, count, first in self._db.fetch(self._q["state_figures"], params):
            if kind == "status":
                statuses[key] = int(count)
            elif kind == "owed":
                oldest_owed = aware(first)
            elif kind == "suppressed":
                suppressions[key] = int(count)
            else:
                paused[key] = aware(first)
        return StateFigures(statuses, oldest_owed, suppressions, paused)

    def sender_counts(self, editions: Iterable[str]) -> builtins.list[DomainCount]:
        """Deliveries ``sent`` and ``failed``, and bounces and complaints recorded against
        them, per edition of ``editions`` and recipient domain (one query, by the editions'
        index): what :mod:`digest.reputation` turns into rates."""
        keys = sorted(set(editions))
        if not keys:
            return []
        rows = self._db.fetch(self._q["sender_counts"], {"editions": self._db.array(keys)})
        return [DomainCount(r[0], r[1], r[2], int(r[3]), aware(r[4])) for r in rows]

    def edition_counts(self, edition: str | None = None) -> builtins.list[EditionCount]:
        """Delivery rows grouped by edition, status, detail, reply code and whether a pause
        holds them (``owed`` rows whose ``last_error`` starts with :data:`PAUSED_ERROR`); of
        one edition, or of all. One grouped query (``digest history --summary``)."""
        sql = self._db.statements["edition_counts"]
        if edition is not None:
            sql += " WHERE edition = :edition"  # by the index on (edition, status)
        sql += " GROUP BY edition, status, detail, last_code, held ORDER BY edition, status"
        params = {"edition": edition, "paused": f"{PAUSED_ERROR}%"}
        rows = self._db.fetch(self._db.sql(sql), params)
        return [
            EditionCount(r[0], r[1], r[2], _int(r[3]), bool(r[4]), int(r[5]), r[6]) for r in rows
        ]

    def pause_group(
        self, group: str, *, evidence: str, actor: str, now: datetime | None = None
    ) -> bool:
        """Pause sending to the recipient domain group ``group`` until :meth:`resume_groups`.

        Idempotent: a group already paused keeps its first (active) pause.

        Args:
            group: the domain group (:class:`~digest.providers.DomainGroup` value).
            evidence: why, one line.
            actor: who (``daemon``).
            now: the time to record (aware); default the store's clock.

        Returns:
            True if the group was newly paused.
        """
        params = {"domain_group": group, "since": self._stamp(now), "evidence": evidence}
        return self._db.execute(self._q["pause"], params | {"actor": actor}) > 0

    def resume_groups(self, groups: Iterable[str] | None, *, actor: str) -> builtins.list[str]:
        """Lift the active pauses of ``groups`` (``None``: every paused group); the pauses
        stay in the history with who lifted them and when.

        Returns:
            The groups whose pause was lifted, sorted (a group not paused is absent).
        """
        active = sorted(g for g, p in self.pauses().items() if p.active)
        wanted = active if groups is None else sorted(set(groups) & set(active))
        if wanted:
            params = {"groups": self._db.array(wanted), "stamp": self._stamp(), "actor": actor}
            self._db.execute(self._q["resume"], params)
        return wanted

    def pauses(self) -> dict[str, Pause]:
        """The latest pause of each domain group ever paused (active or lifted), by group."""
        return {
            r[0]: Pause(r[0], aware(r[1]), r[2], r[3], aware(r[4]), r[5])
            for r in self._db.fetch(self._q["pauses"])
        }


class SubscribersMixin(StoreBase):
    """The subscriber list when it lives in the state (``DIGEST_SUBSCRIBERS=state``), and the
    outbox of web changes waiting to be written into a subscribers file.

    Every change of a row takes the next list version (:meth:`subscriber_list`): the
    version row is updated last in the change's transaction and its row lock is held until
    the commit, so versions are committed in order and a reader that has seen version *v*
    has seen every change up to *v* (:meth:`subscribers_since`).
    """

    def subscriber_list(self) -> StoredList:
        """The list as a whole: version, entry count, the YAML around the entries."""
        rows = self._db.fetch(self._q["subscriber_list"])
        if not rows:
            return StoredList()
        version, removed, entries, head, tail, indent, defaults = rows[0]
        return StoredList(
            int(version), int(removed), int(entries), head, tail, int(indent), json.loads(defaults)
        )

    def stored_subscriber(self, email: str, *, lock: bool = False) -> StoredSubscriber | None:
        """The row of ``email``, or ``None``.

        Args:
            email: the address.
            lock: inside :meth:`transaction`: other writers of the row wait until it ends
                (PostgreSQL ``FOR UPDATE``; a SQLite write transaction excludes them all).
        """
        name = "lock_subscriber" if lock else "stored_subscriber"
        rows = self._db.fetch(self._q[name], {"email": _key(email)}, write=lock)
        return _stored(rows[0]) if rows else None

    def stored_subscribers(
        self,
        *,
        frequency: str | None = None,
        active: bool | None = None,
        chunk: int = SUBSCRIBER_CHUNK,
    ) -> Iterator[builtins.list[StoredSubscriber]]:
        """The rows in list order, ``chunk`` at a time (a server-side cursor on PostgreSQL,
        pages on SQLite): the caller never holds more than one chunk of rows.

        Args:
            frequency: only ``daily`` or ``weekly`` subscribers.
            active: only active (``True``) or paused (``False``) subscribers.
            chunk: rows per chunk.
        """
        params = {"frequency": frequency, "active": None if active is None else int(active)}
        for rows in self._db.stream(
            self._q["stored_subscribers"],
            {**params, "position": -1, "email": ""},
            chunk,
            lambda last: {"position": last[1], "email": last[0]},
        ):
            yield [_stored(r) for r in rows]

    def subscribers_since(self, version: int) -> builtins.list[StoredSubscriber]:
        """The rows changed after list version ``version`` (added or changed), in list order."""
        return [
            _stored(r) for r in self._db.fetch(self._q["subscribers_since"], {"version": version})
        ]

    def subscriber_addresses(self, since: int = 0) -> builtins.list[str]:
        """The addresses of the rows changed after list version ``since`` (0: every row)."""
        return [r[0] for r in self._db.fetch(self._q["subscriber_addresses"], {"version": since})]

    def add_subscriber(self, row: StoredSubscriber, *, position: int | None = None) -> int | None:
        """Add one subscriber (after the last one, unless ``position``).

        Returns:
            The list version of the change; ``None`` if the address is on the list already
            (nothing written).
        """
        params = self._row(row) | {"position": position}
        with self._db.unit():
            if not self._db.execute(self._q["add_subscriber"], params):
                return None
            return self._stamp_row(row.email, 1)

    def change_subscriber(self, row: StoredSubscriber, *, expect: int) -> int | None:
        """Replace one subscriber's entry, if its row is still at version ``expect``.

        Returns:
            The list version of the change; ``None`` if the row changed since it was read
            at ``expect`` (or is gone): nothing written, read it again and retry.
        """
        with self._db.unit():
            if not self._db.execute(
                self._q["change_subscriber"], self._row(row) | {"expect": expect}
            ):
                return None
            return self._stamp_row(row.email, 0)

    def remove_subscriber(self, email: str) -> int | None:
        """Delete one subscriber from the list (history and suppressions stay).

        Returns:
            The list version of the change; ``None`` if the address was not on the list.
        """
        with self._db.unit():
            if not self._db.execute(self._q["remove_subscriber"], {"email": _key(email)}):
                return None
            return self._bump(-1)

    def save_subscribers(
        self,
        rows: Sequence[tuple[StoredSubscriber, int]],
        *,
        added: int,
        text: StoredList,
    ) -> int | None:
        """Write many rows and the list's text in one transaction (an import).

        Args:
            rows: ``(row, expect)``: a row to insert or replace, with its position, and the
                version it replaces (``-1``: a new row). A row of version 0 gets this
                change's version, another keeps its own (only its position changed).
            added: how many of them are new (the entry count grows by that much).
            text: the list's new ``head``, ``tail``, ``indent`` and ``defaults``.

        Returns:
            The list version of the change; ``None`` (nothing written) if a row was changed
            or added by another writer since it was read: read again and retry.
        """
        try:
            with self._db.unit():
                stamp = self._stamp()
                written = self._db.executemany(
                    self._q["put_subscriber"],
                    [
                        self._row(r) | {"version": r.version or -1, "expect": e, "stamp": stamp}
                        for r, e in rows
                    ],
                )
                if written != len(rows):
                    raise _Stale
                version = self._bump(added)
                self._db.execute(self._q["stamp_subscribers"], {"version": version})
                self._db.execute(
                    self._q["set_list_text"],
                    {
                        "head": text.head,
                        "tail": text.tail,
                        "indent": text.indent,
                        "defaults": json.dumps(text.defaults, ensure_ascii=False),
                    },
                )
        except _Stale:
            return None
        return version

    def unsubscribed_in_list(self) -> builtins.list[str]:
        """Active subscribers of the list whose address is suppressed as ``unsubscribed``."""
        return [r[0] for r in self._db.fetch(self._q["unsubscribed_in_list"])]

    def queue_list_change(self, email: str, change: str) -> int:
        """Queue a change (JSON) for the subscribers file's background writer; its id."""
        params = {"email": _key(email), "change": change, "stamp": self._stamp()}
        return int(self._db.fetch(self._q["queue_list_change"], params, write=True)[0][0])

    def list_changes(self) -> builtins.list[tuple[int, str, str]]:
        """Queued changes for the subscribers file, oldest first: ``(id, email, change)``."""
        return [(int(r[0]), r[1], r[2]) for r in self._db.fetch(self._q["list_changes"])]

    def forget_list_changes(self, ids: Iterable[int]) -> None:
        """Drop queued changes (written into the file)."""
        wanted = builtins.list(ids)
        if wanted:
            self._db.execute(self._q["forget_list_changes"], {"ids": self._db.array(wanted)})

    def _row(self, row: StoredSubscriber) -> dict[str, Any]:
        return {
            "email": _key(row.email),
            "position": row.position,
            "active": int(row.active),
            "frequency": row.frequency,
            "fields": json.dumps(row.fields, ensure_ascii=False),
            "entry": row.entry,
            "stamp": self._stamp(),
        }

    def _bump(self, delta: int) -> int:
        """The next list version (inside a unit; holds the list row until the commit)."""
        empty = StoredList()  # a list's first change: its row as an empty list's
        params = {"delta": delta, "stamp": self._stamp(), "head": empty.head}
        params |= {"indent": empty.indent, "defaults": "{}"}
        rows = self._db.fetch(self._q["bump_list"], params, write=True)
        return int(rows[0][0])

    def _stamp_row(self, email: str, delta: int) -> int:
        version = self._bump(delta)
        self._db.execute(self._q["stamp_subscriber"], {"email": _key(email), "version": version})
        return version


class _Stale(Exception):
    """A row changed since it was read (rolls the unit back)."""


class Store(
    DeliveriesMixin,
    BouncesMixin,
    PapersMixin,
    RecordsMixin,
    OpsMixin,
    SubscribersMixin,
    StoreBase,
):
    """The state store over one connector (SQLite or PostgreSQL): what ``digest`` needs of its
    state, each method written once in the mixin of its domain.

    Every write is one transaction, committed (durably) before the method returns, unless it
    is made inside :meth:`transaction` (then it commits with the block); an error rolls it
    back and raises :class:`~digest.errors.StateError`. Subscriber addresses are keys
    (:func:`~digest.state.base.address_key`); timestamps are aware UTC datetimes. Methods are
    synchronous, short and thread-safe. Open one with :func:`digest.state.open_state`.
    """


StateBackend = Store
"""The name the rest of ``digest`` uses for the state store (one class; the I/O seam below it
is the :class:`~digest.state.connector.Connector`)."""


class FeedCache:
    """Conditional-GET cache for feed sources (``ETag`` / ``Last-Modified``), in the state.

    Get it as ``store.feed_cache``.
    """

    def __init__(self, store: StoreBase) -> None:
        self._store = store

    def get(self, url: str) -> tuple[str | None, str | None, bytes] | None:
        """``(etag, last_modified, body)`` last stored for ``url``, or ``None``."""
        store = self._store
        rows = store._db.fetch(store._q["cache_get"], {"url": url})
        if not rows:
            return None
        etag, last_modified, body = rows[0]
        return etag, last_modified, bytes(body or b"")

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes) -> None:
        """Store (replace) the validators and body of a ``200`` response for ``url``."""
        store = self._store
        params = {"url": url, "etag": etag, "last_modified": last_modified, "body": body}
        store._db.execute(store._q["cache_put"], params | {"stamp": store._stamp()})


def _same(value: Any) -> Any:
    return value


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


_FROM_DB: dict[str, Callable[[Any], Any]] = {
    "time": aware,
    "day": as_day,
    "bytes": lambda v: None if v is None else bytes(v),
}


def _copy_columns(table: str) -> tuple[str, ...]:
    try:
        return COPY_COLUMNS[table]
    except KeyError:
        raise StateError(f"no table {table!r} to copy (one of {', '.join(COPY_TABLES)})") from None


def _delivery(r: Row) -> Delivery:
    status, created, updated, sent = DeliveryStatus(r[2]), aware(r[6]), aware(r[7]), aware(r[8])
    return Delivery(r[0], r[1], status, r[3], r[4], int(r[5]), created, updated, sent, r[9], r[10])


def _score(r: Row) -> BounceScore:
    return BounceScore(r[0], int(r[1]), float(r[2]), as_day(r[3]), aware(r[4]))


def _stored(r: Row) -> StoredSubscriber:
    email, position, active, frequency, fields, entry, version = r
    return StoredSubscriber(
        email, int(position), bool(active), frequency, json.loads(fields), entry, int(version)
    )


def _suppression(r: Row) -> Suppression:
    reason = SuppressionReason(r[1])
    return Suppression(r[0], reason, aware(r[2]), r[3], r[4], aware(r[5]), r[6])
