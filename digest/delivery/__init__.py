"""Delivery: hand finished messages to a transport, one small interface per boundary.

* :class:`OutgoingMessage`: one fully built RFC 5322 message for one subscriber.
* :class:`Transport`: ``await deliver(msg) -> DeliveryResult``, ``await close()``. Implemented
  by :class:`~digest.delivery.smtp.SmtpTransport` (an SMTP relay, via aiosmtplib) and
  :class:`~digest.delivery.maildir.MaildirTransport` (a local Maildir, when no SMTP host is set).
* :func:`open_transport`: the :data:`TransportFactory` chosen by the settings.
* :func:`digest.delivery.engine.send_all`: the pool of workers (claim → deliver → mark).

Failures are classified by what to do about them (RFC 5321 reply codes)::

    TransientDeliveryError   4yz reply, timeout, dropped connection   retry with backoff, then
                                                                      leave owed for next run
    PermanentDeliveryError   5yz reply for this recipient/message     record failed, never retry
    DeliveryConfigError      auth refused (535/530), bad certificate,  stop the whole run
                             no STARTTLS, relay unreachable, sender
                             refused (5yz to MAIL FROM)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from digest.errors import DeliveryConfigError
from digest.settings import Settings


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready to send to one subscriber.

    Attributes:
        subscriber: the subscriber's email address (lower-case): the state file key.
        edition: the edition key (``YYYY-MM-DD`` or ``YYYY-Www``).
        message_id: the ``Message-ID`` header value (``<...@domain>``), recorded on claim.
        envelope_from: the SMTP envelope sender (``MAIL FROM``), a bare address.
        recipients: the envelope recipients (``RCPT TO``), bare addresses; normally exactly the
            subscriber, so a reply code concerns that one subscriber.
        data: the whole RFC 5322 message, sent byte for byte (a bare CR or LF is sent as CRLF,
            RFC 5321 §2.3.8).
        papers: bare arXiv ids of the papers the message carries (recorded with its claim:
            the send history that keeps a paper from reaching a subscriber twice).
        crlf: ``data``'s line ends are all CRLF already (set for what
            :func:`~digest.message.build_message` built): the SMTP transport then skips its
            scan for bare CR or LF (~0.15 ms of the sending process's CPU per 36 KB message).
    """

    subscriber: str
    edition: str
    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    papers: tuple[str, ...] = ()
    crlf: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The transport's acceptance of one message.

    Attributes:
        code: the SMTP reply code to the end of data (250); 250 for a Maildir write too.
        reply: the reply text (often ``2.0.0 Ok: queued as ...``) or the Maildir file key.
    """

    code: int
    reply: str


@runtime_checkable
class Transport(Protocol):
    """A connected transport. Not safe for concurrent use: one per worker."""

    async def deliver(self, msg: OutgoingMessage) -> DeliveryResult:
        """Hand ``msg`` to the relay/mailbox; return once it is accepted.

        Raises:
            TransientDeliveryError: 4yz reply, timeout, dropped connection (retry later).
            PermanentDeliveryError: 5yz reply for this recipient or message (never retry).
            DeliveryConfigError: the transport cannot work at all (stop the run).
        """
        ...

    async def close(self) -> None:
        """Close the connection politely (``QUIT``); never raises."""
        ...


TransportFactory = Callable[[], Awaitable[Transport]]
"""Creates and connects a new :class:`Transport` (one per worker).

Raises :class:`DeliveryConfigError` (auth refused, bad certificate, no STARTTLS, relay
unreachable) or :class:`TransientDeliveryError` (e.g. a 421 greeting).
"""


class RelayUnreachableError(DeliveryConfigError):
    """The SMTP relay could not be reached (connection refused/timed out, DNS failure).

    A configuration error when the run starts (wrong host or port, relay down: stop at once);
    a worker reconnecting mid-run treats it as transient for its message and stops the run only
    once that message has exhausted its attempts.
    """


def pool_size(settings: Settings) -> int:
    """How many workers/connections :func:`~digest.delivery.engine.send_all` uses.

    ``smtp_concurrency`` for an SMTP relay; 1 for the Maildir (a local disk gains nothing).
    """
    return settings.smtp_concurrency if settings.smtp_host else 1


def open_transport(settings: Settings) -> TransportFactory:
    """The transport factory the settings select: SMTP when ``smtp_host`` is set, else Maildir.

    Nothing is connected or created until the factory is called.

    Args:
        settings: uses ``smtp_*`` (host, port, security, username, password, timeout, CA file)
            or ``outbox`` (the Maildir directory).

    Returns:
        An async callable returning a new connected transport on each call.
    """
    if settings.smtp_host:
        from digest.delivery.smtp import SmtpTransport

        async def smtp_factory() -> Transport:
            return await SmtpTransport.connect(settings)

        return smtp_factory

    from digest.delivery.maildir import MaildirTransport

    async def maildir_factory() -> Transport:
        return await MaildirTransport.open(settings.outbox)

    return maildir_factory


__all__ = [
    "DeliveryResult",
    "OutgoingMessage",
    "RelayUnreachableError",
    "Transport",
    "TransportFactory",
    "open_transport",
    "pool_size",
]
