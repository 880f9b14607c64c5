"""The delivery transition rules and the state's records, defined once.

The state store is the single source of truth for what was sent. ``StateBackend`` (the one
class :class:`digest.state.store.Store`) is what the rest of ``digest`` sees; it works over
a SQLite file (one sender at a time, guarded by a file lock) or a PostgreSQL database shared
by any number of senders on any number of hosts (claims are single atomic statements, each
carrying the claimer's id and a lease). :func:`digest.state.open_state` picks the database
from ``DIGEST_STATE_URL``.

A delivery row (one per subscriber and edition) moves along :data:`TRANSITIONS`::

    (absent) ─┐
              ▼
            owed ──claim──▶ sending ──mark_sent──▶ sent
              ▲               │  ├──mark_failed──▶ failed   (permanent, 5xx)
              │               │  ├──mark_deferred─▶ owed    (transient, 4xx; next run)
              │               │  └──mark_unknown──▶ unknown (outcome cannot be known)
              │               └──expire──▶ unknown  (its process died: lock gone / lease over)
              └──reopen── any status (``--resend``; ``--retry-unknown`` for unknown rows)

    mark_skipped: any but sent ──▶ skipped (``late`` / ``no papers``)

``sent`` is never overwritten except by :meth:`StateBackend.reopen`; ``unknown`` is never
resent without ``--retry-unknown``. The store's statements (``queries.sql``) get the ``WHERE``
clause of their single-statement writes from :func:`allowed_sql`, so the rules exist only here.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from digest.addresses import normalize_email

SKIP_LATE = "late"
"""``detail`` of a ``skipped`` row whose send window had passed (catch-up limit)."""

SKIP_NO_PAPERS = "no papers"
"""``detail`` of a ``skipped`` row whose ranked list was empty (and ``send_empty`` was off)."""

SKIP_PAUSED = "paused"
"""``detail`` of a ``skipped`` row whose send window closed while its recipient domain group
was paused (:mod:`digest.reputation`)."""

PAUSED_ERROR = "paused"
"""How the ``last_error`` of an ``owed`` row held back by a pause of its domain group starts
(``paused: …``): it stays owed and is sent after ``digest resume``."""

DEFAULT_LEASE_S = 60.0
"""How long a claim of a shared backend stays valid without renewal, seconds. The claimer
renews it every :data:`LEASE_RENEW_FRACTION` of this while the message is in flight; a row
whose lease ran out belongs to a dead process and becomes ``unknown``."""

LEASE_RENEW_FRACTION = 1 / 3
"""Fraction of the lease after which a live claimer renews its leases."""

INTERRUPTED = "interrupted while sending: may or may not have been delivered"
"""``last_error`` of a row that was ``sending`` when its process died (if it had none)."""


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


ALL_STATUSES: frozenset[DeliveryStatus] = frozenset(DeliveryStatus)


class Transition(StrEnum):
    """A write that changes a delivery row's status (one backend method each)."""

    CLAIM = "claim"
    SENT = "mark_sent"
    FAILED = "mark_failed"
    DEFERRED = "mark_deferred"
    UNKNOWN = "mark_unknown"
    SKIPPED = "mark_skipped"
    EXPIRE = "expire"
    REOPEN = "reopen"


@dataclass(frozen=True, slots=True)
class Rule:
    """Where a transition leads and from which statuses it is allowed.

    Attributes:
        target: the status the row gets.
        sources: statuses the row may have for the transition to apply; a missing row is
            always created with ``target`` (except for :attr:`Transition.EXPIRE`, which only
            changes existing rows).
    """

    target: DeliveryStatus
    sources: frozenset[DeliveryStatus]


_NOT_SENT = ALL_STATUSES - {DeliveryStatus.SENT}

TRANSITIONS: Mapping[Transition, Rule] = {
    Transition.CLAIM: Rule(DeliveryStatus.SENDING, frozenset({DeliveryStatus.OWED})),
    # The message is out, whatever the row said (even unknown: a lease that ran out while
    # the claimer was still alive).
    Transition.SENT: Rule(DeliveryStatus.SENT, ALL_STATUSES),
    Transition.FAILED: Rule(DeliveryStatus.FAILED, _NOT_SENT),
    Transition.DEFERRED: Rule(DeliveryStatus.OWED, _NOT_SENT),
    Transition.UNKNOWN: Rule(DeliveryStatus.UNKNOWN, _NOT_SENT),
    Transition.SKIPPED: Rule(DeliveryStatus.SKIPPED, _NOT_SENT),
    Transition.EXPIRE: Rule(DeliveryStatus.UNKNOWN, frozenset({DeliveryStatus.SENDING})),
    Transition.REOPEN: Rule(DeliveryStatus.OWED, ALL_STATUSES),
}
"""The delivery state machine (see the module docstring)."""

