"""Test sends (``digest send --to ADDRESS [--as SUBSCRIBER]``): one copy of an edition to any
address, to see it in a real mail client before the list gets it.

The copy is rendered as the given subscriber (their keywords, their ranking, their footer) or
unpersonalized, and built like a real one, except:

* the Subject starts with ``[Test]``, and ``To`` is the test address;
* the unsubscribe link and ``List-Unsubscribe`` are the *test address's* own: clicking them in
  the test copy can never unsubscribe the subscriber it was rendered as;
* it is recorded under its own edition key, ``test:YYYY-MM-DD`` (``test:YYYY-MM-DD:EMAIL`` when
  rendered as a subscriber), for the test address: ``digest history`` lists it, and it never
  counts as that subscriber's (or the test address's) edition. Sending the same test again
  reopens that row: a test can be repeated.

Delivery goes through the same engine as ``send`` (retries, bounce handling), so a 5xx for the
test address is recorded like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from digest.addresses import normalize_email
from digest.delivery import OutgoingMessage
from digest.delivery.engine import send_all
from digest.delivery.envelope import envelope_sender
from digest.errors import ConfigError
from digest.message import build_message, make_message_id, unsubscribe_url_for
from digest.models import TEST_EDITION_PREFIX, Edition, RunSummary, is_test_edition
from digest.ranking import rank
from digest.render import EmailContext
from digest.subscribers import Subscriber

if TYPE_CHECKING:
    from digest.pipeline.send import SendDeps

__all__ = [
    "TEST_EDITION_PREFIX",
    "ProofResult",
    "is_test_edition",
    "send_proof",
    "test_edition_key",
]

TEST_SUBJECT_PREFIX = "[Test] "
"""Put before the Subject of a test send."""


def test_edition_key(edition: Edition, as_subscriber: Subscriber | None) -> str:
    """The state key of a test send: ``test:2026-08-20`` or ``test:2026-08-20:ada@example.org``."""
    key = TEST_EDITION_PREFIX + edition.key
    return f"{key}:{as_subscriber.email}" if as_subscriber is not None else key


def check_address(address: str) -> tuple[str, str | None]:
    """``address`` checked (syntax only, no DNS) and normalized, with a warning if any.

    A test send may go to a local relay, so an address at a special-use domain (RFC 6761:
    ``admin@lab.test``, ``root@localhost``...) is taken, with a warning that the Internet will
    not deliver it.

    Returns:
        ``(normalized address, warning line or None)``.

    Raises:
        ConfigError: not an email address (names the flag and the reason).
    """
    try:
        validate_email(address, check_deliverability=False)
        return normalize_email(address), None
    except EmailNotValidError as e:
        try:  # a special-use domain (.test, localhost): fine for a local relay
            validate_email(
                address,
                check_deliverability=False,
                test_environment=True,
                globally_deliverable=False,
            )
        except EmailNotValidError:
            raise ConfigError(f"--to {address!r}: not an email address ({e})") from None
    warning = f"--to {address}: a special-use domain (RFC 6761); only a local relay will deliver it"
    return normalize_email(address), warning


@dataclass(frozen=True, slots=True)
class ProofResult:
    """What one test send did.

    Attributes:
        recipient: the test address (normalized).
        edition_key: the key it is recorded under (``test:...``).
        message_id: the Message-ID of the copy.
        shown: papers the copy holds.
        total: papers the edition has.
        summary: the delivery's counts (one message: ``sent``, ``failed`` or ``deferred``).
        failed_sources: source lines that could not be fetched (the copy went without them).
        warnings: lines about the test address (a special-use domain).
    """

    recipient: str
    edition_key: str
    message_id: str
    shown: int
    total: int
    summary: RunSummary
    failed_sources: Sequence[str]
    warnings: Sequence[str] = ()


async def send_proof(
    deps: SendDeps,
    edition: Edition,
    to: str,
    as_subscriber: Subscriber | None,
    *,
    sources: Sequence[str] | None = None,
) -> ProofResult:
    """Send one test copy of ``edition`` to ``to`` (see the module docstring).

    Call while holding the state backend's sender lock, like ``send``.

    Args:
        deps: the collaborators (:attr:`Digest.deps <digest.core.Digest.deps>`).
        edition: the edition.
        to: the test address.
        as_subscriber: render as this subscriber, or ``None`` for the unpersonalized edition.
        sources: source specs overriding the subscriber's own and ``DIGEST_SOURCES``.

    Returns:
        The outcome (a failed delivery is a result, not an exception).

    Raises:
        ConfigError: ``to`` is not an address; a template or the settings are broken.
        SourceError: every source failed.
        DeliveryConfigError: the transport cannot work (auth, TLS, unreachable relay).
    """
    settings = deps.settings
    recipient, warning = check_address(to)
    own = as_subscriber.sources if as_subscriber is not None else None
    papers = await deps.papers(edition, sources=sources or own)
    ranked = rank(papers.papers, as_subscriber or Subscriber.default())
    ctx = EmailContext(
        edition=edition,
        papers=ranked,
        subscriber=as_subscriber,
        unsubscribe_url=unsubscribe_url_for(settings, recipient),
        unsubscribe_mailto=settings.unsubscribe_mailto,
        total_papers=len(papers.papers),
    )
    rendered = deps.renderer().render(ctx)
    rendered = dataclasses.replace(rendered, subject=TEST_SUBJECT_PREFIX + rendered.subject)
    key = test_edition_key(edition, as_subscriber)
    # Not ``key``: the Message-ID never names a subscriber's address (make_message_id).
    message_id = make_message_id(settings, recipient, TEST_EDITION_PREFIX + edition.key)
    data = build_message(
        rendered,
        settings=settings,
        to_email=recipient,
        to_name=None,
        message_id=message_id,
        date=deps.now(),
    )
    if deps.store.get(recipient, key) is not None:
        deps.store.reopen(recipient, key)  # a test may be sent again

    async def one() -> AsyncIterator[OutgoingMessage]:
        yield OutgoingMessage(
            subscriber=recipient,
            edition=key,
            message_id=message_id,
            envelope_from=envelope_sender(settings),  # a test send has no VERP
            recipients=(recipient,),
            data=data,
            crlf=True,  # build_message's line ends
        )

    summary = await send_all(one(), store=deps.store, settings=settings, now=deps.now)
    return ProofResult(
        recipient=recipient,
        edition_key=key,
        message_id=message_id,
        shown=len(ranked),
        total=len(papers.papers),
        summary=summary,
        failed_sources=papers.failed,
        warnings=(warning,) if warning else (),
    )
