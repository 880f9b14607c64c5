"""Factories shared by the tests: settings, a fake clock, a fake subscriber, real papers.

Settings are built in layers, each defined once here:

- :data:`MESSAGE_SETTINGS`: From, List-Unsubscribe (URL and mailto), the secret key, Reply-To;
- :func:`smtp_values`: a plain-text relay on loopback with fast retries;
- paths (state file, outbox, subscribers) under a test's ``tmp_path``.

:func:`make_settings` is the one constructor: ``checked=True`` goes through
:func:`digest.settings.load_settings` (cross-field checks, ``None`` means default),
``checked=False`` constructs :class:`~digest.settings.Settings` directly (for tests that build
deliberately incomplete settings, e.g. a ``{token}`` URL without a key).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from digest.models import Paper
from digest.settings import Settings, load_settings
from tests.conftest import FIXTURES

HF_FIXTURES = FIXTURES / "hf-daily-papers"
SECRET_KEY = "test-secret-key-0123456789-abcdefghij"
"""A signing key for tests (long enough for DIGEST_SECRET_KEY's minimum)."""
SENDER = "Daily Papers <papers@example.org>"
UNSUBSCRIBE_URL = "https://digest.example.org/u/{token}?e={email}&list=daily-papers-subscribers"
MESSAGE_SETTINGS: dict[str, Any] = {
    "sender": SENDER,
    "unsubscribe_url": UNSUBSCRIBE_URL,
    "unsubscribe_mailto": "unsubscribe@example.org",
    "secret_key": SECRET_KEY,
    "reply_to": "help@example.org",
}
"""What a message needs: From, List-Unsubscribe (HTTPS + mailto), the signing key, Reply-To."""
T0 = datetime(2025, 8, 20, 7, 0, tzinfo=UTC)
INJECTING_NAME = "=?utf-8?q?A=0D=0AReply-To:_pay@evil.example=0D=0AX-Injected:_yes?="
"""A display name whose RFC 2047 encoded-word decodes to two header lines of its own."""
BODY_WRITING_NAME = "=?utf-8?q?A=0D=0A=0D=0AYour_account_is_locked=2E_Log_in_at_evil.example?="
"""A display name whose encoded-word decodes to an empty line and a body of its own."""
DIGEST_FIELDS = (
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
    "X-Auto-Response-Suppress",
    "MIME-Version",
    "Content-Type",
)
"""The header fields of a digest built with :data:`MESSAGE_SETTINGS`, in order."""
HOSTILE_NAMES = (
    INJECTING_NAME,
    BODY_WRITING_NAME,
    "Ada \u202eecalevoL",  # RIGHT-TO-LEFT OVERRIDE: shows reversed text
    "Ada\x85Lovelace",  # NEXT LINE (C1)
    "Ada\u2028Lovelace",  # LINE SEPARATOR
)
"""Names every entry (subscribers file, web forms) refuses, and headers neutralize."""


# -- settings ---------------------------------------------------------------------------------


class HasPort(Protocol):
    """Anything listening on loopback (SMTPTestServer, ServerProcess, LocalHTTPServer)."""

    @property
    def port(self) -> int: ...


def make_settings(*, checked: bool = True, **values: Any) -> Settings:
    """Settings from ``values`` only (no ``.env``; the conftest clears ``DIGEST_*``).

    Args:
        checked: ``True``: :func:`~digest.settings.load_settings` (``None`` values mean the
            default; cross-field problems raise ``ConfigError``). ``False``: the model is built
            directly, ``None`` is taken as given and cross-field rules are not applied.
        **values: settings by field name.
    """
    if checked:
        return load_settings(env_file=None, **values)
    return Settings(_env_file=None, **values)


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """Set ``values`` (by field name, ``sender`` for DIGEST_FROM) as ``DIGEST_*`` environment
    variables, for commands run with :func:`run_cli`; ``None`` values are left unset."""
    for env, value in settings_env(values).items():
        monkeypatch.setenv(env, value)


def smtp_values(server: HasPort | int) -> dict[str, Any]:
    """A plain-text relay on 127.0.0.1 (``server`` or a port), 5 s timeout, fast retries."""
    port = server if isinstance(server, int) else server.port
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_timeout": 5.0,
        "smtp_retry_base": 0.01,
        "smtp_max_attempts": 3,
        "smtp_concurrency": 2,
    }


def settings_env(values: Mapping[str, Any]) -> dict[str, str]:
    """Settings by field name (as :func:`make_settings` takes them) as ``DIGEST_*`` variables,
    for a test of the real CLI: ``sender`` is DIGEST_FROM, ``None`` values are left out."""
    return {
        "DIGEST_FROM" if name == "sender" else f"DIGEST_{name.upper()}": str(value)
        for name, value in values.items()
        if value is not None
    }


def smtp_settings(server: HasPort | int, **overrides: Any) -> Settings:
    """Delivery settings for a loopback relay (:func:`smtp_values`) plus ``overrides``."""
    return make_settings(checked=False, **{**smtp_values(server), **overrides})


def message_settings(**overrides: Any) -> Settings:
    """:data:`MESSAGE_SETTINGS` plus ``overrides``, unchecked (``None`` removes a value)."""
    return make_settings(checked=False, **{**MESSAGE_SETTINGS, **overrides})


def send_settings(
    tmp_path: Path, server: HasPort | int, *, sources: str, **overrides: Any
) -> Settings:
    """A whole send to a loopback relay: ``sources``, message settings, state in ``tmp_path``."""
    values: dict[str, Any] = {
        "sources": sources,
        "state_path": tmp_path / "state.sqlite3",
        **MESSAGE_SETTINGS,
        **smtp_values(server),
        **overrides,
    }
    return make_settings(checked=False, **values)


