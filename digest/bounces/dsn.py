"""Parsing bounce messages (pure: bytes in, a :class:`ParsedBounce` out; never raises).

Three kinds of message reach a bounce mailbox:

* **DSNs** (RFC 3464): ``multipart/report; report-type=delivery-status`` with a
  ``message/delivery-status`` part. Each per-recipient block has ``Final-Recipient`` (or
  ``Original-Recipient``), ``Action`` and ``Status``: ``Action: failed`` with ``5.x.x`` (or no
  status) is a hard bounce, with ``4.x.x`` a soft one; ``delayed``, ``delivered``, ``relayed``
  and ``expanded`` are not failures and are ignored.
* **Abuse complaints** (ARF, RFC 5965): ``multipart/report; report-type=feedback-report`` with
  a ``message/feedback-report`` part (``Feedback-Type``, ``Original-Rcpt-To``) and usually the
  original message or its headers.
* **Non-standard bounces** (Gmail's and Yahoo's plain-text notices, old Exim, qmail, Exchange):
  recognised by flufl.bounce, Mailman's own detectors (permanent → hard, temporary → soft).

The original message's ``Message-ID`` (from the returned ``message/rfc822`` or
``text/rfc822-headers`` part, or a ``Message-ID:`` line quoted in the text) is what ties the
bounce to our delivery; the addresses the bounce was delivered to (``Delivered-To``,
``X-Original-To``, ``To``) carry the VERP token. Matching is :mod:`digest.bounces.intake`'s job.

Hostile input: a message over ``max_bytes`` is not parsed; broken MIME, missing parts and
detector failures come back as :attr:`ReportKind.UNRECOGNISED` with a one-line ``problem``
(the intake logs one warning line per message). flufl.bounce's own log records (a line per
detector run at INFO, and the traceback of a detector that fails on a junk message at ERROR,
before the error reaches us) are demoted to DEBUG: shown with ``-vv`` / ``--debug`` only.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import itertools
import logging
import re
from dataclasses import dataclass, field
from email.utils import getaddresses
from enum import StrEnum

from digest.addresses import normalize_email
from digest.state import BounceKind

log = logging.getLogger(__name__)

FLUFL_LOGGER = "flufl.bounce"
"""The logger flufl.bounce writes to (``flufl.bounce._scan``)."""

MAX_PARTS = 500
"""A message with more MIME parts than this is not examined further (hostile nesting)."""
MAX_EVIDENCE_CHARS = 300
"""Evidence lines (``Status`` + ``Diagnostic-Code``) are cut to this length."""
MAX_ADDRESS_CHARS = 320
"""Longest plausible email address (RFC 5321: 64 + 1 + 255)."""
MAX_ORIGINAL_IDS = 20
"""Original ``Message-ID`` values kept from one message, first found first: a real bounce
quotes one to three, a hostile one tens of thousands (each a state lookup)."""

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID_RE = re.compile(r"<[^<>\s]{1,250}>")
_MESSAGE_ID_LINE_RE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]{1,250}>)", re.I | re.M)
_ADDRESS_RE = re.compile(r"^[^@\s<>]{1,64}@[^@\s<>]{1,255}$")
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


class ReportKind(StrEnum):
    """What kind of message a bounce-mailbox message turned out to be."""

    DSN = "dsn"
    """An RFC 3464 delivery status notification with at least one failed recipient."""
    ARF = "arf"
    """An RFC 5965 abuse feedback report."""
    HEURISTIC = "heuristic"
    """A non-standard bounce recognised by flufl.bounce."""
    IGNORED = "ignored"
    """A delay warning or a success notice: nothing to record."""
    UNRECOGNISED = "unrecognised"
    """Not a bounce we can read (or too large, or broken): kept aside."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """One failed (or complained-about) recipient named by a bounce.

    Attributes:
        address: the normalized address (``Final-Recipient``, ``Original-Rcpt-To``, or the
            detector's); ``""`` when an ARF report redacted it (match by Message-ID then).
        kind: hard, soft or complaint.
        status: the RFC 3463 status code (``5.1.1``), if given.
        action: the DSN ``Action`` (``failed``) or the ARF ``Feedback-Type`` (``abuse``).
        diagnostic: the ``Diagnostic-Code`` text (whitespace collapsed), if any.
    """

    address: str
    kind: BounceKind
    status: str | None = None
    action: str | None = None
    diagnostic: str = ""

    @property
    def evidence(self) -> str:
        """One line for the state store: ``dsn 5.1.1 failed: smtp; 550 5.1.1 user unknown``."""
        parts = [p for p in (self.status, self.action) if p]
        head = " ".join(parts) or str(self.kind)
        text = f"{head}: {self.diagnostic}" if self.diagnostic else head
        return text[:MAX_EVIDENCE_CHARS]


@dataclass(frozen=True, slots=True)
class ParsedBounce:
    """What a bounce-mailbox message says.

    Attributes:
        kind: see :class:`ReportKind`.
        recipients: the failed or complained-about recipients (empty unless DSN, ARF,
            HEURISTIC).
        original_message_ids: ``Message-ID`` values (``<...>``) of the original message found
            in the bounce, most reliable first.
        envelope_to: addresses the bounce was delivered to (for VERP), normalized.
        message_id: the bounce's own ``Message-ID``, if any.
        problem: for UNRECOGNISED and IGNORED, why (one line).
    """

    kind: ReportKind
    recipients: tuple[Recipient, ...] = ()
    original_message_ids: tuple[str, ...] = ()
    envelope_to: tuple[str, ...] = ()
    message_id: str | None = None
    problem: str = ""


class _DemoteToDebug(logging.Filter):
    """Rewrites every record of the logger it is on as DEBUG, and drops it unless that
    logger has DEBUG enabled (handlers without a level of their own would print it)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return self._logger.isEnabledFor(logging.DEBUG)


def _quiet_flufl() -> None:
    logger = logging.getLogger(FLUFL_LOGGER)
    if not any(isinstance(f, _DemoteToDebug) for f in logger.filters):
        logger.addFilter(_DemoteToDebug(logger))


_quiet_flufl()


@dataclass
class _Found:
    dsn_blocks: list[email.message.Message] = field(default_factory=list)
    arf_blocks: list[email.message.Message] = field(default_factory=list)
    original_headers: list[email.message.Message] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    report_type: str | None = None


def parse_bounce(data: bytes, *, max_bytes: int) -> ParsedBounce:
    """Parse one message from the bounce mailbox. Never raises.

    Args:
        data: the raw RFC 5322 message.
        max_bytes: larger messages are not parsed (UNRECOGNISED, "too large").

    Returns:
        The :class:`ParsedBounce`.
    """
    if len(data) > max_bytes:
        return ParsedBounce(
            ReportKind.UNRECOGNISED,
            problem=f"too large ({len(data):,} bytes, limit {max_bytes:,}); not read",
        )
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as e:  # the stdlib parser is lenient; belt and braces
        return ParsedBounce(ReportKind.UNRECOGNISED, problem=f"unparseable message: {e}")
    try:
        return _parse(msg)
    except Exception as e:  # broken MIME in a shape the code did not foresee
        log.debug("bounce parse failed", exc_info=True)
        return ParsedBounce(
            ReportKind.UNRECOGNISED,
            message_id=_header(msg, "Message-ID"),
            problem=f"broken message ({type(e).__name__}: {e})"[:MAX_EVIDENCE_CHARS],
        )


def _parse(msg: email.message.Message) -> ParsedBounce:
    own_id = _header(msg, "Message-ID")
    envelope = _envelope_to(msg)
    found = _Found()
    for parts, part in enumerate(msg.walk(), start=1):
        if parts > MAX_PARTS:
            return ParsedBounce(
                ReportKind.UNRECOGNISED,
                message_id=own_id,
                envelope_to=envelope,
                problem=f"more than {MAX_PARTS} MIME parts; not examined",
            )
        _visit(part, found)
    original_ids = _original_ids(msg, found)

    if found.arf_blocks:
        recipients = _arf_recipients(found)
        if not recipients:
            return ParsedBounce(
                ReportKind.IGNORED,
                original_message_ids=original_ids,
                envelope_to=envelope,
                message_id=own_id,
                problem="feedback report that is not a complaint",
            )
        return ParsedBounce(ReportKind.ARF, recipients, original_ids, envelope, own_id)

    if found.dsn_blocks:
        recipients, others = _dsn_recipients(found.dsn_blocks)
        if recipients:
            return ParsedBounce(ReportKind.DSN, recipients, original_ids, envelope, own_id)
        if others:
            return ParsedBounce(
                ReportKind.IGNORED,
                original_message_ids=original_ids,
                envelope_to=envelope,
                message_id=own_id,
                problem=f"delivery status notification without failure ({', '.join(others)})",
            )
        # A delivery-status part without usable blocks: try the detectors below.

    recipients = _heuristic(msg)
    if recipients:
        return ParsedBounce(ReportKind.HEURISTIC, recipients, original_ids, envelope, own_id)
    return ParsedBounce(
        ReportKind.UNRECOGNISED,
        original_message_ids=original_ids,
        envelope_to=envelope,
        message_id=own_id,
        problem="not a bounce or complaint that could be read (no DSN, ARF or known format)",
    )


def _visit(part: email.message.Message, found: _Found) -> None:
    ctype = part.get_content_type()
    if ctype == "multipart/report" and found.report_type is None:
        found.report_type = str(part.get_param("report-type") or "").lower() or None
    if ctype in ("message/delivery-status", "text/delivery-status"):
        found.dsn_blocks.extend(_blocks(part))
    elif ctype in ("message/feedback-report", "text/feedback-report"):
        found.arf_blocks.extend(_blocks(part))
    elif ctype == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
            found.original_headers.append(inner[0])
    elif ctype == "text/rfc822-headers":
        text = _text(part)
        if text:
            found.original_headers.append(email.parser.HeaderParser().parsestr(text))
    elif ctype.startswith("text/") and not part.is_multipart():
        text = _text(part)
        if text:
            found.texts.append(text)


def _blocks(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a delivery-status / feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    text = _text(part)
    parser = email.parser.HeaderParser()
    return [
        parser.parsestr(block.strip() + "\n")
        for block in re.split(r"\r?\n\s*\r?\n", text)
        if block.strip()
    ]


def _text(part: email.message.Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return raw.decode("utf-8", errors="replace")


def _header(msg: email.message.Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _address(value: str | None) -> str | None:
    """``rfc822; Ada@Example.org`` / ``<ada@x>`` → ``ada@x``; None if it is no address."""
    if not value:
        return None
    text = " ".join(str(value).split())
    if ";" in text:
        kind, _, text = text.partition(";")
        if kind.strip().lower() not in ("rfc822", "utf-8"):
            return None
    text = text.strip().strip("<>").strip()
    if len(text) > MAX_ADDRESS_CHARS or not _ADDRESS_RE.match(text):
        return None
    return normalize_email(text)


def _envelope_to(msg: email.message.Message) -> tuple[str, ...]:
    out: list[str] = []
    for name in _ENVELOPE_HEADERS:
        values = [str(v) for v in (msg.get_all(name) or [])]
        for _display, addr in getaddresses(values):
            norm = _address(addr)
            if norm and norm not in out:
                out.append(norm)
    return tuple(out)


def _original_ids(msg: email.message.Message, found: _Found) -> tuple[str, ...]:
    candidates = itertools.chain(
        (_header(headers, "Message-ID") for headers in found.original_headers),
        (m.group(1) for text in found.texts for m in _MESSAGE_ID_LINE_RE.finditer(text)),
        [_header(msg, "In-Reply-To")],  # some servers thread their notice under the original
    )
    ids: dict[str, None] = {}
    for value in candidates:
        match = _MESSAGE_ID_RE.search(value) if value else None
        if match:
            ids.setdefault(match.group(0))
            if len(ids) == MAX_ORIGINAL_IDS:
                break
    return tuple(ids)


def _dsn_recipients(
    blocks: list[email.message.Message],
) -> tuple[tuple[Recipient, ...], list[str]]:
    """Failed recipients, and the other actions seen (``delayed``...)."""
    failed: list[Recipient] = []
    others: list[str] = []
    for block in blocks:
        final = block.get("Final-Recipient") or block.get("Original-Recipient")
        if final is None:
            continue  # the per-message block
        address = _address(str(final))
        action = (_header(block, "Action") or "").lower().split(" ")[0]
        status_text = _header(block, "Status") or ""
        match = _STATUS_RE.search(status_text)
        status = match.group(0) if match else None
        if action != "failed":
            others.append(action or "no action")
            continue
        if address is None:
            continue
        kind = BounceKind.SOFT if status and status.startswith("4") else BounceKind.HARD
        diagnostic = " ".join((_header(block, "Diagnostic-Code") or "").split())
        failed.append(Recipient(address, kind, status, action, diagnostic[:MAX_EVIDENCE_CHARS]))
    return tuple(failed), others


def _arf_recipients(found: _Found) -> tuple[Recipient, ...]:
    report = found.arf_blocks[0]
    feedback = (_header(report, "Feedback-Type") or "abuse").lower()
    if feedback == "not-spam":
        return ()
    addresses = [
        a for a in (_address(str(v)) for v in report.get_all("Original-Rcpt-To") or []) if a
    ]
    if not addresses:
        for headers in found.original_headers:
            for _display, addr in getaddresses([str(v) for v in headers.get_all("To") or []]):
                norm = _address(addr)
                if norm:
                    addresses.append(norm)
    user_agent = _header(report, "User-Agent") or ""
    diagnostic = f"feedback report from {user_agent}" if user_agent else "feedback report"
    if not addresses:
        addresses = [""]  # redacted: the intake matches by Message-ID
    return tuple(
        Recipient(a, BounceKind.COMPLAINT, None, feedback, diagnostic)
        for a in dict.fromkeys(a for a in addresses)
    )


def _heuristic(msg: email.message.Message) -> tuple[Recipient, ...]:
    try:
        from flufl.bounce import all_failures

        temporary, permanent = all_failures(msg)
    except Exception as e:  # a detector choked on this message
        log.debug("flufl.bounce failed: %s", e)
        return ()
    out: list[Recipient] = []
    for raw, kind in [(a, BounceKind.HARD) for a in sorted(permanent)] + [
        (a, BounceKind.SOFT) for a in sorted(temporary - permanent)
    ]:
        address = _address(raw.decode("utf-8", errors="replace"))
        if address and all(r.address != address for r in out):
            out.append(Recipient(address, kind, None, "failed", "non-standard bounce"))
    return tuple(out)
