"""Assemble a rendered digest into the exact bytes handed to the transport.

What :func:`build_message` produces (``\\r\\n`` line endings throughout)::

    DKIM-Signature: ...                  (RFC 6376, only when DKIM is configured)
    From / To / Subject / Date / Message-ID      (RFC 5322)
    Reply-To                             (when DIGEST_REPLY_TO is set)
    List-Id: Daily Papers <papers.example.org>   (RFC 2919)
    List-Unsubscribe: <https://...token...>, <mailto:...?subject=unsubscribe>  (RFC 2369)
    List-Unsubscribe-Post: List-Unsubscribe=One-Click   (RFC 8058, only with an HTTPS URL)
    Auto-Submitted: auto-generated       (RFC 3834)
    MIME-Version: 1.0
    Content-Type: multipart/alternative  (RFC 2046 §5.1.4: text/plain first, text/html last)

Header safety: every header is built from values we chose or checked. Free text from data (the
subscriber's name, the Subject made of paper titles) goes through
:func:`~digest.addresses.header_text` (no line breaks or controls, no RFC 2047 encoded-word
opener ``=?``, which the email package would decode into raw line breaks); each field the email
package folds is checked once more after decoding; and the whole header block is checked
against the list of fields built (:func:`check_head`) before it is signed: a value that would
add a field, a line or the body raises :class:`~digest.errors.HeaderError` instead.

Header folding: an ASCII header value is never folded below the RFC 5322 hard limit of 998
characters (Python's folding at 78 turns a long unbreakable token, such as the unsubscribe URL,
into RFC 2047 encoded-words, which List-Unsubscribe parsers do not decode). A non-ASCII value
(every Subject carries "·", display names) is folded at 78 so that each RFC 2047
encoded-word stays within 75 characters. The delivery layer must send these bytes as they are
(``sendmail``), not re-serialize them (``send_message`` re-folds).

Both parts are UTF-8, quoted-printable (RFC 2045 §6.7): the text stays readable in the raw
message and the mostly-ASCII HTML grows by ~5 % instead of base64's 33 %.

Unsubscribe links carry a :mod:`digest.tokens` token (purpose ``unsubscribe``): signed with
DIGEST_SECRET_KEY and without the address.
"""

from __future__ import annotations

import binascii
import functools
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.header import decode_header
from email.headerregistry import Address
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import quote

from digest.addresses import CONTROL_RE, header_text
from digest.errors import ConfigError, HeaderError
from digest.render import RenderedEmail, mailto_url
from digest.settings import Settings
from digest.tokens import Purpose, TokenSigner

log = logging.getLogger(__name__)

#: RFC 5322 §2.1.1: recommended line length (encoded-words fold at this).
FOLD_LINE_LENGTH = 78
#: RFC 5322 §2.1.1: hard line length limit; ASCII headers are never folded below it.
MAX_LINE_LENGTH = 998
CHARSET = "utf-8"
TRANSFER_ENCODING = "quoted-printable"
#: Domain used in Message-ID and List-Id when DIGEST_FROM has none.
FALLBACK_DOMAIN = "localhost"
#: Label used in List-Id when the sender's local part has no usable characters.
FALLBACK_LIST_LABEL = "digest"
#: Random bytes in a Message-ID (96 bits: collisions are not a concern).
MESSAGE_ID_RANDOM_BYTES = 12
ONE_CLICK = "List-Unsubscribe=One-Click"
AUTO_SUBMITTED = "auto-generated"
#: Asks Exchange/Outlook not to send out-of-office and other auto-replies.
AUTO_RESPONSE_SUPPRESS = "OOF, AutoReply"

#: Headers covered by the DKIM signature (RFC 6376 §5.4; RFC 8058 §4 requires both
#: List-Unsubscribe headers to be signed). Only those present in the message are listed.
DKIM_SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
)
DKIM_CANONICALIZATION = (b"relaxed", b"relaxed")


