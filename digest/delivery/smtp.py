"""SMTP transport: one aiosmtplib connection to the relay, reused for many messages.

Security (``DIGEST_SMTP_SECURITY``):

* ``starttls`` (port 587): connect in clear, then STARTTLS is *required* (RFC 3207): a server
  that does not advertise it is a :class:`~digest.errors.DeliveryConfigError`, never a silent
  fall-back to clear text.
* ``tls`` (port 465): implicit TLS from the first byte (RFC 8314).
* ``none`` (port 25): clear text; the settings refuse it for non-loopback hosts unless
  ``DIGEST_SMTP_ALLOW_PLAINTEXT``.

Certificates are always validated (:func:`ssl.create_default_context`, hostname checked), against
the system store or ``DIGEST_SMTP_CA_FILE`` for a private CA. AUTH runs when a username is set;
the password is read from its ``SecretStr`` only for the AUTH command and never appears in an
error or a log line.

The reply to the end of data gets its own, longer timeout (``DIGEST_SMTP_DATA_TIMEOUT``,
default 10 minutes as RFC 5321 §4.5.3.2.6 recommends): once the last byte has been written the
relay may have queued the message, so a lost reply is not a transient failure to retry but an
``unknown`` outcome.

Messages are sent as bytes with ``sendmail`` (not ``send_message``, which would re-fold
headers and break a DKIM signature), one recipient per message.

Reply codes (RFC 5321 §4.2.1): ``2yz`` accepted; ``4yz`` transient (try again later; ``421``
also means the server is closing the connection); ``5yz`` permanent. The mapping to our errors:

=========================================  ==========================================
what happened                              raised
=========================================  ==========================================
4yz to RCPT / MAIL / DATA, timeout,        :class:`~digest.errors.TransientDeliveryError`
connection dropped, 4yz greeting/EHLO
(all before the message's data is sent)
no reply to the final ``.`` of DATA: the   :class:`~digest.errors.UnknownDeliveryError`
connection dropped, or it stalled past
``smtp_data_timeout`` (may be delivered)
5yz to RCPT (this recipient) or to the     :class:`~digest.errors.PermanentDeliveryError`
message data (content refused); 552 to
MAIL FROM (message too big)
5yz (but 552) to MAIL FROM: our sender     :class:`~digest.errors.DeliveryConfigError`
refused; AUTH refused (535, 530, 534), no
STARTTLS, certificate not trusted, TLS
handshake failed
cannot connect at all                      :class:`~digest.delivery.RelayUnreachableError`
=========================================  ==========================================
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Literal, TypeVar

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus

from digest.delivery.base import DeliveryResult, OutgoingMessage, RelayUnreachableError
from digest.errors import (
    DeliveryConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownDeliveryError,
)
from digest.settings import Settings

log = logging.getLogger(__name__)

SMTP_ACCEPTED = 250
"""RFC 5321 "Requested mail action okay, completed": the reply to an accepted end of data."""

SMTP_CLOSING = 421
"""RFC 5321 "Service not available, closing transmission channel" (a 4yz: retry later)."""

SMTP_TOO_BIG = 552
"""RFC 5321/1870 "exceeded storage allocation": to ``MAIL FROM ... SIZE=`` it refuses this
message, not our sender, so it is a permanent failure of the message, not a config error."""

IDLE_CHECK_AFTER_S = 10.0
"""Before reusing a connection idle for this long, seconds, check it with ``NOOP``."""

_E = TypeVar("_E", bound=BaseException)

_LINE_END = re.compile(rb"\r\n|\r|\n")


class _EndOfDataUnanswered(Exception):
    """The whole message was written, then no reply to its final ``.`` came."""


class _SMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, with DATA split at the last byte written.

    Up to and including the 354 reply to ``DATA``, a failure is the usual
    :class:`~aiosmtplib.SMTPServerDisconnected` / :class:`~aiosmtplib.SMTPTimeoutError`
    (nothing was sent: transient). Once the message and its final ``.`` are written, the
    reply is awaited for ``data_timeout`` seconds and a lost or stalled reply raises
    :class:`_EndOfDataUnanswered` (the relay may have the message).

    Args:
        data_timeout: seconds to wait for the reply to the end of data.
        **kwargs: as :class:`aiosmtplib.SMTP`.
    """

    def __init__(self, *, data_timeout: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.data_timeout = data_timeout

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: float | Literal[Default.token] | None = Default.token,
        crlf: bool = False,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """aiosmtplib's mail transaction (MAIL, RCPT for each recipient, DATA), with the same
        replies, errors and bytes on the wire, and less work per message in this process.

        * Each address is checked and quoted once (:func:`_path`, not three ``parseaddr``
          calls); a bad one raises :class:`ValueError` before anything is sent.
        * The message is made CRLF once (:func:`_normalized`), for ``SIZE=`` (RFC 1870) and
          for DATA alike; with ``crlf`` (the caller built it with CRLF line ends only, as
          :func:`~digest.message.build_message` does) not even scanned for bare CR or LF.

        Returns:
            ``(refused recipients, reply to the end of data)`` as aiosmtplib's ``sendmail``.

        Raises:
            ValueError: an address that cannot be put on an SMTP command line.
            SMTPNotSupported: a non-ASCII address (``SMTPUTF8`` option) and no SMTPUTF8.
            SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError: a refusing reply (the
                envelope is reset with RSET first, as aiosmtplib does).
            _EndOfDataUnanswered: see :meth:`data`.
        """
        if isinstance(recipients, str):
            recipients = [recipients]
        options = list(mail_options or ())
        encoding = "utf-8" if any(o.lower() == "smtputf8" for o in options) else "ascii"
        # Checked before anything is sent: a bad recipient leaves no half-made envelope.
        paths = [_path(address).encode(encoding) for address in (sender, *recipients)]
        if isinstance(message, str):
            message = message.encode("ascii")
        message = _normalized(message, crlf=crlf)
        await self._ehlo_or_helo_if_needed()
        if encoding == "utf-8" and not self.supports_extension("smtputf8"):
            raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
        if self.supports_extension("size"):
            options.insert(0, f"size={len(message)}")
        rcpt = [o.encode("ascii") for o in rcpt_options or ()]
        try:
            reply = await self.execute_command(
                b"MAIL", b"FROM:" + paths[0], *(o.encode("ascii") for o in options), timeout=timeout
            )
            if reply.code != SMTPStatus.completed:
                raise SMTPSenderRefused(reply.code, reply.message, sender)
            refused: list[SMTPRecipientRefused] = []
            for address, path in zip(recipients, paths[1:], strict=True):
                reply = await self.execute_command(b"RCPT", b"TO:" + path, *rcpt, timeout=timeout)
                if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                    refused.append(SMTPRecipientRefused(reply.code, reply.message, address))
            if len(refused) == len(recipients):
                raise SMTPRecipientsRefused(refused)
            response = await self._data(_stuffed(message), timeout=timeout)
        except (SMTPResponseException, SMTPRecipientsRefused):
            with suppress(ConnectionError, SMTPResponseException):
                await self.rset(timeout=timeout)
            raise
        return {e.recipient: SMTPResponse(e.code, e.message) for e in refused}, response.message

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> SMTPResponse:
        """``DATA``, the dot-stuffed message and its final ``.`` (RFC 5321 §4.1.1.4)."""
        if isinstance(message, str):
            message = message.encode("ascii")
        return await self._data(_stuffed(_normalized(message)), timeout=timeout)

    async def _data(
        self,
        payload: bytes,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> SMTPResponse:
        """``DATA``, then ``payload`` (already dot-stuffed, ending ``.\\r\\n``) in one write."""
        start = await self.execute_command(b"DATA", timeout=timeout)
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        protocol = self.protocol
        if protocol is None:  # pragma: no cover - execute_command raised already
            raise SMTPServerDisconnected("Connection lost")
        protocol.write(payload)  # raises if already closing: then nothing was sent
        try:
            response = await protocol.read_response(timeout=self.data_timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as e:
            self.close()
            raise _EndOfDataUnanswered(_text(e)) from e
        if response.code != SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response


_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_PLAIN_ADDRESS = re.compile(rf"{_DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _path(address: str) -> str:
    """The reverse- or forward-path of ``address`` for MAIL FROM / RCPT TO: ``<address>``.

    The same string as aiosmtplib's ``quote_address`` (``parseaddr``, then its check against
    command injection): a plain ASCII ``dot-atom@domain`` (RFC 5321 §4.1.2), what every
    validated subscriber address is, is quoted as is; anything else goes through
    ``quote_address``.

    Raises:
        ValueError: ``address`` cannot be put on an SMTP command line (whitespace, CR/LF,
            angle brackets).
    """
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


def _normalized(message: bytes, *, crlf: bool = False) -> bytes:
    """``message`` with every line end CRLF and a final CRLF (RFC 5321 §2.3.8), as sent.

    Our messages are CRLF already: with ``crlf`` they are not scanned at all; without, the
    line-end regex (~0.5 ms for a 36 KB digest) runs only when C scans find a bare CR or LF.
    """
    if not crlf:
        ends = message.count(b"\r\n")
        if not (ends == message.count(b"\r") == message.count(b"\n")):
            message = _LINE_END.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _stuffed(message: bytes) -> bytes:
    """A CRLF ``message`` dot-stuffed (RFC 5321 §4.5.2) with the final ``.\\r\\n`` added.

    ``bytes.replace`` runs only if a line starts with a dot (a C scan finds it): the same bytes
    as ``re.sub(rb"(?m)^\\.", b"..")``.
    """
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    return message + b".\r\n"


def build_tls_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context: system CAs (or ``smtp_ca_file``), hostname checked, TLS ≥ 1.2.

    Raises:
        DeliveryConfigError: ``smtp_ca_file`` cannot be read as PEM certificates.
    """
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise DeliveryConfigError(
            f"DIGEST_SMTP_CA_FILE: cannot load CA certificates from {cafile}: {e}"
        ) from e
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SmtpTransport:
    """A :class:`~digest.delivery.Transport` over one SMTP connection; reconnects as needed.

    Create with :meth:`connect`. One instance per worker: it is not safe for concurrent use.

    Args:
        settings: ``smtp_host``, ``effective_smtp_port``, ``smtp_security``, ``smtp_username``,
            ``smtp_password``, ``smtp_timeout`` (seconds, per SMTP command/read),
            ``smtp_ca_file``.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise DeliveryConfigError("DIGEST_SMTP_HOST is not set")
        self._settings = settings
        self.host: str = settings.smtp_host
        self.port: int = settings.effective_smtp_port
        self._tls = build_tls_context(settings) if settings.smtp_security != "none" else None
        self._smtp: _SMTP | None = None
        self._last_used = 0.0

    @property
    def where(self) -> str:
        """``host:port`` of the relay, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def is_connected(self) -> bool:
        """True while the connection is open (as far as we know)."""
        return self._smtp is not None and self._smtp.is_connected

    @classmethod
    async def connect(cls, settings: Settings) -> SmtpTransport:
        """A new transport, connected, upgraded to TLS and authenticated.

        Raises:
            RelayUnreachableError: connection refused / timed out / name not resolved.
            DeliveryConfigError: no STARTTLS, certificate not trusted, AUTH refused, ...
            TransientDeliveryError: a 4yz greeting or EHLO reply, or the connection dropped
                during setup.
        """
        transport = cls(settings)
        await transport._connect()
        return transport

    async def _connect(self) -> None:
        settings = self._settings
        security = settings.smtp_security
        smtp = _SMTP(
            data_timeout=settings.smtp_data_timeout,
            hostname=self.host,
            port=self.port,
            use_tls=security == "tls",
            start_tls=False,  # done explicitly below, so that it is required, not opportunistic
            tls_context=self._tls,
            timeout=settings.smtp_timeout,
        )
        try:
            await smtp.connect()
            if security == "starttls":
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise DeliveryConfigError(
                        f"SMTP server {self.where} does not offer STARTTLS, which "
                        f"DIGEST_SMTP_SECURITY=starttls requires; use 'tls' if it is an "
                        f"implicit-TLS port (465), or fix the server"
                    )
                await smtp.starttls()
            if settings.smtp_username:
                password = settings.smtp_password
                await smtp.login(
                    settings.smtp_username, password.get_secret_value() if password else ""
                )
        except BaseException as e:
            transport = smtp.transport
            smtp.close()
            if isinstance(transport, asyncio.Transport):
                # A graceful close of a TLS connection waits for the peer's close_notify; the
                # session failed anyway, so drop the socket now (no fd outlives the run).
                transport.abort()
            if isinstance(e, Exception):
                await asyncio.sleep(0)  # let the loop run the transport's connection_lost
            if isinstance(e, DeliveryError):
                raise
            if isinstance(e, Exception):
                raise self._connect_error(e) from e
            raise
        self._smtp = smtp
        self._last_used = time.monotonic()
        log.debug("connected to SMTP server %s (%s)", self.where, security)

    def _connect_error(self, e: Exception) -> DeliveryError:
        """Classify a failure while connecting, upgrading to TLS or authenticating."""
        where = self.where
        cert = _find(e, ssl.SSLCertVerificationError)
        if cert is not None:
            return DeliveryConfigError(
                f"TLS certificate of SMTP server {where} is not trusted "
                f"({cert.verify_message}); set DIGEST_SMTP_CA_FILE for a private CA, or fix "
                f"DIGEST_SMTP_HOST to the name the certificate is for"
            )
        tls = _find(e, ssl.SSLError)
        if tls is not None:
            return DeliveryConfigError(
                f"TLS handshake with SMTP server {where} failed ({tls.reason or tls}); check "
                f"DIGEST_SMTP_SECURITY ('tls' for port 465, 'starttls' for 587)"
            )
        if isinstance(e, SMTPAuthenticationError):
            if 400 <= e.code < 500:
                return TransientDeliveryError(
                    f"SMTP server {where}: authentication temporarily failed: {e.code} {e.message}",
                    code=e.code,
                    reply=f"{e.code} {e.message}",
                )
            return DeliveryConfigError(
                f"SMTP server {where} refused authentication for user "
                f"{self._settings.smtp_username!r}: {e.code} {e.message}; check "
                f"DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD",
                code=e.code,
                reply=f"{e.code} {e.message}",
            )
        if isinstance(e, SMTPResponseException):  # greeting, EHLO, STARTTLS reply
            reply = f"{e.code} {e.message}"
            if 400 <= e.code < 500:
                return TransientDeliveryError(
                    f"SMTP server {where} is not available: {reply}", code=e.code, reply=reply
                )
            return DeliveryConfigError(
                f"SMTP server {where} refused the session: {reply}", code=e.code, reply=reply
            )
        if isinstance(e, SMTPConnectError | OSError) and not isinstance(e, SMTPServerDisconnected):
            return RelayUnreachableError(
                f"cannot connect to SMTP server {where}: {_text(e)}; check DIGEST_SMTP_HOST "
                f"and DIGEST_SMTP_PORT and that the relay is running"
            )
        if isinstance(e, SMTPServerDisconnected | SMTPTimeoutError | ConnectionError):
            return TransientDeliveryError(
                f"SMTP server {where} dropped the connection during setup: {_text(e)}"
            )
        if isinstance(e, SMTPException):  # e.g. "AUTH extension not supported"
            return DeliveryConfigError(f"SMTP server {where}: {e.message}")
        return DeliveryConfigError(f"SMTP server {where}: {_text(e)}")

    async def _ensure_connected(self) -> _SMTP:
        smtp = self._smtp
        if smtp is not None and smtp.is_connected:
            if time.monotonic() - self._last_used < IDLE_CHECK_AFTER_S:
                return smtp
            try:  # the relay may have dropped an idle connection without us noticing
                await smtp.noop()
                return smtp
            except (SMTPException, OSError) as e:
                log.debug("SMTP connection to %s went stale (%s); reconnecting", self.where, e)
                smtp.close()
        self._smtp = None
        await self._connect()
        assert self._smtp is not None
        return self._smtp

    async def deliver(self, msg: OutgoingMessage) -> DeliveryResult:
        """Send ``msg.data`` byte for byte to ``msg.recipients`` (one SMTP mail transaction).

        Reconnects first if the connection was dropped (nothing of this message was sent on
        the old one).

        Returns:
            ``DeliveryResult(250, reply)`` once the relay accepted the end of data.

        Raises:
            TransientDeliveryError: 4yz, timeout, dropped connection (``code`` set if a reply),
                before the message's data was sent.
            UnknownDeliveryError: the data was sent in full, then the reply to its final
                ``.`` was lost (connection dropped) or did not come within
                ``smtp_data_timeout`` seconds.
            PermanentDeliveryError: 5yz for the recipient or the data (``code`` and ``reply``).
            DeliveryConfigError: 5yz to our ``MAIL FROM``; or a reconnect failed for a
                configuration reason (see :meth:`connect`).
        """
        smtp = await self._ensure_connected()
        options = self._mail_options(smtp, msg)
        try:
            errors, reply = await smtp.sendmail(
                msg.envelope_from, msg.recipients, msg.data, mail_options=options, crlf=msg.crlf
            )
        except _EndOfDataUnanswered as e:
            self._drop()
            timeout = self._settings.smtp_data_timeout
            cause = e.__cause__
            what = (
                f"no reply within DIGEST_SMTP_DATA_TIMEOUT={timeout:g} s"
                if isinstance(cause, TimeoutError)
                else "the connection was lost"
            )
            reply = f"message sent, but {what} to its end of data: may have been delivered"
            raise UnknownDeliveryError(f"{self.where}: {reply}", reply=reply) from e
        except SMTPRecipientsRefused as e:
            raise _recipients_error(e) from e
        except SMTPSenderRefused as e:
            reply = f"{e.code} {e.message}"
            if 400 <= e.code < 500:
                self._close_if_closing(e.code)
                raise TransientDeliveryError(
                    f"MAIL FROM refused temporarily: {reply}", code=e.code, reply=reply
                ) from e
            if e.code == SMTP_TOO_BIG:  # about this message (SIZE), not about our sender
                raise PermanentDeliveryError(
                    f"message refused: {reply}", code=e.code, reply=reply, about_recipient=False
                ) from e
            raise DeliveryConfigError(
                f"SMTP server {self.where} refused the envelope sender {e.sender!r}: {reply}; "
                f"check DIGEST_ENVELOPE_FROM / DIGEST_FROM",
                code=e.code,
                reply=reply,
            ) from e
        except SMTPResponseException as e:  # SMTPDataError and other unexpected replies
            reply = f"{e.code} {e.message}"
            if 400 <= e.code < 500:
                self._close_if_closing(e.code)
                raise TransientDeliveryError(reply, code=e.code, reply=reply) from e
            what = "message refused" if isinstance(e, SMTPDataError) else "refused"
            raise PermanentDeliveryError(f"{what}: {reply}", code=e.code, reply=reply) from e
        except SMTPNotSupported as e:  # e.g. a non-ASCII address and no SMTPUTF8
            if "SMTPUTF8" in options:
                reply = (
                    "relay does not offer SMTPUTF8, which this address needs (RFC 6531: "
                    "non-ASCII local part)"
                )
                raise PermanentDeliveryError(f"{self.where}: {reply}", reply=reply) from e
            raise PermanentDeliveryError(f"not supported by {self.where}: {e.message}") from e
        except ValueError as e:  # an address aiosmtplib refuses to put on the wire
            raise PermanentDeliveryError(f"invalid address: {e}") from e
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as e:
            self._drop()
            kind = "timed out" if isinstance(e, TimeoutError) else "connection lost"
            raise TransientDeliveryError(f"{kind}: {_text(e)}", reply=f"{kind}: {_text(e)}") from e
        except SMTPException as e:
            self._drop()
            raise TransientDeliveryError(f"SMTP error: {e.message}") from e
        self._last_used = time.monotonic()
        if errors:  # only possible with several recipients: some accepted, some refused
            log.warning("%s: some recipients refused: %s", msg.subscriber, errors)
        return DeliveryResult(code=SMTP_ACCEPTED, reply=reply)

    def _mail_options(self, smtp: aiosmtplib.SMTP, msg: OutgoingMessage) -> list[str]:
        options: list[str] = []
        if not msg.data.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        addresses = (msg.envelope_from, *msg.recipients)
        if not all(a.isascii() for a in addresses):
            options.append("SMTPUTF8")
        return options

    def _close_if_closing(self, code: int) -> None:
        if code == SMTP_CLOSING:
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    async def close(self) -> None:
        """Say ``QUIT`` and close; never raises.

        Once QUIT is answered the socket is dropped (``abort``): a graceful TLS close would
        wait for the relay's close_notify, and an event loop ending meanwhile
        (``asyncio.run``) left the socket open until the garbage collector found it.
        """
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        transport = smtp.transport
        try:
            await smtp.quit()
        except (SMTPException, OSError):
            pass
        finally:
            smtp.close()
            if isinstance(transport, asyncio.Transport):
                transport.abort()


def _recipients_error(e: SMTPRecipientsRefused) -> DeliveryError:
    """Every recipient was refused: permanent if all got 5yz, else transient."""
    refusals = e.recipients
    reply = "; ".join(f"{r.code} {r.message}" for r in refusals) or "recipients refused"
    codes = [r.code for r in refusals]
    code = codes[0] if codes else None
    if codes and all(500 <= c < 600 for c in codes):
        return PermanentDeliveryError(f"recipient refused: {reply}", code=code, reply=reply)
    return TransientDeliveryError(f"recipient deferred: {reply}", code=code, reply=reply)


def _find(e: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of type ``kind`` in ``e``'s cause/context chain (``e`` included)."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__
