"""Email addresses: the one identity key (:func:`normalize_email`) and what an address needs.

Every module that compares, stores or looks up an address uses :func:`normalize_email`: the
subscribers file (duplicates), the state store (row keys), the suppression list, the web app,
bounce processing. Two spellings of one mailbox get one key:

* Unicode NFC (RFC 6531 §3.1, RFC 5198): ``jose\\u0301@x.org`` and ``josé@x.org`` are one;
* the domain in IDNA form (RFC 5890, UTS #46 mapping): ``ada@Bücher.de`` and
  ``ada@xn--bcher-kva.de`` are one, and the key is the ASCII (A-label) form, which is also what
  goes into the SMTP envelope and the ``To:`` header;
* lower case, local part included. RFC 5321 §2.4 lets a server treat local parts as case
  sensitive, but no mailbox provider does, and state files written before this module keyed
  rows by the lower-cased address: keeping that means an existing row is never missed (no
  duplicate edition after an upgrade).

A local part that is not ASCII (``josé@example.org``) can only be sent with the SMTPUTF8
extension (RFC 6531): :func:`needs_smtputf8`. An IDN domain alone does not need it, because
its A-label form is ASCII.

Display names and other free text bound for a header (a subscriber's name, a Subject made of
paper titles) pass :func:`display_name_problem` where they enter (the subscribers file, the web
forms, the settings) and :func:`header_text` where a header is built: an RFC 2047 encoded-word
(``=?utf-8?q?A=0D=0AReply-To:...?=``) is decoded by the email package when it parses a value,
so text that holds one could write line breaks, and so other header fields or the body, into a
signed message.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from email.headerregistry import Address, Group
from email.policy import SMTP

import idna

__all__ = [
    "CONTROL_RE",
    "ENCODED_WORD_OPENER",
    "ascii_domain",
    "display_name_problem",
    "header_text",
    "mailbox_problem",
    "needs_smtputf8",
    "normalize_email",
]

ENCODED_WORD_OPENER = "=?"
"""What starts an RFC 2047 encoded-word (``=?charset?q?text?=``): never taken from data."""
_NEUTRAL_OPENER = "=\u2060?"
""":data:`ENCODED_WORD_OPENER` with an invisible WORD JOINER (U+2060) between its characters:
shown the same, never decoded."""
_BIDI_CONTROLS = r"\u202a-\u202e\u2066-\u2069"
"""The bidirectional embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI,
PDI): they reorder the text around them as displayed ("Trojan Source", CVE-2021-42574)."""
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029" + _BIDI_CONTROLS + "]")
"""C0 and C1 controls (line breaks included), DEL, the Unicode line and paragraph separators,
and the bidirectional controls: what no header text may hold, before or after decoding."""
_BIDI_RE = re.compile("[" + _BIDI_CONTROLS + "]")
_LINE_OR_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def ascii_domain(domain: str) -> str:
    """``domain`` lower-cased, in IDNA A-label form: ``bücher.de`` → ``xn--bcher-kva.de``.

    Uses IDNA 2008 with the UTS #46 mapping (the ``idna`` package, as browsers and mail
    systems do). A trailing dot is dropped. A domain that IDNA refuses (e.g. contains ``_``
    or a disallowed code point) is returned NFC-normalized and lower-cased, unconverted: the
    key stays stable and the address validator reports the problem.
    """
    text = unicodedata.normalize("NFC", domain.strip()).rstrip(".")
    if text.isascii():
        return text.lower()
    try:
        return idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return text.lower()


def normalize_email(address: str) -> str:
    """The identity key of an email address.

    ``local@domain`` → NFC-normalized, lower-cased local part ``@`` :func:`ascii_domain`;
    surrounding whitespace removed. The split is at the last ``@`` (a quoted local part may
    contain one). Never raises: text without ``@`` comes back NFC-normalized and lower-cased.

    Examples:
        ``" Ada@Example.ORG "`` → ``"ada@example.org"``;
        ``"ada@Bücher.de"`` → ``"ada@xn--bcher-kva.de"``;
        ``"Jose\\u0301@example.org"`` → ``"josé@example.org"`` (one code point ``é``).

    Args:
        address: a bare address (``addr-spec``, no display name), as written by a person or
            taken from a message (DSN ``Final-Recipient``, a web form).

    Returns:
        The key under which the address is stored and compared.
    """
    if address.isascii():  # the common case, quickly: NFC and IDNA change nothing here
        text = address.strip()
        local, at, domain = text.rpartition("@")
        if not at:
            return text.lower()
        return f"{local.lower()}@{domain.strip().rstrip('.').lower()}"
    text = unicodedata.normalize("NFC", address.strip())
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    return f"{local.lower()}@{ascii_domain(domain)}"


def needs_smtputf8(address: str) -> bool:
    """True when ``address`` can only be sent with SMTPUTF8 (RFC 6531): a non-ASCII local part.

    Args:
        address: an address, normalized or not (its domain is converted to IDNA first).
    """
    return not normalize_email(address).isascii()


def display_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a display name (``To:``, ``From:``) or greeting, or ``None``.

    Refused: line breaks and other C0/C1 control characters (U+0000–U+001F, U+007F–U+009F,
    U+2028, U+2029); the bidirectional embeddings, overrides and isolates (U+202A–U+202E,
    U+2066–U+2069), which reorder what the greeting and the ``To:`` line show; and ``=?``,
    which opens an RFC 2047 encoded-word (RFC 2047 §5: a header parser decodes it, so
    ``=?utf-8?q?A=0D=0AReply-To:_x@evil.example?=`` becomes a line break and a header of the
    writer's choosing). A name in any script is fine as plain text.

    Args:
        name: the name as written (a subscribers-file value, a form field, the name part of
            DIGEST_FROM after RFC 2047 decoding).

    Returns:
        A message for the user (``must not contain ...``), or ``None`` when the name is fine.
    """
    if _LINE_OR_CONTROL_RE.search(name):
        return "must not contain line breaks or control characters"
    if _BIDI_RE.search(name):
        return (
            "must not contain bidirectional override characters (U+202A-U+202E, "
            "U+2066-U+2069); write the name as plain text"
        )
    if ENCODED_WORD_OPENER in name:
        return (
            "must not contain '=?' (it starts an RFC 2047 encoded-word); write the name as "
            "plain text, in any script"
        )
    return None


