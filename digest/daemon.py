"""``digest run``: the daemon that sends each subscriber's edition at their own local hour.

An APScheduler 3 :class:`~apscheduler.schedulers.asyncio.AsyncIOScheduler` runs one periodic
job, the *tick* (every ``settings.tick_seconds`` seconds, first run at start, coalesced, never
two at once). The scheduler only provides the heartbeat: what is owed is computed at every
tick from the subscriber list and the state (:func:`digest.schedule.due`), so downtime,
restarts and re-added jobs can neither lose nor repeat an edition.

A tick:
    1. re-reads the subscriber list (its home reads only what changed: a ``stat`` of an
       unchanged file, the version of a list in the state); an invalid edit is logged (every
       problem with its line number, once per distinct error) and the last valid list stays
       in force;
    2. reads the bounce mailbox (when one is set), then checks the complaint rates
       (:class:`~digest.reputation.SenderGuard`: a domain group above
       DIGEST_COMPLAINT_PAUSE_PERCENT is paused, its subscribers held ``owed``);
       records editions more than ``settings.catchup_hours`` late as ``skipped`` (``late``,
       or ``no papers`` when the only answer the sources gave was an empty list, or
       ``paused``); sends the welcome emails still owed (:meth:`Digest.send_welcomes`);
    3. for each due edition, fetches its papers first (:meth:`Digest.papers_for`) and only
       then calls :meth:`Digest.send`. An empty list is final only for a weekend edition
       (:func:`digest.schedule.may_be_empty`): ``send`` then records ``skipped (no papers)``
       or sends the ``send_empty`` note. A failed fetch, or an empty weekday list, is retried
       at the next ticks until the catch-up window closes; nothing is sent meanwhile. A
       partial answer (some source failed) waits up to :data:`DEFAULT_PARTIAL_WAIT_S` for the
       missing source, then is sent with what there is;
    4. logs one line per edition sent or skipped, and touches ``settings.health_file``
       (not when no valid subscribers list was ever read, when the relay refused the
       configuration (:class:`~digest.errors.DeliveryConfigError`: the tick stops there), or
       when the tick raised). A source outage alone does not stop the touch: it is logged.

Stopping (SIGTERM/SIGINT): no new tick or message is started; the message in flight is
finished (``stop`` is passed to :meth:`Digest.send`); after :data:`DEFAULT_DRAIN_TIMEOUT_S`
seconds (or a second signal) the tick is cancelled instead, which leaves at most the messages
in flight in ``sending`` (reported ``unknown`` at the next start, never resent blindly). The
state lock (purpose ``run``) is held for the daemon's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from digest.bounces.intake import IntakeReport, run_intake
from digest.clock import Clock, utc_now
from digest.core import Digest, open_store
from digest.errors import ConfigError, DeliveryConfigError, DigestError, SourceError
from digest.metrics import Metrics
from digest.models import Edition, RunSummary
from digest.pipeline.papers import PapersResult
from digest.providers import domain_group
from digest.reputation import SenderGuard
from digest.schedule import DuePair, due, group_by_edition, lookback_edition_keys, may_be_empty
from digest.settings import Settings
from digest.state import SKIP_LATE, SKIP_NO_PAPERS, SKIP_PAUSED, address_key
from digest.subscribers import Subscriber

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT_S = 60.0
"""Seconds a stop waits for the tick in flight (one SMTP transaction) before cancelling it.
Keep below systemd's ``TimeoutStopSec`` (90 s in ``deploy/digest.service``)."""
DEFAULT_PARTIAL_WAIT_S = 3600.0
"""Seconds after the scheduled instant during which a partial paper list (some source
failed) is retried rather than sent."""
CANCEL_GRACE_S = 5.0
"""Seconds a cancelled tick gets to unwind before the daemon exits regardless."""
CANCEL_RETRY_S = 0.2
"""Seconds between repeated cancellations of a tick that does not unwind."""
BREAKER_HOLD_MIN_S = 600.0
"""After the circuit breaker stopped a send (the relay stopped answering), seconds the daemon
holds further deliveries before it tries again; each new trip in a row doubles the hold."""
BREAKER_HOLD_MAX_S = 3 * 3600.0
"""Longest hold after repeated trips of the circuit breaker, seconds."""
FETCHED = "fetched"
"""How a :class:`~digest.pipeline.papers.DayPapers` that came from its source starts."""
TICK_JOB_ID = "digest-tick"
LOCK_PURPOSE = "run"
EXIT_OK = 0


