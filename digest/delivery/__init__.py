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

from digest.delivery.base import (
    DeliveryResult,
    OutgoingMessage,
    RelayUnreachableError,
    Transport,
    TransportFactory,
)
from digest.settings import Settings


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
