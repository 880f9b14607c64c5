"""Who got an edition, and who was skipped and why (``digest history --summary``).

One grouped query (:meth:`~digest.state.StateBackend.edition_counts`) per call, shaped into
an :class:`EditionSummary` per edition:

* ``delivered``: accepted by the transport (``sent`` rows);
* ``owed``: not sent yet (never tried, or deferred without a transient SMTP reply, e.g. the
  sources failed or a run stopped); ``sending``: in flight;
* ``unknown``: the relay may or may not have it (never resent without ``--retry-unknown``);
* ``failed``: permanently refused, grouped by the relay's reply code, one reply quoted;
* ``skipped`` by reason: ``suppressed`` (unsubscribed, complained, manual), ``bounced``
  (suppressed after hard bounces), ``paused`` (its domain group is paused: owed until
  ``digest resume``, or skipped once the send window closed), ``throttled`` (owed after a
  transient 4xx reply: the relay or the recipient's server asked to slow down), ``no papers``
  (nothing matched the subscriber's interests), ``late`` (the send window had closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from digest.models import is_test_edition
from digest.state import (
    SKIP_LATE,
    SKIP_NO_PAPERS,
    SKIP_PAUSED,
    DeliveryStatus,
    EditionCount,
    StateBackend,
    SuppressionReason,
)

SUPPRESSED = "suppressed"
THROTTLED = "throttled"
SKIP_REASONS: tuple[str, ...] = (
    SUPPRESSED,
    SuppressionReason.BOUNCED.value,
    SKIP_PAUSED,
    THROTTLED,
    SKIP_NO_PAPERS,
    SKIP_LATE,
)
"""The skip reasons a summary always lists, in this order (others follow, as recorded)."""
_SUPPRESSION_REASONS = tuple(
    r.value for r in SuppressionReason if r is not SuppressionReason.BOUNCED
)
_LABELS = {SKIP_NO_PAPERS: "no papers matched"}


@dataclass(frozen=True, slots=True)
class FailedReply:
    """Failed deliveries that got one reply code.

    Attributes:
        code: the SMTP reply code (550...), or ``None`` (the message could not be made).
        count: how many.
        reply: one of their replies, as the relay wrote it.
    """

    code: int | None
    count: int
    reply: str | None


@dataclass(slots=True)
class EditionSummary:
    """What became of one edition, subscriber by subscriber, in counts (see the module doc).

    Attributes:
        edition: the edition key.
        delivered, owed, sending, unknown: rows of each.
        failed: by reply code, the most frequent first.
        skipped: by reason (:data:`SKIP_REASONS` first, each present, maybe 0).
        suppressed: of ``skipped["suppressed"]``, by suppression reason.
    """

    edition: str
    delivered: int = 0
    owed: int = 0
    sending: int = 0
    unknown: int = 0
    failed: list[FailedReply] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every row of the edition."""
        failed = sum(f.count for f in self.failed)
        rows = self.delivered + self.owed + self.sending + self.unknown + failed
        return rows + sum(self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the counts, ``failed`` as a list of ``{code, count, reply}``."""
        return {
            "edition": self.edition,
            "total": self.total,
            "delivered": self.delivered,
            "owed": self.owed,
            "sending": self.sending,
            "unknown": self.unknown,
            "failed": [{"code": f.code, "count": f.count, "reply": f.reply} for f in self.failed],
            "skipped": dict(self.skipped),
            "suppressed": dict(self.suppressed),
        }

    def lines(self) -> list[str]:
        """The summary as text, one line per kind of outcome (nonzero ones, bar the first)."""
        out = [f"edition {self.edition}: {self.total:,} subscribers, {self.delivered:,} delivered"]
        if self.owed or self.sending:
            extra = f", {self.sending:,} being sent" if self.sending else ""
            out.append(f"  owed {self.owed:,} (not sent yet){extra}")
        if self.unknown:
            out.append(
                f"  unknown {self.unknown:,} (may have arrived; resend with "
                "`digest send --retry-unknown`)"
            )
        if self.failed:
            replies = ", ".join(
                f"{f.code if f.code is not None else 'no reply'} ×{f.count:,}"
                + (f" ({f.reply})" if f.reply else "")
                for f in self.failed
            )
            out.append(f"  failed {sum(f.count for f in self.failed):,}: {replies}")
        skipped = sum(self.skipped.values())
        if skipped:
            parts = []
            for reason, count in self.skipped.items():
                if not count:
                    continue
                part = f"{_LABELS.get(reason, reason)} {count:,}"
                if reason == SUPPRESSED and self.suppressed:
                    part += " (" + ", ".join(f"{n:,} {r}" for r, n in self.suppressed.items()) + ")"
                parts.append(part)
            out.append(f"  skipped {skipped:,}: " + ", ".join(parts))
        return out


def summarize(counts: Iterable[EditionCount]) -> list[EditionSummary]:
    """Shape the grouped rows of :meth:`~digest.state.StateBackend.edition_counts` into one
    :class:`EditionSummary` per edition (test sends left out), newest edition first."""
    by_edition: dict[str, EditionSummary] = {}
    failed: dict[str, dict[int | None, tuple[int, str | None]]] = {}
    for c in counts:
        if is_test_edition(c.edition):
            continue
        s = by_edition.setdefault(c.edition, EditionSummary(c.edition))
        status = DeliveryStatus(c.status)
        if status is DeliveryStatus.SENT:
            s.delivered += c.count
        elif status is DeliveryStatus.SENDING:
            s.sending += c.count
        elif status is DeliveryStatus.UNKNOWN:
            s.unknown += c.count
        elif status is DeliveryStatus.FAILED:
            codes = failed.setdefault(c.edition, {})
            count, reply = codes.get(c.code, (0, None))
            codes[c.code] = (count + c.count, reply or c.reply)
        elif status is DeliveryStatus.OWED:
            if c.paused:
                _add(s.skipped, SKIP_PAUSED, c.count)
            elif c.code is not None and 400 <= c.code < 500:
                _add(s.skipped, THROTTLED, c.count)
            else:
                s.owed += c.count
        else:  # skipped: the detail is the reason
            reason = c.detail or "unknown reason"
            if reason in _SUPPRESSION_REASONS:
                _add(s.suppressed, reason, c.count)
                reason = SUPPRESSED
            _add(s.skipped, reason, c.count)
    for s in by_edition.values():
        s.suppressed = {r: s.suppressed[r] for r in _SUPPRESSION_REASONS if r in s.suppressed}
        extra = sorted(set(s.skipped) - set(SKIP_REASONS))
        s.skipped = {r: s.skipped[r] for r in (*SKIP_REASONS, *extra)}
    for edition, codes in failed.items():
        by_edition[edition].failed = [
            FailedReply(code, count, reply)
            for code, (count, reply) in sorted(codes.items(), key=lambda i: (-i[1][0], i[0] or 0))
        ]
    return sorted(by_edition.values(), key=lambda s: s.edition, reverse=True)


def edition_summaries(store: StateBackend, edition: str | None = None) -> list[EditionSummary]:
    """The :class:`EditionSummary` of ``edition`` (a list of one, or none if it has no rows),
    or of every edition, newest first."""
    return summarize(store.edition_counts(edition))


def _add(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n