CLAIMABLE: frozenset[DeliveryStatus] = TRANSITIONS[Transition.CLAIM].sources
"""Statuses that still owe the edition (besides no row at all)."""


def may_move(transition: Transition, current: DeliveryStatus | str | None) -> bool:
    """Whether ``transition`` applies to a row whose status is ``current`` (``None``: no row).

    Args:
        transition: the write.
        current: the row's status, or ``None`` if there is no row yet.
    """
    if current is None:
        return transition is not Transition.EXPIRE
    return DeliveryStatus(current) in TRANSITIONS[transition].sources


def allowed_sql(transition: Transition, column: str = "deliveries.status") -> str:
    """The SQL condition (SQLite and PostgreSQL) under which ``transition`` may update a row.

    Args:
        transition: the write.
        column: the status column as the statement names it.

    Returns:
        ``TRUE``, ``<column> IN ('owed')`` or ``<column> NOT IN ('sent')``: whichever is shorter.
    """
    allowed = TRANSITIONS[transition].sources
    if allowed == ALL_STATUSES:
        return "TRUE"
    refused = ALL_STATUSES - allowed
    if len(refused) < len(allowed):
        return f"{column} NOT IN ({_literals(refused)})"
    return f"{column} IN ({_literals(allowed)})"


def _literals(statuses: Iterable[DeliveryStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


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


class BounceKind(StrEnum):
    """What a bounce says about an address; compares equal to its string."""

    HARD = "hard"
    """Permanent failure: SMTP 5xx for the recipient, a DSN ``Status: 5.x.x``."""
    SOFT = "soft"
    """Transient failure reported after acceptance: a DSN ``Action: failed`` with ``4.x.x``."""
    COMPLAINT = "complaint"
    """An abuse report (ARF ``feedback-report``, RFC 5965) about our message."""


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One bounce or complaint about one address.

    Attributes:
        address: the normalized address it is about.
        kind: see :class:`BounceKind`.
        at: when it was recorded (aware, UTC).
        edition: the edition of the delivery it bounced, if matched.
        message_id: the ``Message-ID`` of our message it bounced, if known.
        evidence: one line: the SMTP reply, or the DSN's ``Status``/``Diagnostic-Code``, or
            the ARF ``Feedback-Type``.
        source: ``smtp`` (refused at send time) or ``bounces`` (read from the bounce mailbox).
        scored: whether it counted towards the bounce score (soft bounces count once a day).
    """

    address: str
    kind: BounceKind
    at: datetime
    edition: str | None
    message_id: str | None
    evidence: str
    source: str
    scored: bool = True


@dataclass(frozen=True, slots=True)
class BounceScore:
    """The bounce score of one address (see :mod:`digest.bounces.policy`).

    Attributes:
        address: the normalized address.
        hard: hard bounces counted since the last reset.
        soft: soft-bounce score since the last reset (at most one point per UTC day).
        last_scored_day: the UTC day a soft bounce last counted, or ``None``.
        last_bounce_at: the last bounce of any kind (aware, UTC), or ``None``.
    """

    address: str
    hard: int = 0
    soft: float = 0.0
    last_scored_day: date | None = None
    last_bounce_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProcessedMessage:
    """A bounce-mailbox message already handled; it is never counted again.

    Attributes:
        key: ``sha256:<hex>`` of the message's raw bytes.
        message_id: the message's own ``Message-ID`` header, if any (information only).
        at: when it was handled (aware, UTC).
        outcome: ``bounce``, ``complaint``, ``ignored`` (delay/success notices) or
            ``unrecognised`` (kept aside).
        detail: one line on what was done or why it was kept aside.
    """

    key: str
    message_id: str | None
    at: datetime
    outcome: str
    detail: str = ""


def address_key(address: str) -> str:
    """The identity key of an email address in the state store (rows, suppressions).

    :func:`~digest.addresses.normalize_email`: NFC, lower case, the domain in IDNA form.
    """
    return normalize_email(address)


def claimer_id() -> str:
    """This process's claimer id: ``host:pid:random`` (unique even when a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


StatusMap = dict[tuple[str, str], DeliveryStatus]
"""``{(subscriber, edition): status}`` for the rows that exist."""


COPY_TABLES: tuple[str, ...] = (
    "deliveries",
    "suppressions",
    "bounces",
    "bounce_scores",
    "processed_messages",
    "delivery_papers",
    "feedback",
    "events",
    "signups",
    "known_papers",
    "papers",
    "feed_cache",
    "pauses",
    "subscribers",
    "subscriber_list",
    "subscriber_outbox",
    "forgotten",
)
"""The tables ``digest state migrate`` copies, in this order (parents first)."""
