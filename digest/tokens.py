"""Signed, purpose-scoped tokens for the links in an email and the web app.

One scheme for every link that acts for a subscriber: unsubscribe (RFC 8058 one-click and the
GET page), manage preferences, confirm a sign-up (double opt-in), the archive, 👍/👎 feedback
and VERP bounce addresses. A token never contains the address: it carries an opaque
*subscriber reference*, ``HMAC-SHA256(key, "digest/ref/v1" ‖ normalized address)`` cut to
:data:`REF_BYTES` bytes, which the receiver resolves by computing the references of the
addresses it knows (the subscribers file, pending sign-ups; :class:`SubscriberIndex`).

Wire format (before encoding)::

    version (1 byte, = 1) ‖ ref (9 bytes) ‖ expires (4 bytes, big-endian Unix seconds UTC,
    0 = never) ‖ data (0..MAX_DATA_BYTES bytes of UTF-8, e.g. an arXiv id) ‖ MAC (12 bytes)

    MAC = HMAC-SHA256(key, "digest/token/v1" ‖ 0x00 ‖ purpose ‖ 0x00 ‖ everything before it)
          cut to MAC_BYTES bytes

The purpose is part of the MAC input, not of the token: a token made for one purpose fails the
check for every other. Encoding is URL-safe base64 without padding (RFC 4648 §5; 35 characters
without data), except for :attr:`Purpose.VERP`, which is lower-case base32 without padding
(42 characters) because mail systems may change the case of a local part. Only the canonical
encoding is accepted, so each token has one spelling (the unused bits of its last character
are zero).

Keys: DIGEST_SECRET_KEY signs; DIGEST_SECRET_KEY_PREVIOUS, when set, is still accepted, so a key
can be rotated without breaking the links in mail already sent (set the old key as previous,
a new one as current; drop the previous one once old mail no longer matters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import SecretStr

from digest.addresses import normalize_email
from digest.errors import ConfigError, TokenError

VERSION = 1
REF_BYTES = 9
"""Subscriber reference length: 72 bits, so two addresses of a list of a million collide with
probability ~1e-10."""
MAC_BYTES = 12
"""Truncated HMAC-SHA256 (96 bits, RFC 2104 §5 allows truncation to ≥ 80 bits)."""
MAX_DATA_BYTES = 64
"""Longest payload ``data`` (bytes of UTF-8)."""
MAX_TOKEN_CHARS = 256
"""Longer input is rejected before decoding."""
CONFIRM_TTL = timedelta(hours=48)
"""How long a sign-up confirmation link works."""
_HEAD = struct.Struct(">B9sI")
_REF_CONTEXT = b"digest/ref/v1\x00"
_MAC_CONTEXT = b"digest/token/v1\x00"
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class Purpose(StrEnum):
    """What a token may be used for; part of its signature."""

    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"
    ARCHIVE = "archive"
    FEEDBACK = "feedback"
    VERP = "verp"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says.

    Attributes:
        purpose: the purpose it was checked for.
        ref: the subscriber reference (hex), under the key that signed it.
        key_index: 0 = signed with DIGEST_SECRET_KEY, 1 = with DIGEST_SECRET_KEY_PREVIOUS.
        expires: when it stops working (UTC), or ``None`` for never.
        data: the payload given to :meth:`TokenSigner.make` (``""`` if none).
    """

    purpose: Purpose
    ref: str
    key_index: int
    expires: datetime | None
    data: str


def normalize_address(address: str) -> str:
    """The identity form of an address used for references
    (:func:`digest.addresses.normalize_email`: NFC, lower case, IDNA domain)."""
    return normalize_email(address)


