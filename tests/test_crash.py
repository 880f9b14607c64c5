"""Exactly once across a crash: SIGKILL a real `digest send` mid-batch, restart, count mail.

The relay is an aiosmtpd server in another process that spools every message it accepts, so
what it received survives the sender's death and is counted independently of our state (a
SQLite file, or PostgreSQL: there the restart waits for the dead sender's leases to run out).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digest.state import open_state
from tests.conftest import EXAMPLES
from tests.smtpserver import ServerProcess, read_spool

SUBSCRIBERS = 300
POOL = 4
DAY = "2026-08-20"
KILL_AFTER = 60
"""Kill the sender once the relay has accepted this many messages."""
WAIT_LIMIT_S = 120.0
LEASE_S = 2.0
"""The claims' lease on PostgreSQL: how long the restart waits for the dead sender's."""


def _env(workdir: Path, port: int, state_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_SOURCES=f"file:{workdir / 'papers'}",
        DIGEST_SUBSCRIBERS=str(workdir / "subscribers.yaml"),
        DIGEST_STATE_URL=state_url,
        DIGEST_STATE_LEASE_SECONDS=str(LEASE_S),
        DIGEST_FROM="Daily Papers <papers@example.org>",
        DIGEST_SMTP_HOST="127.0.0.1",
        DIGEST_SMTP_PORT=str(port),
        DIGEST_SMTP_SECURITY="none",
        DIGEST_SMTP_CONCURRENCY=str(POOL),
    )
    return env


def _send(workdir: Path, port: int, state_url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "send", "--date", DAY, *extra],
        cwd=workdir,
        env=_env(workdir, port, state_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_delivers_each_subscriber_exactly_once(
    tmp_path: Path, state_url: str
) -> None:
    shutil.copytree(EXAMPLES / "hf-daily-papers", tmp_path / "papers")
    emails = [f"reader{i:04d}@example.org" for i in range(SUBSCRIBERS)]
    lines = ["subscribers:"]
    for i, address in enumerate(emails):
        lines.append(f"  - email: {address}")
        lines.append(f"    keywords: [{['agent*', 'robot*', 'video', 'reasoning'][i % 4]}]")
    (tmp_path / "subscribers.yaml").write_text("\n".join(lines) + "\n")
    spool = tmp_path / "spool"

    with ServerProcess(spool, data_delay_ms=20) as relay:
        first = _send(tmp_path, relay.port, state_url)
        deadline = time.monotonic() + WAIT_LIMIT_S
        while len(list(spool.glob("*.eml"))) < KILL_AFTER:
            assert first.poll() is None, f"sender ended before the kill: {first.communicate()}"
            assert time.monotonic() < deadline, "the relay received too little in time"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        assert first.returncode == -signal.SIGKILL
        received_before = len(read_spool(spool))
        assert KILL_AFTER <= received_before < SUBSCRIBERS, "the kill must land mid-batch"

        if state_url.startswith("postgresql"):
            time.sleep(LEASE_S + 0.5)  # the dead sender's claims are a dead process's now
        second = _send(tmp_path, relay.port, state_url)
        output, _ = second.communicate(timeout=WAIT_LIMIT_S)
        counts = collections.Counter(m.rcpt_tos[0] for m in read_spool(spool))
        with open_state(state_url) as store:
            rows = {r.subscriber: r for r in store.list(edition=DAY)}

        unknown = sorted(e for e, r in rows.items() if r.status == "unknown")
        assert len(unknown) <= POOL
        # Rows left unknown by the crash need someone to look: the run says so and fails.
        assert second.returncode == (1 if unknown else 0), output
        if unknown:
            assert f"unknown {len(unknown)}" in output
        for address in emails:
            row = rows[address]
            if row.status == "unknown":
                assert counts[address] <= 1, address
            else:
                assert row.status == "sent", (address, row.status)
                assert counts[address] == 1, (address, counts[address])
        assert not any(r.status == "sending" for r in rows.values())

        # The uncertain ones are resent only when asked; afterwards nobody is missing.
        third = _send(tmp_path, relay.port, state_url, "--retry-unknown")
        output, _ = third.communicate(timeout=WAIT_LIMIT_S)
        assert third.returncode == 0, output
        counts = collections.Counter(m.rcpt_tos[0] for m in read_spool(spool))
        assert all(counts[a] >= 1 for a in emails)
        assert sum(counts.values()) <= SUBSCRIBERS + len(unknown)
        with open_state(state_url) as store:
            assert {r.status for r in store.list(edition=DAY)} == {"sent"}
