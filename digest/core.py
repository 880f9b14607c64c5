"""The library facade: :class:`Digest` ties sources, ranking, rendering, delivery and state.

The CLI and the daemon are thin layers over it: each command is one or two calls here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from digest.clock import Clock, utc_now
from digest.delivery.engine import RetryCallback
from digest.delivery.envelope import EnvelopeRule
from digest.errors import ConfigError
from digest.metrics import NO_METRICS, Recorder
from digest.models import Edition, Paper, RankedPaper, RunSummary
from digest.pipeline.context import RankContextBuilder
from digest.pipeline.papers import (
    DayPapers,
    PaperCollector,
    PapersResult,
    day_has_ended,
    default_edition_day,
)
from digest.pipeline.send import ResultCallback, SendDeps, SendPipeline
from digest.pipeline.welcome import send_owed_welcomes
from digest.pipeline.workers import RENDER_PROCESSES_MIN_BATCH, build_for, render_ranked
from digest.ranking import RankContext, rank
from digest.ranking.embeddings import Embedder, VectorCache
from digest.render import RenderedEmail, Renderer
from digest.settings import Settings
from digest.state import StateBackend, open_state
from digest.subscribers import Subscriber, SubscriberList
from digest.subscribers.home import SubscriberHome, open_home

log = logging.getLogger(__name__)

PREVIEW_FORMATS = ("html", "text", "eml")


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


class Digest:
    """One configured ``digest`` instance: the wiring of settings, state, sources and templates.

    It builds the collaborators once (:class:`~digest.pipeline.papers.PaperCollector`,
    :class:`~digest.pipeline.context.RankContextBuilder`, the renderer, the envelope rule) and
    hands them to the stages that use them; each method here is a call into one of them.
    Use as a context manager (or call :meth:`close`). Not thread-safe; one per process.

    Args:
        settings: the validated settings.
        store: the state backend to use (the caller closes it); default: the one
            ``settings.effective_state_url`` names, opened here and closed by :meth:`close`.
        now: the clock (aware UTC datetimes); injected by tests.
        metrics: what sends count (:class:`~digest.metrics.Metrics` in a process that serves
            them: ``digest run``); default nothing is counted.

    Attributes:
        home: where the subscriber list lives (:mod:`digest.subscribers.home`).
        render_min_batch: fewest owed subscribers for which :meth:`send` makes the messages
            in ``settings.effective_render_workers`` worker processes (see
            :mod:`digest.pipeline.workers`); default :data:`RENDER_PROCESSES_MIN_BATCH`.
        papers: the edition papers' collector.
        ranking: the ranking context's builder.
        envelope: the envelope sender of each delivery (plain, or VERP).

    Raises:
        StateError: the state file cannot be opened or has a newer schema.
    """

    render_min_batch: int = RENDER_PROCESSES_MIN_BATCH

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateBackend | None = None,
        now: Clock = utc_now,
        metrics: Recorder = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.now = now
        self.metrics = metrics
        self._owns_store = store is None
        self.store: StateBackend = store if store is not None else open_store(settings, now=now)
        self._renderer: Renderer | None = None
        self._recovered = False
        self.home: SubscriberHome = open_home(settings, self.store)
        self.papers = PaperCollector(settings, self.store, now=now)
        self.ranking = RankContextBuilder(settings, self.store)
        self.envelope = EnvelopeRule(settings)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Let the subscriber list's pending writes finish, close the vector cache and the
        state store if this instance opened it."""
        self.home.close()
        self.ranking.close()
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
        """The subscriber list, validated, from its home (``DIGEST_SUBSCRIBERS``: the file, or
        the state's table); cached: an unchanged list is not read again. Read-only.

        Raises:
            ConfigError: every problem at once (the file's as ``file:line: field: message``).
        """
        return self.home.load()

    @property
    def renderer(self) -> Renderer:
        """The template renderer (built on first use)."""
        if self._renderer is None:
            self._renderer = Renderer.from_settings(self.settings)
        return self._renderer

    def _get_renderer(self) -> Renderer:
        return self.renderer

    async def papers_for(
        self,
        edition: Edition,
        *,
        sources: Sequence[str] | None = None,
        refetch: bool = False,
    ) -> PapersResult:
        """The papers of ``edition``, merged across ``sources``
        (:meth:`PaperCollector.collect <digest.pipeline.papers.PaperCollector.collect>`).

        Raises:
            SourceError: every source failed for every day (nothing to send yet).
        """
        return await self.papers.collect(edition, sources=sources, refetch=refetch)

    # -- ranking and rendering ---------------------------------------------------------------
    @property
    def embedder(self) -> Embedder | None:
        """The embedding model of ``DIGEST_EMBEDDINGS`` (``None``: off), built on first use.

        Raises:
            ConfigError: an unknown model spec.
        """
        return self.ranking.embedder

    @property
    def vector_cache(self) -> VectorCache:
        """The persistent vector cache (``settings.vector_cache_path``), opened on first use."""
        return self.ranking.vector_cache

    async def rank_context(
        self,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        *,
        edition: Edition,
        groups: Sequence[Sequence[Paper]] | None = None,
    ) -> RankContext:
        """What ranking ``subscribers`` over ``papers`` (``groups``: each source group's
        papers) needs beyond them, for one send
        (:meth:`RankContextBuilder.build <digest.pipeline.context.RankContextBuilder.build>`).

        Raises:
            ConfigError: ``DIGEST_EMBEDDINGS`` names an unknown model.
        """
        return await self.ranking.build(papers, subscribers, edition=edition, groups=groups)

    def render(
        self,
        edition: Edition,
        papers: Sequence[Paper],
        subscriber: Subscriber | None,
        *,
        web: bool = False,
    ) -> tuple[list[RankedPaper], RenderedEmail]:
        """Rank ``papers`` for ``subscriber`` (``None``: the unpersonalized edition) and render
        (``web``: for the web archive, whose footer invites to subscribe).

        Raises:
            ConfigError: a template is broken.
        """
        sub = subscriber or Subscriber.default()
        context = self.ranking.build_now(papers, [sub], edition=edition)
        ranked = rank(papers, sub, context)
        rendered = render_ranked(
            self.settings,
            self.renderer,
            edition,
            ranked,
            len(papers),
            subscriber,
            web=web,
            context=context,
        )
        return ranked, rendered

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
    @property
    def deps(self) -> SendDeps:
        """The collaborators a send uses (:class:`~digest.pipeline.send.SendDeps`)."""
        return SendDeps(
            settings=self.settings,
            store=self.store,
            papers=self.papers.collect,
            rank_context=self.ranking.build,
            renderer=self._get_renderer,
            envelope=self.envelope,
            now=self.now,
            render_min_batch=self.render_min_batch,
            metrics=self.metrics,
        )

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
        sources: Sequence[str] | None = None,
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
            sources: source specs for everyone, instead of each subscriber's own
                ``sources:`` and ``DIGEST_SOURCES`` (``send --source``).

        Returns:
            The run's counts. Subscribers whose own sources all failed stay owed (counted
            ``deferred``, the reason recorded); the others are sent.

        Raises:
            SourceError: every source of every subscriber failed (nothing sent or recorded).
            DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
        """
        pipeline = SendPipeline(
            self.deps,
            edition,
            dry_run=dry_run,
            resend=resend,
            retry_unknown=retry_unknown,
            stop=stop,
            on_result=on_result,
            on_retry=on_retry,
            sources=sources,
        )
        return await pipeline.run(subscribers)

    async def send_welcomes(
        self, lookup: Callable[[str], Subscriber | None], address: str | None = None
    ) -> RunSummary:
        """Send the welcome emails still owed (of ``address`` only, if given), each once:
        :func:`~digest.pipeline.welcome.send_owed_welcomes`.

        Args:
            lookup: the subscriber of an address in the list as the caller reads it, or None.
            address: only this address's welcomes (the web app, after a confirmation).

        Raises:
            DeliveryConfigError: the transport cannot work (the welcomes stay owed).
        """
        return await send_owed_welcomes(self.deps, lookup, address)

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (SMTP ``MAIL FROM``): ``DIGEST_ENVELOPE_FROM`` or From's address."""
        return self.envelope.plain

    def envelope_sender_for(self, subscriber: str, edition: str) -> str:
        """The envelope sender of one delivery (:class:`~digest.delivery.envelope.EnvelopeRule`):
        with DIGEST_VERP, ``local+TOKEN@domain`` naming ``subscriber`` and ``edition``."""
        return self.envelope(subscriber, edition)


__all__ = [
    "PREVIEW_FORMATS",
    "DayPapers",
    "Digest",
    "PapersResult",
    "Preview",
    "day_has_ended",
    "default_edition_day",
    "open_store",
]