def header_text(value: str) -> str:
    """``value`` made safe as the text of a header field (a display name, a Subject).

    Runs of whitespace, line breaks included, become one space (and the ends are stripped);
    other control characters and the bidirectional controls are dropped; and each ``=?`` gets
    an invisible WORD JOINER (U+2060) between its two characters, so no parser decodes it as
    an RFC 2047 encoded-word: the reader sees the text as written. Text without any of these
    comes back whitespace-collapsed only (so the headers of ordinary values do not change).

    Args:
        value: the text, from data (a subscriber's name, paper titles).

    Returns:
        One line of text without control characters or ``=?``.
    """
    if CONTROL_RE.search(value):
        value = CONTROL_RE.sub(_control_to_text, value)
    text = " ".join(value.split())
    if ENCODED_WORD_OPENER in text:
        text = text.replace(ENCODED_WORD_OPENER, _NEUTRAL_OPENER)
    return text


def _control_to_text(match: re.Match[str]) -> str:
    """A whitespace control stays (it becomes a space with the rest); others are dropped."""
    return " " if match[0].isspace() else ""


def mailbox_problem(value: str) -> str | None:
    """Why ``value`` cannot be the value of a ``From:`` or ``Reply-To:`` field, or ``None``.

    It must be one mailbox (RFC 5322 §3.4: ``Daily Papers <papers@example.org>`` or a bare
    address), read as the email package reads it when the header is built: RFC 2047
    encoded-words in the name are decoded first, and the decoded name must pass
    :func:`display_name_problem`.

    Args:
        value: the setting's value (DIGEST_FROM, DIGEST_REPLY_TO).

    Returns:
        A message for the user, or ``None`` when the value is fine.
    """
    if _LINE_OR_CONTROL_RE.search(value):
        return "must not contain line breaks or control characters"
    groups: tuple[Group, ...] = ()
    # ValueError: e.g. a name that decodes to CR LF (the email package refuses it).
    with contextlib.suppress(ValueError, IndexError, AttributeError):
        groups = SMTP.header_factory("From", value).groups
    mailboxes: tuple[Address, ...] = ()
    if len(groups) == 1 and groups[0].display_name is None:
        mailboxes = groups[0].addresses
    if len(mailboxes) != 1 or not mailboxes[0].username or not mailboxes[0].domain:
        return (
            "must be one address with a plain-text name, e.g. 'Daily Papers <papers@example.org>'"
        )
    problem = display_name_problem(mailboxes[0].display_name)
    return f"its name {problem}" if problem else None
