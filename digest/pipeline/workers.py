"""Per-subscriber message making (rank → render → inline → build), in or out of process.

Making one message costs several milliseconds of CPU (premailer dominates). In the sending
process it runs on the event loop, between the SMTP round trips of the connection pool, and
delays every reply the pool is waiting for: with a slow relay the pool then falls short of
``concurrency / reply latency`` messages per second, and on a fast one a single core bounds
the whole send. For a large send, :func:`make_in_processes` runs this work in a
:class:`~concurrent.futures.ProcessPoolExecutor` instead, and the event loop only talks SMTP
and waits for the state thread.

Both paths call the same function (:func:`make_message`: rank, render, build), so a message
made in a worker is the one the sending process would have made (its Message-ID is random
either way). Workers are started with ``spawn``, never ``fork`` (the sending process has
threads: the state writer and whatever runs the event loop). Each worker receives the
settings, the edition and the papers of every source group once (initializer); each task is
one :class:`~digest.subscribers.Subscriber` and returns a small :class:`Made`. Exceptions are
not pickled: a :class:`~digest.errors.DigestError` comes back as its message, anything else as
a traceback text (kind ``bug``) that the sending process records against that one subscriber.

Workers ignore SIGINT and SIGTERM: a Ctrl-C or a service manager's SIGTERM to the process
group is the sending process's to handle (a graceful stop), and it shuts the workers down. A
worker exits at once if the sending process dies (SIGKILL, crash): each watches its parent's
sentinel, because the executor's pipes alone would keep an orphan waiting forever (every
worker holds the write end of the task queue).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from digest.clock import utc_now
from digest.errors import DigestError
from digest.message import (
    archive_url_for,
    build_message,
    feedback_urls_for,
    make_message_id,
    preferences_url_for,
    unsubscribe_url_for,
)
from digest.models import Edition, Paper, RankedPaper
from digest.ranking import RankContext, rank
from digest.ranking.semantic import ranked_by
from digest.render import EmailContext, RenderedEmail, Renderer
from digest.settings import Settings
from digest.subscribers import Subscriber

RENDER_PROCESSES_MIN_BATCH = 200
"""Fewest owed subscribers for which a send renders in worker processes. Starting a worker
(``spawn``: a fresh interpreter importing ``digest``) costs about 0.7 s of CPU, and each
worker's template caches start cold; below this many messages the sending process renders
them itself, as fast or faster."""

START_METHOD = "spawn"
"""Multiprocessing start method of the workers (not ``fork``: the parent has threads)."""

TASKS_IN_FLIGHT_PER_WORKER = 4
"""Tasks submitted ahead per worker, on top of one message per SMTP connection: enough that a
worker never waits for the next task while the sending process is busy, few enough that
memory stays bounded (each finished task holds :data:`MESSAGES_PER_TASK` messages, ~36 KiB
each: ~2.3 MB in flight per worker). With 2, the worker sometimes waited: 30,000 subscribers
to smtp-sink took 41.9 s against 39.3 s with 4 (median of 3 interleaved pairs)."""
MESSAGES_PER_TASK = 16
"""Subscribers per worker task. One subscriber per task made the worker wait for the sending
process between tasks: its executor thread hands results over and feeds the next task only
when it gets the GIL from the busy event loop (one switch interval, 5 ms, against ~1.5 ms of
work), so the two processes took turns instead of working at once (bench_send: 128 msg/s,
both processes under half busy)."""

SourceKey = tuple[str, ...] | None
"""A subscriber's ``sources`` (``None``: the configured ones): which papers it is ranked on."""

ORPHAN_EXIT_CODE = 70
"""Exit status of a worker whose sending process died (EX_SOFTWARE)."""

Kind = Literal["message", "empty", "error", "bug"]


class Made(NamedTuple):
    """What making one subscriber's message produced (picklable, small).

    Attributes:
        email: the subscriber's address.
        kind: ``message`` (``message_id`` and ``data`` set); ``empty`` (nothing ranked and
            not ``send_empty``: record ``skipped``/``no papers``); ``error`` (a
            :class:`~digest.errors.DigestError`, its text in ``error``); ``bug`` (any other
            exception, its traceback in ``error``).
        message_id: the Message-ID (``<...@domain>``), or ``""``.
        data: the whole RFC 5322 message, or ``b""``.
        error: the error text, or ``""``.
        papers: bare arXiv ids of the papers the message carries.
    """

    email: str
    kind: Kind
    message_id: str = ""
    data: bytes = b""
    error: str = ""
    papers: tuple[str, ...] = ()


# -- the shared steps ----------------------------------------------------------------------------


