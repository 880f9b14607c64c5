"""Shared test setup: isolation from the developer's environment, and shared fixtures.

Fixtures here: ``ca``/``leaf`` (a trustme CA and a certificate for ``127.0.0.1``/``localhost``,
one per session), ``ca_file`` (the CA as PEM in ``tmp_path``). Factories (settings, clock,
subscribers, papers) live in :mod:`tests.factories`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

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
