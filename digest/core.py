"""The library facade: :class:`Digest` ties sources, ranking, rendering, delivery and state.

The CLI and the daemon are thin layers over it: each command is one or two calls here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from types import TracebackType

from digest.bounces.verp import verp_address
from digest.clock import Clock, utc_now
from digest.delivery.engine import RetryCallback
from digest.errors import AllSourcesFailedError, ConfigError, SourceError
from digest.models import Edition, Feedback, Paper, RankedPaper, RunSummary
from digest.pipeline.send import ResultCallback, SendPipeline
from digest.pipeline.workers import RENDER_PROCESSES_MIN_BATCH, build_for, render_ranked
from digest.ranking import RankContext, build_context, rank
from digest.ranking.embeddings import Embedder, VectorCache, build_embedder
from digest.ranking.liked import fetch_missing
from digest.render import RenderedEmail, Renderer
from digest.schedule import WEEKEND
from digest.settings import Settings
from digest.sources import Source, build_source
from digest.sources.merge import merge_papers
from digest.state import StateBackend, open_state
from digest.subscribers import Subscriber, SubscriberList, load_subscribers
from digest.tokens import TokenSigner

log = logging.getLogger(__name__)

PREVIEW_FORMATS = ("html", "text", "eml")
PAPERS_LOCK_POLL_S = 0.2
"""While another sender fetches a (source, day), check its stored list this often, seconds."""
PAPERS_LOCK_WAIT_S = 120.0
"""Wait at most this long for another sender's fetch, seconds, then fetch anyway."""


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
    days: list[DayPapers] = field(default_factory=list)


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
class Preview:
    """One locally rendered edition (see :meth:`Digest.render_preview`).

    Attributes:
        data: UTF-8 bytes of the requested format.
        shown: papers the email holds (after ranking and ``max_papers``).
        total: papers the edition has (before selection).
    """

    data: bytes
    shown: int
    total: int