def outbox_settings(root: Path, **overrides: Any) -> Settings:
    """Checked settings writing to a Maildir: state, outbox and subscribers under ``root``."""
    values: dict[str, Any] = {
        "subscribers": root / "subscribers.yaml",
        "state_path": root / "state.sqlite3",
        "outbox": root / "outbox",
        **overrides,
    }
    return make_settings(**values)


def make_dkim_key(path: Path, *, bits: int = 2048) -> bytes:
    """A new RSA key written to ``path`` (PEM, PKCS#1, mode 600) for DKIM_PRIVATE_KEY_PATH.

    Returns:
        The DKIM record of its public key (RFC 6376 §3.6.1): ``v=DKIM1; k=rsa; p=BASE64``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


# -- clock, subscriber, papers ----------------------------------------------------------------


class FakeClock:
    """A settable clock returning aware UTC datetimes (inject as ``now=``).

    Args:
        at: the time returned (UTC); set ``clock.at`` to move it.
        step: added before each reading (``timedelta(seconds=1)``: every reading is later).
    """

    def __init__(self, at: datetime = T0, *, step: timedelta = timedelta(0)) -> None:
        self.at = at
        self.step = step

    def __call__(self) -> datetime:
        self.at += self.step
        return self.at


@dataclass(frozen=True)
class FakeSubscriber:
    """What rendering needs of a subscriber (the real one is ``digest.subscribers.Subscriber``)."""

    email: str = "ada@example.org"
    name: str | None = "Ada"
    keywords: tuple[str, ...] = ()


def papers_from_fixture(name: str) -> list[Paper]:
    """A recorded Daily Papers day (``tests/fixtures/hf-daily-papers/NAME``) as papers.

    Mapped field by field as the HF source does; sorted by upvotes, most first.
    """
    items = json.loads((HF_FIXTURES / name).read_text(encoding="utf-8"))
    out = []
    for item in items:
        p = item["paper"]
        out.append(
            Paper(
                arxiv_id=p["id"],
                title=" ".join(p["title"].split()),
                abstract=" ".join(p.get("summary", "").split()),
                authors=tuple(a["name"] for a in p.get("authors", [])),
                upvotes=p.get("upvotes"),
                comments=item.get("numComments"),
                ai_summary=p.get("ai_summary"),
                ai_keywords=tuple(p.get("ai_keywords") or ()),
                github_repo=p.get("githubRepo"),
                github_stars=p.get("githubStars"),
                project_page=p.get("projectPage"),
                thumbnail=item.get("thumbnail"),
            )
        )
    return sorted(out, key=lambda q: -(q.upvotes or 0))


# -- the CLI ------------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    """``digest ARGS`` in this process (typer's runner): ``(exit code, stdout + stderr)``.

    The settings come from the environment the test set (``monkeypatch.setenv``): the conftest
    clears every ``DIGEST_*`` variable first.
    """
    from typer.testing import CliRunner

    from digest.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug, not an exit code: show its traceback
    return result.exit_code, result.output


# -- subscriber lists ---------------------------------------------------------------------------


def list_yaml(count: int, *, defaults: bool = True) -> str:
    """A subscribers file of ``count`` valid entries written in the shapes people write:
    comments before and inside entries, blank lines or none between them, flow and block
    lists, quoted and plain strings, upper-case addresses, IDN domains, paused entries.

    Entry ``i`` has the address ``r{i:05d}@…`` (its domain varies); every option it sets is
    valid, so the whole file loads.
    """
    lines = ["# A generated list (tests/factories.py: list_yaml)."]
    if defaults:
        lines += ["defaults:", "  max_papers: 8   # short digests", '  send_at: "07:00"', ""]
    lines.append("subscribers:")
    domains = ("example.org", "Lab.Example.ORG", "bücher.example", "例え.example")
    for i in range(count):
        email = f"r{i:05d}@{domains[i % len(domains)]}"
        shape = i % 7
        if i % 50 == 0:
            lines.append(f"  # group {i // 50}")
        if shape == 0:
            lines += [
                f"  - email: {email}",
                f"    name: Reader {i}",
                "    keywords: [diffusion, agent*]",
            ]
        elif shape == 1:
            lines += [
                f'  - email: "{email.upper()}"   # as they typed it',
                "    keywords:",
                '      - "reinforcement learning"',
                f"      - topic{i % 13}      # a comment in a list",
                "    frequency: weekly",
                "    weekday: friday",
                "",
            ]
        elif shape == 2:
            lines += [
                f"  - email: {email}",
                f"    name: 'Zoë {i}'",
                '    send_at: "06:30"',
                "    timezone: Europe/Berlin",
                "    active: false",
            ]
        elif shape == 3:
            lines += [
                f'  - {{email: {email}, keywords: [video, "text-to-image"]}}',
            ]
        elif shape == 4:
            lines += [
                "",
                f"  # Reader {i} wants meaning, not words.",
                f"  - email: {email}",
                "    interests:",
                "      - sim-to-real transfer for legged robots",
                '    like: ["2406.09246"]',
                "    only_matching: true",
            ]
        else:
            lines += [
                f"  - email: {email}",
                f"    max_papers: {1 + i % 20}",
                "    exclude: [survey]",
            ]
    lines.append("# the end")
    return "\n".join(lines) + "\n"
