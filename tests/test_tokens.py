"""digest.tokens: purpose-scoped signed tokens that do not reveal the address."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from digest.errors import ConfigError, TokenError
from digest.tokens import CONFIRM_TTL, MAX_DATA_BYTES, Purpose, TokenSigner

NOW = datetime(2026, 8, 20, 12, 0, tzinfo=UTC)
KEY = "current-key-0123456789abcdef"
OLD = "previous-key-0123456789abcdef"


def test_round_trip_for_every_purpose_and_address_not_revealed() -> None:
    signer = TokenSigner(KEY)
    for purpose in Purpose:
        token = signer.make(purpose, "Ada.Lovelace@Example.org", data="2508.01234")
        claims = signer.verify(purpose, token, now=NOW)
        assert claims.purpose is purpose and claims.data == "2508.01234"
        assert signer.is_for(claims, "ada.lovelace@example.org")
        assert not signer.is_for(claims, "bob@example.org")
        decoded = token.encode()
        for raw in (_b64(token), _b32(token)):
            assert b"ada" not in raw.lower() and b"example" not in raw.lower()
        assert b"ada" not in decoded.lower()
    assert signer.index(["ada.lovelace@example.org", "bob@example.org"]).lookup(claims) == (
        "ada.lovelace@example.org"
    )


def _b64(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return b""


def _b32(token: str) -> bytes:
    try:
        return base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except ValueError:
        return b""


def test_wrong_purpose_is_rejected() -> None:
    signer = TokenSigner(KEY)
    token = signer.make(Purpose.PREFERENCES, "ada@example.org")
    with pytest.raises(TokenError) as e:
        signer.verify(Purpose.UNSUBSCRIBE, token, now=NOW)
    assert e.value.reason == "forged"
    assert token not in str(e.value)


def test_forged_and_tampered_tokens_are_rejected() -> None:
    signer = TokenSigner(KEY)
    token = signer.make(Purpose.UNSUBSCRIBE, "ada@example.org")
    other = TokenSigner("another key").make(Purpose.UNSUBSCRIBE, "ada@example.org")
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for bad in (other, flipped, token[:-1], token + "x", token + "!", "", "é" + token, "x" * 999):
        with pytest.raises(TokenError):
            signer.verify(Purpose.UNSUBSCRIBE, bad, now=NOW)
    # The reference of one address with the signature of another's token.
    raw_eve = _b64(signer.make(Purpose.UNSUBSCRIBE, "eve@example.org"))
    raw_ada = _b64(token)
    spliced = raw_eve[:-12] + raw_ada[-12:]
    forged = base64.urlsafe_b64encode(spliced).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        signer.verify(Purpose.UNSUBSCRIBE, forged, now=NOW)


def test_confirm_tokens_expire() -> None:
    signer = TokenSigner(KEY)
    token = signer.make(Purpose.CONFIRM, "ada@example.org", expires=NOW + CONFIRM_TTL)
    claims = signer.verify(Purpose.CONFIRM, token, now=NOW + CONFIRM_TTL - timedelta(seconds=1))
    assert claims.expires == NOW + CONFIRM_TTL
    with pytest.raises(TokenError) as e:
        signer.verify(Purpose.CONFIRM, token, now=NOW + CONFIRM_TTL)
    assert e.value.reason == "expired"


def test_rotation_accepts_the_previous_key_only_while_configured() -> None:
    old = TokenSigner(OLD)
    token = old.make(Purpose.UNSUBSCRIBE, "ada@example.org")
    rotated = TokenSigner(KEY, previous=SecretStr(OLD))
    claims = rotated.verify(Purpose.UNSUBSCRIBE, token, now=NOW)
    assert claims.key_index == 1
    assert rotated.is_for(claims, "ada@example.org")
    assert rotated.index(["ada@example.org"]).lookup(claims) == "ada@example.org"
    # New tokens are signed with the new key, and the old one alone no longer accepts them.
    fresh = rotated.make(Purpose.UNSUBSCRIBE, "ada@example.org")
    assert rotated.verify(Purpose.UNSUBSCRIBE, fresh, now=NOW).key_index == 0
    with pytest.raises(TokenError):
        old.verify(Purpose.UNSUBSCRIBE, fresh, now=NOW)
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(Purpose.UNSUBSCRIBE, token, now=NOW)


def test_verp_tokens_survive_case_changes_and_fit_a_local_part() -> None:
    signer = TokenSigner(KEY)
    token = signer.make(Purpose.VERP, "ada@example.org")
    assert token == token.lower() and len("bounces+" + token) <= 64
    claims = signer.verify(Purpose.VERP, token.upper(), now=NOW)
    assert signer.is_for(claims, "ada@example.org")


def test_limits_and_config() -> None:
    signer = TokenSigner(KEY)
    with pytest.raises(ValueError, match="at most"):
        signer.make(Purpose.FEEDBACK, "a@b.org", data="x" * (MAX_DATA_BYTES + 1))
    with pytest.raises(ValueError, match="timezone"):
        signer.make(Purpose.CONFIRM, "a@b.org", expires=datetime(2026, 1, 1))
    with pytest.raises(ConfigError):
        TokenSigner("")
    assert len(signer.make(Purpose.UNSUBSCRIBE, "a-very-long-address@example.org")) == 35


@pytest.mark.parametrize("data", ["", "x", "2508.01234", "like 2406.10001"])
@pytest.mark.parametrize("purpose", [Purpose.UNSUBSCRIBE, Purpose.VERP])
def test_a_token_is_accepted_in_its_one_canonical_spelling_only(
    purpose: Purpose, data: str
) -> None:
    signer = TokenSigner(KEY)
    token = signer.make(purpose, "ada@example.org", data=data)
    if purpose is Purpose.VERP:
        alphabet, bits = "abcdefghijklmnopqrstuvwxyz234567", 5
    else:
        alphabet, bits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 6
    # The unused low bits of the last character: 0, 2 or 4 of them depending on the length.
    spare = len(token) * bits % 8
    last = alphabet.index(token[-1])
    variants = [token[:-1] + alphabet[last ^ flip] for flip in range(1, 2**spare)]
    assert len(variants) == 2**spare - 1
    assert signer.verify(purpose, token, now=NOW).data == data
    for variant in variants:
        with pytest.raises(TokenError) as e:
            signer.verify(purpose, variant, now=NOW)
        assert e.value.reason == "malformed"
    # Padding, or characters of the other base64 alphabet, are other spellings too.
    for other in (token + "=", token.replace("-", "+").replace("_", "/")):
        if other != token:
            with pytest.raises(TokenError):
                signer.verify(purpose, other, now=NOW)
