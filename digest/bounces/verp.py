"""VERP: an envelope sender per message, ``bounces+<token>@domain``, so a bounce names its
delivery even when the bounce itself is mangled (no DSN, no original message).

The token is a :class:`~digest.tokens.Purpose.VERP` token of :mod:`digest.tokens` (lower-case
base32: mail systems may change a local part's case) whose subscriber reference names the
subscriber and whose data is the edition key in a compact form (``20260820``, ``2026W34``),
signed with DIGEST_SECRET_KEY. The local part stays within RFC 5321's 64 octets for an
envelope local part of up to 8 characters (``bounces``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from digest.errors import TokenError
from digest.tokens import Purpose, TokenSigner

VERP_SEPARATOR = "+"
"""Between the envelope local part and the token (``bounces+TOKEN@domain``)."""


@dataclass(frozen=True, slots=True)
class VerpMatch:
    """What a VERP address says.

    Attributes:
        subscriber: the normalized address of the subscriber it was made for.
        edition: the edition key (``YYYY-MM-DD`` or ``YYYY-Www``).
    """

    subscriber: str
    edition: str


def _compact(edition: str) -> str:
    return edition.replace("-", "")


def _expand(data: str) -> str:
    if "W" in data:  # 2026W34 → 2026-W34
        return f"{data[:4]}-{data[4:]}"
    return f"{data[:4]}-{data[4:6]}-{data[6:]}"


def verp_address(envelope_from: str, signer: TokenSigner, subscriber: str, edition: str) -> str:
    """The VERP envelope sender for one delivery: ``local+TOKEN@domain``.

    Args:
        envelope_from: the plain envelope sender (``bounces@papers.example.org``).
        signer: the token signer (DIGEST_SECRET_KEY).
        subscriber: the recipient.
        edition: the edition key.

    Raises:
        ValueError: ``envelope_from`` has no ``@``.
    """
    local, at, domain = envelope_from.rpartition("@")
    if not at or not local:
        raise ValueError(f"envelope sender {envelope_from!r} is not an address")
    token = signer.make(Purpose.VERP, subscriber, data=_compact(edition))
    return f"{local}{VERP_SEPARATOR}{token}@{domain}"


def parse_verp(
    address: str,
    envelope_from: str,
    signer: TokenSigner,
    known: Iterable[str],
    *,
    now: datetime,
) -> VerpMatch | None:
    """The delivery a bounce address names, or ``None`` if it is no valid VERP address of ours.

    Args:
        address: an address the bounce was delivered to (``Delivered-To``, ``To``...).
        envelope_from: the plain envelope sender the VERP addresses were made from.
        signer: the token signer.
        known: candidate subscriber addresses (the token carries only a reference).
        now: the current time (aware), for the token check.
    """
    base_local, _, base_domain = envelope_from.lower().rpartition("@")
    local, _, domain = address.lower().rpartition("@")
    prefix = base_local + VERP_SEPARATOR
    if domain != base_domain or not local.startswith(prefix):
        return None
    try:
        claims = signer.verify(Purpose.VERP, local[len(prefix) :], now=now)
    except TokenError:
        return None
    subscriber = signer.index(known).lookup(claims)
    if subscriber is None:
        return None
    return VerpMatch(subscriber=subscriber, edition=_expand(claims.data))
