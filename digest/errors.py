"""Exceptions raised by the ``digest`` library.

Every error the library raises on purpose derives from :class:`DigestError` and from the
stdlib type that fits, so callers can catch either::

    DigestError (Exception)
    ├── ConfigError (ValueError)          settings, subscribers file, templates: fix the input
    ├── SourceError (RuntimeError)        a paper source failed or returned unusable data
    │   └── AllSourcesFailedError         no source answered for an edition: nothing to send
    ├── TokenError (ValueError)           a link's token is malformed, forged, for another
    │                                     purpose, or expired
    ├── HeaderError (ValueError)          a message's header block would not be the one built
    │                                     (a value added a line or a field): not sent
    ├── StateError (RuntimeError)         the state file is unreadable, too new, or corrupt
    │   └── StateLockedError              another sender holds the state file's lock
    └── DeliveryError (RuntimeError)      a message could not be handed to the transport
        ├── TransientDeliveryError        4xx reply, timeout, dropped connection: retry later
        ├── PermanentDeliveryError        5xx reply for this recipient: never retried
        ├── UnknownDeliveryError (TimeoutError)
        │                                 the whole message was sent but its final reply was
        │                                 lost or stalled: maybe delivered, never resent
        └── DeliveryConfigError (ConfigError)
                                          authentication refused, TLS certificate invalid,
                                          relay unreachable: stop the whole run

Errors become one-line user messages in exactly one place: :mod:`digest.cli` (and the daemon
entry). Their ``str()`` is that line, so it must name the file, field or server and say what
to do. Secrets never appear in messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DigestError(Exception):
    """Root of every error the ``digest`` library raises deliberately."""


class ConfigError(DigestError, ValueError):
    """Invalid settings, subscribers file or templates.

    Attributes:
        problems: every problem found, one line each (``file:line: field: message``); the
            exception's ``str()`` is the first one when there is exactly one, else a summary.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class SourceError(DigestError, RuntimeError):
    """A paper source failed (network, HTTP status) or returned data we cannot use.

    Attributes:
        source: the source's name as configured (``hf``, ``file:PATH``, ``feed:URL``).
        detail: the message without the ``source NAME:`` prefix (for lines that already
            name the source).
    """

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"source {source}: {message}")
        self.source = source
        self.detail = message


class AllSourcesFailedError(SourceError):
    """Every source failed for every day of an edition (nothing can be sent yet).

    Its message names each source once: ``every source failed: hf 2026-08-20: GET …: HTTP
    503 Service Unavailable; file:x 2026-08-20: …``.

    Attributes:
        failures: one line per (source, day), ``SPEC DAY: detail``.
    """

    def __init__(self, failures: list[str]) -> None:
        sources = ",".join(dict.fromkeys(line.split(" ", 1)[0] for line in failures))
        super().__init__(sources, "")
        self.failures = failures
        self.detail = "every source failed: " + "; ".join(failures)
        self.args = (self.detail,)


class TokenError(DigestError, ValueError):
    """A token (unsubscribe, preferences, confirm... link) cannot be used.

    Attributes:
        reason: ``malformed``, ``forged`` (bad signature, or made for another purpose) or
            ``expired``. The message never contains the token.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class HeaderError(DigestError, ValueError):
    """A message's header block is not exactly the fields it was built from.

    Raised by :func:`digest.message.check_head` (and so by ``build_message``) when a value
    would have ended a field early, added a field or a line, or started the body: the message
    is not sent (a failure of that subscriber's message, not of the run). The message names
    the field, never the offending value.
    """


class StateError(DigestError, RuntimeError):
    """The state file cannot be opened, is corrupt, or has a newer schema than this version."""


class StateLockedError(StateError):
    """Another ``digest send``/``digest run`` holds the lock on the state file.

    Attributes:
        holder: a description of the holder (pid, host, command, since when), if known.
    """

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class DeliveryError(DigestError, RuntimeError):
    """A message was not accepted by the transport.

    Attributes:
        code: the SMTP reply code (e.g. 451, 550), or ``None`` for non-SMTP failures.
        reply: the server's reply text (or the error description), for the state file.
    """

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply or message


class TransientDeliveryError(DeliveryError):
    """A temporary failure (4xx reply, timeout, dropped connection): retry with backoff."""


class PermanentDeliveryError(DeliveryError):
    """A permanent failure (5xx reply for this recipient): record as failed, never retry.

    Attributes:
        about_recipient: False when the refusal is about the message, not the address (e.g.
            ``552`` to ``MAIL FROM ... SIZE=``); only refusals about the recipient are hard
            bounces.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        reply: str = "",
        about_recipient: bool = True,
    ) -> None:
        super().__init__(message, code=code, reply=reply)
        self.about_recipient = about_recipient

    @property
    def hard_bounce(self) -> bool:
        """True for a 5xx reply about the recipient (RCPT or DATA): a hard bounce."""
        return self.about_recipient and self.code is not None and 500 <= self.code < 600


class UnknownDeliveryError(DeliveryError, TimeoutError):
    """The message's data was sent in full but the reply to its final ``.`` never came.

    The connection dropped or the reply stalled past ``DIGEST_SMTP_DATA_TIMEOUT``: the relay
    may have accepted the message. Recorded ``unknown``; resending it automatically could
    deliver a second copy, so only ``digest send --retry-unknown`` does (same Message-ID).
    """


class DeliveryConfigError(DeliveryError, ConfigError):
    """The transport cannot work at all (auth refused, bad certificate, relay unreachable).

    The run stops early with this one message instead of failing every subscriber.
    """

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        DeliveryError.__init__(self, message, code=code, reply=reply)
        self.problems = [message]


_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "too_long": ("max_length", "must have at most {} items"),
    "string_too_long": ("max_length", "must be at most {} characters"),
    "string_too_short": ("min_length", "must be at least {} characters"),
}
_KINDS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "ip_any_address": "must be an IP address",
}


def field_message(err: Mapping[str, Any]) -> str:
    """One pydantic validation error in a field's own words, with what was found.

    Our own validators' messages are kept as they are; pydantic's generic ones ("Input should
    be greater than or equal to 1") become ``must be at least 1, got 0``.

    Args:
        err: one item of ``pydantic.ValidationError.errors()``.
    """
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    msg = str(err.get("msg", "invalid"))
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])  # our own validator's words
    if kind in _BOUNDS and _BOUNDS[kind][0] in ctx:
        key, text = _BOUNDS[kind]
        bound = ctx[key]
        msg = text.format(f"{bound:g}" if isinstance(bound, float) else bound)
    elif kind in _KINDS:
        msg = _KINDS[kind]
    elif kind == "literal_error" and "expected" in ctx:
        msg = f"must be one of {ctx['expected']}"
    else:
        return msg
    value = err.get("input")
    short = not isinstance(value, str) or len(value) <= _SHOWN_INPUT_CHARS
    if isinstance(value, str | int | float | bool) and short:
        msg = f"{msg}, got {value!r}"
    return msg


_SHOWN_INPUT_CHARS = 80
"""Longest value quoted back in a message (a longer one is not repeated)."""
