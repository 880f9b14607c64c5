"""normalize_email: the one identity key (NFC, IDNA domain, lower case) and SMTPUTF8 needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.addresses import ascii_domain, needs_smtputf8, normalize_email
from tests.conftest import MakeStore
from tests.factories import problems_of, write

DECOMPOSED = "jose\u0301@example.org"  # "e" + COMBINING ACUTE ACCENT
COMPOSED = "jos\u00e9@example.org"  # "é" as one code point


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (" Ada@Example.ORG ", "ada@example.org"),
        ("ada@Bücher.de", "ada@xn--bcher-kva.de"),
        ("ada@xn--bcher-kva.de", "ada@xn--bcher-kva.de"),
        ("ada@BÜCHER.DE.", "ada@xn--bcher-kva.de"),
        (DECOMPOSED, COMPOSED),
        ("JOSÉ@bücher.de", "josé@xn--bcher-kva.de"),
        ("no-at-sign", "no-at-sign"),
        ("odd@under_score.org", "odd@under_score.org"),
    ],
)
def test_normalize_email(raw: str, key: str) -> None:
    assert normalize_email(raw) == key
    assert normalize_email(key) == key  # idempotent


def test_ascii_domain_keeps_what_idna_refuses() -> None:
    assert ascii_domain("Bücher.de") == "xn--bcher-kva.de"
    assert ascii_domain("BÜ_cher.de") == "bü_cher.de"  # "_" is not allowed in IDNA 2008
    assert ascii_domain("☃.com") == "☃.com"  # a symbol: disallowed code point


@pytest.mark.parametrize(
    ("address", "needs"),
    [("ada@example.org", False), ("ada@bücher.de", False), (COMPOSED, True), (DECOMPOSED, True)],
)
def test_needs_smtputf8_only_for_a_non_ascii_local_part(address: str, needs: bool) -> None:
    assert needs_smtputf8(address) is needs


def test_duplicates_found_after_nfc_and_idna(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        subscribers:
          - email: ada@bücher.de
          - email: Ada@xn--bcher-kva.de
          - email: {COMPOSED}
          - email: {DECOMPOSED}
        """,
    )
    problems = problems_of(path)
    assert any("subscribers[1].email: duplicate email ada@xn--bcher-kva.de" in p for p in problems)
    assert any(f"subscribers[3].email: duplicate email {COMPOSED}" in p for p in problems)
    assert len(problems) == 2, problems


def test_subscriber_email_is_the_normalized_key(tmp_path: Path) -> None:
    from digest.subscribers import load_subscribers

    path = write(
        tmp_path,
        f"""
        subscribers:
          - email: Ada@Bücher.DE
          - email: {DECOMPOSED}
        """,
    )
    subs = load_subscribers(path)
    assert [s.email for s in subs] == ["ada@xn--bcher-kva.de", COMPOSED]
    assert subs.get("ADA@bücher.de") is subs.subscribers[0]
    assert subs.get(DECOMPOSED) is subs.subscribers[1]


def test_state_rows_are_keyed_by_the_normalized_address(make_store: MakeStore) -> None:
    with make_store() as store:
        assert store.claim("Ada@Bücher.de", "2025-05-29", "<a@x>")
        assert not store.claim("ada@xn--bcher-kva.de", "2025-05-29", "<b@x>")
        row = store.get("ADA@XN--BCHER-KVA.DE", "2025-05-29")
        assert row is not None and row.subscriber == "ada@xn--bcher-kva.de"
        assert store.claim(DECOMPOSED, "2025-05-29", "<d@x>")
        assert not store.claim(COMPOSED, "2025-05-29", "<e@x>")
