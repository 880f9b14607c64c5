"""The send engine: stream messages through a pool of connections, recording every step.

Shape of a run::

    messages (async iterable, rendered lazily upstream)
        │  producer task
        ▼
    bounded asyncio.Queue (QUEUE_SLOTS_PER_WORKER × pool size)
        │
        ▼
    N workers, each owning one transport connection, for each message:
        store.claim()        absent/owed → sending, committed BEFORE the transport sees it
        transport.deliver()  retried on transient failures (backoff + jitter, same run)
        store.mark_sent() / mark_failed() / mark_deferred()

State writes run on one dedicated thread (``digest-state``, a
:class:`~digest.state.group.GroupCommitter`), awaited by the worker, so the event loop keeps
rendering and talking to the relay while the state waits for the disk (``sqlite3`` releases
the GIL). Group commit: the writes the workers queue while one transaction commits go
together into the next one (one fsync for all of them, at most
:data:`~digest.state.group.GROUP_COMMIT_MAX_OPS`), and each worker is released only once the
transaction holding its write has committed: a worker does not hand a message to the
transport before its claim has committed, nor report a mark before it has. With a pool of N
connections a message costs about 2/N fsyncs instead of 2.

Guarantees:

* A message is handed to the transport only after its row is committed ``sending``; a crash
  afterwards leaves ``sending`` (→ ``unknown`` on the next start, not resent): no duplicate.
* At most N (the pool size) rows are ``sending`` at any instant: a worker claims one message,
  finishes it, then takes the next.
* Memory does not grow with the number of subscribers: the producer blocks on the full queue,
  so at most ``N + queue size`` rendered messages exist at once.
* One subscriber's failure never stops the others (permanent → ``failed``; transient after
  ``smtp_max_attempts`` → ``owed`` for the next run).
* A message whose data was sent in full but whose final reply was lost or stalled (the relay
  may have it) is ``unknown``: never retried in the run nor resent by the next one.
* A relay that stops answering does not eat the list: after ``smtp_breaker_after`` messages in
  a row ended ``unknown`` or timed out, the run stops (circuit breaker); the rest stay owed.
* A configuration error (auth refused, certificate, relay unreachable at start) stops the run:
  the first connection is opened before any row is claimed, so a bad configuration fails once
  with nothing claimed; later, every claimed-but-unsent row is handed back to ``owed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from digest.bounces.policy import BouncePolicy, record_smtp_bounce
from digest.clock import Clock, utc_now
from digest.delivery import (
    DeliveryResult,
    OutgoingMessage,
    RelayUnreachableError,
    Transport,
    TransportFactory,
    open_transport,
    pool_size,
)
from digest.errors import (
    DeliveryConfigError,
    DeliveryError,
    PermanentDeliveryError,
    StateError,
    TransientDeliveryError,
    UnknownDeliveryError,
)
from digest.metrics import NO_METRICS, Recorder
from digest.models import RunSummary
from digest.settings import Settings
from digest.state import StateBackend
from digest.state.group import GROUP_COMMIT_MAX_OPS, GroupCommitter

log = logging.getLogger(__name__)

QUEUE_SLOTS_PER_WORKER = 2
"""Queue capacity per worker: enough to keep workers busy while the producer renders ahead."""

PRODUCER_PAUSE_S = 0.001
"""When the queue already holds a message for every worker, the producer waits this long,
seconds, before rendering the next one. Rendering is CPU work on the event loop: started the
instant a worker frees a slot, it would hold up that worker's SMTP replies (a transaction
needs several round trips, each waiting for the loop). A pause lets replies that are due come
first; a producer that is the bottleneck never finds the queue that full, so never pauses."""

MAX_BACKOFF_S = 60.0
"""Upper bound of one retry delay, seconds (before jitter)."""

OUTCOME_SENT = "sent"
OUTCOME_FAILED = "failed"
OUTCOME_DEFERRED = "deferred"
OUTCOME_SKIPPED = "skipped"
OUTCOME_UNKNOWN = "unknown"

ResultCallback = Callable[[OutgoingMessage, str, str], None]
"""``on_result(message, outcome, detail)``; outcome is ``sent``, ``failed``, ``deferred``,
``skipped`` (already handled: claim refused) or ``unknown``; detail is the reply or error."""

RetryCallback = Callable[[OutgoingMessage | None, int, float, str], None]
"""``on_retry(message, attempt, delay, reply)``: attempt ``attempt`` (1-based) of ``message``
failed transiently with ``reply``; the next one starts in ``delay`` seconds (back-off).
``message`` is ``None`` when the whole pool backs off because the relay refuses connections
(:class:`ConnectGate`; ``attempt`` is then the number of refusals in a row)."""

Sleep = Callable[[float], Awaitable[object]]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def backoff_delay(attempt: int, base: float, rng: random.Random) -> float:
    """The delay before retry number ``attempt`` (1 = after the first failure), seconds.

    Exponential with "equal jitter": ``d = min(base·2^(attempt-1), MAX_BACKOFF_S)``, then a
    uniform draw in ``[d/2, d]``, so concurrent workers retrying the same relay spread out.

    Args:
        attempt: how many attempts have failed so far (≥ 1).
        base: ``smtp_retry_base``, seconds (0 disables waiting).
        rng: the random source (inject a seeded one in tests).
    """
    delay = min(base * 2.0 ** (attempt - 1), MAX_BACKOFF_S)
    return delay / 2 + rng.uniform(0, delay / 2)


class RateLimiter:
    """Spaces transport attempts across the whole pool to at most ``rate`` per second.

    A slot reservation: each :meth:`acquire` takes the next free instant ``1/rate`` s after the
    previous one and sleeps until it; no burst beyond one message.

    Args:
        rate: messages per second (``smtp_rate``); ``None`` or ≤ 0 means unlimited.
        sleep: the sleep coroutine (injectable).
        clock: monotonic time in seconds (injectable).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._sleep = sleep
        self._clock = clock
        self._next = float("-inf")

    async def acquire(self) -> None:
        """Wait for the next slot (returns at once when unlimited)."""
        if not self.interval:
            return
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self._sleep(slot - now)


