"""Shared test setup: isolation from the developer's environment, and shared fixtures.

Fixtures here: ``ca``/``leaf`` (a trustme CA and a certificate for ``127.0.0.1``/``localhost``,
one per session), ``ca_file`` (the CA as PEM in ``tmp_path``), ``pg_server`` (a real PostgreSQL
started once per session, :mod:`tests.pgserver`), ``pg_url`` (a fresh schema of it per test),
``state_url`` (parametrized: every test using it runs on SQLite and on PostgreSQL),
``subscribers_home`` (parametrized: the list in its file, then in the state),
``make_store`` (opens that backend with a given clock), ``state_env`` (points
``DIGEST_STATE_URL`` at it, for the CLI and the daemon), ``env`` (the web app's settings on
it), ``dkim_key`` (a DKIM key file and its
DNS record, one per session), ``dns_server`` (starts dnsmasq serving a
:class:`tests.dnsserver.Zone` on loopback; skipped without dnsmasq). Factories (settings, clock,
subscribers, papers) live in :mod:`tests.factories`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import trustme

from digest.clock import Clock, utc_now
from digest.state import StateBackend, open_state
from tests.dnsserver import DnsServer, Zone, find_dnsmasq
from tests.pgserver import PostgresServer, find_bin_dir

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = Path(__file__).parent.parent
EXAMPLES = PROJECT / "examples"


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DIGEST_* variable or .env of the developer leaks in; cwd is a fresh tmp dir."""
    for key in list(os.environ):
        if key.startswith("DIGEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority, one per test session."""
    return trustme.CA()


@pytest.fixture(scope="session")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate for ``127.0.0.1`` and ``localhost`` signed by :func:`ca`."""
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """:func:`ca` as a PEM file (for ``DIGEST_SMTP_CA_FILE``)."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


DKIM_SELECTOR = "sel1"
DKIM_DOMAIN = "example.org"


class DkimKey(NamedTuple):
    """A DKIM private key file and the TXT record that publishes its public key."""

    path: Path
    txt: bytes

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        """``dkim.verify(..., dnsfunc=key.dns)``: the record of DKIM_SELECTOR at DKIM_DOMAIN."""
        return self.txt if name == f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode() else None


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    """A 2048-bit RSA key (PEM, mode 600) and its ``v=DKIM1`` record, one per session."""
    from tests.factories import make_dkim_key

    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    return DkimKey(path, make_dkim_key(path))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server (initdb + pg_ctl in a temporary directory), one per session."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql; see .ci/run)")
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of an empty schema of its own on :func:`pg_server`."""
    return pg_server.fresh_url()


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state of each backend: ``sqlite:///<tmp>/state.sqlite3``, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(params=["file", "state"])
def subscribers_home(request: pytest.FixtureRequest) -> str:
    """Where the subscriber list lives: ``file`` (DIGEST_SUBSCRIBERS=<tmp>/subscribers.yaml),
    then ``state`` (DIGEST_SUBSCRIBERS=state); every test using it runs in both homes."""
    return str(request.param)


@pytest.fixture
def state_env(state_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``DIGEST_STATE_URL`` set to :func:`state_url`: the command under test uses each backend.

    Returns:
        The URL (inspect the state with ``open_state(state_env)``).
    """
    monkeypatch.setenv("DIGEST_STATE_URL", state_url)
    return state_url


StartDns = Callable[[Zone], DnsServer]


@pytest.fixture
def dns_server() -> Iterator[StartDns]:
    """``dns_server(zone)`` starts dnsmasq serving ``zone`` on 127.0.0.1 (stopped at the end);
    ``.nameserver`` is its ``127.0.0.1:PORT``. Skips the test when dnsmasq is not installed."""
    binary = find_dnsmasq()
    if binary is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq-base; see .ci/run)")
    started: list[DnsServer] = []

    def start(zone: Zone) -> DnsServer:
        server = DnsServer(zone, binary).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def env(tmp_path: Path, state_url: str) -> dict[str, Any]:
    """Settings of the web app under test, by field name (``make_settings(**env)``): the
    commented subscribers file, the recorded days, a Maildir outbox, DIGEST_PUBLIC_URL
    :data:`tests.factories.PUBLIC`; its state is each backend's (``state_url``)."""
    from tests.factories import COMMENTED_SUBSCRIBERS, PUBLIC, SECRET_KEY, SENDER

    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(COMMENTED_SUBSCRIBERS)
    return {
        "subscribers": subscribers,
        "state_url": state_url,
        "outbox": tmp_path / "outbox",
        "sources": f"file:{FIXTURES / 'hf-daily-papers'}",
        "secret_key": SECRET_KEY,
        "public_url": PUBLIC,
        "sender": SENDER,
    }


MakeStore = Callable[..., StateBackend]


@pytest.fixture
def make_store(state_url: str) -> Iterator[MakeStore]:
    """``make_store(now=clock, lease_seconds=60)`` opens :func:`state_url`; closed at the end."""
    opened: list[StateBackend] = []

    def make(now: Clock = utc_now, lease_seconds: float = 60.0) -> StateBackend:
        store = open_state(state_url, now=now, lease_seconds=lease_seconds)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def crash_claimers(store: StateBackend) -> None:
    """Make every ``sending`` row look like a dead process's (its lease ran out).

    SQLite: nothing to do (``recover_unknown`` takes every ``sending`` row under the lock).
    PostgreSQL: the leases are moved into the past, as if their claimers had died.
    """
    if store.shared:
        store._db.execute(  # type: ignore[attr-defined]
            "UPDATE deliveries SET lease_until = clock_timestamp() - interval '1 second' "
            "WHERE status = 'sending'"
        )
