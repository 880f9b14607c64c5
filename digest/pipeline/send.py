"""The send pipeline: one edition to a list of subscribers, as named stages.

Modelled on the update pipeline of lemon24/reader (``_update``): :meth:`Digest.send
<digest.core.Digest.send>` wires one :class:`SendPipeline` from its collaborators
(:class:`SendDeps`) and calls :meth:`SendPipeline.run`; each stage is one method, so a change
to one step (suppression, isolation, the state backend, a faster renderer) lands in one place::

    select_owed   who lacks the edition (:func:`plan_owed` decides, the stage records:
        │         suppressed ones skipped, reopened rows reset)
    papers        the papers of each source group (deferring groups with none on a weekday)
        │
    compose       rank → render → build each owed subscriber's message, lazily, on a thread
        │         or in worker processes (:mod:`digest.pipeline.workers`)
    deliver       the connection pool (:func:`~digest.delivery.engine.send_all`): claim →
        │         transport → mark
    record        outcomes of every step into the state store and the run's summary

The pipeline never imports the facade (:mod:`digest.core`): what it uses is passed in.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Protocol

from digest.clock import Clock, utc_now
from digest.delivery import OutgoingMessage, pool_size
from digest.delivery.engine import RetryCallback, send_all
from digest.errors import DigestError, SourceError
from digest.metrics import NO_METRICS, Recorder
from digest.models import Edition, Paper, RunSummary
from digest.pipeline.papers import PapersResult
from digest.pipeline.workers import (
    MESSAGES_PER_TASK,
    RENDER_PROCESSES_MIN_BATCH,
    TASKS_IN_FLIGHT_PER_WORKER,
    SourceKey,
    make_in_processes,
    make_message,
)
from digest.providers import domain_group
from digest.ranking import RankContext
from digest.render import Renderer
from digest.render.views import plural
from digest.schedule import may_be_empty
from digest.settings import Settings
from digest.state import CLAIMABLE, PAUSED_ERROR, SKIP_NO_PAPERS, StateBackend, address_key
from digest.subscribers import Subscriber

log = logging.getLogger(__name__)

SHARE_CHUNK = 64
"""On a shared state, a sender takes owed subscribers in chunks of this many, each re-read
just before it is made (another sender may have sent them meanwhile)."""

ResultCallback = Callable[[str, str], None]
"""``on_result(email, outcome)``: outcome is ``sent``, ``failed``, ``deferred``, ``skipped``,
``paused`` (held back: the recipient's domain group is paused)."""


class PapersFor(Protocol):
    """``await papers(edition, sources=specs)``: the edition's merged papers
    (:meth:`~digest.pipeline.papers.PaperCollector.collect`); raises ``SourceError`` when
    every source failed."""

    async def __call__(
        self, edition: Edition, *, sources: Sequence[str] | None = None
    ) -> PapersResult: ...


class ContextFor(Protocol):
    """``await rank_context(papers, subscribers, edition=...)``: the send's ranking context
    (:meth:`~digest.pipeline.context.RankContextBuilder.build`)."""

    async def __call__(
        self, papers: Sequence[Paper], subscribers: Sequence[Subscriber], *, edition: Edition
    ) -> RankContext: ...


@dataclass(frozen=True, slots=True)
class SendDeps:
    """The collaborators of a send, passed in: the pipeline opens nothing itself.

    Attributes:
        settings: the validated settings.
        store: the state store, the single source of truth of what was sent.
        papers: the edition's papers by source group (:class:`PapersFor`).
        rank_context: the ranking context of the owed subscribers (:class:`ContextFor`).
        renderer: the template renderer, built on first call (a broken template fails per
            message, not at start).
        envelope: ``(subscriber, edition) -> envelope sender`` (plain, or VERP):
            :class:`~digest.delivery.envelope.EnvelopeRule`.
        now: the clock (aware UTC).
        render_min_batch: fewest owed subscribers rendered in worker processes.
        metrics: what the send path counts (relay replies, durations, SMTP-time bounces);
            default nothing (a process that serves no metrics).
    """

    settings: Settings
    store: StateBackend
    papers: PapersFor
    rank_context: ContextFor
    renderer: Callable[[], Renderer]
    envelope: Callable[[str, str], str]
    now: Clock = utc_now
    render_min_batch: int = RENDER_PROCESSES_MIN_BATCH
    metrics: Recorder = NO_METRICS


@dataclass(slots=True)
class OwedPlan:
    """What :func:`plan_owed` decided for each candidate, in the candidates' order.

    Attributes:
        owed: subscribers to make the edition for.
        suppressed: ``(email, reason)`` of addresses on the suppression list, skipped.
        record_suppressed: of ``suppressed``, those whose row is absent or claimable: the stage
            records them ``skipped`` with the reason (a final row is left as it is).
        paused: ``(email, group)`` of subscribers whose domain group is paused: held back,
            their row stays (or becomes) ``owed``.
        record_paused: of ``paused``, those without a row: the stage records them ``owed``
            with the pause as ``last_error`` (``paused: …``).
        final: emails whose row is final (``sent``, ``failed``, ``skipped``, ``unknown``, or
            ``sending`` in another live sender) and not reopened: skipped.
        unknown: how many of ``final`` are ``unknown``.
        reopen: emails whose final row goes back to ``owed`` (``--resend``,
            ``--retry-unknown``); not in a dry run.
        keep_message_id: of ``reopen``, rows that were ``unknown`` or ``sending``: the relay
            may have the first copy, so the resend carries the same Message-ID.
    """

    owed: list[Subscriber] = field(default_factory=list)
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    record_suppressed: list[tuple[str, str]] = field(default_factory=list)
    paused: list[tuple[str, str]] = field(default_factory=list)
    record_paused: list[tuple[str, str]] = field(default_factory=list)
    final: list[str] = field(default_factory=list)
    unknown: int = 0
    reopen: list[str] = field(default_factory=list)
    keep_message_id: list[str] = field(default_factory=list)


def plan_owed(
    subscribers: Sequence[Subscriber],
    statuses: Mapping[str, str],
    suppressions: Mapping[str, str],
    *,
    resend: bool = False,
    retry_unknown: bool = False,
    dry_run: bool = False,
    shared: bool = False,
    paused: Collection[str] = frozenset(),
) -> OwedPlan:
    """Who is owed the edition, and what becomes of the others: a pure decision.

    Inactive subscribers are left out. An address on the suppression list is skipped with
    its reason, whatever the YAML (even ``active: true``) or ``resend`` say. A row already
    ``sent``, ``failed``, ``skipped`` or ``unknown`` is final unless ``resend`` (all) or
    ``retry_unknown`` (``unknown`` ones) reopen it; a ``sending`` row (a crash on SQLite,
    recovered at start; another live sender on a shared state) is reopened only by those
    flags, never in a dry run nor on a shared state. A subscriber whose domain group
    (:func:`~digest.providers.domain_group`) is paused is held back: owed, neither sent nor
    reopened.

    Args:
        subscribers: the candidates, in order.
        statuses: the edition's row status by subscriber email (absent: no row).
        suppressions: suppression reason by address key (:func:`~digest.state.address_key`).
        resend: reopen every final row.
        retry_unknown: reopen ``unknown`` rows.
        dry_run: nothing will be written: nothing is reopened or recorded.
        shared: the state is shared by several senders (PostgreSQL).
        paused: the domain groups paused now (``gmail``...).
    """
    plan = OwedPlan()
    for sub in subscribers:
        if not sub.active:
            continue
        status = statuses.get(sub.email)
        reason = suppressions.get(address_key(sub.email))
        if reason is not None:
            plan.suppressed.append((sub.email, reason))
            if not dry_run and (status is None or status in CLAIMABLE):
                plan.record_suppressed.append((sub.email, reason))
            continue
        group = str(domain_group(sub.email)) if paused else None
        if status is not None and status not in CLAIMABLE:
            reopen = resend or (retry_unknown and status == "unknown")
            if status == "sending":
                reopen = reopen and not dry_run and not shared
            if not reopen:
                plan.final.append(sub.email)
                plan.unknown += status == "unknown"
                continue
            if group in paused:
                plan.paused.append((sub.email, str(group)))  # not reopened while paused
                continue
            if not dry_run:
                plan.reopen.append(sub.email)
            if status in ("unknown", "sending"):
                plan.keep_message_id.append(sub.email)
        elif group in paused:
            plan.paused.append((sub.email, str(group)))
            if not dry_run and status is None:
                plan.record_paused.append((sub.email, str(group)))
            continue
        plan.owed.append(sub)
    return plan


def paused_error(group: str) -> str:
    """The ``last_error`` of an ``owed`` row held back by the pause of ``group``."""
    return f"{PAUSED_ERROR}: sending to {group} is paused (complaint rate); `digest resume {group}`"


def _ignore(_email: str, _outcome: str) -> None:
    return None


class SendPipeline:
    """One send of one edition: the stages of :meth:`run`, each a method.

    Not reusable: one instance per send. The pipeline works with what ``deps`` holds
    (settings, state store, clock, renderer, papers, ranking context, envelope rule) and
    never opens anything itself.

    Args:
        deps: the collaborators (the store is the single source of truth).
        edition: the edition to send.
        dry_run: rank and render but send and record nothing; ``sent`` counts what would go.
        resend: send again even to subscribers who have the edition.
        retry_unknown: resend rows left ``unknown`` by a crash.
        stop: when set, no new message is started; in-flight ones finish.
        on_result: called with ``(email, outcome)`` after each subscriber.
        on_retry: called before each back-off wait of the connection pool (see
            :data:`~digest.delivery.engine.RetryCallback`).
        sources: source specs that replace every subscriber's own ``sources:`` and
            ``DIGEST_SOURCES`` for this send (``send --source``); ``None``: each its own.

    Attributes:
        summary: the run's counts, filled in by the stages.
        groups: the papers of each source group (by ``Subscriber.sources``), set by
            :meth:`papers`.
        message_ids: by subscriber email, the Message-ID of a reopened ``unknown`` row, reused
            for its resend (set by :meth:`select_owed`).
    """

    def __init__(
        self,
        deps: SendDeps,
        edition: Edition,
        *,
        dry_run: bool = False,
        resend: bool = False,
        retry_unknown: bool = False,
        stop: asyncio.Event | None = None,
        on_result: ResultCallback | None = None,
        on_retry: RetryCallback | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.deps = deps
        self.sources = list(sources) if sources else None
        self.on_retry = on_retry
        self.settings = deps.settings
        self.store = deps.store
        self.edition = edition
        self.dry_run = dry_run
        self.resend = resend
        self.retry_unknown = retry_unknown
        self.stop = stop
        self.notify: ResultCallback = on_result or _ignore
        self.summary = RunSummary()
        self.groups: dict[SourceKey, PapersResult] = {}
        self.message_ids: dict[str, str] = {}
        self.context: RankContext | None = None

    async def run(self, subscribers: Sequence[Subscriber]) -> RunSummary:
        """Send the edition to every subscriber in ``subscribers`` who is owed it.

        Returns:
            The run's counts.

        Raises:
            SourceError: every source failed (nothing was sent or recorded).
            DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
        """
        started = time.monotonic()
        owed = self.select_owed(subscribers)
        if not owed:
            return self.summary
        owed = await self.papers(owed)
        self.context = await self.deps.rank_context(
            [p for result in self.groups.values() for p in result.papers],
            owed,
            edition=self.edition,
        )
        messages = self.compose(owed)
        if self.dry_run:
            async for _ in messages:
                pass
            return self.summary
        await self.deliver(messages)
        log.debug(
            "edition %s: sent %d, skipped %d, failed %d, deferred %d in %.1f s",
            self.edition.key,
            self.summary.sent,
            self.summary.skipped,
            self.summary.failed,
            self.summary.deferred,
            time.monotonic() - started,
        )
        return self.summary

    # -- select owed -----------------------------------------------------------------------------
    def select_owed(self, subscribers: Sequence[Subscriber]) -> list[Subscriber]:
        """The active subscribers who lack the edition, in order; the others are skipped.

        Reads the edition's rows, the suppression list and the pauses (one query each), lets
        :func:`plan_owed` decide, then records: a suppressed address ``skipped`` with the
        reason as detail (``skipped (bounced)``), a subscriber of a paused domain group
        ``owed`` with ``paused: …`` as its last error (once: a row it has is left as it is),
        a reopened row back to ``owed`` (a reopened ``unknown`` row keeps its Message-ID:
        :attr:`message_ids`). Nothing in a dry run.
        """
        key = self.edition.key
        active = [sub for sub in subscribers if sub.active]
        current = self.store.statuses([key], [sub.email for sub in active])  # one query
        plan = plan_owed(
            active,
            {email: status for (email, _), status in current.items()},
            {a: str(s.reason) for a, s in self.store.suppressions().items()},
            resend=self.resend,
            retry_unknown=self.retry_unknown,
            dry_run=self.dry_run,
            shared=self.store.shared,
            paused={g for g, p in self.store.pauses().items() if p.active},
        )
        for email, reason in plan.record_suppressed:
            self.store.mark_skipped(email, key, reason)
        for email, group in plan.record_paused:
            self.store.mark_deferred(email, key, paused_error(group), attempts=0)
        for email, group in plan.paused:
            log.debug("%s: sending to %s is paused: stays owed", email, group)
            self.summary.paused += 1
            self.notify(email, "paused")
        for email, reason in plan.suppressed:
            log.debug("%s: suppressed (%s): skipped", email, reason)
        for email in plan.keep_message_id:
            # The relay may have the first copy: the resend carries the same Message-ID, so
            # mail systems and clients see one message, not two.
            row = self.store.get(email, key)
            if row is not None and row.message_id:
                self.message_ids[email] = row.message_id
        for email in plan.reopen:
            self.store.reopen(email, key)
        self.summary.unknown += plan.unknown
        for email in [e for e, _ in plan.suppressed] + plan.final:
            self.summary.skipped += 1
            self.notify(email, "skipped")
        return plan.owed

    # -- papers ----------------------------------------------------------------------------------
    async def papers(self, owed: list[Subscriber]) -> list[Subscriber]:
        """Collect the papers of each source group of ``owed`` into :attr:`groups`.

        A group is the subscribers with the same ``sources:`` (``None``: ``DIGEST_SOURCES``);
        with :attr:`sources` (``send --source``) every subscriber is in that one group. A
        group whose every source failed holds back only its own subscribers: they are
        recorded ``owed`` with the reason (not in a dry run), counted ``deferred``, and the
        next run or tick tries again; the other groups go on.

        Returns:
            ``owed`` without the subscribers held back: those of a group whose sources all
            failed, and those of a group that listed no papers on a weekday (the list is not
            out yet, or a source is broken: nothing is recorded for them).

        Raises:
            SourceError: every group's sources failed (nothing was sent or recorded).
        """
        failures: dict[SourceKey, SourceError] = {}
        for sub in owed:
            key = sub.sources
            if key in self.groups or key in failures:
                continue
            if self.sources is not None and self.groups:  # one override: fetched once
                self.groups[key] = next(iter(self.groups.values()))
                continue
            try:
                self.groups[key] = await self.deps.papers(
                    self.edition, sources=self.sources if self.sources is not None else key
                )
            except SourceError as e:
                if self.sources is not None:
                    raise
                failures[key] = e
        if failures and not self.groups:
            raise next(iter(failures.values()))
        for key, error in failures.items():
            waiting = [s for s in owed if s.sources == key]
            self.summary.deferred += len(waiting)
            self.summary.errors.append(
                f"edition {self.edition.key}: {plural(len(waiting), 'subscriber')} with "
                f"sources {', '.join(key or self.settings.source_specs)} "
                f"{'stays' if len(waiting) == 1 else 'stay'} owed: {error}"
            )
            log.warning(
                "edition %s: %s owed (their sources failed): %s",
                self.edition.key,
                plural(len(waiting), "subscriber") + (" stays" if len(waiting) == 1 else " stay"),
                error,
            )
            for sub in waiting:
                if not self.dry_run:
                    self.store.mark_deferred(
                        sub.email, self.edition.key, f"sources failed: {error}", attempts=0
                    )
                self.notify(sub.email, "deferred")
            owed = [s for s in owed if s.sources != key]
        reported: set[int] = set()
        for key, result in self.groups.items():
            if id(result) in reported:  # the --source override serves every group
                continue
            reported.add(id(result))
            for line in result.failed:
                self.summary.errors.append(f"source {line}")
            if not result.papers and not may_be_empty(self.edition):
                # Record nothing (no "no papers" skip, no send_empty note): try again later.
                held = [k for k, r in self.groups.items() if r is result]
                waiting = [s for s in owed if s.sources in held]
                self.summary.deferred += len(waiting)
                self.summary.errors.append(
                    f"edition {self.edition.key}: "
                    f"{', '.join(self.sources or key or self.settings.source_specs)} "
                    f"listed no papers for a weekday; {plural(len(waiting), 'subscriber')} "
                    f"{'waits' if len(waiting) == 1 else 'wait'}, "
                    "nothing recorded; try again later"
                )
                owed = [s for s in owed if s.sources not in held]
        return owed

    # -- compose (rank, render, build) -----------------------------------------------------------
    def compose(self, owed: list[Subscriber]) -> AsyncIterator[OutgoingMessage]:
        """The messages of ``owed``, made lazily in order (a dry run yields none).

        In ``settings.effective_render_workers`` worker processes when there are at least
        ``deps.render_min_batch`` subscribers, else on a thread of this process.
        """
        workers = self.settings.effective_render_workers
        todo = self.share(owed)
        if workers > 0 and len(owed) >= self.deps.render_min_batch:
            log.debug("edition %s: rendering in %d processes", self.edition.key, workers)
            return self.compose_in_processes(todo, workers)
        return self.compose_here(todo)

    def share(self, owed: list[Subscriber]) -> Iterable[Subscriber]:
        """``owed`` in the order this sender works through it.

        One sender per state (SQLite), or a dry run: ``owed`` itself. A shared state
        (several senders on one edition): chunks of :data:`SHARE_CHUNK` in an order of this
        process's own, each chunk re-read with one query just before its subscribers are
        made, skipping those another sender took meanwhile (counted ``skipped``). Senders
        thus spread over the edition and rarely make a message another one sends; the claim
        still decides who sends it.
        """
        if self.dry_run or not self.store.shared:
            return owed
        return self._shared_chunks(owed)

    def _shared_chunks(self, owed: list[Subscriber]) -> Iterator[Subscriber]:
        key = self.edition.key
        chunks = [owed[i : i + SHARE_CHUNK] for i in range(0, len(owed), SHARE_CHUNK)]
        random.shuffle(chunks)
        for chunk in chunks:
            current = self.store.statuses([key], [sub.email for sub in chunk])
            for sub in chunk:
                status = current.get((sub.email, key))
                if status is None or status in CLAIMABLE:
                    yield sub
                else:
                    self.summary.skipped += 1
                    self.notify(sub.email, "skipped")

    def stopped(self) -> bool:
        """True once the caller's stop event is set: no new message is started."""
        return self.stop is not None and self.stop.is_set()

    async def compose_here(self, owed: Iterable[Subscriber]) -> AsyncIterator[OutgoingMessage]:
        """Make the messages on a thread, one at a time (the event loop stays free)."""
        deps = self.deps
        for sub in owed:
            if self.stopped():
                return
            try:
                # On a thread, one message at a time: the event loop stays free to answer
                # the pool's relay replies (each waits for the loop, and a connection
                # needs several per message), and lxml releases the GIL while it parses
                # and serializes for premailer.
                made = await asyncio.to_thread(
                    make_message,
                    self.settings,
                    deps.renderer,
                    self.edition,
                    self.groups[sub.sources].papers,
                    sub,
                    deps.now(),
                    self.message_ids.get(sub.email),
                    self.context,
                )
            except DigestError as e:
                self.record_not_built(sub, str(e))
                continue
            except Exception as e:  # a bug, or data no check foresaw: this subscriber only
                log.exception("%s: making edition %s failed", sub.email, self.edition.key)
                self.record_failed(sub, f"{type(e).__name__}: {e}")
                continue
            if made is None:
                self.record_no_papers(sub)
                continue
            msg = self.outgoing(sub, *made)
            if msg is not None:
                yield msg
                await asyncio.sleep(0)

    async def compose_in_processes(
        self, owed: Iterable[Subscriber], workers: int
    ) -> AsyncIterator[OutgoingMessage]:
        """Make the messages in ``workers`` processes (:func:`make_in_processes`)."""
        now = self.deps.now
        made = make_in_processes(
            owed,
            settings=self.settings,
            edition=self.edition,
            papers={key: result.papers for key, result in self.groups.items()},
            # The default clock is read in the worker at each build; an injected one
            # once per send (workers cannot call it).
            date=None if now is utc_now else now(),
            workers=workers,
            ahead=TASKS_IN_FLIGHT_PER_WORKER * workers * MESSAGES_PER_TASK
            + pool_size(self.settings),
            stopped=self.stopped,
            message_ids=self.message_ids,
            context=self.context,
        )
        try:
            async for sub, result in made:
                if result.kind == "empty":
                    self.record_no_papers(sub)
                elif result.kind == "error":
                    self.record_not_built(sub, result.error)
                elif result.kind == "bug":
                    log.error(
                        "%s: making edition %s failed in a render worker:\n%s",
                        sub.email,
                        self.edition.key,
                        result.error,
                    )
                    self.record_failed(sub, _last_line(result.error))
                else:
                    msg = self.outgoing(sub, result.message_id, result.data, result.papers)
                    if msg is not None:
                        yield msg
        finally:
            await made.aclose()  # stops the workers now, not when garbage-collected

    def outgoing(
        self, sub: Subscriber, message_id: str, data: bytes, papers: tuple[str, ...] = ()
    ) -> OutgoingMessage | None:
        """The envelope of ``sub``'s message; ``None`` in a dry run (counted ``sent``)."""
        if self.dry_run:
            self.summary.sent += 1
            self.notify(sub.email, "sent")
            return None
        return OutgoingMessage(
            subscriber=sub.email,
            edition=self.edition.key,
            message_id=message_id,
            envelope_from=self.deps.envelope(sub.email, self.edition.key),
            recipients=(sub.email,),
            data=data,
            papers=papers,
            crlf=True,  # build_message's line ends
        )

    # -- deliver ---------------------------------------------------------------------------------
    async def deliver(self, messages: AsyncIterator[OutgoingMessage]) -> None:
        """Hand ``messages`` to the connection pool, which claims and marks each in the store.

        Raises:
            DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
        """

        def relay(msg: OutgoingMessage, outcome: str, _detail: str) -> None:
            self.notify(msg.subscriber, outcome)

        sent = await send_all(
            messages,
            store=self.store,
            settings=self.settings,
            stop=self.stop,
            on_result=relay,
            on_retry=self.on_retry,
            now=self.deps.now,
            metrics=self.deps.metrics,
        )
        self.record_delivered(sent)

    # -- record ----------------------------------------------------------------------------------
    def record_no_papers(self, sub: Subscriber) -> None:
        """Nothing ranked for ``sub`` (and not ``send_empty``): ``skipped (no papers)``."""
        if not self.dry_run:
            self.store.mark_skipped(sub.email, self.edition.key, SKIP_NO_PAPERS)
        self.summary.skipped += 1
        self.notify(sub.email, "skipped")

    def record_not_built(self, sub: Subscriber, error: str) -> None:
        """``sub``'s message could not be made (a broken template): counted ``failed``."""
        log.error("%s: could not build edition %s: %s", sub.email, self.edition.key, error)
        self.summary.failed += 1
        self.summary.errors.append(f"{sub.email}: {error}")
        self.notify(sub.email, "failed")

    def record_failed(self, sub: Subscriber, error: str) -> None:
        """Making ``sub``'s message raised an unexpected exception: ``failed``, with the reason.

        Recorded in the state store (not in a dry run), so ``digest history`` shows it and the
        run, the other subscribers and the daemon's next ticks go on; ``digest send --resend
        --subscriber EMAIL`` sends it once the cause is fixed.
        """
        reason = f"could not make the message: {error}"
        if not self.dry_run:
            self.store.mark_failed(sub.email, self.edition.key, reason, attempts=0)
        self.summary.failed += 1
        self.summary.errors.append(f"{sub.email}: {reason}")
        self.notify(sub.email, "failed")

    def record_delivered(self, sent: RunSummary) -> None:
        """Add the pool's counts (the store was written message by message) to the summary."""
        self.summary.sent += sent.sent
        self.summary.failed += sent.failed
        self.summary.bounced += sent.bounced
        self.summary.deferred += sent.deferred
        self.summary.skipped += sent.skipped
        self.summary.unknown += sent.unknown
        self.summary.errors.extend(sent.errors)
        self.summary.breaker = self.summary.breaker or sent.breaker


def _last_line(text: str) -> str:
    """The last non-empty line of a traceback text: ``ExcType: message``."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unexpected error"
