"""The welcome email: once per address per confirmation, exactly once across crashes.

A confirmed sign-up (or a resubscribe) records an ``owed`` delivery row whose edition key is
``welcome:ID`` (:func:`queue_welcome`, in the same place the confirmation is recorded), then
the welcome is sent as any edition is: claimed, delivered, marked, through
:func:`~digest.delivery.engine.send_all`, so a crash between the two leaves it owed and the
next attempt (the web app right away, the daemon at each tick: :func:`owed_welcomes`) sends
it, and a claim refused means someone else did. It shows in ``digest history`` and never in
the archive (its key holds a colon). ``DIGEST_WELCOME=false`` turns it off.

The message (``welcome.html.j2`` / ``welcome.txt.j2``, or DIGEST_TEMPLATES_DIR's) says what
the list is, when the first edition comes in the subscriber's time zone, links the
preferences page and the latest edition, and carries the same List-Unsubscribe headers,
footer and DKIM signature as every edition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

from digest.delivery import OutgoingMessage
from digest.delivery.engine import send_all
from digest.message import (
    archive_url_for,
    build_message,
    make_message_id,
    preferences_url_for,
    unsubscribe_mailto_for,
    unsubscribe_url_for,
)
from digest.models import Edition, RunSummary
from digest.pipeline.send import SendDeps
from digest.render.views import list_title, long_date_label
from digest.schedule import scheduled_instants
from digest.state import Delivery, DeliveryStatus, StateBackend
from digest.subscribers import Subscriber

log = logging.getLogger(__name__)

WELCOME_PREFIX = "welcome:"
"""Edition keys of welcome emails start with this (never a real edition)."""
ABSENT_GRACE = timedelta(days=2)
"""How long an owed welcome waits for its address to appear in the list a process reads (a
subscribers file is written after the confirmation commits) before it is skipped."""
NEXT_SEND_HORIZON = timedelta(days=8)
"""How far ahead the first edition is looked for (a weekly one is at most a week away)."""
WARM_UP_ADDRESS = "warm-up@example.org"
"""The placeholder address of :func:`warm_up` (nothing is sent or recorded for it)."""
QUEUED = "welcome: not sent yet"
"""The ``last_error`` of a welcome queued and not yet sent."""


def welcome_key(confirmation: str) -> str:
    """The edition key of the welcome for one confirmation (a sign-up id, a resubscribe id)."""
    return f"{WELCOME_PREFIX}{confirmation}"


def queue_welcome(store: StateBackend, address: str, confirmation: str) -> str:
    """Record that ``address`` is owed the welcome of ``confirmation``; returns its key.

    Idempotent: a welcome already sent (or being sent) for that confirmation stays as it is.
    """
    key = welcome_key(confirmation)
    if store.get(address, key) is None:
        store.mark_deferred(address, key, QUEUED, attempts=0)
    return key


def owed_welcomes(store: StateBackend, address: str | None = None) -> list[Delivery]:
    """The rows of every welcome still owed (queued, or handed back by a stop or a 4xx); of
    ``address`` only, if given."""
    return store.list(
        subscriber=address, statuses=[DeliveryStatus.OWED], edition_prefix=WELCOME_PREFIX
    )


def next_send_label(subscriber: Subscriber, now: datetime) -> str | None:
    """When the first edition comes, in the subscriber's own time zone: ``on Tuesday, Aug 21
    at 07:00 (Europe/London)``; ``None`` when nothing is scheduled within a week."""
    upcoming = scheduled_instants(subscriber, now, now + NEXT_SEND_HORIZON)
    if not upcoming:
        return None
    local = upcoming[0].astimezone(subscriber.tz)
    return f"on {local:%A, %b} {local.day} at {local:%H:%M} ({subscriber.timezone})"


def _what(subscriber: Subscriber) -> str:
    if subscriber.frequency == "weekly":
        return (
            f"every {subscriber.weekday.capitalize()}, the week's trending machine-learning "
            "papers from Hugging Face Daily Papers and arXiv, ranked for the topics you follow."
        )
    return (
        "every morning, the day's trending machine-learning papers from Hugging Face Daily "
        "Papers and arXiv, ranked for the topics you follow."
    )


def build_welcome(deps: SendDeps, subscriber: Subscriber, key: str) -> tuple[str, bytes]:
    """The welcome message of ``subscriber`` for ``key``: ``(Message-ID, bytes)``.

    Raises:
        ConfigError: a template or the settings are broken.
        HeaderError: the header block would not be the one built.
    """
    settings, now = deps.settings, deps.now()
    brand = list_title(settings.list_name)
    latest = deps.store.sent_editions(limit=1)
    edition = Edition.parse(latest[0][0]) if latest else None
    email = subscriber.email
    rendered = deps.renderer().render_message(
        "welcome",
        {
            "subject": f"Welcome to {brand}",
            "preheader": f"What {brand} is, and when your first edition comes.",
            "brand": brand,
            "name": subscriber.name,
            "email": email,
            "what": _what(subscriber),
            "next_send": next_send_label(subscriber, now) if subscriber.active else None,
            "preferences_url": preferences_url_for(settings, email),
            "latest_url": archive_url_for(settings, edition.key) if edition else None,
            "latest_label": long_date_label(edition) if edition else "",
            "unsubscribe_url": unsubscribe_url_for(settings, email),
            "unsubscribe_mailto": unsubscribe_mailto_for(settings),
            "postal_address": settings.postal_address,
        },
    )
    message_id = make_message_id(settings, email, key)
    data = build_message(
        rendered,
        settings=settings,
        to_email=email,
        to_name=subscriber.name,
        message_id=message_id,
        date=now,
    )
    return message_id, data


def warm_up(deps: SendDeps) -> None:
    """Build one welcome for a placeholder address and drop it, so the renderer, the
    templates and premailer are ready (~0.2 s of work, on the caller's thread) before the
    first confirmation: the web app's start does it on a thread, off its event loop.

    Raises:
        ConfigError: a template or the settings are broken (the welcomes would fail too).
    """
    if deps.settings.welcome:
        build_welcome(deps, Subscriber(email=WARM_UP_ADDRESS), welcome_key("warm-up"))


async def send_welcomes(deps: SendDeps, welcomes: Sequence[tuple[Subscriber, str]]) -> RunSummary:
    """Send each owed ``(subscriber, key)`` welcome once (claimed first, like an edition).

    A welcome that cannot be built fails for that subscriber only (recorded ``failed``); one
    already sent is skipped by its claim. Nothing is sent with ``DIGEST_WELCOME=false``.

    Returns:
        The counts of the run.

    Raises:
        DeliveryConfigError: the transport cannot work (the welcomes stay owed).
    """
    summary = RunSummary()
    if not deps.settings.welcome or not welcomes:
        return summary

    async def messages() -> AsyncIterator[OutgoingMessage]:
        for subscriber, key in welcomes:
            try:
                # On a thread: the first one builds the renderer (~0.2 s), not on a web loop.
                message_id, data = await asyncio.to_thread(build_welcome, deps, subscriber, key)
            except Exception as e:  # a broken template or header: this welcome only
                log.error("%s: could not build the welcome %s: %s", subscriber.email, key, e)
                deps.store.mark_failed(subscriber.email, key, f"welcome: {e}", attempts=0)
                summary.failed += 1
                continue
            yield OutgoingMessage(
                subscriber=subscriber.email,
                edition=key,
                message_id=message_id,
                envelope_from=deps.envelope(subscriber.email, key),
                recipients=(subscriber.email,),
                data=data,
                crlf=True,  # build_message's line ends
            )

    sent = await send_all(
        messages(), store=deps.store, settings=deps.settings, now=deps.now, metrics=deps.metrics
    )
    summary.sent, summary.skipped = sent.sent, sent.skipped
    summary.failed += sent.failed
    summary.deferred, summary.unknown, summary.errors = sent.deferred, sent.unknown, sent.errors
    return summary


async def send_owed_welcomes(
    deps: SendDeps, lookup: Callable[[str], Subscriber | None], address: str | None = None
) -> RunSummary:
    """Send every welcome still owed: those a crash, a stop or a transient (4xx) failure left,
    or that the web app had no time to send. Called by the web app at its start and by the
    daemon at each tick.

    A welcome whose subscriber is now inactive, or whose address is on the suppression list
    (unsubscribed again meanwhile), is recorded ``skipped`` with that reason; one whose
    address is not in the list yet waits (a subscribers file is written after the
    confirmation), and is skipped as ``not on the list`` after :data:`ABSENT_GRACE`.

    Args:
        deps: the collaborators of a send.
        lookup: the subscriber of an address in the list as this process reads it, or None.
        address: only the welcomes of this address (the web app, right after a confirmation).

    Returns:
        The counts of the run (``skipped`` includes the welcomes skipped here).

    Raises:
        DeliveryConfigError: the transport cannot work (the welcomes stay owed).
    """
    summary = RunSummary()
    if not deps.settings.welcome:
        return summary
    now = deps.now()
    welcomes: list[tuple[Subscriber, str]] = []
    for row in owed_welcomes(deps.store, address):
        subscriber = lookup(row.subscriber)
        if subscriber is None:
            why = "not on the list" if now - row.created_at > ABSENT_GRACE else None
        elif not subscriber.active:
            why = "inactive"
        elif deps.store.suppression(row.subscriber) is not None:
            why = "suppressed"
        else:
            welcomes.append((subscriber, row.edition))
            continue
        if why is not None:
            deps.store.mark_skipped(row.subscriber, row.edition, why)
            summary.skipped += 1
    sent = await send_welcomes(deps, welcomes)
    sent.skipped += summary.skipped
    if sent.sent or sent.failed:
        log.info(
            "welcome emails: %d sent, %d failed, %d owed", sent.sent, sent.failed, sent.deferred
        )
    return sent
