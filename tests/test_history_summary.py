"""Who was skipped, and why (issue 24, point 4): ``digest history --edition D --summary``
and its ``--json``, from one grouped query, on both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from digest.history import summarize
from digest.state import PAUSED_ERROR, SKIP_PAUSED, StateBackend, open_state
from tests.factories import run_cli

DAY = "2026-08-20"
T0 = datetime(2026, 8, 21, 7, 0, tzinfo=UTC)


def fill(store: StateBackend) -> None:
    """One edition with a row of every outcome, another edition, and a test send."""
    for n, address in enumerate(("a@example.org", "b@example.org")):
        assert store.claim(address, DAY, f"<{n}@x>")
        store.mark_sent(address, DAY, "250 2.0.0 OK", code=250)
    store.mark_deferred("owed@example.org", DAY, "sources failed: hf: 503", attempts=0)
    store.mark_deferred("slow@example.org", DAY, "451 4.7.1 rate limited, slow down", 451)
    store.mark_deferred("g1@gmail.com", DAY, f"{PAUSED_ERROR}: gmail", attempts=0)
    store.mark_skipped("g2@gmail.com", DAY, SKIP_PAUSED)
    store.mark_unknown("lost@example.org", DAY, "timed out after the data")
    store.mark_failed("x1@example.org", DAY, "550 5.1.1 <x1@example.org>: no such user", 550)
    store.mark_failed("x2@example.org", DAY, "550 5.1.1 <x2@example.org>: no such user", 550)
    store.mark_failed("big@example.org", DAY, "552 5.3.4 message too big", 552)
    store.mark_failed("bug@example.org", DAY, "could not make the message: KeyError", attempts=0)
    for address, reason in (
        ("u1@example.org", "unsubscribed"),
        ("u2@example.org", "unsubscribed"),
        ("c@example.org", "complained"),
        ("m@example.org", "manual"),
        ("bounced@example.org", "bounced"),
        ("n1@example.org", "no papers"),
        ("late@example.org", "late"),
    ):
        store.mark_skipped(address, DAY, reason)
    assert store.claim("a@example.org", "2026-08-19", "<old@x>")
    store.mark_sent("a@example.org", "2026-08-19", "250 OK", code=250)
    store.mark_sent("op@example.org", f"test:{DAY}", "250 OK", code=250)


def test_the_summary_counts_every_outcome_of_an_edition(state_env: str) -> None:
    with open_state(state_env, now=lambda: T0) as store:
        fill(store)
        [summary] = summarize(store.edition_counts(DAY))
    data = summary.to_json()
    assert data["total"] == 18
    assert (data["delivered"], data["owed"], data["unknown"], data["sending"]) == (2, 1, 1, 0)
    assert data["failed"] == [
        {"code": 550, "count": 2, "reply": "550 5.1.1 <x1@example.org>: no such user"},
        {"code": None, "count": 1, "reply": "could not make the message: KeyError"},
        {"code": 552, "count": 1, "reply": "552 5.3.4 message too big"},
    ]
    assert data["skipped"] == {
        "suppressed": 4,
        "bounced": 1,
        "paused": 2,  # one still owed (sent after `digest resume`), one past its window
        "throttled": 1,
        "no papers": 1,
        "late": 1,
    }
    assert data["suppressed"] == {"unsubscribed": 2, "complained": 1, "manual": 1}


def test_digest_history_summary_text_and_json(state_env: str) -> None:
    with open_state(state_env, now=lambda: T0) as store:
        fill(store)
    code, output = run_cli("history", "--edition", DAY, "--summary")
    assert code == 0, output
    assert output.splitlines() == [
        f"edition {DAY}: 18 subscribers, 2 delivered",
        "  owed 1 (not sent yet)",
        "  unknown 1 (may have arrived; resend with `digest send --retry-unknown`)",
        "  failed 4: 550 ×2 (550 5.1.1 <x1@example.org>: no such user), no reply ×1 (could not "
        "make the message: KeyError), 552 ×1 (552 5.3.4 message too big)",
        "  skipped 10: suppressed 4 (2 unsubscribed, 1 complained, 1 manual), bounced 1, "
        "paused 2, throttled 1, no papers matched 1, late 1",
    ]
    code, output = run_cli("history", "--summary", "--json")
    assert code == 0, output
    editions = json.loads(output)
    assert [e["edition"] for e in editions] == [DAY, "2026-08-19"]  # newest first, no test send
    assert editions[1]["delivered"] == editions[1]["total"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--summary", "--status", "sent"), "--summary counts every subscriber; drop --status"),
        (("--summary", "--subscriber", "a@example.org"), "drop --subscriber"),
        (("--json",), "--json goes with --summary"),
    ],
)
def test_summary_options_that_do_not_go_together_are_one_line_errors(
    state_env: str, args: tuple[str, ...], message: str
) -> None:
    code, output = run_cli("history", *args)
    assert code == 2 and output.startswith("error: ") and message in output, output
    assert len(output.splitlines()) == 1


@pytest.mark.parametrize(
    "edition", ["2026-08-18", "'; DROP TABLE deliveries; --", "%", "2026-08-2_"]
)
def test_an_edition_without_rows_says_so_and_a_hostile_key_is_only_a_key(
    state_env: str, edition: str
) -> None:
    with open_state(state_env, now=lambda: T0) as store:
        fill(store)
    code, output = run_cli("history", "--edition", edition, "--summary")
    assert code == 0, output
    assert output.startswith("no deliveries recorded for edition")
    code, output = run_cli("history", "--edition", edition, "--summary", "--json")
    assert (code, json.loads(output)) == (0, [])
    with open_state(state_env) as store:
        assert store.counts()["deliveries"] == 20


@pytest.mark.parametrize("edition", ["\x00", "2026-08-20\n", "\x1b[2J"])
def test_an_edition_key_with_control_characters_is_refused_before_the_state(
    state_env: str, edition: str
) -> None:
    for args in (("--summary",), ()):
        code, output = run_cli("history", "--edition", edition, *args)
        assert code == 2, output
        assert output.startswith("error: --edition ") and "YYYY-MM-DD" in output
        assert "\x1b" not in output