def render_ranked(
    settings: Settings,
    renderer: Renderer,
    edition: Edition,
    ranked: Sequence[RankedPaper],
    total_papers: int,
    subscriber: Subscriber | None,
    *,
    web: bool = False,
    context: RankContext | None = None,
) -> RenderedEmail:
    """Render an already ranked selection for ``subscriber`` (``None``: unpersonalized;
    ``web``: for the web archive, whose footer invites to subscribe; ``context``: what ranked
    it, for the footer's "ranked by your interests and …").

    Raises:
        ConfigError: a template is broken.
    """
    ctx = EmailContext(
        edition=edition,
        papers=ranked,
        subscriber=subscriber,
        unsubscribe_url=unsubscribe_url_for(settings, subscriber.email) if subscriber else None,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        total_papers=total_papers,
        preferences_url=preferences_url_for(settings, subscriber.email) if subscriber else None,
        archive_url=archive_url_for(settings, edition.key),
        postal_address=settings.postal_address,
        feedback=(
            feedback_urls_for(settings, subscriber.email, [r.paper.arxiv_id for r in ranked])
            if subscriber
            else {}
        ),
        web=web,
        ranked_by=ranked_by(subscriber, context) if subscriber else (),
    )
    return renderer.render(ctx)


def make_message(
    settings: Settings,
    renderer: Callable[[], Renderer],
    edition: Edition,
    papers: Sequence[Paper],
    subscriber: Subscriber,
    date: datetime,
    message_id: str | None = None,
    context: RankContext | None = None,
) -> tuple[str, bytes, tuple[str, ...]] | None:
    """Rank, render, inline and build one subscriber's message: the whole per-subscriber work,
    done the same way in the sending process (on a thread) and in a worker process.

    Args:
        renderer: returns the renderer; called only when there is something to render (a
            worker builds its renderer lazily, so a broken template fails per message).
        papers: the papers ``subscriber`` is ranked on (its source group's).
        date: the Date header (aware).
        message_id: the Message-ID to use (a resend of an ``unknown`` row keeps the id the
            relay may already have); ``None``: a new one.
        context: vectors, history and feedback for ranking (see
            :func:`~digest.ranking.semantic.build_context`).

    Returns:
        ``(message_id, bytes, arxiv ids carried)``, or ``None`` when nothing ranked and not
        ``send_empty``.

    Raises:
        DigestError: a template is broken, or the message cannot be built.
    """
    ranked = rank(papers, subscriber, context)
    if not ranked and not subscriber.send_empty:
        return None
    rendered = render_ranked(
        settings, renderer(), edition, ranked, len(papers), subscriber, context=context
    )
    message_id, data = build_for(settings, rendered, subscriber, edition, date, message_id)
    return message_id, data, tuple(r.paper.arxiv_id for r in ranked)


def build_for(
    settings: Settings,
    rendered: RenderedEmail,
    subscriber: Subscriber | None,
    edition: Edition,
    date: datetime,
    message_id: str | None = None,
) -> tuple[str, bytes]:
    """Build the RFC 5322 message; returns ``(message_id, bytes)``.

    Args:
        settings: sender, headers, DKIM.
        rendered: the rendered parts.
        subscriber: the recipient, or ``None`` for a preview (``preview@localhost``).
        edition: the edition (its key goes into the Message-ID).
        date: the Date header (aware).
        message_id: the Message-ID (``<...@domain>``); ``None``: a new one
            (:func:`~digest.message.make_message_id`).
    """
    email = subscriber.email if subscriber else "preview@localhost"
    message_id = message_id or make_message_id(settings, email, edition.key)
    data = build_message(
        rendered,
        settings=settings,
        to_email=email,
        to_name=subscriber.name if subscriber else None,
        message_id=message_id,
        date=date,
    )
    return message_id, data


# -- the worker side -----------------------------------------------------------------------------


@dataclass
class _WorkerState:
    settings: Settings
    edition: Edition
    papers: Mapping[SourceKey, Sequence[Paper]]
    date: datetime | None
    context: RankContext | None = None
    renderer: Renderer | None = None


_state: _WorkerState | None = None


def _init_worker(
    settings: Settings,
    edition: Edition,
    papers: Mapping[SourceKey, Sequence[Paper]],
    date: datetime | None,
    context: RankContext | None = None,
) -> None:
    """Worker initializer: keep the send's inputs; leave stop signals to the parent."""
    global _state
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="digest-orphan", daemon=True
        ).start()
    _state = _WorkerState(
        settings=settings, edition=edition, papers=papers, date=date, context=context
    )


def _exit_with_parent(sentinel: int) -> None:
    """Worker thread: end this process as soon as the parent process has died."""
    multiprocessing.connection.wait([sentinel])
    os._exit(ORPHAN_EXIT_CODE)