class ConnectGate:
    """Pool-wide back-off while the relay refuses connections (421 greeting, set-up dropped).

    While every connection succeeds, workers connect freely and at once. After a connection
    attempt fails with a transient error, the pool backs off as one: attempts are made one at
    a time, each at least ``60 / per_minute`` seconds (and the exponential backoff of the
    failures so far) after the previous one, so a relay shedding load gets at most
    ``per_minute`` attempts a minute from the whole pool, not ``max_attempts`` per message.
    The first success ends the back-off. After ``max_attempts`` failures in a row the relay is
    declared unavailable: :attr:`outage` is set and ``on_outage`` is called once, which stops
    the run (claimed messages go back to ``owed``).

    Args:
        factory: connects one transport.
        settings: ``smtp_connect_attempts_per_minute``, ``smtp_max_attempts``,
            ``smtp_retry_base`` (s).
        pause: sleeps a number of seconds, returning early if the run halts.
        halting: whether the run is stopping (no new attempt is made then).
        rng: random source for the jitter.
        on_outage: called once with the line that reports the outage.
        on_wait: called with ``(failures, delay_s, last reply)`` before each back-off wait.

    Attributes:
        attempts: connection attempts made (successful or not).
        failures: failed attempts since the last success.
        outage: the report line once the relay was declared unavailable, else ``None``.
    """

    def __init__(
        self,
        factory: TransportFactory,
        *,
        settings: Settings,
        pause: Callable[[float], Awaitable[None]],
        halting: Callable[[], bool],
        rng: random.Random,
        on_outage: Callable[[str], None],
        on_wait: Callable[[int, float, str], None] | None = None,
    ) -> None:
        self._factory = factory
        self._on_wait = on_wait
        self._interval = 60.0 / settings.smtp_connect_attempts_per_minute
        self._max_failures = settings.smtp_max_attempts
        self._base = settings.smtp_retry_base
        self._pause = pause
        self._halting = halting
        self._rng = rng
        self._on_outage = on_outage
        self._lock = asyncio.Lock()
        self._last_error: DeliveryError | None = None
        self.attempts = 0
        self.failures = 0
        self.outage: str | None = None

    async def connect(self) -> Transport:
        """A new connected transport, respecting the back-off.

        Raises:
            TransientDeliveryError: this attempt failed, or the pool is backing off and the
                run halted meanwhile (the last failure is raised again, no attempt made).
            RelayUnreachableError, DeliveryConfigError: as the factory raises them.
        """
        if self.failures == 0:
            return await self._attempt()
        async with self._lock:  # backing off: one attempt at a time, spaced
            if self.failures == 0:  # another worker got through while this one waited
                return await self._attempt()
            delay = max(self._interval, backoff_delay(self.failures, self._base, self._rng))
            if not self._halting():
                if self._on_wait is not None and self._last_error is not None:
                    self._on_wait(self.failures, delay, self._last_error.reply)
                await self._pause(delay)
            if self._halting() or self.outage is not None:
                assert self._last_error is not None
                raise self._last_error
            return await self._attempt()

    async def _attempt(self) -> Transport:
        self.attempts += 1
        try:
            transport = await self._factory()
        except (TransientDeliveryError, RelayUnreachableError) as e:
            self._failed(e)
            raise
        if self.failures:
            log.info("SMTP relay accepts connections again after %d refusal(s)", self.failures)
        self.failures = 0
        return transport

    def _failed(self, error: DeliveryError) -> None:
        self._last_error = error
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "%s; backing off the whole pool: at most %d connection attempts a minute",
                error,
                round(60.0 / self._interval),
            )
        if self.failures >= self._max_failures and self.outage is None:
            self.outage = (
                f"relay unavailable: {self.failures} connection attempts in a row failed "
                f"(last: {error.reply}); stopped, unsent subscribers stay owed for the next run"
            )
            log.error("%s", self.outage)
            self._on_outage(self.outage)


