"""International addresses end to end (issue 8, item 3): SMTPUTF8 (RFC 6531) and IDN domains.

A real send through :class:`~digest.core.Digest` to a raw loopback relay
(:class:`tests.faultrelay.FaultRelay`) that does or does not advertise SMTPUTF8.
"""

from __future__ import annotations

import email
import email.policy
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.core import Digest
from digest.message import to_header
from digest.models import Edition
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES
from tests.factories import run_cli, send_settings
from tests.faultrelay import Arrived, FaultRelay

DAY = date(2026, 8, 20)
NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)
JOSE = "josé@example.org"
IDN = "ada@bücher.de"
IDN_ASCII = "ada@xn--bcher-kva.de"
COUNT = 20
"""Subscribers in a send; the international ones sit in the middle."""


def subscribers() -> list[Subscriber]:
    plain = [Subscriber(email=f"user{i:02d}@example.org") for i in range(COUNT - 2)]
    middle = COUNT // 2
    return [
        *plain[:middle],
        Subscriber(email=JOSE, name="José Núñez"),
        Subscriber(email=IDN, name="Ada"),
        *plain[middle:],
    ]


def parse(arrived: Arrived) -> email.message.EmailMessage:
    msg = email.message_from_string(arrived.data.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


async def send(tmp_path: Path, relay: FaultRelay) -> tuple[Digest, object]:
    papers = tmp_path / "papers"
    papers.mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "hf-daily-papers" / "2026-08-20.json", papers / "2026-08-20.json")
    settings = send_settings(tmp_path, relay, sources=f"file:{papers}", render_workers=0)
    digest = Digest(settings, now=lambda: NOW)
    summary = await digest.send(Edition.daily(DAY), subscribers())
    return digest, summary


async def test_relay_without_smtputf8_fails_only_that_subscriber(tmp_path: Path) -> None:
    with FaultRelay(extensions=("8BITMIME",)) as relay:
        digest, summary = await send(tmp_path, relay)
        arrived = list(relay.received)
    with digest:
        row = digest.store.get(JOSE, DAY.isoformat())
        idn = digest.store.get(IDN_ASCII, DAY.isoformat())
    assert (summary.sent, summary.failed) == (COUNT - 1, 1)  # type: ignore[attr-defined]
    assert row is not None and row.status == "failed"
    assert "relay does not offer SMTPUTF8" in (row.last_error or "")
    assert idn is not None and idn.status == "sent"
    recipients = sorted(a.rcpt_tos[0] for a in arrived)
    assert JOSE not in recipients and IDN_ASCII in recipients and len(recipients) == COUNT - 1


async def test_relay_with_smtputf8_gets_every_subscriber(tmp_path: Path) -> None:
    with FaultRelay(extensions=("8BITMIME", "SMTPUTF8")) as relay:
        digest, summary = await send(tmp_path, relay)
        arrived = {a.rcpt_tos[0]: a for a in relay.received}
    digest.close()
    assert (summary.sent, summary.failed) == (COUNT, 0)  # type: ignore[attr-defined]
    jose = arrived[JOSE]
    assert "SMTPUTF8" in [o.upper() for o in jose.mail_options]
    to = parse(jose)["To"]
    assert [a.addr_spec for a in to.addresses] == [JOSE]
    assert to.addresses[0].display_name == "José Núñez"
    # An IDN domain needs no SMTPUTF8: A-label form in the envelope and in a valid To: header.
    idn = arrived[IDN_ASCII]
    assert "SMTPUTF8" not in [o.upper() for o in idn.mail_options]
    head = idn.data.split(b"\r\n\r\n", 1)[0]
    to_line = next(line for line in head.split(b"\r\n") if line.startswith(b"To:"))
    assert to_line == b"To: Ada <ada@xn--bcher-kva.de>"
    # The plain ones are untouched: no SMTPUTF8 where none is needed.
    assert "SMTPUTF8" not in [o.upper() for o in arrived["user00@example.org"].mail_options]


@pytest.mark.parametrize(
    ("address", "name", "line"),
    [
        (IDN_ASCII, "Ada", b"To: Ada <ada@xn--bcher-kva.de>"),
        (JOSE, "José", "To: José <josé@example.org>".encode()),
        (JOSE, None, "To: josé@example.org".encode()),
    ],
)
def test_to_header(address: str, name: str | None, line: bytes) -> None:
    assert to_header(address, name) == line + b"\r\n"


def test_validate_names_the_addresses_that_need_smtputf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        f"subscribers:\n  - email: {JOSE}\n  - email: {IDN}\n  - email: plain@example.org\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(path))
    monkeypatch.setenv("DIGEST_SOURCES", f"file:{tmp_path / 'papers'}")
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    notes = [line for line in output.splitlines() if "needs SMTPUTF8" in line]
    assert len(notes) == 1 and JOSE in notes[0], output
    assert "3 subscribers" in output