def open_store(settings: Settings, *, now: Clock = utc_now) -> StateBackend:
    """Open the state backend of ``settings`` (``DIGEST_STATE_URL``, else ``DIGEST_STATE_PATH``).

    Raises:
        ConfigError: the URL is neither ``sqlite:///`` nor ``postgresql://``.
        StateError: the store cannot be opened or has a newer schema.
    """
    return open_state(
        settings.effective_state_url, now=now, lease_seconds=settings.state_lease_seconds
    )


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
        store: the state backend to use (the caller closes it); default: the one
            ``settings.effective_state_url`` names, opened here and closed by :meth:`close`.
        now: the clock (aware UTC datetimes); injected by tests.

    Attributes:
        render_min_batch: fewest owed subscribers for which :meth:`send` makes the messages
            in ``settings.effective_render_workers`` worker processes (see
            :mod:`digest.pipeline.workers`); default :data:`RENDER_PROCESSES_MIN_BATCH`.

    Raises:
        StateError: the state file cannot be opened or has a newer schema.
    """

    render_min_batch: int = RENDER_PROCESSES_MIN_BATCH

    def __init__(
        self, settings: Settings, *, store: StateBackend | None = None, now: Clock = utc_now
    ) -> None:
        self.settings = settings
        self.now = now
        self._owns_store = store is None
        self.store: StateBackend = store if store is not None else open_store(settings, now=now)
        self._renderer: Renderer | None = None
        self._sources: dict[str, Source] = {}
        self._recovered = False
        self._verp_signer: TokenSigner | None = None
        self._embedder: Embedder | None = None
        self._embedder_built = False
        self._vectors: VectorCache | None = None
        self._missing_likes_warned: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the state store if this instance opened it, and the vector cache."""
        if self._vectors is not None:
            self._vectors.close()
        if self._owns_store:
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
            self._renderer = Renderer(
                self.settings.templates_dir,
                site_url=self.settings.site_url,
                thumbnails=self.settings.thumbnails,
            )
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
                stored = self.store.load_papers(day, spec)
                if stored is not None:
                    return stored_copy(spec, day, stored)
                if self.store.try_lock_papers(day, spec):
                    break
                if time.monotonic() > deadline:
                    log.warning("%s %s: another sender is still fetching; fetching too", spec, day)
                    return await fetch(spec, day)
                await asyncio.sleep(PAPERS_LOCK_POLL_S)
            try:
                stored = self.store.load_papers(day, spec)  # stored while we took the lock?
                return (
                    stored_copy(spec, day, stored) if stored is not None else await fetch(spec, day)
                )
            finally:
                self.store.unlock_papers(day, spec)

        async def fetch(spec: str, day: date) -> list[Paper] | None:
            try:
                papers = await self._source(spec).fetch(day)
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
                self.store.save_papers(day, spec, papers)
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

    # -- rendering -------------------------------------------------------------------------
    def render(
        self, edition: Edition, papers: Sequence[Paper], subscriber: Subscriber | None
    ) -> tuple[list[RankedPaper], RenderedEmail]:
        """Rank ``papers`` for ``subscriber`` (``None``: the unpersonalized edition) and render.

        Raises:
            ConfigError: a template is broken.
        """
        sub = subscriber or Subscriber.default()
        context = self._rank_context(papers, [sub], edition=edition, fetched=())
        ranked = rank(papers, sub, context)
        return ranked, self._render_ranked(edition, ranked, len(papers), subscriber)

    # -- ranking context -------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder | None:
        """The embedding model of ``DIGEST_EMBEDDINGS`` (``None``: off), built on first use.

        Raises:
            ConfigError: an unknown model spec.
        """
        if not self._embedder_built:
            self._embedder = build_embedder(self.settings.embeddings)
            self._embedder_built = True
        return self._embedder

    @property
    def vector_cache(self) -> VectorCache:
        """The persistent vector cache (``settings.vector_cache_path``), opened on first use."""
        if self._vectors is None:
            self._vectors = VectorCache(self.settings.vector_cache_path)
        return self._vectors

    async def rank_context(
        self, papers: Sequence[Paper], subscribers: Sequence[Subscriber], *, edition: Edition
    ) -> RankContext:
        """What ranking ``subscribers`` over ``papers`` needs beyond them, for one send.

        Gathers from the state store each subscriber's 👍/👎 and which of ``papers`` they
        already got (other editions), finds liked/disliked papers in the stored papers,
        fetches the missing ones once from the arXiv API when ``DIGEST_ARXIV_API_URL`` is set
        (and stores them), and embeds what the vector cache lacks (on a thread).
        A liked id found nowhere is a warning, not an error.

        Raises:
            ConfigError: ``DIGEST_EMBEDDINGS`` names an unknown model.
        """
        feedback = self.store.feedback()
        in_edition = {p.arxiv_id for p in papers}
        wanted = self._liked_ids(subscribers, feedback) - in_edition
        stored = self.store.find_papers(wanted) if wanted else {}
        fetched: list[Paper] = []
        missing = sorted(wanted - set(stored))
        if missing and self.settings.arxiv_api_url:
            fetched = await fetch_missing(missing, self.settings)
            for paper in fetched:
                self.store.save_paper(paper)
        return await asyncio.to_thread(
            self._rank_context,
            papers,
            subscribers,
            edition=edition,
            fetched=fetched,
            feedback=feedback,
            stored=stored,
        )

    def _liked_ids(
        self, subscribers: Sequence[Subscriber], feedback: Mapping[str, Feedback]
    ) -> set[str]:
        ids: set[str] = set()
        for sub in subscribers:
            ids.update(sub.like, sub.dislike)
            fb = feedback.get(sub.email)
            if fb is not None:
                ids.update(fb.likes, fb.dislikes)
        return ids

    def _rank_context(
        self,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        *,
        edition: Edition,
        fetched: Sequence[Paper],
        feedback: Mapping[str, Feedback] | None = None,
        stored: Mapping[str, Paper] | None = None,
    ) -> RankContext:
        if feedback is None:
            feedback = self.store.feedback()
        in_edition = {p.arxiv_id for p in papers}
        if stored is None:
            wanted = self._liked_ids(subscribers, feedback) - in_edition
            stored = self.store.find_papers(wanted) if wanted else {}
        liked = {**stored, **{p.arxiv_id: p for p in fetched}}
        for sub in subscribers:
            for pid in sub.like + sub.dislike:
                if pid not in in_edition and pid not in liked:
                    self._warn_missing(sub, pid)
        seen = self.store.sent_papers(in_edition, except_edition=edition.key)
        try:
            embedder = self.embedder
            return build_context(
                papers,
                subscribers,
                embedder=embedder,
                cache=self.vector_cache,
                liked_papers=liked,
                seen=seen,
                feedback=feedback,
            )
        except ConfigError as e:
            log.error("ranking without interests and liked papers: %s", e)
            return build_context(
                papers,
                subscribers,
                embedder=None,
                cache=self.vector_cache,
                liked_papers=liked,
                seen=seen,
                feedback=feedback,
            )

    def _warn_missing(self, sub: Subscriber, arxiv_id: str) -> None:
        key = f"{sub.email} {arxiv_id}"
        if key in self._missing_likes_warned:
            return
        self._missing_likes_warned.add(key)
        how = (
            "arXiv does not know it"
            if self.settings.arxiv_api_url
            else "set DIGEST_ARXIV_API_URL to fetch it"
        )
        log.warning(
            "%s: liked/disliked paper %s is not among the stored papers (%s); ignored",
            sub.email,
            arxiv_id,
            how,
        )

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
        return self.render_preview(edition, papers, subscriber, fmt).data

    def render_preview(
        self,
        edition: Edition,
        papers: Sequence[Paper],
        subscriber: Subscriber | None,
        fmt: str = "html",
    ) -> Preview:
        """:meth:`preview`, with how many papers the email holds (of the edition's).

        Raises:
            ConfigError: unknown format or broken template.
        """
        if fmt not in PREVIEW_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(PREVIEW_FORMATS)}, not {fmt!r}")
        ranked, rendered = self.render(edition, papers, subscriber)
        if fmt == "html":
            data = rendered.html.encode()
        elif fmt == "text":
            data = rendered.text.encode()
        else:
            data = self.build(rendered, subscriber, edition)[1]
        return Preview(data=data, shown=len(ranked), total=len(papers))

    # -- sending ---------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark rows left in ``sending`` by a crashed run as ``unknown``; returns how many.

        Call while holding :meth:`~digest.state.StateBackend.sender_lock`. On SQLite only
        the first call does anything (no other sender can be mid-delivery); on a shared state
        each call turns the rows whose claimer's lease expired (a dead process) into
        ``unknown``, so the daemon calls it at every tick.
        """
        if self._recovered and not self.store.shared:
            return 0  # one sender per file: only the previous process can have left rows
        self._recovered = True
        rows = self.store.recover_unknown()
        for row in rows:
            log.warning(
                "%s: edition %s was being sent when its sender stopped; it may or may "
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
        on_retry: RetryCallback | None = None,
    ) -> RunSummary:
        """Send ``edition`` to every active subscriber in ``subscribers`` who lacks it.

        An address on the suppression list is skipped (``skipped (<reason>)``), whatever the
        YAML or ``resend`` say. A subscriber who already has a row for the edition is
        skipped: ``sent``, ``failed`` (permanent), ``skipped`` and ``unknown`` rows are final
        unless ``resend`` (all) or ``retry_unknown`` (unknown ones) reopen them. A subscriber
        whose ranked list is empty is recorded ``skipped (no papers)`` unless ``send_empty``.
        One subscriber's failure never stops the others; the papers come from
        :meth:`papers_for`. The stages are those of :class:`~digest.pipeline.send.SendPipeline`.

        Args:
            edition: the edition to send.
            subscribers: candidates (inactive ones are skipped).
            dry_run: rank and render but send and record nothing; ``sent`` counts what would go.
            resend: send again even to subscribers who have the edition.
            retry_unknown: resend rows left ``unknown`` by a crash.
            stop: when set, no new message is started; in-flight ones finish.
            on_result: called with ``(email, outcome)`` after each subscriber.
            on_retry: called with ``(message, attempt, delay_s, reply)`` before each back-off
                wait after a transient failure (a progress display shows it).

        Returns:
            The run's counts.

        Raises:
            SourceError: every source failed (nothing was sent or recorded).
            DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
        """
        pipeline = SendPipeline(
            self,
            edition,
            dry_run=dry_run,
            resend=resend,
            retry_unknown=retry_unknown,
            stop=stop,
            on_result=on_result,
            on_retry=on_retry,
        )
        return await pipeline.run(subscribers)

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (SMTP ``MAIL FROM``): ``DIGEST_ENVELOPE_FROM`` or From's address."""
        return self.settings.envelope_from or parseaddr(self.settings.sender)[1]

    def envelope_sender_for(self, subscriber: str, edition: str) -> str:
        """The envelope sender of one delivery: with DIGEST_VERP, ``local+TOKEN@domain``
        naming ``subscriber`` and ``edition`` (:mod:`digest.bounces.verp`), else
        :attr:`envelope_sender`."""
        if not self.settings.verp:
            return self.envelope_sender
        if self._verp_signer is None:
            self._verp_signer = TokenSigner.from_settings(self.settings)
        return verp_address(self.envelope_sender, self._verp_signer, subscriber, edition)