def _key(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode("utf-8") if isinstance(secret, str) else secret


class TokenSigner:
    """Makes and checks tokens with the current key, accepting the previous one too.

    Args:
        secret: DIGEST_SECRET_KEY.
        previous: DIGEST_SECRET_KEY_PREVIOUS, or ``None``.

    Raises:
        ConfigError: ``secret`` is empty.
    """

    def __init__(
        self, secret: SecretStr | str | bytes, previous: SecretStr | str | bytes | None = None
    ) -> None:
        keys = [_key(secret)]
        if previous is not None and _key(previous):
            keys.append(_key(previous))
        if not keys[0]:
            raise ConfigError("DIGEST_SECRET_KEY: must not be empty")
        self._keys = tuple(keys)

    @classmethod
    def from_settings(cls, settings: object) -> TokenSigner:
        """The signer of DIGEST_SECRET_KEY (+ DIGEST_SECRET_KEY_PREVIOUS).

        Raises:
            ConfigError: DIGEST_SECRET_KEY is not set.
        """
        secret = getattr(settings, "secret_key", None)
        if secret is None:
            raise ConfigError(
                "DIGEST_SECRET_KEY: required for unsubscribe, preferences and sign-up links; "
                "set it to a long random string (e.g. `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)"
            )
        return cls(secret, getattr(settings, "secret_key_previous", None))

    @property
    def key_count(self) -> int:
        """1, or 2 when a previous key is accepted."""
        return len(self._keys)

    def ref(self, address: str, *, key_index: int = 0) -> str:
        """The opaque reference of ``address`` under a key, as hex (18 characters)."""
        mac = hmac.new(
            self._keys[key_index],
            _REF_CONTEXT + normalize_address(address).encode("utf-8"),
            hashlib.sha256,
        )
        return mac.digest()[:REF_BYTES].hex()

    def make(
        self,
        purpose: Purpose,
        address: str,
        *,
        data: str = "",
        expires: datetime | None = None,
    ) -> str:
        """A token for ``address`` and ``purpose``, signed with the current key.

        Args:
            purpose: what it may be used for.
            address: the subscriber's address (only its reference goes into the token).
            data: a short payload signed with it (an arXiv id, an edition key); at most
                :data:`MAX_DATA_BYTES` bytes of UTF-8. Not secret: it is only encoded.
            expires: when it stops working (timezone-aware), or ``None`` for never.

        Returns:
            The token (URL-safe; lower-case base32 for VERP).

        Raises:
            ValueError: ``data`` too long, or ``expires`` naive.
        """
        raw_data = data.encode("utf-8")
        if len(raw_data) > MAX_DATA_BYTES:
            raise ValueError(f"token data is {len(raw_data)} bytes; at most {MAX_DATA_BYTES}")
        if expires is not None and expires.utcoffset() is None:
            raise ValueError("token expiry must be timezone-aware")
        stamp = 0 if expires is None else max(1, int(expires.timestamp()))
        body = _HEAD.pack(VERSION, bytes.fromhex(self.ref(address)), stamp) + raw_data
        return _encode(purpose, body + _mac(self._keys[0], purpose, body))

    def verify(self, purpose: Purpose, token: str, *, now: datetime) -> Claims:
        """Check a token for ``purpose``.

        The MAC is compared in constant time (:func:`hmac.compare_digest`) against each
        accepted key.

        Args:
            purpose: the purpose the caller will use it for.
            token: as received (a URL path segment or query value, a VERP local part).
            now: the current time (UTC, aware), for expiry.

        Returns:
            The :class:`Claims`.

        Raises:
            TokenError: malformed, forged, made for another purpose, or expired
                (``reason`` says which; the message never contains the token).
        """
        raw = _decode(purpose, token)
        if len(raw) < _HEAD.size + MAC_BYTES:
            raise TokenError("malformed", "the link is incomplete")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        matching = [
            i
            for i, key in enumerate(self._keys)
            if hmac.compare_digest(mac, _mac(key, purpose, body))
        ]
        if not matching:
            raise TokenError("forged", "the link is not valid (wrong signature or purpose)")
        index = matching[0]
        version, ref, stamp = _HEAD.unpack_from(body)
        if version != VERSION:
            raise TokenError("malformed", "the link is from an unknown version")
        expires = datetime.fromtimestamp(stamp, UTC) if stamp else None
        if expires is not None and now >= expires:
            raise TokenError("expired", "the link has expired")
        try:
            data = body[_HEAD.size :].decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - only with a valid MAC over bad bytes
            raise TokenError("malformed", "the link is not valid") from None
        return Claims(purpose, ref.hex(), index, expires, data)

    def is_for(self, claims: Claims, address: str) -> bool:
        """True if ``claims`` were made for ``address`` (constant-time comparison)."""
        return hmac.compare_digest(claims.ref, self.ref(address, key_index=claims.key_index))

    def index(self, addresses: Iterable[str]) -> SubscriberIndex:
        """A reference → address index of ``addresses`` under every accepted key."""
        return SubscriberIndex(self, addresses)


def _mac(key: bytes, purpose: Purpose, body: bytes) -> bytes:
    msg = _MAC_CONTEXT + purpose.value.encode("ascii") + b"\x00" + body
    return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_BYTES]


def _encode(purpose: Purpose, raw: bytes) -> str:
    if purpose is Purpose.VERP:
        return base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(purpose: Purpose, token: str) -> bytes:
    """The bytes of ``token``, which must be their canonical encoding (:func:`_encode`).

    The last character of an unpadded base64/base32 text can carry bits that are not data
    (RFC 4648 §3.5): 2 or 4 of them, so without this check each token would be accepted in
    4 or 16 spellings. VERP tokens are compared case-insensitively (mail systems may change
    the case of a local part).
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed", "the link is not valid")
    text = token.lower() if purpose is Purpose.VERP else token
    try:
        if purpose is Purpose.VERP:
            if not set(text) <= _B32_CHARS:
                raise TokenError("malformed", "the link is not valid")
            raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        else:
            if not set(text) <= _B64_CHARS:
                raise TokenError("malformed", "the link is not valid")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "the link is not valid") from None
    if _encode(purpose, raw) != text:
        raise TokenError("malformed", "the link is not valid")
    return raw


class SubscriberIndex:
    """Resolves a token's reference to an address, among addresses the caller knows.

    Args:
        signer: whose keys made the references.
        addresses: the addresses to index (subscribers file, pending sign-ups...).
    """

    def __init__(self, signer: TokenSigner, addresses: Iterable[str]) -> None:
        self._signer = signer
        self._by_ref: list[dict[str, str]] = [{} for _ in range(signer.key_count)]
        for address in addresses:
            self.add(address)

    def add(self, address: str) -> None:
        """Index one more address."""
        norm = normalize_address(address)
        for index, table in enumerate(self._by_ref):
            table[self._signer.ref(norm, key_index=index)] = norm

    def lookup(self, claims: Claims) -> str | None:
        """The normalized address the claims were made for, or ``None`` if unknown."""
        return self._by_ref[claims.key_index].get(claims.ref)

    def as_mapping(self, key_index: int = 0) -> Mapping[str, str]:
        """reference → address under one key (read-only view)."""
        return dict(self._by_ref[key_index])
