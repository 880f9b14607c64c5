"""Factories shared by the tests: settings, a fake clock, a fake subscriber, real papers,
files on disk (papers days, subscribers files, a daemon's files), what a send left, outgoing
messages for the delivery engine, a daemon to tick, bounces and metrics to read, and the CLI.
No test module imports from another: what two modules share is here, in ``conftest.py``
(fixtures) or in a server module.

Settings are built in layers, each defined once here:

- :data:`MESSAGE_SETTINGS`: From, List-Unsubscribe (URL and mailto), the secret key, Reply-To;
- :func:`smtp_values`: a plain-text relay on loopback with fast retries;
- paths (state file, outbox, subscribers) under a test's ``tmp_path``.

:func:`make_settings` is the one constructor: ``checked=True`` goes through
:func:`digest.settings.load_settings` (cross-field checks, ``None`` means default),
``checked=False`` constructs :class:`~digest.settings.Settings` directly (for tests that build
deliberately incomplete settings, e.g. a ``{token}`` URL without a key).

A test of the real CLI builds its project directory with :func:`make_workdir` (papers, a
subscribers file, ``DIGEST_*`` variables: a module states only what differs) and runs commands
with :func:`run_cli`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import mailbox
import re
import shutil
import textwrap
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from digest.core import Digest
from digest.delivery import OutgoingMessage
from digest.errors import ConfigError
from digest.metrics import NO_METRICS, Recorder
from digest.models import Edition, Paper
from digest.settings import Settings, load_settings
from digest.state import StateBackend
from digest.subscribers import load_subscribers
from tests.conftest import EXAMPLES, FIXTURES

if TYPE_CHECKING:
    from digest.daemon import Daemon
    from tests.smtpserver import Received

HF_FIXTURES = FIXTURES / "hf-daily-papers"
HF_FIXTURE_FILES = sorted(HF_FIXTURES.glob("*.json"))
"""The recorded Daily Papers days, oldest first."""
EXAMPLE_DAYS = EXAMPLES / "hf-daily-papers"
"""The bundled example Daily Papers days (``YYYY-MM-DD.json``), as ``digest demo`` uses them."""
ONE_SUBSCRIBER = "subscribers:\n  - email: ada@example.org\n"
"""A subscribers file of one subscriber with every default."""
BOUNCE_FIXTURES = FIXTURES / "bounces"
ARF_FIXTURE = "arf-abuse.eml"
"""A real ARF abuse report (Yahoo's feedback loop), :func:`readdress` it to our delivery."""
ARF_RCPT = "this-local-part-does-not-exist-on-yahoo@yahoo.com"
"""The complaining recipient the ARF fixture names."""
ARF_ID = "<000000000000000000000000.smtp@example.com>"
"""The original Message-ID the ARF fixture quotes."""
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
PUBLIC = "https://papers.example.org"
"""DIGEST_PUBLIC_URL of the web app under test: its links (emails, pages) start with it."""
COMMENTED_SUBSCRIBERS = """\
# Our lab's list.
defaults:
  max_papers: 5   # keep it short

subscribers:
  # The PI.
  - email: ada@example.org
    name: Ada
    keywords: [agent*, "reinforcement learning"]   # her interests

  - email: bob@example.org   # a student
    name: Bob
"""
"""A subscribers file with comments everywhere (ada, bob): what the web app writes back
must keep them."""
FIXTURE_EDITION = Edition.daily(date(2026, 8, 20))
"""A daily edition whose day is recorded in ``tests/fixtures/hf-daily-papers``."""
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


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """That minute as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def days_between(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


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


# -- files on disk: Daily Papers days, subscribers files, a daemon's files ----------------------


def write_papers(directory: Path, days: Iterable[date], *, weekends: bool = False) -> None:
    """Real Daily Papers days copied under the names of ``days`` (weekdays only by default).

    The captures (:data:`HF_FIXTURE_FILES`) are reused in turn; a reused one gets fresh arXiv
    ids (``YYMM.DDnnn`` of its day), as a real later day lists other papers (a paper is never
    sent twice).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for i, day in enumerate(days):
        if day.weekday() >= 5 and not weekends:
            continue
        source = HF_FIXTURE_FILES[i % len(HF_FIXTURE_FILES)]
        target = directory / f"{day.isoformat()}.json"
        if i < len(HF_FIXTURE_FILES):
            shutil.copy(source, target)
            continue
        items = json.loads(source.read_text(encoding="utf-8"))
        for j, item in enumerate(items):
            item["paper"]["id"] = f"{day:%y%m}.{day.day:02d}{j:03d}"
        target.write_text(json.dumps(items), encoding="utf-8")


def write_day(directory: Path, day: date, papers: Sequence[Paper]) -> None:
    """``papers`` as the Daily Papers day ``DIRECTORY/YYYY-MM-DD.json`` (the HF API's shape,
    as a ``file:`` source reads it); a paper without abstract gets "An abstract."."""
    items = [
        {
            "paper": {
                "id": p.arxiv_id,
                "title": p.title,
                "summary": p.abstract or "An abstract.",
                "upvotes": p.upvotes or 0,
                "authors": [{"name": a} for a in p.authors],
            },
            "numComments": 0,
        }
        for p in papers
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{day.isoformat()}.json").write_text(json.dumps(items), encoding="utf-8")


def write(tmp_path: Path, text: str, name: str = "subscribers.yaml") -> Path:
    """``text`` (dedented, leading newlines dropped) as the subscribers file ``TMP_PATH/NAME``.

    Returns:
        Its path.
    """
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs: object) -> list[str]:
    """The problems :func:`~digest.subscribers.load_subscribers` reports for ``path`` (one
    line each, naming file, line and field); fails the test if the file loads."""
    with pytest.raises(ConfigError) as info:
        load_subscribers(path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def subscriber_yaml(entries: list[dict[str, Any]], defaults: dict[str, Any] | None = None) -> str:
    """A subscribers file, one ``key: value`` per line (so line numbers are predictable).

    Args:
        entries: one mapping of fields per subscriber, in file order.
        defaults: the ``defaults:`` block, if any.
    """
    lines: list[str] = []
    if defaults:
        lines.append("defaults:")
        lines += [f"  {k}: {_yaml_value(v)}" for k, v in defaults.items()]
    lines.append("subscribers:")
    for entry in entries:
        first = True
        for k, v in entry.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {_yaml_value(v)}")
            first = False
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


@dataclass
class Env:
    """A daemon's files under one root (papers, subscribers, outbox, health file) and its state.

    Build one with :meth:`under`; :meth:`settings` gives the daemon's settings for them.
    """

    root: Path
    papers: Path
    subscribers: Path
    state_url: str
    outbox: Path
    health: Path

    @classmethod
    def under(cls, root: Path, state_url: str) -> Env:
        """The files under ``root`` (an empty ``papers`` directory made), the state at
        ``state_url``."""
        papers = root / "papers"
        papers.mkdir()
        return cls(
            root=root,
            papers=papers,
            subscribers=root / "subscribers.yaml",
            state_url=state_url,
            outbox=root / "outbox",
            health=root / "health",
        )

    def settings(self, **overrides: Any) -> Settings:
        """Checked settings: a ``file:`` source of :attr:`papers`, the Maildir :attr:`outbox`,
        the health file and the state, then ``overrides`` (by field name)."""
        base: dict[str, Any] = {"sources": f"file:{self.papers}", "health_file": self.health}
        base["state_url"] = self.state_url
        return outbox_settings(self.root, **{**base, **overrides})

    def write_subscribers(
        self, entries: list[dict[str, Any]], defaults: dict[str, Any] | None = None
    ) -> None:
        """Write :attr:`subscribers` (see :func:`subscriber_yaml`)."""
        self.subscribers.write_text(subscriber_yaml(entries, defaults), encoding="utf-8")


# -- what a send left: the outbox, the statuses, the subscribers file -------------------------


async def send_edition(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """Send :data:`FIXTURE_EDITION` to every subscriber of ``settings`` (in this process).

    Returns:
        By subscriber: the delivery status and its detail (the reply or the reason).
    """
    with Digest(settings) as digest:
        subs = digest.load_subscribers()
        await digest.send(FIXTURE_EDITION, subs.subscribers)
        return {
            r.subscriber: (r.status, r.detail)
            for r in digest.store.list(edition=FIXTURE_EDITION.key)
        }


def messages(settings: Settings) -> list[EmailMessage]:
    """Every message in the Maildir ``settings.outbox``, parsed (``email.policy.default``)."""
    box = mailbox.Maildir(settings.outbox, create=False)
    out = []
    for key in box.iterkeys():
        msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def active(settings: Settings, address: str) -> bool | None:
    """``address``'s ``active`` in the subscribers file now; ``None``: not in it."""
    sub = load_subscribers(settings.subscribers).get(address)
    return None if sub is None else sub.active


# -- outgoing messages (the delivery engine's input) --------------------------------------------

EDITION = "2025-08-20"
"""The edition key of :func:`build`'s messages (a daily edition: its date)."""
ENVELOPE_SENDER = "digest@example.org"
"""The envelope sender (MAIL FROM) and From address of :func:`build`'s messages."""


class Sleeps:
    """Injected ``sleep``: records requested delays, waits for nothing.

    Attributes:
        delays: every delay asked for, seconds, in order.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def build(email: str, edition: str = EDITION) -> OutgoingMessage:
    """A small but realistic message: CRLF, 8-bit UTF-8 body, a line needing dot-stuffing.

    Its Message-ID is ``<EDITION.LOCAL.DOMAIN@example.org>``; one recipient, ``email``.
    """
    message_id = f"<{edition}.{email.replace('@', '.')}@example.org>"
    data = (
        f"From: Daily Papers <{ENVELOPE_SENDER}>\r\n"
        f"To: {email}\r\n"
        f"Subject: Papers for {edition}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"Hello {email} — today's papers: «Attention», ünïcode.\r\n"
        ".a line starting with a dot\r\n"
        "..and two\r\n"
    ).encode()
    return OutgoingMessage(
        subscriber=email,
        edition=edition,
        message_id=message_id,
        envelope_from=ENVELOPE_SENDER,
        recipients=(email,),
        data=data,
    )


def emails(n: int, prefix: str = "user") -> list[str]:
    """``n`` addresses: ``PREFIX00@example.org``, ``PREFIX01@example.org``, ..."""
    return [f"{prefix}{i:02d}@example.org" for i in range(n)]


async def stream(messages: Iterable[OutgoingMessage]) -> AsyncIterator[OutgoingMessage]:
    """``messages`` as the async stream ``send_all`` takes, yielding to the loop after each."""
    for msg in messages:
        yield msg
        await asyncio.sleep(0)


def statuses(store: StateBackend) -> dict[str, str]:
    """The delivery status of each subscriber of :data:`EDITION` (``sent``, ``owed``, ...)."""
    return {row.subscriber: str(row.status) for row in store.list(edition=EDITION)}


def by_recipient(messages: list[Received]) -> dict[str, list[Received]]:
    """What a relay received, grouped by its one recipient (asserted: one per message)."""
    out: dict[str, list[Received]] = {}
    for m in messages:
        assert len(m.rcpt_tos) == 1, "one recipient per message"
        out.setdefault(m.rcpt_tos[0], []).append(m)
    return out


# -- bounces and metrics ------------------------------------------------------------------------


def readdress(name: str, changes: dict[str, str], *, to: str | None = None) -> bytes:
    """The real bounce ``name`` (``tests/fixtures/bounces/``) with each ``old: new`` of
    ``changes`` replaced (the failed recipient, the original Message-ID); ``to`` adds the
    ``Delivered-To`` an MTA writes."""
    data = (BOUNCE_FIXTURES / name).read_bytes()
    for old, new in changes.items():
        assert old.encode() in data, (name, old)
        data = data.replace(old.encode(), new.encode())
    return (b"Delivered-To: " + to.encode() + b"\r\n" if to else b"") + data


def complaint_about(address: str, message_id: str) -> bytes:
    """The real ARF complaint, about our message ``message_id`` sent to ``address``."""
    return readdress(ARF_FIXTURE, {ARF_RCPT: address, ARF_ID: message_id})


def drop_mail(maildir: Path, name: str, data: bytes) -> Path:
    """Deliver ``data`` into the Maildir ``maildir`` (``new/NAME``; the folders made)."""
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    target = maildir / "new" / name
    target.write_bytes(data)
    return target


@contextmanager
def running_daemon(
    settings: Settings, clock: FakeClock, metrics: Recorder = NO_METRICS
) -> Iterator[Daemon]:
    """A :class:`~digest.daemon.Daemon` of ``settings`` on the clock ``clock``, holding the
    state's sender lock (as ``digest run`` does), counting into ``metrics``; call
    ``await daemon.tick()`` (``daemon.digest`` is its facade)."""
    from digest.daemon import Daemon

    with (
        Digest(settings, now=clock, metrics=metrics) as digest,
        digest.store.sender_lock(purpose="run"),
    ):
        yield Daemon(digest, settings, now=clock)


def confirm_link(settings: Settings, base: str) -> str:
    """The confirmation link of the one mail in ``settings.outbox`` (a sign-up's), pointed at
    the test server ``base`` instead of DIGEST_PUBLIC_URL."""
    [mail] = messages(settings)
    body = mail.get_body(("plain",))
    assert body is not None and settings.public_url
    link = re.escape(settings.public_url) + r"(/confirm/[A-Za-z0-9_-]+)"
    found = re.search(link, body.get_content())
    assert found, body.get_content()
    return base + found.group(1)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in the Prometheus text
    ``text`` (parsed by ``prometheus_client``'s own parser), or ``None`` if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


# -- the CLI ------------------------------------------------------------------------------------


def make_workdir(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    subscribers_yaml: str | None = ONE_SUBSCRIBER,
    papers: Path | None = EXAMPLE_DAYS,
    **settings: Any,
) -> Path:
    """A project directory for a test of the real CLI (:func:`run_cli`): papers, a
    subscribers file, and the ``DIGEST_*`` variables of the settings (for this test only).

    Without ``settings`` the variables are DIGEST_SOURCES (``file:ROOT/papers``), DIGEST_FROM
    (:data:`SENDER`) and DIGEST_SECRET_KEY (:data:`SECRET_KEY`); the state, the outbox and
    DIGEST_SUBSCRIBERS keep their defaults, which are relative to the working directory (the
    conftest makes it ``tmp_path``).

    Args:
        root: the directory (a test's ``tmp_path``).
        monkeypatch: the test's, so the variables are unset after it.
        subscribers_yaml: the text of ``ROOT/subscribers.yaml``; ``None`` writes no file.
        papers: a directory of Daily Papers days copied to ``ROOT/papers``, or one day's file
            copied into it under its name; ``None`` makes no ``papers`` directory.
        **settings: settings by field name over the ones above (``sender`` is DIGEST_FROM,
            ``None`` leaves a variable unset), as :func:`use_settings` takes them.

    Returns:
        ``root``.
    """
    if papers is not None and papers.is_dir():
        shutil.copytree(papers, root / "papers")
    elif papers is not None:
        (root / "papers").mkdir()
        shutil.copy(papers, root / "papers" / papers.name)
    if subscribers_yaml is not None:
        (root / "subscribers.yaml").write_text(subscribers_yaml)
    defaults = {"sources": f"file:{root / 'papers'}", "sender": SENDER, "secret_key": SECRET_KEY}
    use_settings(monkeypatch, **{**defaults, **settings})
    return root


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``digest ARGS`` in this process (typer's runner): ``(exit code, stdout + stderr)``.

    The settings come from the environment the test set (``monkeypatch.setenv``): the conftest
    clears every ``DIGEST_*`` variable first.

    Args:
        *args: the command line after ``digest``.
        env: variables set (over the test's environment) for this command only.

    Raises:
        Exception: whatever the command raised other than an exit (a bug: its traceback shows).
    """
    from typer.testing import CliRunner

    from digest.cli import app

    result = CliRunner().invoke(app, list(args), env=env)
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
