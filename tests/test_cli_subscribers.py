"""`digest subscribers import/export/edit/add/remove` in both homes of the list, on SQLite and
PostgreSQL, and the move of a list from its file into the state and back (issue 22)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digest.settings import load_settings
from digest.state import open_state
from digest.subscribers import EXAMPLE_FILE
from digest.subscribers.changes import RemoveEntry
from digest.subscribers.entries import split_list
from digest.subscribers.home import StateHome, open_home
from tests.conftest import FIXTURES, PROJECT
from tests.factories import list_yaml, run_cli

EXAMPLE = (PROJECT / EXAMPLE_FILE).read_text(encoding="utf-8")
EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[-1])
count = pathlib.Path(__file__).with_suffix(".count")
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
text = path.read_text()
pathlib.Path(__file__).with_suffix(".shown" + str(n)).write_text(text)
edits = EDITS
if n < len(edits):
    old, new = edits[n]
    path.write_text(text.replace(old, new))
"""


@pytest.fixture(params=["file", "state"])
def home(
    request: pytest.FixtureRequest, state_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Where the list lives for the commands under test: ``file`` (subscribers.yaml, empty at
    first) or ``state``; each state backend."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", "a-real-secret-key-for-tests-0123456789abcdef")
    if request.param == "file":
        (tmp_path / "subscribers.yaml").write_text("subscribers:\n")
        monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(tmp_path / "subscribers.yaml"))
    else:
        monkeypatch.setenv("DIGEST_SUBSCRIBERS", "state")
    return str(request.param)


def exported() -> str:
    code, output = run_cli("subscribers", "export", "--out", "out.yaml")
    assert code == 0, output
    return Path("out.yaml").read_text(encoding="utf-8")


def test_import_then_export_gives_back_the_file_and_counts_what_changed(home: str) -> None:
    Path("list.yaml").write_text(EXAMPLE)
    code, output = run_cli("subscribers", "import", "list.yaml", "--dry-run")
    assert code == 0 and "would import list.yaml into " in output
    assert "4 added, 0 changed, 0 unchanged, 0 deactivated" in output
    assert exported() == "subscribers:\n"  # nothing written
    code, output = run_cli("subscribers", "import", "list.yaml")
    assert code == 0 and "4 added" in output, output
    assert exported() == EXAMPLE
    code, output = run_cli("subscribers", "export")
    assert code == 0 and output.startswith(EXAMPLE)  # standard output
    Path("less.yaml").write_text(EXAMPLE[: EXAMPLE.index("\n  # Paused")] + "\n")
    code, output = run_cli("subscribers", "import", "less.yaml", "--prune")
    assert code == 0 and "0 changed, 3 unchanged, 0 deactivated" in output, output
    assert "1 not in less.yaml left as they are" in output  # alan is paused already
    code, output = run_cli("subscribers", "--status", "paused", "--json")
    assert code == 0 and [r["email"] for r in json.loads(output)] == ["alan@example.org"]


def test_a_bad_file_is_refused_line_by_line_with_exit_2_and_nothing_written(home: str) -> None:
    Path("list.yaml").write_text(EXAMPLE)
    assert run_cli("subscribers", "import", "list.yaml")[0] == 0
    Path("bad.yaml").write_text(
        "subscribers:\n  - email: ada@example.org\n    keywords: [a, a]\n"
        "  - email: not-an-address\n"
    )
    code, output = run_cli("subscribers", "import", "bad.yaml")
    assert code == 2
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert lines[0].startswith("error: bad.yaml:3: subscribers[0].keywords: 'a' is listed twice")
    assert lines[1].startswith("error: bad.yaml:4: subscribers[1].email: invalid email address")
    assert "Traceback" not in output
    assert exported() == EXAMPLE
    code, output = run_cli("subscribers", "import", "missing.yaml")
    assert code == 2 and "error: missing.yaml: cannot read it: No such file" in output


