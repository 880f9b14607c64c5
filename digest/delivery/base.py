"""The delivery types: the message, the transport's one-method interface and its result.

Kept apart from :mod:`digest.delivery` (which picks a transport) so that the transports
(:mod:`~digest.delivery.smtp`, :mod:`~digest.delivery.maildir`) import them without importing
the package that imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from digest.errors import DeliveryConfigError


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


__all__ = [
    "DeliveryResult",
    "OutgoingMessage",
    "RelayUnreachableError",
    "Transport",
    "TransportFactory",
]
