"""The papers stage: an edition's papers, from the stored lists or the sources.

:class:`PaperCollector` is what :meth:`Digest.papers_for <digest.core.Digest.papers_for>`
and the send pipeline's ``papers`` stage use: each (source, UTC day) of the edition is read
from the state store when stored, else fetched once (several senders on one shared state
take turns through :meth:`~digest.state.StateBackend.try_lock_papers`), and the lists are
merged across sources (:func:`~digest.sources.merge.merge_papers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from digest.clock import Clock
from digest.errors import AllSourcesFailedError, SourceError
from digest.models import Edition, Paper
from digest.schedule import WEEKEND
from digest.settings import Settings
from digest.sources import Source, build_source
from digest.sources.merge import merge_papers
from digest.state import StateBackend

log = logging.getLogger(__name__)

PAPERS_LOCK_POLL_S = 0.2
"""While another sender fetches a (source, day), check its stored list this often, seconds."""
PAPERS_LOCK_WAIT_S = 120.0
"""Wait at most this long for another sender's fetch, seconds, then fetch anyway."""


@dataclass(frozen=True, slots=True)
class DayPapers:
    """Where one source's list for one UTC day came from (``digest papers`` prints these).

    Attributes:
        source: the source spec.
        day: the UTC day.
        count: papers in the list, or ``None`` when the fetch failed.
        how: ``stored`` (the state file's copy), ``fetched, stored``, ``fetched, not stored:
            <why>`` or ``failed: <reason>``.
    """

    source: str
    day: date
    count: int | None
    how: str


@dataclass(frozen=True, slots=True)
class PapersResult:
    """The papers of an edition, merged across sources.

    Attributes:
        papers: merged, deduplicated papers of every day of the edition (source order kept).
        failed: one line per source/day that could not be fetched (``source day: reason``).
        complete: True when every source answered for every day.
        days: where each (source, day) list came from, in the order of the edition's jobs.
    """

    papers: list[Paper]
    failed: list[str] = field(default_factory=list)
    complete: bool = True
    days: list[DayPapers] = field(default_factory=list)


def default_edition_day(now: datetime) -> date:
    """The most recent Daily Papers date that has ended at ``now``: yesterday in UTC.

    Args:
        now: an aware datetime (any zone; converted to UTC).
    """
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def day_has_ended(day: date, now: datetime) -> bool:
    """True when the UTC day ``day`` is over at ``now`` (its list can no longer change)."""
    return now.astimezone(UTC).date() > day


class PaperCollector:
    """Collects an edition's papers: stored lists first, then the sources (built once each).

    Args:
        settings: ``DIGEST_SOURCES`` (the default specs) and what the sources need.
        store: where fetched lists are stored and read back (its ``feed_cache`` too).
        now: the clock (aware UTC): decides whether a day has ended and may be stored.
    """

    def __init__(self, settings: Settings, store: StateBackend, *, now: Clock) -> None:
        self.settings = settings
        self.store = store
        self.now = now
        self._sources: dict[str, Source] = {}

    def source(self, spec: str) -> Source:
        """The source of ``spec`` (``hf``, ``file:PATH``, ``feed:URL``), built on first use.

        Raises:
            ConfigError: an unknown or malformed spec.
        """
        if spec not in self._sources:
            self._sources[spec] = build_source(
                spec, self.settings, feed_cache=self.store.feed_cache
            )
        return self._sources[spec]

    async def collect(
        self,
        edition: Edition,
        *,
        sources: Sequence[str] | None = None,
        refetch: bool = False,
    ) -> PapersResult:
        """The papers of ``edition``, merged across ``sources``.

        Papers already stored in the state file for a (day, source) are reused, so a later
        preview or resend shows the same papers. Fetched papers are stored once their UTC
        day has ended (before that the list is still growing); an empty weekday list is never
        stored (an outage, or published late), so the next call asks the sources again.

        Args:
            edition: which days to collect.
            sources: source specs; default ``settings.source_specs``.
            refetch: ask the sources even for stored days, and replace the stored lists with
                what they answer (``digest papers --refetch``). A failed fetch, or an empty
                weekday list, leaves the stored copy as it was.

        Returns:
            The merged papers and which fetches failed.

        Raises:
            SourceError: every source failed for every day (nothing to send yet).
        """
        specs = list(sources) if sources else self.settings.source_specs
        now = self.now()
        store = self.store
        failed: list[str] = []
        days: list[DayPapers] = []

        def stored_copy(spec: str, day: date, papers: list[Paper]) -> list[Paper]:
            days.append(DayPapers(spec, day, len(papers), "stored"))
            return papers

        async def one(spec: str, day: date) -> list[Paper] | None:
            if refetch:
                return await fetch(spec, day)
            # Several senders on one shared state fetch each (source, day) once: the others
            # wait for the lock holder's stored list (bounded: then they fetch themselves).
            deadline = time.monotonic() + PAPERS_LOCK_WAIT_S
            while True:
                stored = store.load_papers(day, spec)
                if stored is not None:
                    return stored_copy(spec, day, stored)
                if store.try_lock_papers(day, spec):
                    break
                if time.monotonic() > deadline:
                    log.warning("%s %s: another sender is still fetching; fetching too", spec, day)
                    return await fetch(spec, day)
                await asyncio.sleep(PAPERS_LOCK_POLL_S)
            try:
                stored = store.load_papers(day, spec)  # stored while we took the lock?
                return (
                    stored_copy(spec, day, stored) if stored is not None else await fetch(spec, day)
                )
            finally:
                store.unlock_papers(day, spec)

        async def fetch(spec: str, day: date) -> list[Paper] | None:
            try:
                papers = await self.source(spec).fetch(day)
            except SourceError as e:
                # Reported once, by the caller (the CLI's summary, the daemon's edition line).
                log.debug("%s", e)
                failed.append(f"{spec} {day.isoformat()}: {e.detail}")
                days.append(DayPapers(spec, day, None, f"failed: {e.detail}"))
                return None
            # An empty weekday list is suspicious (an outage, or published late): keep asking.
            if not day_has_ended(day, now):
                how = "fetched, not stored: the UTC day has not ended"
            elif papers or day.weekday() in WEEKEND:
                store.save_papers(day, spec, papers)
                how = "fetched, stored"
            else:
                how = "fetched, not stored: no papers on a weekday (an outage?)"
            days.append(DayPapers(spec, day, len(papers), how))
            return papers

        jobs = [(spec, day) for spec in specs for day in edition.days]
        results = await asyncio.gather(*(one(spec, day) for spec, day in jobs))
        by_source: dict[str, list[Paper]] = {spec: [] for spec in specs}
        for (spec, _day), papers in zip(jobs, results, strict=True):
            if papers is not None:
                by_source[spec].extend(papers)
        if len(failed) == len(jobs):
            raise AllSourcesFailedError(failed)
        # One edition lists a paper once, whatever days its copies carry (a feed announces a
        # paper before Hugging Face lists it; a weekly edition spans days).
        merged = merge_papers([by_source[spec] for spec in specs], by_day=False)
        order = {job: i for i, job in enumerate(jobs)}
        days.sort(key=lambda d: order[(d.source, d.day)])
        return PapersResult(papers=merged, failed=failed, complete=not failed, days=days)