class _HeaderPolicy(EmailPolicy):
    """SMTP policy (CRLF) that folds only non-ASCII header values, at 78 characters.

    ASCII values are serialized by ``SMTP.clone(max_line_length=998)``: unfolded up to the
    hard limit, never turned into encoded-words. Non-ASCII values need RFC 2047 encoded-words
    and are folded at 78 so that each encoded-word stays within 75 characters (RFC 2047 §2).
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        if str(value).isascii():
            return _UNFOLDED.fold_binary(name, value)
        return super().fold_binary(name, value)


_UNFOLDED = SMTP.clone(max_line_length=MAX_LINE_LENGTH)
POLICY = _HeaderPolicy(linesep="\r\n", max_line_length=FOLD_LINE_LENGTH)
UTF8_POLICY = POLICY.clone(utf8=True)
"""For the ``To:`` of an address with a non-ASCII local part: UTF-8 as is (RFC 6532 §3.2)."""

#: Distinct (name, value) pairs of the per-run constant headers whose folded bytes are kept.
_HEADER_CACHE_SIZE = 256


def _header(name: str, value: object) -> bytes:
    """One header, folded, CRLF-terminated bytes.

    Parsed and validated as ``EmailMessage(policy=POLICY)[name] = value`` does, folded as
    ``email.generator`` would with :data:`POLICY`, then checked (:func:`_check_field`): the
    parser decodes RFC 2047 encoded-words in the value and the folder writes what they
    decode to, line breaks included (Python 3.11 does not check its output).

    Raises:
        ValueError: the value contains a line break.
        HeaderError: the folded field is not one field, or decodes to control characters.
    """
    return _check_field(name, POLICY.fold_binary(*POLICY.header_store_parse(name, value)))


_FIELD_NAME_BYTES: dict[str, bytes] = {}
"""``"To"`` → ``b"To:"``: the start of each field's first line."""


def _field_start(name: str) -> bytes:
    start = _FIELD_NAME_BYTES.get(name)
    if start is None:
        start = _FIELD_NAME_BYTES[name] = f"{name}:".encode("ascii")
    return start