def _make_many(task: list[tuple[Subscriber, str | None]]) -> list[Made]:
    """Worker task: :func:`_make` for each ``(subscriber, message_id)``, in order."""
    return [_make(sub, message_id) for sub, message_id in task]


def _make(sub: Subscriber, message_id: str | None = None) -> Made:
    """Worker task: rank, render, inline and build ``sub``'s message (``message_id``: keep it)."""
    state = _state
    assert state is not None, "render worker used before its initializer ran"

    def renderer() -> Renderer:
        if state.renderer is None:  # built lazily: a broken template fails per message
            state.renderer = Renderer.from_settings(state.settings)
        return state.renderer

    try:
        made = make_message(
            state.settings,
            renderer,
            state.edition,
            state.papers[sub.sources],
            sub,
            state.date or utc_now(),
            message_id,
            state.context,
        )
    except DigestError as e:
        return Made(sub.email, "error", error=str(e))
    except Exception:
        return Made(sub.email, "bug", error=traceback.format_exc())
    if made is None:
        return Made(sub.email, "empty")
    message_id, data, carried = made
    return Made(sub.email, "message", message_id=message_id, data=data, papers=carried)


# -- the parent side -----------------------------------------------------------------------------


async def make_in_processes(
    subscribers: Iterable[Subscriber],
    *,
    settings: Settings,
    edition: Edition,
    papers: Mapping[SourceKey, Sequence[Paper]],
    date: datetime | None,
    workers: int,
    ahead: int,
    stopped: Callable[[], bool],
    message_ids: Mapping[str, str] | None = None,
    context: RankContext | None = None,
) -> AsyncGenerator[tuple[Subscriber, Made], None]:
    """Make every subscriber's message in ``workers`` processes; yield them in order.

    At most ``ahead`` subscribers are submitted and not yet yielded at any instant (bounded
    memory); the event loop only waits for results. When the generator returns, raises or is
    closed, pending tasks are cancelled and every worker process has exited (joined) before
    control leaves it.

    Args:
        subscribers: whose messages, in this order (consumed lazily, ``ahead`` at a time).
        settings: the settings (pickled to each worker once).
        edition: the edition.
        papers: the papers of each source group, by ``Subscriber.sources``.
        date: the Date header of every message, or ``None`` for the time of each build.
        workers: how many processes (≥ 1).
        ahead: how many tasks may be in flight (≥ 1).
        stopped: checked before each submission and each yield; once True, nothing new
            starts and the generator returns.
        message_ids: Message-IDs to reuse, by subscriber email (resent ``unknown`` rows).
        context: the ranking context (pickled to each worker once).

    Yields:
        ``(subscriber, made)`` for each subscriber, until stopped.

    Raises:
        concurrent.futures.process.BrokenProcessPool: a worker died (killed, out of memory).
    """
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(START_METHOD),
        initializer=_init_worker,
        initargs=(settings, edition, dict(papers), date, context),
    )
    pending: deque[tuple[list[Subscriber], Future[list[Made]]]] = deque()
    todo = iter(subscribers)
    ids = message_ids or {}
    in_flight = 0

    def fill() -> None:
        """Submit tasks until ``ahead`` subscribers are in flight (or none are left)."""
        nonlocal in_flight
        while in_flight < max(1, ahead) and not stopped():
            chunk = list(itertools.islice(todo, MESSAGES_PER_TASK))
            if not chunk:
                return
            task = [(sub, ids.get(sub.email)) for sub in chunk]
            pending.append((chunk, executor.submit(_make_many, task)))
            in_flight += len(chunk)

    try:
        fill()
        while True:
            if not pending or stopped():
                return
            chunk, future = pending.popleft()
            results = await asyncio.wrap_future(future)
            in_flight -= len(chunk)
            fill()  # before yielding, so the workers make the next ones meanwhile
            for sub, made in zip(chunk, results, strict=True):
                if stopped():
                    return
                yield sub, made
    finally:
        for _, future in pending:
            future.cancel()
        await _shutdown(executor)


async def _shutdown(executor: ProcessPoolExecutor) -> None:
    """Shut ``executor`` down (cancel pending tasks, join workers) off the event loop.

    Runs to completion even if the caller is cancelled meanwhile (the cancellation is
    re-raised afterwards), so no worker outlives the send.
    """
    loop = asyncio.get_running_loop()
    done = loop.run_in_executor(
        None, functools.partial(executor.shutdown, wait=True, cancel_futures=True)
    )
    cancelled = False
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled = True
    done.result()
    if cancelled:
        raise asyncio.CancelledError