def test_add_remove_and_edit_with_the_editor(
    home: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("list.yaml").write_text(EXAMPLE)
    assert run_cli("subscribers", "import", "list.yaml")[0] == 0
    code, output = run_cli(
        "subscribers",
        "add",
        "Zed@Example.org",
        "--keywords",
        "agents, robots",
        "--keywords",
        "llm*",
    )
    assert code == 0 and "added zed@example.org" in output, output
    code, output = run_cli("subscribers", "add", "zed@example.org")
    assert code == 2 and "already" in output
    # Hostile input: refused with the field's message, or written so it reads back as typed.
    for bad in (["not an address"], ["eve@example.org", "--name", "Eve\r\nBcc: x@y.org"]):
        code, output = run_cli("subscribers", "add", *bad)
        assert code == 2 and "Traceback" not in output, output
    code, output = run_cli("subscribers", "add", "yml@example.org", "--keywords", "a: b, [x], #c")
    assert code == 0, output
    with open_state(os.environ["DIGEST_STATE_URL"]) as store:
        home = open_home(load_settings(env_file=None), store)
        added = home.get("yml@example.org")
        assert added is not None and added.keywords == ("a: b", "[x]", "#c")
        assert home.apply(RemoveEntry("yml@example.org"))
    added = "  - email: zed@example.org\n    keywords: [agents, robots, llm*]\n"
    assert exported().endswith(added)
    code, output = run_cli("subscribers", "remove", "zed@example.org")
    assert code == 0 and "removed" in output
    code, output = run_cli("subscribers", "remove", "zed@example.org")
    assert code == 2 and "not on" in output
    assert exported() == EXAMPLE
    # $EDITOR: a first save with a problem reopens the entry with the problem on top; the
    # second fixes it; one entry is written.
    script = tmp_path / "editor.py"
    script.write_text(
        EDITOR.replace(
            "EDITS", repr([("max_papers: 15", "max_papers: 0"), ("max_papers: 0", "max_papers: 9")])
        )
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    code, output = run_cli("subscribers", "edit", "team@example.org")
    assert code == 0 and "updated: team@example.org" in output, output
    reopened = (tmp_path / "editor.shown1").read_text()
    assert "#|   team@example.org:" in reopened and "max_papers: must be a whole number" in reopened
    assert exported() == EXAMPLE.replace("max_papers: 15", "max_papers: 9")
    with open_state(os.environ["DIGEST_STATE_URL"]) as store:
        actions = [(e.action, e.subscriber, e.actor.startswith("cli:")) for e in store.events()]
    assert actions == [
        ("add", "zed@example.org", True),
        ("add", "yml@example.org", True),
        ("remove", "zed@example.org", True),
        ("edit", "team@example.org", True),
    ]


def test_validate_counts_a_list_in_the_state(
    state_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", "state")
    monkeypatch.setenv("DIGEST_FROM", "Papers <papers@lab.example.org>")
    code, output = run_cli("validate", "--offline")
    assert code == 0 and "0 subscribers in the state" in output, output
    Path("list.yaml").write_text(EXAMPLE)
    assert run_cli("subscribers", "import", "list.yaml")[0] == 0
    code, output = run_cli("validate", "--offline")
    assert (
        code == 0
        and "ok: settings valid, 4 subscribers in the subscriber list in the state" in output
    )


def test_send_and_preview_read_a_list_in_the_state(
    state_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", "state")
    monkeypatch.setenv("DIGEST_SOURCES", f"file:{FIXTURES / 'hf-daily-papers'}")
    monkeypatch.setenv("DIGEST_OUTBOX", str(tmp_path / "outbox"))
    Path("list.yaml").write_text(EXAMPLE)
    assert run_cli("subscribers", "import", "list.yaml")[0] == 0
    code, output = run_cli(
        "preview",
        "--date",
        "2026-08-20",
        "--subscriber",
        "grace@example.org",
        "--out",
        "-",
        "--format",
        "text",
    )
    assert code == 0 and "Grace" in output, output
    code, output = run_cli("send", "--date", "2026-08-20", "--subscriber", "nobody@example.org")
    assert code == 2 and "not in the subscriber list in the state" in output
    papers = f"file:{FIXTURES / 'hf-daily-papers'}"  # ada's own `sources: [hf]` too
    code, output = run_cli("send", "--date", "2026-08-20", "--source", papers)
    assert code == 0, output
    with open_state(state_env) as store:
        sent = {r.subscriber for r in store.list(edition="2026-08-20", statuses=["sent"])}
    assert sent == {"ada@example.org", "grace@example.org"}  # daily and active; alan paused


def test_moving_a_list_into_the_state_and_back_keeps_everything(
    state_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "Subscribers": the documented sequence. History, suppressions and feedback are
    keyed by address in the state: the same before and after, in both homes."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(EXAMPLE)
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(path))
    with open_state(state_env) as store:
        store.suppress("grace@example.org", "unsubscribed", evidence="one-click", actor="web")
        store.record_feedback("ada@example.org", "2406.09246", "like")
        assert store.claim("ada@example.org", "2026-08-20", "<m@x>")
        store.mark_sent("ada@example.org", "2026-08-20", "250 ok")
    code, before = run_cli("subscribers", "--json")
    assert code == 0
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", "state")
    code, output = run_cli("subscribers", "import", str(path))
    assert code == 0 and "4 added" in output
    code, in_state = run_cli("subscribers", "--json")
    assert code == 0 and json.loads(in_state) == json.loads(before)
    code, output = run_cli("subscribers", "export", "--out", str(tmp_path / "back.yaml"))
    assert code == 0 and (tmp_path / "back.yaml").read_text() == EXAMPLE
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(tmp_path / "back.yaml"))
    code, back = run_cli("subscribers", "--json")
    assert code == 0 and json.loads(back) == json.loads(before)
    statuses = {r["email"]: r["status"] for r in json.loads(back)}
    assert statuses["grace@example.org"] == "unsubscribed"


@pytest.mark.slow
def test_a_sigkill_during_an_import_leaves_the_list_as_it_was(
    state_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `digest subscribers import` of 20,000 entries into a list of 4, killed (SIGKILL)
    at several moments: each time the list is the old one whole, or the new one whole."""
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", "state")
    big = list_yaml(20_000)
    (tmp_path / "big.yaml").write_text(big)
    old, new = split_list(EXAMPLE), split_list(big)
    assert old is not None and new is not None
    merged = new.head + "".join(new.entries()) + "".join(old.entries()) + new.tail
    seen = []
    for delay in (0.5, 1.5, 2.5, 3.5, 5.0, 8.0):
        with open_state(state_env) as store:
            store._db.execute("DELETE FROM subscribers")  # type: ignore[attr-defined]
            store._db.execute("DELETE FROM subscriber_list")  # type: ignore[attr-defined]
            StateHome(store).import_list(EXAMPLE.encode(), Path("small.yaml"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "subscribers", "import", "big.yaml"],
            env=dict(os.environ),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with open_state(state_env) as store:
            home = StateHome(store)
            text = home.export()
            assert text in (EXAMPLE, merged), f"killed after {delay} s: a partial list"
            listed = store.subscriber_list()
            assert listed.entries == len(home.load())
        seen.append("old" if text == EXAMPLE else "new")
    assert seen[0] == "old", seen