def check_head(message: bytes, names: Sequence[str]) -> None:
    """Check that ``message``'s header block is exactly the fields ``names``, in order.

    Each line of the block (up to the first empty line, RFC 5322 §2.1) must either start the
    next expected field (``Name:``) or continue the current one (a folded line: starts with a
    space or tab and holds more than white space); no bare CR or LF, no line longer than 998
    characters (RFC 5322 §2.1.1). A value that decoded to a line break would have added a
    field (``Reply-To:``) or ended the block early (writing the body): both fail here.

    Args:
        message: the whole message, CRLF line ends (the header block, an empty line, the body).
        names: the field names built, in order (``["From", "To", "Subject", ...]``).

    Raises:
        HeaderError: naming the last expected field before the problem (never the data).
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise HeaderError("message not built: no empty line ends its header fields")
    if _block_pattern(tuple(names)).fullmatch(message, 0, end + 2) is None:
        _check_fields(message[: end + 2], names)  # says what is wrong
        raise HeaderError(_where(names, 0, "is not the one built"))


_CONTINUATION = rb"(?:(?=[ \t]*[^\r\n \t])[ \t][^\r\n]{0,%d}\r\n)*" % (MAX_LINE_LENGTH - 1)
"""Folded lines of a field: white space, then something else; at most
:data:`MAX_LINE_LENGTH` characters, then CRLF."""


@functools.lru_cache(maxsize=16)
def _block_pattern(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """The header block of exactly ``names`` (:func:`check_head`'s rules) as one regex:
    ~3 µs a message, where the line-by-line check takes ~15."""
    fields = (
        re.escape(_field_start(name))
        + rb"[^\r\n]{0,%d}\r\n" % (MAX_LINE_LENGTH - len(name) - 1)
        + _CONTINUATION
        for name in names
    )
    return re.compile(b"".join(fields))


def _check_fields(block: bytes, names: Sequence[str]) -> None:
    """:func:`check_head` on ``block`` (the field lines, each CRLF-terminated), line by line:
    raises naming the problem and the last good field."""
    found = 0
    lines = block.split(b"\r\n")
    if lines.pop() != b"":
        raise HeaderError(_where(names, found, "does not end with CRLF"))
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise HeaderError(_where(names, found, "holds a bare CR or LF"))
        if len(line) > MAX_LINE_LENGTH:
            raise HeaderError(_where(names, found, f"has a line over {MAX_LINE_LENGTH} characters"))
        if line[:1] in b" \t" and line:
            if not found or not line.strip(b" \t"):
                raise HeaderError(_where(names, found, "has a line of only white space"))
            continue
        if found == len(names) or not line.startswith(_field_start(names[found])):
            raise HeaderError(_where(names, found, "is followed by a field that was not built"))
        found += 1
    if found != len(names):
        raise HeaderError(_where(names, found, f"ends the header block before {names[found]}:"))


def _where(names: Sequence[str], found: int, what: str) -> str:
    field = f"the {names[found - 1]}: field" if found else "the header block"
    return (
        f"message not built: {field} {what} (a value would have changed the header block); "
        "nothing was sent"
    )


def _check_field(name: str, field: bytes) -> bytes:
    """``field`` (one folded ``name`` field, CRLF-terminated) when it is one field whose value,
    unfolded and RFC 2047-decoded as a mail program would show it, has no control characters.

    Raises:
        HeaderError: it is not, naming the field.
    """
    _check_fields(field, (name,))
    value = field[len(name) + 1 :].decode("utf-8", "replace").replace("\r\n", "")
    if CONTROL_RE.search(_decoded(value).replace("\t", " ")):
        raise HeaderError(
            f"message not built: the {name}: field would show control characters or line "
            "breaks once decoded; nothing was sent"
        )
    return field


def _decoded(value: str) -> str:
    """``value`` with its RFC 2047 encoded-words decoded (unknown charsets: as UTF-8)."""
    out = []
    for part, charset in decode_header(value):
        if isinstance(part, str):
            out.append(part)
            continue
        try:
            out.append(part.decode(charset or "ascii", "replace"))
        except LookupError:
            out.append(part.decode("utf-8", "replace"))
    return "".join(out)


_PLAIN_VALUE_RE = re.compile(r"[!-~]+(?: [!-~]+)*")
"""Printable ASCII words separated by single spaces: a value the email package writes as is."""
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_NAME_RE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
"""A display name of RFC 5322 atext words: written unquoted, as is."""
_PLAIN_ADDRESS_RE = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
"""A dot-atom address at an ASCII host name: written as is."""
_SUBJECT_CACHE_SIZE = 4096
"""Distinct folded Subject headers kept (a subject is the top paper and a count: it recurs)."""


def _plain_header(name: str, value: str) -> bytes | None:
    """``name: value`` CRLF when :func:`_header` would write exactly that, else ``None``.

    It does for a value of printable ASCII words separated by single spaces that fits on one
    line of :data:`MAX_LINE_LENGTH` and holds no encoded-word opener (``=?``): the parser keeps
    such a value as it is and the ASCII policy never folds it. ``tests/test_message.py``
    compares both paths on hostile values. Skipping the parser saves ~0.1 ms a header.
    """
    if (
        len(name) + 2 + len(value) > MAX_LINE_LENGTH
        or "=?" in value
        or not _PLAIN_VALUE_RE.fullmatch(value)
    ):
        return None
    return f"{name}: {value}\r\n".encode("ascii")


def _direct_header(name: str, value: str) -> bytes:
    """:func:`_plain_header` when it applies, else :func:`_header` (same bytes either way)."""
    return _plain_header(name, value) or _header(name, value)


@functools.lru_cache(maxsize=_SUBJECT_CACHE_SIZE)
def _subject_header(subject: str) -> bytes:
    """The folded Subject of ``subject`` as rendered (from paper titles: data) made
    :func:`~digest.addresses.header_text` (non-ASCII subjects need RFC 2047 folding: done once
    per value)."""
    return _direct_header("Subject", header_text(subject))


@functools.lru_cache(maxsize=4)
def _date_header(date: datetime, offset: timedelta | None) -> bytes:
    """The ``Date:`` header (RFC 5322 §3.3, whole seconds, in ``date``'s own zone): the same
    for every message made within one second, so formatted once per second, not per message.
    ``offset`` is part of the key because equal instants in two zones compare equal."""
    return _direct_header("Date", format_datetime(date))


def to_header(to_email: str, to_name: str | None) -> bytes:
    """The ``To:`` header of one recipient, folded, CRLF-terminated bytes.

    An ASCII address (an IDN domain is ASCII once normalized: ``ada@xn--bcher-kva.de``, see
    :func:`~digest.addresses.normalize_email`) gets an ASCII header, the display name as an
    RFC 2047 encoded-word when it is not ASCII. An address with a non-ASCII local part
    (``josé@example.org``) can only travel in an SMTPUTF8 transaction (RFC 6531), whose
    headers are UTF-8 (RFC 6532): the address and the name are written as UTF-8, since an
    encoded-word is not allowed inside an address.

    The name is :func:`~digest.addresses.header_text` of ``to_name``: one line, no control
    characters, and no ``=?`` that a parser would decode (the subscribers file and the web
    forms refuse such names already: :func:`~digest.addresses.display_name_problem`).

    Raises:
        ValueError: the address contains a line break or cannot be written.
        HeaderError: the field would not be one field of plain text.
    """
    name = header_text(to_name) if to_name else ""
    if _PLAIN_ADDRESS_RE.fullmatch(to_email) and (not name or _PLAIN_NAME_RE.fullmatch(name)):
        # What the email package writes for these (tested byte for byte), without its parser.
        value = f"{name} <{to_email}>" if name else to_email
        direct = _plain_header("To", value)
        if direct is not None:
            return direct
    if to_email.isascii():
        return _header("To", Address(display_name=name, addr_spec=to_email))
    local, _, domain = to_email.rpartition("@")
    to = Address(display_name=name, username=local, domain=domain)
    return _check_field("To", UTF8_POLICY.fold_binary(*UTF8_POLICY.header_store_parse("To", to)))


@functools.lru_cache(maxsize=_HEADER_CACHE_SIZE)
def _constant_header(name: str, value: str) -> bytes:
    """:func:`_header`, computed once per distinct value.

    The email package's header parser costs ~0.1 ms a header, and From, List-Id, Reply-To,
    Auto-Submitted... are the same in every message of a run.
    """
    return _header(name, value)


# --- addresses and ids ----------------------------------------------------------------------


def sender_domain(settings: Settings) -> str:
    """The domain of DIGEST_FROM's address, lower-cased (``localhost`` if it has none)."""
    return _sender_domain(settings.sender)


@functools.lru_cache(maxsize=16)
def _sender_domain(sender: str) -> str:
    # parseaddr costs ~0.1 ms; the sender is the same for every message of a run.
    addr = parseaddr(sender)[1]
    domain = addr.rpartition("@")[2].strip().lower() if "@" in addr else ""
    return domain or FALLBACK_DOMAIN


def make_message_id(settings: Settings, subscriber_email: str, edition_key: str) -> str:
    """A new, unique Message-ID for one (subscriber, edition) message.

    Args:
        settings: the sender's domain (DIGEST_FROM) becomes the id's right-hand side.
        subscriber_email: the recipient; deliberately not part of the id (no address leaks
            into References headers of replies or forwards).
        edition_key: ``2025-05-29`` / ``2025-W22``; makes ids readable in logs.

    Returns:
        ``<EDITION.RANDOM@DOMAIN>`` (RFC 5322 §3.6.4), RANDOM 96 random bits in hex. Unique
        per call, so a resend gets a new id.
    """
    del subscriber_email  # part of the contract; ids are random, not derived from it
    label = re.sub(r"[^A-Za-z0-9-]+", "-", edition_key).strip("-") or "digest"
    return f"<{label}.{secrets.token_hex(MESSAGE_ID_RANDOM_BYTES)}@{sender_domain(settings)}>"


def list_id(settings: Settings) -> str:
    """The List-Id (RFC 2919): ``Daily Papers <papers.example.org>`` for DIGEST_FROM
    ``Daily Papers <papers@example.org>``."""
    return _list_id(settings.sender)


@functools.lru_cache(maxsize=16)
def _list_id(sender: str) -> str:
    name, addr = parseaddr(sender)
    local = addr.rpartition("@")[0] if "@" in addr else addr
    label = re.sub(r"[^A-Za-z0-9-]+", "-", local).strip("-") or FALLBACK_LIST_LABEL
    ident = f"<{label}.{_sender_domain(sender)}>"
    name = " ".join(name.split())
    if not name:
        return ident
    if re.search(r'[()<>@,;:\\".\[\]]', name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} {ident}"


# --- unsubscribe links -----------------------------------------------------------------------


def unsubscribe_url_for(settings: Settings, email: str) -> str | None:
    """The subscriber's HTTPS unsubscribe URL (List-Unsubscribe, RFC 8058 one-click).

    DIGEST_UNSUBSCRIBE_URL, when set, is a template: ``{token}`` becomes the subscriber's
    :attr:`~digest.tokens.Purpose.UNSUBSCRIBE` token (:mod:`digest.tokens`: signed, without
    the address) and ``{email}`` the percent-encoded address (which then shows in proxy logs;
    prefer ``{token}``). Otherwise, with DIGEST_PUBLIC_URL, it is the app's
    ``{DIGEST_PUBLIC_URL}/u/{token}`` (:mod:`digest.web`).

    Args:
        settings: DIGEST_UNSUBSCRIBE_URL / DIGEST_PUBLIC_URL and DIGEST_SECRET_KEY.
        email: the subscriber's address.

    Returns:
        The URL, or ``None`` when neither setting is configured.

    Raises:
        ConfigError: a token is needed but DIGEST_SECRET_KEY is not set.
    """
    global _unsubscribe_memo
    key = (settings.unsubscribe_url, settings.public_url, settings.secret_key, email)
    memo_key, memo_url = _unsubscribe_memo
    if all(a is b for a, b in zip(memo_key, key, strict=True)):
        return memo_url  # the same message asks twice: its body (render), its header (build)
    url = _unsubscribe_url(settings, email)
    _unsubscribe_memo = (key, url)
    return url


_unsubscribe_memo: tuple[tuple[object, ...], str | None] = ((object(),) * 4, None)
"""The last ``((unsubscribe_url, public_url, secret_key, email), url)`` of
:func:`unsubscribe_url_for`, compared by identity (at first, a key nothing matches): a
message's body and its List-Unsubscribe header carry the same URL, signed once (two HMACs and a
quote, not four and two)."""


def _unsubscribe_url(settings: Settings, email: str) -> str | None:
    url = settings.unsubscribe_url
    if not url:
        if not settings.public_url:
            return None
        url = settings.public_url + "/u/{token}"
    if "{token}" in url:
        if settings.secret_key is None:
            raise ConfigError(
                "DIGEST_SECRET_KEY: required when DIGEST_UNSUBSCRIBE_URL uses {token} "
                "or DIGEST_PUBLIC_URL is set"
            )
        token = TokenSigner.from_settings(settings).make(Purpose.UNSUBSCRIBE, email)
        url = url.replace("{token}", token)
    return url.replace("{email}", quote(email.strip().lower(), safe=""))


FEEDBACK_VERDICTS = ("like", "dislike")
"""What a 👍 (``like``) or 👎 (``dislike``) link records."""


def feedback_urls_for(
    settings: Settings, email: str, arxiv_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """The 👍/👎 links of each paper card: ``{arxiv_id: (like_url, dislike_url)}``.

    With DIGEST_PUBLIC_URL and DIGEST_SECRET_KEY: ``{DIGEST_PUBLIC_URL}/f/{token}``, the
    token of purpose :attr:`~digest.tokens.Purpose.FEEDBACK` carrying ``"like 2406.09246"``
    (served by ``digest serve``: a GET shows a button, only the POST records). Otherwise a
    ``mailto:`` to the Reply-To (or From) address with the verdict in the subject: it reaches
    the operator's inbox but is not recorded automatically.

    Returns:
        One pair per id; empty when there is neither a web app nor an address to write to.
    """
    if settings.public_url and settings.secret_key is not None:
        signer = TokenSigner.from_settings(settings)
        base = f"{settings.public_url}/f/"
        return {
            pid: (
                base + signer.make(Purpose.FEEDBACK, email, data=f"like {pid}"),
                base + signer.make(Purpose.FEEDBACK, email, data=f"dislike {pid}"),
            )
            for pid in arxiv_ids
        }
    address = _bare_address(settings.reply_to or settings.sender)
    if not address:
        return {}
    return {pid: _mailto_feedback(address, pid) for pid in arxiv_ids}


@functools.lru_cache(maxsize=16)
def _bare_address(value: str) -> str:
    """The addr-spec of a From or Reply-To value (``parseaddr``), ``""`` if none."""
    return parseaddr(value)[1]


@functools.lru_cache(maxsize=4096)
def _mailto_feedback(address: str, arxiv_id: str) -> tuple[str, str]:
    """The 👍/👎 ``mailto:`` pair of one paper: the same in every message."""
    return (
        f"mailto:{address}?subject={quote(f'like {arxiv_id}')}",
        f"mailto:{address}?subject={quote(f'dislike {arxiv_id}')}",
    )


def preferences_url_for(settings: Settings, email: str) -> str | None:
    """``{DIGEST_PUBLIC_URL}/preferences/{token}`` (purpose ``preferences``), or ``None``
    without DIGEST_PUBLIC_URL or DIGEST_SECRET_KEY."""
    if not settings.public_url or settings.secret_key is None:
        return None
    token = TokenSigner.from_settings(settings).make(Purpose.PREFERENCES, email)
    return f"{settings.public_url}/preferences/{token}"


def archive_url_for(settings: Settings, edition_key: str) -> str | None:
    """``{DIGEST_PUBLIC_URL}/archive/{edition_key}`` (the unpersonalized edition), or ``None``."""
    if not settings.public_url:
        return None
    return f"{settings.public_url}/archive/{quote(edition_key, safe='')}"


def unsubscribe_mailto_for(settings: Settings) -> str | None:
    """``mailto:ADDR?subject=unsubscribe`` from DIGEST_UNSUBSCRIBE_MAILTO, or ``None``."""
    return mailto_url(settings.unsubscribe_mailto)


def list_unsubscribe(settings: Settings, email: str) -> tuple[str | None, bool]:
    """The List-Unsubscribe value (RFC 2369) and whether it allows one-click (RFC 8058).

    Returns:
        ``("<https://...>, <mailto:...>", True)``, ``("<mailto:...>", False)`` or
        ``(None, False)`` when neither DIGEST_UNSUBSCRIBE_URL nor _MAILTO is set.
    """
    url = unsubscribe_url_for(settings, email)
    mailto = unsubscribe_mailto_for(settings)
    links = [f"<{u}>" for u in (url, mailto) if u]
    one_click = bool(url and url.startswith("https://"))
    return (", ".join(links) if links else None), one_click


# --- the message ----------------------------------------------------------------------------


def _quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable (RFC 2045 §6.7), CRLF line breaks, lines ≤ 76 chars.

    ``binascii.b2a_qp`` encodes each line on its own (its soft breaks and trailing-space
    rules restart at every line break), so the encoding is done line by line and cached
    per line: most lines of a digest (head, styles, paper blocks) recur in every message.
    The bytes are those of one ``b2a_qp`` call over the whole text (tested).
    """
    return b"".join(map(_qp_line, text.splitlines() or [""]))


_QP_LINE_CACHE_SIZE = 8192
"""Distinct encoded lines kept (~400 bytes each with the key): the head and styles, and the
lines of the papers most sent."""


@functools.lru_cache(maxsize=_QP_LINE_CACHE_SIZE)
def _qp_line(line: str) -> bytes:
    data = line.encode(CHARSET) + b"\n"
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


def _multipart_body(boundary: str, parts: list[tuple[str, str]]) -> bytes:
    """The body of a ``multipart/alternative`` message (RFC 2046 §5.1), CRLF line endings.

    Assembled directly rather than through :mod:`email.generator`, which writes the body
    line by line (≈3 ms per ten-paper digest; this takes ≈0.2 ms).

    Args:
        boundary: the boundary; must not occur in any encoded part ("=_..." cannot occur in
            quoted-printable).
        parts: ``(subtype, content)`` pairs, least to most preferred (text/plain first).
    """
    # Each delimiter is preceded by a CRLF that belongs to it, not to the part (RFC 2046
    # §5.1.1): the parts end with CRLF, so a blank line precedes every delimiter.
    out = [b"This is a multi-part message in MIME format.\r\n"]
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    for subtype, content in parts:
        out.append(delimiter)
        out.append(f'Content-Type: text/{subtype}; charset="{CHARSET}"\r\n'.encode("ascii"))
        out.append(f"Content-Transfer-Encoding: {TRANSFER_ENCODING}\r\n\r\n".encode("ascii"))
        out.append(_quoted_printable(content))
    out.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def build_message(
    rendered: RenderedEmail,
    *,
    settings: Settings,
    to_email: str,
    to_name: str | None,
    message_id: str,
    date: datetime,
) -> bytes:
    """The complete RFC 5322 message for one recipient, ready for SMTP ``DATA``.

    Args:
        rendered: subject, HTML and text from :meth:`digest.render.Renderer.render`.
        settings: DIGEST_FROM, _REPLY_TO, _UNSUBSCRIBE_URL/_MAILTO, _SECRET_KEY, DKIM.
        to_email: the recipient's address.
        to_name: the recipient's display name, if any (may be non-ASCII).
        message_id: from :func:`make_message_id`, ``<...@domain>``.
        date: the Date header; must be timezone-aware (any zone).

    Returns:
        The message, every line end CRLF (no bare CR or LF, whatever the text holds:
        ``OutgoingMessage.crlf`` relies on it), DKIM-signed when DKIM is configured. Send it
        as is (``sendmail``): re-serializing it would re-fold the headers.

    Raises:
        ValueError: ``date`` is naive, or a header value contains a line break.
        HeaderError: the header block would not be the fields built (:func:`check_head`):
            a value would have added a field or a line; this message only.
        ConfigError: unsubscribe URL needs the missing secret key; the DKIM key cannot be
            read or used.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("build_message: date must be timezone-aware")
    # Values equal in every message of a run (From, List-Id...) come folded from a cache.
    # The body is assembled directly (see _multipart_body).
    names: tuple[str, ...] = _NAMES_BEFORE_REPLY_TO
    head = [
        _constant_header("From", settings.sender),
        to_header(to_email, to_name),
        _subject_header(rendered.subject),
        _date_header(date.replace(microsecond=0), date.utcoffset()),
        _direct_header("Message-ID", message_id),
    ]
    if settings.reply_to:
        names += ("Reply-To",)
        head.append(_constant_header("Reply-To", settings.reply_to))
    names += ("List-Id",)
    head.append(_constant_header("List-Id", list_id(settings)))
    unsubscribe, one_click = list_unsubscribe(settings, to_email)
    if unsubscribe:
        names += ("List-Unsubscribe",)
        head.append(_direct_header("List-Unsubscribe", unsubscribe))
        if one_click:
            names += ("List-Unsubscribe-Post",)
            head.append(_constant_header("List-Unsubscribe-Post", ONE_CLICK))
    head.append(_constant_header("Auto-Submitted", AUTO_SUBMITTED))
    head.append(_constant_header("X-Auto-Response-Suppress", AUTO_RESPONSE_SUPPRESS))
    head.append(_constant_header("MIME-Version", "1.0"))
    # "=_" never occurs in quoted-printable output, so the boundary cannot clash with a body.
    boundary = f"=_{secrets.token_hex(16)}"
    head.append(_direct_header("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    names += _NAMES_AFTER_LIST
    body = _multipart_body(boundary, [("plain", rendered.text), ("html", rendered.html)])
    data = b"".join(head) + b"\r\n" + body
    check_head(data, names)  # before signing: never sign a header block we did not mean
    if settings.dkim_enabled:
        data = dkim_sign(data, settings)
    return data


_NAMES_BEFORE_REPLY_TO = ("From", "To", "Subject", "Date", "Message-ID")
_NAMES_AFTER_LIST = ("Auto-Submitted", "X-Auto-Response-Suppress", "MIME-Version", "Content-Type")
"""The fields :func:`build_message` writes (with Reply-To, List-Id, List-Unsubscribe and
List-Unsubscribe-Post between them, as configured), in order."""


def dkim_sign(data: bytes, settings: Settings) -> bytes:
    """``data`` with a DKIM-Signature header (RFC 6376, rsa-sha256, relaxed/relaxed) prepended.

    Signs the headers of :data:`DKIM_SIGNED_HEADERS` present in ``data``. The key is read
    from DIGEST_DKIM_PRIVATE_KEY_PATH on every call (so a rotated key is picked up) and never
    logged.

    Raises:
        ConfigError: DKIM is not fully configured, or the key cannot be read or used.
    """
    selector, domain, key_path = (
        settings.dkim_selector,
        settings.dkim_domain,
        settings.dkim_private_key_path,
    )
    if not (selector and domain and key_path):
        raise ConfigError(
            "DKIM needs all of DIGEST_DKIM_SELECTOR, DIGEST_DKIM_DOMAIN and "
            "DIGEST_DKIM_PRIVATE_KEY_PATH"
        )
    import dkim  # dkimpy and dnspython (~5 MB): only where DKIM is configured

    key = _read_key(key_path)
    names = _header_names(data)
    present = [h.encode("ascii") for h in DKIM_SIGNED_HEADERS if h.lower() in names]
    try:
        signature: bytes = dkim.sign(
            data,
            selector.encode("ascii"),
            domain.encode("ascii"),
            key,
            canonicalize=DKIM_CANONICALIZATION,
            include_headers=present,
            linesep=b"\r\n",
        )
    except (dkim.DKIMException, ValueError) as e:
        # The exception text is not shown: a parser error could quote part of the key.
        raise ConfigError(
            f"DIGEST_DKIM_PRIVATE_KEY_PATH: DKIM signing with {key_path} failed "
            f"({type(e).__name__}); is it a PEM RSA private key?"
        ) from None
    return signature + data


def _header_names(data: bytes) -> set[str]:
    """Lower-cased names of the header fields of a CRLF message."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return {
        line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t") and b":" in line
    }


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"DIGEST_DKIM_PRIVATE_KEY_PATH: cannot read {path}: {e.strerror or e}"
        ) from None