@dataclass(slots=True)
class EditionReport:
    """What one tick did for one edition.

    Attributes:
        key: the edition key (``YYYY-MM-DD`` or ``YYYY-Www``).
        sent: messages accepted by the transport.
        skipped: subscribers recorded ``skipped (no papers)`` (or otherwise skipped by send).
        late: subscribers recorded ``skipped`` because the catch-up window had closed.
        failed: permanent failures.
        deferred: transient failures, retried at a later tick.
        unknown: messages sent whose relay reply was lost (may be delivered; never resent
            by the daemon, only by ``digest send --retry-unknown``).
        waiting: subscribers not served because the papers are not available yet (fetch
            failed or empty weekday list); retried at a later tick.
        held: subscribers not tried because deliveries are held after the circuit breaker
            stopped a send (the relay stopped answering); tried again after the hold.
        paused: subscribers held back because their domain group is paused (complaint
            rate); owed until ``digest resume``.
        duration_s: wall time spent on this edition, seconds.
    """

    key: str
    sent: int = 0
    skipped: int = 0
    late: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    waiting: int = 0
    held: int = 0
    paused: int = 0
    duration_s: float = 0.0


@dataclass(slots=True)
class TickReport:
    """What one tick did.

    Attributes:
        at: the tick's instant from the injected clock (aware, UTC).
        subscribers: subscribers in force (after reloading the file).
        due: (subscriber, edition) pairs found owed, late ones included.
        editions: per-edition outcomes, in order of scheduled instant.
        config_problems: problems of an invalid subscribers file (last valid list used).
        errors: one line per error that did not stop the tick (source, delivery config).
        stopped: a stop was requested and the tick returned early.
        bounces: what reading the bounce mailbox did (``None`` when not configured).
        welcomes: the welcome emails sent, failed or still owed in this tick.
        duration_s: wall time of the tick, seconds.
    """

    at: datetime
    subscribers: int = 0
    due: int = 0
    editions: list[EditionReport] = field(default_factory=list)
    config_problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    bounces: IntakeReport | None = None
    welcomes: RunSummary = field(default_factory=RunSummary)
    duration_s: float = 0.0

    def total(self, attr: str) -> int:
        """Sum of an :class:`EditionReport` counter (``sent``, ``late``...) over editions."""
        return sum(int(getattr(e, attr)) for e in self.editions)


