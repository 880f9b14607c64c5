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
"""

from __future__ import annotations

import unicodedata

import idna

__all__ = ["ascii_domain", "needs_smtputf8", "normalize_email"]


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
