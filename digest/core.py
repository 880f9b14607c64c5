"""The library facade: :class:`Digest` ties sources, ranking, rendering, delivery and state.

The CLI and the daemon are thin layers over it: each command is one or two calls here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from types import TracebackType

from digest.clock import Clock, utc_now
from digest.delivery import OutgoingMessage, pool_size
from digest.delivery.engine import send_all
from digest.errors import ConfigError, DigestError, SourceError
from digest.models import Edition, Paper, RankedPaper, RunSummary
from digest.ranking import rank
from digest.render import RenderedEmail, Renderer
from digest.renderpool import (
    RENDER_PROCESSES_MIN_BATCH,
    TASKS_IN_FLIGHT_PER_WORKER,
    build_for,
    make_in_processes,
    make_message,
    render_ranked,
)
from digest.schedule import WEEKEND, may_be_empty
from digest.settings import Settings
from digest.sources import Source, build_source
from digest.sources.merge import merge_papers
from digest.state import SKIP_NO_PAPERS, StateStore
from digest.subscribers import Subscriber, SubscriberList, load_subscribers

log = logging.getLogger(__name__)

PREVIEW_FORMATS = ("html", "text", "eml")

ResultCallback = Callable[[str, str], None]
"""``on_result(email, outcome)``: outcome is ``sent``, ``failed``, ``deferred``, ``skipped``."""


@dataclass(frozen=True, slots=True)
class PapersResult:
    """The papers of an edition, merged across sources.

    Attributes:
        papers: merged, deduplicated papers of every day of the edition (source order kept).
        failed: one line per source/day that could not be fetched (``source day: reason``).
        complete: True when every source answered for every day.
    """

    papers: list[Paper]
    failed: list[str] = field(default_factory=list)
    complete: bool = True


def default_edition_day(now: datetime) -> date:
    """The most recent Daily Papers date that has ended at ``now``: yesterday in UTC.

    Args:
        now: an aware datetime (any zone; converted to UTC).
    """
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def day_has_ended(day: date, now: datetime) -> bool:
    """True when the UTC day ``day`` is over at ``now`` (its list can no longer change)."""
    return now.astimezone(UTC).date() > day


class Digest:
    """One configured ``digest`` instance: settings, the state file, sources and templates.

    Use as a context manager (or call :meth:`close`). Not thread-safe; one per process.

    Args:
        settings: the validated settings.
        now: the clock (aware UTC datetimes); injected by tests.

    Attributes:
        render_min_batch: fewest owed subscribers for which :meth:`send` makes the messages
            in ``settings.effective_render_workers`` worker processes (see
            :mod:`digest.renderpool`); default :data:`RENDER_PROCESSES_MIN_BATCH`.

    Raises:
        StateError: the state file cannot be opened or has a newer schema.
    """

    render_min_batch: int = RENDER_PROCESSES_MIN_BATCH

    def __init__(self, settings: Settings, *, now: Clock = utc_now) -> None:
        self.settings = settings
        self.now = now
        self.store = StateStore(settings.state_path, now=now)
        self._renderer: Renderer | None = None
        self._sources: dict[str, Source] = {}
        self._recovered = False

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the state file."""
        self.store.close()

    def __enter__(self) -> Digest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inputs ----------------------------------------------------------------------------
    def load_subscribers(self) -> SubscriberList:
        """Read and validate the subscribers file (``DIGEST_SUBSCRIBERS``).

        Raises:
            ConfigError: every problem at once, as ``file:line: field: message``.
        """
        return load_subscribers(self.settings.subscribers)

    @property
    def renderer(self) -> Renderer:
        """The template renderer (built on first use)."""
        if self._renderer is None:
            self._renderer = Renderer(self.settings.templates_dir, site_url=self.settings.site_url)
        return self._renderer

    def _source(self, spec: str) -> Source:
        if spec not in self._sources:
            self._sources[spec] = build_source(
                spec, self.settings, feed_cache=self.store.feed_cache
            )
        return self._sources[spec]

    async def papers_for(
        self,
        edition: Edition,
        *,
        sources: Sequence[str] | None = None,
    ) -> PapersResult:
        """The papers of ``edition``, merged across ``sources``.

        Papers already stored in the state file for a (day, source) are reused, so a later
        preview or resend shows the same papers. Fetched papers are stored once their UTC
        day has ended (before that the list is still growing); an empty weekday list is never
        stored (an outage, or published late), so the next call asks the sources again.

        Args:
            edition: which days to collect.
            sources: source specs; default ``settings.source_specs``.

        Returns:
            The merged papers and which fetches failed.

        Raises:
            SourceError: every source failed for every day (nothing to send yet).
        """
        specs = list(sources) if sources else self.settings.source_specs
        now = self.now()
        failed: list[str] = []

        async def one(spec: str, day: date) -> list[Paper] | None:
            stored = self.store.load_papers(day, spec)
            if stored is not None:
                return stored
            try:
                papers = await self._source(spec).fetch(day)
            except SourceError as e:
                log.warning("%s", e)
                failed.append(f"{spec} {day.isoformat()}: {e}")
                return None
            # An empty weekday list is suspicious (an outage, or published late): keep asking.
            if day_has_ended(day, now) and (papers or day.weekday() in WEEKEND):
                self.store.save_papers(day, spec, papers)
            return papers

        jobs = [(spec, day) for spec in specs for day in edition.days]
        results = await asyncio.gather(*(one(spec, day) for spec, day in jobs))
        by_source: dict[str, list[Paper]] = {spec: [] for spec in specs}
        for (spec, _day), papers in zip(jobs, results, strict=True):
            if papers is not None:
                by_source[spec].extend(papers)
        if len(failed) == len(jobs):
            raise SourceError(",".join(specs), "every source failed: " + "; ".join(failed))
        # One edition lists a paper once, whatever days its copies carry (a feed announces a
        # paper before Hugging Face lists it; a weekly edition spans days).
        merged = merge_papers([by_source[spec] for spec in specs], by_day=False)
        return PapersResult(papers=merged, failed=failed, complete=not failed)

    # -- rendering -------------------------------------------------------------------------
    def render(
        self, edition: Edition, papers: Sequence[Paper], subscriber: Subscriber | None
    ) -> tuple[list[RankedPaper], RenderedEmail]:
        """Rank ``papers`` for ``subscriber`` (``None``: the unpersonalized edition) and render.

        Raises:
            ConfigError: a template is broken.
        """
        ranked = rank(papers, subscriber or Subscriber.default())
        return ranked, self._render_ranked(edition, ranked, len(papers), subscriber)

    def _render_ranked(
        self,
        edition: Edition,
        ranked: Sequence[RankedPaper],
        total_papers: int,
        subscriber: Subscriber | None,
    ) -> RenderedEmail:
        """Render an already ranked selection (see :meth:`render`)."""
        return render_ranked(
            self.settings, self.renderer, edition, ranked, total_papers, subscriber
        )

    def build(
        self, rendered: RenderedEmail, subscriber: Subscriber | None, edition: Edition
    ) -> tuple[str, bytes]:
        """Build the RFC 5322 message for ``subscriber``; returns ``(message_id, bytes)``."""
        return build_for(self.settings, rendered, subscriber, edition, self.now())

    def preview(
        self,
        edition: Edition,
        papers: Sequence[Paper],
        subscriber: Subscriber | None,
        fmt: str = "html",
    ) -> bytes:
        """Render one edition locally: sends nothing and records no delivery.

        Args:
            edition: the edition.
            papers: its papers (from :meth:`papers_for`).
            subscriber: whose edition, or ``None`` for the unpersonalized one.
            fmt: ``html`` (inlined HTML part), ``text`` (plain-text part) or ``eml`` (the
                whole message as it would be sent).

        Returns:
            UTF-8 bytes of the requested format.

        Raises:
            ConfigError: unknown format or broken template.
        """
        if fmt not in PREVIEW_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(PREVIEW_FORMATS)}, not {fmt!r}")
        _, rendered = self.render(edition, papers, subscriber)
        if fmt == "html":
            return rendered.html.encode()
        if fmt == "text":
            return rendered.text.encode()
        return self.build(rendered, subscriber, edition)[1]

    # -- sending ---------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark rows left in ``sending`` by a crashed run as ``unknown``; returns how many.

        Call only while holding the state lock (no other sender can be mid-delivery).
        """
        if self._recovered:
            return 0
        self._recovered = True
        rows = self.store.recover_unknown()
        for row in rows:
            log.warning(
                "%s: edition %s was being sent when the previous run stopped; it may or may "
                "not have been delivered (status unknown, Message-ID %s); resend with "
                "`digest send --retry-unknown`",
                row.subscriber,
                row.edition,
                row.message_id,
            )
        return len(rows)

    async def send(
        self,
        edition: Edition,
        subscribers: Sequence[Subscriber],
        *,
        dry_run: bool = False,
        resend: bool = False,
        retry_unknown: bool = False,
        stop: asyncio.Event | None = None,
        on_result: ResultCallback | None = None,
    ) -> RunSummary:
        """Send ``edition`` to every active subscriber in ``subscribers`` who lacks it.

        A subscriber who already has a row for the edition is skipped: ``sent``, ``failed``
        (permanent), ``skipped`` and ``unknown`` rows are final unless ``resend`` (all) or
        ``retry_unknown`` (unknown ones) reopen them. A subscriber whose ranked list is empty
        is recorded ``skipped (no papers)`` unless ``send_empty``. One subscriber's failure
        never stops the others; the papers come from :meth:`papers_for`.

        Args:
            edition: the edition to send.
            subscribers: candidates (inactive ones are skipped).
            dry_run: rank and render but send and record nothing; ``sent`` counts what would go.
            resend: send again even to subscribers who have the edition.
            retry_unknown: resend rows left ``unknown`` by a crash.
            stop: when set, no new message is started; in-flight ones finish.
            on_result: called with ``(email, outcome)`` after each subscriber.

        Returns:
            The run's counts.

        Raises:
            SourceError: every source failed (nothing was sent or recorded).
            DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
        """
        summary = RunSummary()
        notify = on_result or (lambda _email, _outcome: None)
        started = time.monotonic()
        owed: list[Subscriber] = []
        for sub in subscribers:
            if not sub.active:
                continue
            row = self.store.get(sub.email, edition.key)
            if row is not None and row.status not in ("owed",):
                reopen = resend or (retry_unknown and row.status == "unknown")
                if row.status == "sending":
                    reopen = reopen and not dry_run
                if not reopen:
                    if row.status == "unknown":
                        summary.unknown += 1
                    summary.skipped += 1
                    notify(sub.email, "skipped")
                    continue
                if not dry_run:
                    self.store.reopen(sub.email, edition.key)
            owed.append(sub)
        if not owed:
            return summary

        groups: dict[tuple[str, ...] | None, PapersResult] = {}
        for sub in owed:
            key = sub.sources
            if key not in groups:
                groups[key] = await self.papers_for(edition, sources=key)
        for key, result in groups.items():
            for line in result.failed:
                summary.errors.append(f"source {line}")
            if not result.papers and not may_be_empty(edition):
                # No papers on a weekday: the list is not out yet, or a source is broken.
                # Record nothing (no "no papers" skip, no send_empty note): try again later.
                waiting = [s for s in owed if s.sources == key]
                summary.deferred += len(waiting)
                summary.errors.append(
                    f"edition {edition.key}: {', '.join(key or self.settings.source_specs)} "
                    f"listed no papers for a weekday; {len(waiting)} subscribers wait, "
                    "nothing recorded; try again later"
                )
                owed = [s for s in owed if s.sources != key]

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        def no_papers(sub: Subscriber) -> None:
            if not dry_run:
                self.store.mark_skipped(sub.email, edition.key, SKIP_NO_PAPERS)
            summary.skipped += 1
            notify(sub.email, "skipped")

        def could_not_build(sub: Subscriber, error: str) -> None:
            log.error("%s: could not build edition %s: %s", sub.email, edition.key, error)
            summary.failed += 1
            summary.errors.append(f"{sub.email}: {error}")
            notify(sub.email, "failed")

        def outgoing(sub: Subscriber, message_id: str, data: bytes) -> OutgoingMessage | None:
            if dry_run:
                summary.sent += 1
                notify(sub.email, "sent")
                return None
            return OutgoingMessage(
                subscriber=sub.email,
                edition=edition.key,
                message_id=message_id,
                envelope_from=self.envelope_sender,
                recipients=(sub.email,),
                data=data,
            )

        async def made_here() -> AsyncIterator[OutgoingMessage]:
            for sub in owed:
                if stopped():
                    return
                try:
                    # On a thread, one message at a time: the event loop stays free to answer
                    # the pool's relay replies (each waits for the loop, and a connection
                    # needs several per message), and lxml releases the GIL while it parses
                    # and serializes for premailer.
                    made = await asyncio.to_thread(
                        make_message,
                        self.settings,
                        lambda: self.renderer,
                        edition,
                        groups[sub.sources].papers,
                        sub,
                        self.now(),
                    )
                except DigestError as e:
                    could_not_build(sub, str(e))
                    continue
                if made is None:
                    no_papers(sub)
                    continue
                msg = outgoing(sub, *made)
                if msg is not None:
                    yield msg
                    await asyncio.sleep(0)

        async def made_in_processes(workers: int) -> AsyncIterator[OutgoingMessage]:
            made = make_in_processes(
                owed,
                settings=self.settings,
                edition=edition,
                papers={key: result.papers for key, result in groups.items()},
                # The default clock is read in the worker at each build; an injected one
                # once per send (workers cannot call it).
                date=None if self.now is utc_now else self.now(),
                workers=workers,
                ahead=TASKS_IN_FLIGHT_PER_WORKER * workers + pool_size(self.settings),
                stopped=stopped,
            )
            try:
                async for sub, result in made:
                    if result.kind == "empty":
                        no_papers(sub)
                    elif result.kind == "error":
                        could_not_build(sub, result.error)
                    else:
                        msg = outgoing(sub, result.message_id, result.data)
                        if msg is not None:
                            yield msg
            finally:
                await made.aclose()  # stops the workers now, not when garbage-collected

        workers = self.settings.effective_render_workers
        if workers > 0 and len(owed) >= self.render_min_batch:
            log.debug("edition %s: rendering in %d processes", edition.key, workers)
            messages = made_in_processes(workers)
        else:
            messages = made_here()

        if dry_run:
            async for _ in messages:
                pass
            return summary

        def relay(msg: OutgoingMessage, outcome: str, _detail: str) -> None:
            notify(msg.subscriber, outcome)

        sent = await send_all(
            messages, store=self.store, settings=self.settings, stop=stop, on_result=relay
        )
        summary.sent += sent.sent
        summary.failed += sent.failed
        summary.deferred += sent.deferred
        summary.skipped += sent.skipped
        summary.errors.extend(sent.errors)
        log.debug(
            "edition %s: sent %d, skipped %d, failed %d, deferred %d in %.1f s",
            edition.key,
            summary.sent,
            summary.skipped,
            summary.failed,
            summary.deferred,
            time.monotonic() - started,
        )
        return summary

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (SMTP ``MAIL FROM``): ``DIGEST_ENVELOPE_FROM`` or From's address."""
        return self.settings.envelope_from or parseaddr(self.settings.sender)[1]
