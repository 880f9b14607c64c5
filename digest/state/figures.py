"""What the state store tells the operator: figures, rate counts, edition summaries, pauses.

Read by :class:`~digest.state.store.OpsMixin` (``state_figures``, ``sender_counts``,
``edition_counts``, ``pauses``) and turned into metrics (:mod:`digest.metrics`), complaint
and hard-bounce rates (:mod:`digest.reputation`) and the per-edition report
(:mod:`digest.history`). The ``pauses`` table (schema migration 6) holds each pause of a
recipient domain group, kept after it is lifted (the history), at most one active per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause of sending to a recipient domain group (:mod:`digest.providers`).

    Attributes:
        group: the domain group (``gmail``, ``outlook``, ``yahoo``, ``other``).
        since: when it was paused (aware, UTC).
        evidence: why, one line (the edition, complaints ÷ delivered, the threshold).
        actor: who paused it (``daemon``).
        lifted_at: when ``digest resume`` lifted it (aware, UTC); ``None`` while active.
        lifted_by: who lifted it (``cli:<user>``).
    """

    group: str
    since: datetime
    evidence: str
    actor: str
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def active(self) -> bool:
        """True while sending to the group is paused."""
        return self.lifted_at is None


@dataclass(frozen=True, slots=True)
class StateFigures:
    """Figures every process reads from the shared state (the metrics' state collector).

    Attributes:
        statuses: delivery rows per status, of the editions asked for.
        oldest_owed: ``created_at`` of their oldest ``owed`` row (aware, UTC), or ``None``.
        suppressions: active suppressions per reason.
        paused: active pauses, group → since (aware, UTC).
    """

    statuses: dict[str, int]
    oldest_owed: datetime | None
    suppressions: dict[str, int]
    paused: dict[str, datetime]


@dataclass(frozen=True, slots=True)
class DomainCount:
    """How many deliveries, bounces or complaints of one edition went to one domain.

    Attributes:
        edition: the edition key.
        domain: the recipient domain (after the address's last ``@``).
        what: ``sent`` or ``failed`` (delivery rows), or ``hard``, ``soft``, ``complaint``
            (rows of ``bounces`` recorded against the edition).
        count: how many.
        last_at: for bounces and complaints, when the latest was recorded (aware, UTC);
            ``None`` for deliveries.
    """

    edition: str
    domain: str
    what: str
    count: int
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class EditionCount:
    """Delivery rows of one edition sharing a status, detail, reply code and pause mark.

    Attributes:
        edition: the edition key.
        status: the row status (``owed``, ``sent``, ``skipped``...).
        detail: the row's ``detail`` (a skip's reason), or ``None``.
        code: the last SMTP reply code, or ``None``.
        paused: an ``owed`` row held back because its domain group is paused.
        count: how many rows.
        reply: one of their ``last_error`` texts (the smallest), or ``None``.
    """

    edition: str
    status: str
    detail: str | None
    code: int | None
    paused: bool
    count: int
    reply: str | None