class Daemon:
    """The scheduler loop around a :class:`~digest.core.Digest`.

    Args:
        digest: the facade (its state file must be locked by the caller, see :func:`run`);
            its ``metrics`` get what each tick does.
        settings: ``catchup_hours``, ``tick_seconds``, ``health_file`` and the complaint
            thresholds are used.
        now: the clock deciding what is due (aware UTC); injected by tests. The scheduler's
            heartbeat itself always runs on real time.
        drain_timeout: seconds a stop waits for the tick in flight before cancelling it.
        partial_wait: seconds after the scheduled instant during which a partial paper list
            is retried rather than sent.
    """

    def __init__(
        self,
        digest: Digest,
        settings: Settings,
        *,
        now: Clock = utc_now,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
        partial_wait: float = DEFAULT_PARTIAL_WAIT_S,
    ) -> None:
        self.digest = digest
        self.settings = settings
        self.now = now
        self.drain_timeout = drain_timeout
        self.partial_wait = timedelta(seconds=partial_wait)
        self.catchup = timedelta(hours=settings.catchup_hours)
        self.stop_event = asyncio.Event()
        self._force = asyncio.Event()
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] | None = None
        self._last_problems: tuple[str, ...] | None = None
        self._empty_seen: set[str] = set()
        self._running: asyncio.Task[Any] | None = None
        self._held_until: datetime | None = None
        self._hold = timedelta(0)
        self.metrics = digest.metrics
        self.guard = SenderGuard(settings, digest.store, metrics=self.metrics, now=now)

    # -- one tick -------------------------------------------------------------------------
    async def tick(self) -> TickReport:
        """Send every edition due now, record late ones, then touch the health file.

        Ticks never overlap (a second call waits for the first). Returns early, without
        starting a new message, once :attr:`stop_event` is set.

        Returns:
            What was done.

        Raises:
            StateError: the state file failed (unexpected errors propagate too).
        """
        async with self._lock:
            started = time.monotonic()
            report = TickReport(at=self.now())
            try:
                await self._tick(report)
            finally:
                report.duration_s = time.monotonic() - started
            log.debug(
                "tick at %s: %d subscribers, %d due, %d sent, %d late, in %.1f s",
                report.at.isoformat(timespec="seconds"),
                report.subscribers,
                report.due,
                report.total("sent"),
                report.total("late"),
                report.duration_s,
            )
            return report

    async def _tick(self, report: TickReport) -> None:
        subscribers = self._reload(report)
        if subscribers is None:
            return
        report.subscribers = len(subscribers)
        self.digest.recover()  # a shared state: rows of senders that died since the last tick
        if self.settings.bounce_on_tick and (
            self.settings.bounce_maildir or self.settings.bounce_imap_url
        ):
            await self._read_bounces(report, subscribers)
        self.guard.check()  # may pause a domain group before anything is sent
        await self._send_welcomes(report, subscribers)
        # One query for every subscriber's rows over the look-back, not one per pair.
        statuses = self.digest.store.statuses(lookback_edition_keys(report.at))

        def status(email: str, edition_key: str) -> str | None:
            return statuses.get((email, edition_key))

        pairs = due(subscribers, status, report.at, self.catchup)
        report.due = len(pairs)
        waiting = [p.scheduled_at for p in pairs if not p.late]
        oldest = (report.at - min(waiting)).total_seconds() if waiting else 0.0
        self.metrics.due(len(waiting), oldest)
        self._empty_seen &= {p.edition.key for p in pairs}  # only editions still owed
        for edition, group in group_by_edition(pairs):
            if self.stop_event.is_set():
                report.stopped = True
                return
            er = EditionReport(edition.key)
            report.editions.append(er)
            started = time.monotonic()
            late = [p for p in group if p.late]
            if late:
                self._record_late(edition, late, er)
            fresh = [p for p in group if not p.late]
            if fresh and self._held(report.at):
                er.held += len(fresh)
                fresh = []
            try:
                if fresh:
                    await self._send_edition(edition, fresh, report, er)
            except DeliveryConfigError as e:
                report.errors.append(str(e))
                log.error("%s; nothing more is sent until the next tick", e)
                return  # no health touch: the daemon cannot deliver
            finally:
                er.duration_s = time.monotonic() - started
                self._log_edition(er)
        if self.stop_event.is_set():
            report.stopped = True
            return
        self._touch_health()

    async def _send_welcomes(self, report: TickReport, subscribers: list[Subscriber]) -> None:
        """Send the welcome emails still owed (a web app that stopped or crashed before it
        sent them, a transient failure): :meth:`Digest.send_welcomes`."""
        if not self.settings.welcome:
            return
        listed = {address_key(s.email): s for s in subscribers}
        try:
            report.welcomes = await self.digest.send_welcomes(listed.get)
        except DeliveryConfigError as e:
            report.errors.append(str(e))
            log.error("welcome emails not sent (they stay owed): %s", e)

    async def _read_bounces(self, report: TickReport, subscribers: list[Subscriber]) -> None:
        """Read the bounce mailbox before sending, so new suppressions apply in this tick."""
        try:
            intake = await asyncio.to_thread(
                run_intake,
                self.settings,
                self.digest.store,
                known=[s.email for s in subscribers],
                now=self.now(),
            )
        except ConfigError as e:
            report.errors.append(str(e))
            log.error("bounce mailbox: %s", e)
            return
        if intake is None:
            return
        report.bounces = intake
        for kind, count in intake.by_kind.items():
            self.metrics.bounce(kind, count)
        if intake.messages:
            log.info(
                "bounce mailbox: %d messages, %d bounces, %d complaints, %d kept aside, "
                "%d suppressed",
                intake.messages,
                intake.bounces,
                intake.complaints,
                len(intake.unrecognised),
                len(intake.suppressed),
            )

    def _reload(self, report: TickReport) -> list[Subscriber] | None:
        """The subscribers in force: the list if valid, else the last valid one (or None).

        The list's home reads only what changed: an unchanged file costs a ``stat``, an
        unchanged list in the state one one-row query (its version)."""
        path = self.digest.home.name
        try:
            subscribers = list(self.digest.load_subscribers().subscribers)
        except ConfigError as e:
            report.config_problems = list(e.problems)
            problems = tuple(e.problems)
            if problems != self._last_problems:
                self._last_problems = problems
                kept = (
                    f"keeping the last valid list ({len(self._subscribers)} subscribers)"
                    if self._subscribers is not None
                    else "no valid list yet: nothing is sent until it is fixed"
                )
                log.error("%s is invalid; %s:", path, kept)
                for problem in e.problems:
                    log.error("  %s", problem)
            return self._subscribers
        if self._last_problems is not None:
            log.info("%s is valid again", path)
            self._last_problems = None
        if self._subscribers is None:
            log.info("%d subscribers in %s", len(subscribers), path)
        elif subscribers != self._subscribers:
            log.info("reloaded %s: %d subscribers", path, len(subscribers))
        self._subscribers = subscribers
        return subscribers

    def _record_late(
        self, edition: Edition, pairs: Sequence[DuePair[Subscriber]], er: EditionReport
    ) -> None:
        detail = SKIP_NO_PAPERS if edition.key in self._empty_seen else SKIP_LATE
        suppressed = self.digest.store.suppressions()
        paused = {g for g, p in self.digest.store.pauses().items() if p.active}
        for pair in pairs:
            suppression = suppressed.get(address_key(pair.subscriber.email))
            if suppression is not None:  # the reason says more than "late"
                self.digest.store.mark_skipped(
                    pair.subscriber.email, edition.key, str(suppression.reason)
                )
                er.skipped += 1
                continue
            if domain_group(pair.subscriber.email) in paused:  # held by a pause until now
                self.digest.store.mark_skipped(pair.subscriber.email, edition.key, SKIP_PAUSED)
                er.skipped += 1
                continue
            log.debug(
                "%s: edition %s scheduled %s is more than %s late: skipped (%s)",
                pair.subscriber.email,
                edition.key,
                pair.scheduled_at.isoformat(timespec="minutes"),
                self.catchup,
                detail,
            )
            self.digest.store.mark_skipped(pair.subscriber.email, edition.key, detail)
            if detail == SKIP_LATE:
                er.late += 1
            else:
                er.skipped += 1

    async def _send_edition(
        self,
        edition: Edition,
        pairs: Sequence[DuePair[Subscriber]],
        report: TickReport,
        er: EditionReport,
    ) -> None:
        by_sources: dict[tuple[str, ...] | None, list[DuePair[Subscriber]]] = {}
        for pair in pairs:
            by_sources.setdefault(pair.subscriber.sources, []).append(pair)
        for sources, group in by_sources.items():
            if self.stop_event.is_set():
                return
            if not await self._papers_ready(edition, sources, group, report):
                er.waiting += len(group)
                continue
            try:
                summary = await self.digest.send(
                    edition, [p.subscriber for p in group], stop=self.stop_event
                )
            except SourceError as e:
                er.waiting += len(group)
                report.errors.append(str(e))
                log.warning("edition %s: %s; retrying at the next tick", edition.key, e)
                continue
            except DeliveryConfigError:
                raise
            except DigestError as e:  # e.g. a broken template: stop this edition
                report.errors.append(str(e))
                log.error("edition %s: %s", edition.key, e)
                return
            except Exception as e:  # a bug: stop this edition, not the daemon's tick
                report.errors.append(f"edition {edition.key}: unexpected error: {e!r}")
                log.exception(
                    "edition %s: unexpected error; retrying at the next tick", edition.key
                )
                return
            self._add(er, summary)
            if summary.breaker is not None:
                self._trip()
                return
            if summary.sent:
                self._hold = timedelta(0)

    def _held(self, now: datetime) -> bool:
        """Whether deliveries are held at ``now`` after a trip of the circuit breaker."""
        return self._held_until is not None and now < self._held_until

    def _trip(self) -> None:
        """The breaker stopped a send: hold deliveries, twice as long as the last hold."""
        self._hold = min(
            max(self._hold * 2, timedelta(seconds=BREAKER_HOLD_MIN_S)),
            timedelta(seconds=BREAKER_HOLD_MAX_S),
        )
        self._held_until = self.now() + self._hold
        log.error(
            "the relay stopped answering: deliveries held until %s (%d min); unsent "
            "subscribers stay owed",
            self._held_until.isoformat(timespec="minutes"),
            self._hold.total_seconds() // 60,
        )

    async def _papers_ready(
        self,
        edition: Edition,
        sources: tuple[str, ...] | None,
        group: Sequence[DuePair[Subscriber]],
        report: TickReport,
    ) -> bool:
        """Whether ``edition`` can be sent now: its papers are fetched (and stored) and usable.

        An empty weekday list is never stored (:meth:`Digest.papers_for`), so a later tick
        asks the sources again; the stored papers are then what :meth:`Digest.send` reads.
        """
        where = ",".join(sources) if sources else "default sources"
        try:
            result = await self.digest.papers_for(edition, sources=sources)
        except SourceError as e:
            report.errors.append(str(e))
            log.warning(
                "edition %s: no source answered (%s); retrying at the next tick until the "
                "catch-up window closes",
                edition.key,
                e,
            )
            return False
        self._report_papers(result)
        if not result.papers:
            if result.complete and may_be_empty(edition):
                return True  # weekend: send records "no papers" or sends the send_empty note
            if result.complete:
                self._empty_seen.add(edition.key)
            log.info(
                "edition %s: %s listed no papers yet%s; retrying at the next tick until the "
                "catch-up window closes",
                edition.key,
                where,
                "" if result.complete else f" ({'; '.join(result.failed)})",
            )
            return False
        if not result.complete:
            first = min(p.scheduled_at for p in group)
            if self.now() - first < self.partial_wait:
                log.info(
                    "edition %s: %d papers but %s; retrying the missing source at the next tick",
                    edition.key,
                    len(result.papers),
                    "; ".join(result.failed),
                )
                return False
            log.warning(
                "edition %s: sending without the missing source(s): %s",
                edition.key,
                "; ".join(result.failed),
            )
        return True

    def _report_papers(self, result: PapersResult) -> None:
        """The metrics of a collected edition: its papers, and the sources that answered."""
        now = self.now()
        for day in result.days:
            if day.count is not None and day.how.startswith(FETCHED):
                self.metrics.source_fetched(day.source, now)
        self.metrics.edition_papers(len(result.papers))

    @staticmethod
    def _add(er: EditionReport, summary: RunSummary) -> None:
        er.sent += summary.sent
        er.skipped += summary.skipped
        er.failed += summary.failed
        er.deferred += summary.deferred
        er.unknown += summary.unknown
        er.paused += summary.paused

    @staticmethod
    def _log_edition(er: EditionReport) -> None:
        parts = [f"sent {er.sent}", f"skipped {er.skipped} (no papers)"]
        if er.late:
            parts.append(f"skipped {er.late} (late)")
        parts.append(f"failed {er.failed}")
        if er.deferred:
            parts.append(f"deferred {er.deferred} (retried next tick)")
        if er.unknown:
            parts.append(f"unknown {er.unknown} (not resent; digest send --retry-unknown)")
        if er.waiting:
            parts.append(f"waiting {er.waiting} (papers not available yet)")
        if er.held:
            parts.append(f"held {er.held} (the relay stopped answering)")
        if er.paused:
            parts.append(f"paused {er.paused} (owed until `digest resume`)")
        busy = er.sent or er.skipped or er.late or er.failed or er.unknown or er.held or er.paused
        level = logging.INFO if busy else logging.DEBUG
        log.log(level, "edition %s: %s in %.1f s", er.key, ", ".join(parts), er.duration_s)

    def _touch_health(self) -> None:
        path: Path | None = self.settings.health_file
        if path is None:
            return
        try:
            path.touch()
        except OSError as e:
            log.warning("cannot touch health file %s: %s", path, e)

    # -- the loop -------------------------------------------------------------------------
    async def _job(self) -> None:
        """The scheduler's job: one tick; an unexpected error is logged, the next tick retries."""
        if self.stop_event.is_set():
            return
        self._running = asyncio.current_task()
        try:
            await self.tick()
        except asyncio.CancelledError:
            # Only the drain cancels this task (the job's own, created by the scheduler);
            # end it quietly instead of letting APScheduler log a failed job.
            log.debug("tick cancelled")
        except Exception:
            log.exception("tick failed; retrying in %.0f s", self.settings.tick_seconds)
        finally:
            self._running = None

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick at start and every ``settings.tick_seconds`` seconds until ``stop`` is set.

        Then: no new tick or message starts; the tick in flight gets up to ``drain_timeout``
        seconds to finish its messages (:meth:`force_stop` cuts that short), else is
        cancelled; the scheduler is shut down.

        Args:
            stop: set it (e.g. from a signal handler) to stop the daemon.
        """
        self.digest.recover()
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self._job,
            IntervalTrigger(seconds=self.settings.tick_seconds, timezone=UTC),
            id=TICK_JOB_ID,
            name="digest tick",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        log.info(
            "digest run: tick every %g s, catch-up window %g h, state %s",
            self.settings.tick_seconds,
            self.settings.catchup_hours,
            self.digest.store.url,
        )
        try:
            await stop.wait()
        finally:
            self.stop_event.set()
            scheduler.pause()
            await self._drain()
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # let the scheduler's shutdown callback run
        log.info("digest run: stopped")

    def force_stop(self) -> None:
        """Stop now: cancel the tick in flight instead of waiting for it (a second signal)."""
        self.stop_event.set()
        self._force.set()

    async def _drain(self) -> None:
        task = self._running
        if task is None or task.done():
            return
        log.info("stopping: finishing the message in flight (up to %.0f s)", self.drain_timeout)
        force = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait(
                {task, force}, timeout=self.drain_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            force.cancel()
        if task.done():
            return
        log.warning("stopping: abandoning the tick in flight (messages in flight stay 'sending')")
        # Cancel repeatedly: cleanup code in the tick (closing an SMTP connection to a stalled
        # relay) may itself wait, and gets cancelled too, for at most CANCEL_GRACE_S seconds.
        deadline = time.monotonic() + CANCEL_GRACE_S
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_RETRY_S)
        if not task.done():
            log.error("stopping: the tick in flight did not unwind in %.0f s", CANCEL_GRACE_S)


def run(settings: Settings) -> int:
    """The ``digest run`` entry: lock the state file, tick until SIGTERM/SIGINT, exit.

    Installs SIGTERM and SIGINT handlers (a second signal abandons the message in flight).
    Serves the web app (DIGEST_HTTP_PORT) and the metrics alone (DIGEST_METRICS_PORT) when
    set; one :class:`~digest.metrics.Metrics` registry for the daemon and the app.

    Args:
        settings: validated settings.

    Returns:
        The exit code, 0 on a clean stop.

    Raises:
        StateLockedError: another ``digest send``/``digest run`` holds the state file.
        StateError: the state file cannot be opened.
    """
    metrics = Metrics()
    with (
        open_store(settings) as store,
        store.sender_lock(purpose=LOCK_PURPOSE),
        Digest(settings, store=store, metrics=metrics) as digest,
    ):
        metrics.watch_state(store)
        return asyncio.run(_serve(Daemon(digest, settings), metrics))


async def _serve(daemon: Daemon, metrics: Metrics) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("received %s again: abandoning the message in flight", sig.name)
            daemon.force_stop()
            return
        log.info("received %s: stopping", sig.name)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    servers: list[asyncio.Task[None]] = []
    settings = daemon.settings
    if settings.http_port or settings.metrics_port:
        from digest.web import serve_metrics_until, serve_until

        if settings.http_port:
            servers.append(asyncio.create_task(serve_until(settings, stop, metrics=metrics)))
        if settings.metrics_port:
            servers.append(asyncio.create_task(serve_metrics_until(settings, metrics, stop)))
    try:
        await daemon.run_forever(stop)
    finally:
        if servers:
            stop.set()
            await asyncio.gather(*servers)
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return EXIT_OK