@dataclass
class _Run:
    """Shared state of one :func:`send_all` run."""

    store: StateBackend
    settings: Settings
    factory: TransportFactory
    on_result: ResultCallback | None
    on_retry: RetryCallback | None
    sleep: Sleep
    rng: random.Random
    limiter: RateLimiter
    writer: GroupCommitter
    policy: BouncePolicy = field(default_factory=BouncePolicy)
    now: Clock = utc_now
    metrics: Recorder = NO_METRICS
    user_stop: asyncio.Event | None = None
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    summary: RunSummary = field(default_factory=RunSummary)
    fatal: BaseException | None = None
    gate: ConnectGate | None = None
    silent: int = 0
    """Messages in a row that ended ``unknown`` or timed out (any reply from the relay resets
    it); at ``settings.smtp_breaker_after`` the run stops (:meth:`relay_silent`)."""

    async def connect(self) -> Transport:
        """A new transport through the pool's :class:`ConnectGate`."""
        assert self.gate is not None
        return await self.gate.connect()

    def relay_down(self, line: str) -> None:
        """The gate declared the relay unavailable: report it once and stop the run."""
        self.summary.errors.append(line)
        self.halt.set()

    def relay_answered(self) -> None:
        """The relay replied to a message (accepted or refused it): the breaker's count resets."""
        self.silent = 0

    def relay_silent(self, reply: str) -> None:
        """A message ended ``unknown`` or an attempt timed out (the relay did not answer).

        The circuit breaker: after ``settings.smtp_breaker_after`` of these in a row (0 =
        never) the run stops like an outage: nothing new is claimed, messages in flight finish,
        unsent subscribers stay ``owed`` for the next run, and the report line says why.
        """
        self.silent += 1
        limit = self.settings.smtp_breaker_after
        if not limit or self.silent < limit or self.halt.is_set():
            return
        line = (
            f"stopped: {self.silent} messages in a row got no reply from the relay (unknown or "
            f"timed out; last: {reply}); unsent subscribers stay owed for the next run, and "
            f"unknown ones are resent only with --retry-unknown "
            f"(DIGEST_SMTP_BREAKER_AFTER={limit})"
        )
        log.error("%s", line)
        self.summary.errors.append(line)
        self.summary.breaker = line
        self.halt.set()

    async def write(
        self,
        msg: OutgoingMessage,
        fn: Callable[_P, _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run one state-store call about ``msg``'s row on the state thread; wait for its commit.

        The call may share its transaction with other workers' writes (group commit, see
        :mod:`digest.state.group`); it returns only once that transaction has committed.
        The call always runs to completion: if the waiting task is cancelled meanwhile, the
        cancellation is re-raised only after the write has finished (or failed), so a caller
        never loses track of a committed change.
        """
        result, cancelled = await self.write_settled(msg, fn, *args, **kwargs)
        if cancelled:
            raise asyncio.CancelledError
        return result

    async def write_settled(
        self,
        msg: OutgoingMessage,
        fn: Callable[_P, _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> tuple[_T, bool]:
        """Like :meth:`write`, returning ``(result, cancelled)`` instead of raising on cancel."""
        future = asyncio.wrap_future(
            self.writer.submit_keyed((msg.subscriber, msg.edition), fn, *args, **kwargs)
        )
        cancelled = False
        while True:
            try:
                return await asyncio.shield(future), cancelled
            except asyncio.CancelledError:
                if future.done():  # cancelled from outside while already done: keep result
                    return future.result(), True
                cancelled = True

    @property
    def halting(self) -> bool:
        """True once no new message may be claimed (caller's stop, config error, bug)."""
        if self.user_stop is not None and self.user_stop.is_set():
            self.halt.set()
        return self.halt.is_set()

    def stop_all(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
        self.halt.set()

    def notify_retry(
        self, msg: OutgoingMessage | None, attempt: int, delay: float, reply: str
    ) -> None:
        if self.on_retry is None:
            return
        try:
            self.on_retry(msg, attempt, delay, reply)
        except Exception:  # a reporting bug must not stop deliveries
            log.exception("on_retry callback failed for %s", msg.subscriber if msg else "pool")

    def notify(self, msg: OutgoingMessage, outcome: str, detail: str) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(msg, outcome, detail)
        except Exception:  # a reporting bug must not stop deliveries
            log.exception("on_result callback failed for %s", msg.subscriber)


_DONE = object()


async def send_all(
    messages: AsyncIterable[OutgoingMessage],
    *,
    store: StateBackend,
    settings: Settings,
    transport_factory: TransportFactory | None = None,
    stop: asyncio.Event | None = None,
    on_result: ResultCallback | None = None,
    on_retry: RetryCallback | None = None,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    concurrency: int | None = None,
    now: Clock = utc_now,
    metrics: Recorder = NO_METRICS,
) -> RunSummary:
    """Deliver ``messages`` through a pool of connections, recording each in ``store``.

    For each message: ``claim`` (skipped if the row is not absent/owed) → ``deliver`` →
    ``mark_sent`` / ``mark_failed`` (5yz, with the server reply) / transient: retry up to
    ``settings.smtp_max_attempts`` times in this run with exponential backoff + jitter (base
    ``settings.smtp_retry_base`` s), then ``mark_deferred`` (stays owed for the next run).
    A 5yz about the recipient is also a hard bounce (:mod:`digest.bounces.policy`): with the
    default policy the address goes on the suppression list and counts as ``bounced``.

    Args:
        messages: the messages, produced lazily (rendering overlaps network waits).
        store: the state backend (hold its :meth:`~digest.state.StateBackend.sender_lock`).
        settings: ``smtp_concurrency``, ``smtp_rate`` (messages/s, whole pool),
            ``smtp_max_attempts``, ``smtp_retry_base`` (s) and the transport settings.
        transport_factory: creates connected transports; default :func:`open_transport`.
        stop: when set, no new message is claimed; in-flight ones finish (a message waiting
            to retry is deferred at once); then the run returns.
        on_result: ``(message, outcome, detail)`` after each message (see
            :data:`ResultCallback`).
        on_retry: ``(message, attempt, delay, reply)`` before each back-off wait (see
            :data:`RetryCallback`; ``message`` is ``None`` for the pool's back-off while the
            relay refuses connections), e.g. for a progress display.
        sleep: the sleep coroutine for backoff and rate limiting (inject in tests).
        rng: random source for the jitter; default a fresh :class:`random.Random`.
        concurrency: pool size; default :func:`~digest.delivery.pool_size` (1 for Maildir).
        now: the clock for bounce records (aware UTC).
        metrics: counts each relay reply (by class and recipient domain group), times each
            attempt, counts SMTP-time hard bounces; default: nothing counted.

    Returns:
        Counts: ``sent``, ``failed``, ``deferred``, ``skipped`` (claim refused), ``unknown``,
        and ``errors`` lines ``email: reply``.

    Raises:
        DeliveryConfigError: the transport cannot work (auth refused, certificate, no
            STARTTLS, relay unreachable); raised after every claimed, unsent row was put back
            to ``owed``. Rows already sent in this run stay sent.
        StateError: the state file could not be written; in-flight rows are left as they
            are (``sending`` ones become ``unknown`` at the next start).
    """
    workers = max(1, concurrency if concurrency is not None else pool_size(settings))
    writer = GroupCommitter(store, max_ops=GROUP_COMMIT_MAX_OPS, name="digest-state")
    run = _Run(
        writer=writer,
        store=store,
        settings=settings,
        factory=transport_factory or open_transport(settings),
        on_result=on_result,
        on_retry=on_retry,
        sleep=sleep,
        rng=rng or random.Random(),
        limiter=RateLimiter(settings.smtp_rate, sleep=sleep),
        user_stop=stop,
        policy=BouncePolicy.from_settings(settings),
        now=now,
        metrics=metrics,
    )
    run.gate = ConnectGate(
        run.factory,
        settings=settings,
        pause=functools.partial(_pause, run),
        halting=lambda: run.halting,
        rng=run.rng,
        on_outage=run.relay_down,
        on_wait=lambda failures, delay, reply: run.notify_retry(None, failures, delay, reply),
    )
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=QUEUE_SLOTS_PER_WORKER * workers)
    producer_error: list[BaseException] = []

    async def produce() -> None:
        iterator = aiter(messages)
        try:
            while True:
                if queue.qsize() >= workers:
                    await asyncio.sleep(PRODUCER_PAUSE_S)
                try:
                    msg = await anext(iterator)
                except StopAsyncIteration:
                    break
                if run.halting:
                    return
                await queue.put(msg)
        except Exception as e:  # a bug upstream: finish in-flight work, then re-raise
            producer_error.append(e)
            run.halt.set()
            return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        for _ in range(workers):
            await queue.put(_DONE)

    async def watch_stop() -> None:
        assert stop is not None
        await stop.wait()
        log.info("stop requested: finishing messages in flight")
        run.halt.set()

    async def cancel_producer_on_halt() -> None:
        await run.halt.wait()
        producer.cancel()  # it may be blocked on the full queue; unclaimed messages stay owed

    producer = asyncio.create_task(produce(), name="digest-send-producer")
    helpers = [asyncio.create_task(cancel_producer_on_halt(), name="digest-send-halt")]
    if stop is not None:
        helpers.append(asyncio.create_task(watch_stop(), name="digest-send-stop"))
    pool: list[asyncio.Task[None]] = []
    try:
        first = await _next(queue, run)
        if first is not None:
            # Connect once before claiming anything: a bad configuration fails here, once.
            transport: Transport | None = None
            try:
                transport = await run.connect()
            except TransientDeliveryError as e:
                log.warning("first connection failed (%s); workers will retry", e)
            pool = [
                asyncio.create_task(
                    _worker(run, queue, transport if i == 0 else None, first if i == 0 else None),
                    name=f"digest-send-worker-{i}",
                )
                for i in range(workers)
            ]
            await asyncio.gather(*pool)
    finally:
        run.halt.set()
        for task in (producer, *helpers, *pool):
            task.cancel()
        await asyncio.gather(producer, *helpers, *pool, return_exceptions=True)
        writer.shutdown(wait=True)  # every write was awaited to completion: returns at once
        stats = writer.stats
        log.debug(
            "state: %d writes in %d transactions (%d groups, largest %d, %d applied one by one)",
            stats.writes,
            stats.transactions,
            stats.groups,
            stats.largest,
            stats.fallbacks,
        )
    if run.fatal is not None:
        raise run.fatal
    if producer_error:
        raise producer_error[0]
    return run.summary


async def _next(queue: asyncio.Queue[object], run: _Run) -> OutgoingMessage | None:
    """The next message, or ``None`` when the producer is done or the run is halting."""
    halt = run.halt
    if run.halting:
        return None
    if not queue.empty():
        item = queue.get_nowait()
    else:
        getter = asyncio.ensure_future(queue.get())
        halted = asyncio.ensure_future(halt.wait())
        try:
            await asyncio.wait((getter, halted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            if not getter.done():
                getter.cancel()
        if run.halting or getter.cancelled():
            return None  # a message taken but not claimed stays owed: the next run sends it
        item = getter.result()
    if item is _DONE or run.halting:
        return None
    assert isinstance(item, OutgoingMessage)
    return item


async def _pause(run: _Run, delay: float) -> None:
    """Sleep ``delay`` seconds with ``run.sleep``, waking early if the run halts."""
    if delay <= 0:
        return
    sleeper = asyncio.ensure_future(run.sleep(delay))
    halted = asyncio.ensure_future(run.halt.wait())
    try:
        await asyncio.wait((sleeper, halted), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, halted):
            task.cancel()
        await asyncio.gather(sleeper, halted, return_exceptions=True)


async def _worker(
    run: _Run,
    queue: asyncio.Queue[object],
    transport: Transport | None,
    first: OutgoingMessage | None,
) -> None:
    """Take messages until the queue says done or the run halts; owns one connection."""
    holder: list[Transport | None] = [transport]
    store = run.store
    try:
        msg = first if first is not None else await _next(queue, run)
        claimed: bool | None = None  # msg's claim, when committed with the previous mark
        while msg is not None:
            if run.halting:
                if claimed:  # claimed with the last mark, never handed to the transport
                    _hand_back(store, msg)
                break
            sent = await _one(run, holder, msg, claimed)
            claimed = None
            if sent is None:
                msg = await _next(queue, run)
                continue
            # Accepted: record it. When the next message is already waiting, its claim goes
            # into the same transaction as this mark (one commit to wait for, not two); the
            # claim is still committed before that message reaches the transport.
            ready, nxt = _ready(queue, run)
            if nxt is None:
                await _record_sent(run, msg, sent)
                msg = await _next(queue, run) if ready else None
                continue
            claimed, cancelled = await run.write_settled(
                nxt, _mark_sent_then_claim, store, msg, sent, nxt
            )
            _sent(run, msg, sent)
            if cancelled:
                if claimed:  # stopped between claim and delivery: hand it back
                    _hand_back(store, nxt)
                raise asyncio.CancelledError
            msg = nxt
    except StateError as e:
        log.error("cannot record delivery state: %s", e)
        run.stop_all(e)
    finally:
        if holder[0] is not None:
            try:
                await holder[0].close()
            except Exception:  # Transport.close must not raise; be safe with others' transports
                log.exception("closing the transport failed")


@dataclass(frozen=True, slots=True)
class _Accepted:
    """The transport accepted a message; its ``mark_sent`` is still to be written."""

    reply: str
    code: int | None
    attempts: int


def _hand_back(store: StateBackend, msg: OutgoingMessage) -> None:
    """``msg`` was claimed but never handed to the transport (the run stopped): owed again."""
    store.mark_deferred(msg.subscriber, msg.edition, "stopped before sending", attempts=0)


def _ready(queue: asyncio.Queue[object], run: _Run) -> tuple[bool, OutgoingMessage | None]:
    """Without waiting: ``(more may come, the next message if one is queued)``."""
    if run.halting:
        return False, None
    if queue.empty():
        return True, None
    item = queue.get_nowait()
    if item is _DONE:
        return False, None
    assert isinstance(item, OutgoingMessage)
    return True, item


def _mark_sent_then_claim(
    store: StateBackend, msg: OutgoingMessage, sent: _Accepted, nxt: OutgoingMessage
) -> bool:
    """On the state thread: ``msg`` → ``sent``, then the claim of ``nxt``, one write (both
    commit together, or neither: then the run stops, as for any failed mark)."""
    with store.transaction():
        _mark_sent(store, msg, sent)
        return store.claim(nxt.subscriber, nxt.edition, nxt.message_id, nxt.papers)


def _mark_sent(store: StateBackend, msg: OutgoingMessage, sent: _Accepted) -> None:
    """On the state thread: ``msg`` → ``sent``, with the relay's reply and the attempts."""
    store.mark_sent(msg.subscriber, msg.edition, sent.reply, code=sent.code, attempts=sent.attempts)


async def _record_sent(run: _Run, msg: OutgoingMessage, sent: _Accepted) -> None:
    """Write ``msg``'s ``mark_sent`` alone, then count and report it."""
    await run.write(msg, _mark_sent, run.store, msg, sent)
    _sent(run, msg, sent)


def _sent(run: _Run, msg: OutgoingMessage, sent: _Accepted) -> None:
    """Count and report ``msg`` once its ``mark_sent`` has committed."""
    run.summary.sent += 1
    log.debug("%s: sent (%d %s)", msg.subscriber, sent.code or 0, sent.reply)
    run.notify(msg, OUTCOME_SENT, sent.reply)


async def _one(
    run: _Run,
    holder: list[Transport | None],
    msg: OutgoingMessage,
    claimed: bool | None = None,
) -> _Accepted | None:
    """Claim (unless ``claimed`` gives the claim already committed), deliver with retries,
    and record one message; an accepted one is returned for the caller to record."""
    store, summary = run.store, run.summary
    if claimed is None:
        claimed, cancelled = await run.write_settled(
            msg, store.claim, msg.subscriber, msg.edition, msg.message_id, msg.papers
        )
        if cancelled:
            if claimed:  # stopped between claim and delivery: nothing was sent, hand it back
                _hand_back(store, msg)
            raise asyncio.CancelledError
    if not claimed:
        row = store.get(msg.subscriber, msg.edition)
        status = row.status if row is not None else "?"
        summary.skipped += 1
        run.notify(msg, OUTCOME_SKIPPED, f"already {status}")
        return None
    attempt = 0
    while True:
        attempt += 1
        try:
            transport = holder[0]
            if transport is None:
                transport = holder[0] = await run.connect()
            await run.limiter.acquire()
            result = await _counted(run, transport, msg)
        except PermanentDeliveryError as e:
            await run.write(
                msg,
                store.mark_failed,
                msg.subscriber,
                msg.edition,
                e.reply,
                e.code,
                attempts=attempt,
            )
            summary.failed += 1
            run.relay_answered()
            suppressed = False
            if e.hard_bounce:
                suppressed = await run.write(
                    msg,
                    record_smtp_bounce,
                    store,
                    msg.subscriber,
                    msg.edition,
                    msg.message_id,
                    e.reply,
                    policy=run.policy,
                    now=run.now(),
                )
            if e.hard_bounce:
                run.metrics.bounce("hard")
            if suppressed:
                summary.bounced += 1
                summary.errors.append(f"{msg.subscriber}: {e.reply} (suppressed: bounced)")
                log.warning(
                    "%s: permanently refused: %s; suppressed (bounced)", msg.subscriber, e.reply
                )
            else:
                summary.errors.append(f"{msg.subscriber}: {e.reply}")
                log.warning("%s: permanently refused: %s", msg.subscriber, e.reply)
            run.notify(msg, OUTCOME_FAILED, e.reply)
            return None
        except UnknownDeliveryError as e:
            # The data went out in full and its reply was lost: the relay may have it.
            # Resending could deliver a second copy; only --retry-unknown does.
            await run.write(
                msg,
                store.mark_unknown,
                msg.subscriber,
                msg.edition,
                e.reply,
                e.code,
                attempts=attempt,
            )
            summary.unknown += 1
            summary.errors.append(f"{msg.subscriber}: unknown: {e.reply}")
            log.warning(
                "%s: %s; status unknown (Message-ID %s), not resent; "
                "resend with `digest send --retry-unknown`",
                msg.subscriber,
                e.reply,
                msg.message_id,
            )
            run.notify(msg, OUTCOME_UNKNOWN, e.reply)
            holder[0] = None
            run.relay_silent(e.reply)
            return None
        except RelayUnreachableError as e:
            # A reconnect mid-run: the relay may be restarting; retry like a transient
            # failure, but stop the whole run if it stays down for all attempts.
            if await _retry_or_defer(run, msg, e, attempt):
                continue
            run.stop_all(e)
            return None
        except DeliveryConfigError as e:
            await run.write(
                msg,
                store.mark_deferred,
                msg.subscriber,
                msg.edition,
                e.reply,
                e.code,
                attempts=attempt,
            )
            summary.deferred += 1
            summary.errors.append(f"{msg.subscriber}: not sent: {e}")
            run.notify(msg, OUTCOME_DEFERRED, str(e))
            run.stop_all(e)
            return None
        except TransientDeliveryError as e:
            if _timed_out(e):
                run.relay_silent(e.reply)
            else:
                run.relay_answered()
            if await _retry_or_defer(run, msg, e, attempt):
                continue
            return None
        except (StateError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug or an unforeseen error: outcome unknown
            log.exception("%s: unexpected error while delivering", msg.subscriber)
            await run.write(
                msg, store.mark_unknown, msg.subscriber, msg.edition, repr(e), attempts=attempt
            )
            summary.unknown += 1
            summary.errors.append(f"{msg.subscriber}: unexpected error: {e!r}")
            run.notify(msg, OUTCOME_UNKNOWN, repr(e))
            holder[0] = None
            if transport is not None:
                with contextlib.suppress(Exception):
                    await transport.close()
            run.relay_silent(repr(e))
            return None
        run.relay_answered()
        return _Accepted(result.reply, result.code, attempt)


async def _counted(run: _Run, transport: Transport, msg: OutgoingMessage) -> DeliveryResult:
    """``transport.deliver(msg)``, its duration and the relay's reply counted in ``run.metrics``
    (a refused configuration, such as AUTH, is about the relay, not the recipient: not
    counted as a reply)."""
    started = time.perf_counter()
    try:
        result = await transport.deliver(msg)
    except DeliveryError as e:
        run.metrics.send_seconds(time.perf_counter() - started)
        if not isinstance(e, DeliveryConfigError):
            run.metrics.smtp_reply(e.code, msg.subscriber)
        raise
    run.metrics.send_seconds(time.perf_counter() - started)
    run.metrics.smtp_reply(result.code, msg.subscriber)
    return result


def _timed_out(error: DeliveryError) -> bool:
    """True if ``error`` is (or was caused by) a timeout: the relay did not answer in time."""
    return isinstance(error, TimeoutError) or isinstance(error.__cause__, TimeoutError)


async def _retry_or_defer(
    run: _Run, msg: OutgoingMessage, error: DeliveryError, attempt: int
) -> bool:
    """After a transient failure: wait and return True to retry, or defer and return False."""
    settings = run.settings
    if attempt < settings.smtp_max_attempts and not run.halting:
        delay = backoff_delay(attempt, settings.smtp_retry_base, run.rng)
        log.info(
            "%s: attempt %d/%d failed (%s); retrying in %.1f s",
            msg.subscriber,
            attempt,
            settings.smtp_max_attempts,
            error.reply,
            delay,
        )
        run.notify_retry(msg, attempt, delay, error.reply)
        await _pause(run, delay)
        if not run.halting:
            return True
    await run.write(
        msg,
        run.store.mark_deferred,
        msg.subscriber,
        msg.edition,
        error.reply,
        error.code,
        attempts=attempt,
    )
    run.summary.deferred += 1
    relay_down = run.gate is not None and run.gate.outage is not None
    if not relay_down:  # a relay outage is reported once, not once per subscriber
        run.summary.errors.append(f"{msg.subscriber}: deferred: {error.reply}")
    # The caller reports it (the summary's "email: deferred: reply" line): info, not warning.
    log.log(
        logging.DEBUG if relay_down else logging.INFO,
        "%s: deferred to the next run after %d attempt(s): %s",
        msg.subscriber,
        attempt,
        error.reply,
    )
    run.notify(msg, OUTCOME_DEFERRED, error.reply)
    return False
