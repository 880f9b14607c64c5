"""digest.writeback: round-trip writes into the subscribers file."""

from __future__ import annotations

import codecs
import shutil
import threading
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.subscribers import load_subscribers
from digest.subscribers.changes import SetFields
from digest.subscribers.writeback import SubscribersFile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    shutil.copy(ROOT / "subscribers.example.yaml", path)
    return path


def test_unsubscribe_changes_one_line_and_keeps_every_comment(example: Path) -> None:
    before = example.read_text().splitlines()
    assert SubscribersFile(example).set_active("ADA@example.org", False)
    after = example.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("    active: true", "    active: false")]
    assert load_subscribers(example).get("ada@example.org").active is False  # type: ignore[union-attr]
    # Repeating it is harmless: nothing is rewritten.
    mtime = example.stat().st_mtime_ns
    assert not SubscribersFile(example).set_active("ada@example.org", False)
    assert example.stat().st_mtime_ns == mtime


def test_preferences_and_sign_up_keep_comments_order_and_blank_lines(example: Path) -> None:
    text = example.read_text()
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#") or not ln.strip()]
    writer = SubscribersFile(example)
    assert writer.update_fields(
        "ada@example.org", {"keywords": ["robot*", "world model"], "max_papers": 4}
    )
    assert writer.add_or_activate("new@example.org", name="Nu Person", keywords=["diffusion"])
    out = example.read_text()
    kept = [ln for ln in out.splitlines() if ln.lstrip().startswith("#") or not ln.strip()]
    assert kept == comments
    subs = load_subscribers(example)
    ada = subs.get("ada@example.org")
    assert ada is not None and ada.keywords == ("robot*", "world model") and ada.max_papers == 4
    new = subs.get("new@example.org")
    assert new is not None and new.name == "Nu Person" and new.keywords == ("diffusion",)
    assert [s.email for s in subs][-1] == "new@example.org"
    # Unchanged values are not rewritten; the send_at comment stays on its line.
    assert '    send_at: "06:30"              # 06:30 in Europe/London' in out


def test_a_value_equal_to_the_default_is_not_added(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("subscribers:\n- email: a@example.org  # me\n")
    assert not SubscribersFile(path).update_fields(
        "a@example.org", {"frequency": "daily", "max_papers": 10, "keywords": []}
    )
    assert path.read_text() == "subscribers:\n- email: a@example.org  # me\n"


def test_an_invalid_result_is_refused_and_nothing_is_written(example: Path) -> None:
    before = example.read_bytes()
    with pytest.raises(ConfigError, match="would be invalid"):
        SubscribersFile(example).update_fields("ada@example.org", {"max_papers": 0})
    with pytest.raises(ConfigError, match="would be invalid"):
        SubscribersFile(example).update_fields("ada@example.org", {"name": "Eve\nBcc: x"})
    assert example.read_bytes() == before
    assert not list(example.parent.glob(".subscribers.yaml.*"))


def test_a_hand_edit_during_the_write_keeps_both_changes(example: Path) -> None:
    edits = []

    def hand_edit() -> None:
        if not edits:  # the operator saves the file once, between our read and our rename
            text = example.read_text().replace("name: Grace Hopper", "name: Rear Admiral Hopper")
            example.write_text(text + "  - email: hand@example.org  # added by hand\n")
            edits.append(1)

    writer = SubscribersFile(example, before_replace=hand_edit)
    assert writer.set_active("ada@example.org", False)
    out = example.read_text()
    assert "hand@example.org  # added by hand" in out
    assert "Rear Admiral Hopper" in out
    subs = load_subscribers(example)
    assert subs.get("ada@example.org").active is False  # type: ignore[union-attr]
    assert subs.get("hand@example.org") is not None


def test_concurrent_writers_lose_nothing(example: Path) -> None:
    writers = [SubscribersFile(example) for _ in range(4)]

    def add(i: int) -> None:
        for j in range(5):
            writers[i].add_or_activate(f"w{i}-{j}@example.org")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    emails = {s.email for s in load_subscribers(example)}
    assert {f"w{i}-{j}@example.org" for i in range(4) for j in range(5)} <= emails


def test_file_mode_is_kept(example: Path) -> None:
    example.chmod(0o640)
    SubscribersFile(example).set_active("ada@example.org", False)
    assert example.stat().st_mode & 0o777 == 0o640


def test_active_is_a_one_line_splice_and_unusual_shapes_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = (
        "subscribers:\n"
        "  - email: Zoë@example.org   # naïve café\n"
        "    name: Zoë\n"
        "  - {email: flow@example.org, name: Flow}\n"
        "  - email: b@example.org\n"
        "    active: true   # on\n"
    )
    path.write_text(text)
    writer = SubscribersFile(path)
    assert writer.set_active_many({"zoë@example.org": False, "b@example.org": False})
    assert path.read_text() == text.replace(
        "# naïve café\n", "# naïve café\n    active: false\n"
    ).replace("active: true   # on", "active: false   # on")
    assert writer.set_active("flow@example.org", False)  # flow style: the round trip
    subs = load_subscribers(path)
    assert [s.active for s in subs] == [False, False, False]
    assert "# naïve café" in path.read_text() and "# on" in path.read_text()
    assert not writer.set_active_many({"nobody@example.org": False})


CRLF_FILE = (
    "# A list edited on Windows.",
    "defaults:",
    "  max_papers: 5   # short",
    "",
    "subscribers:",
    "  - email: ada@example.org   # the PI",
    '    keywords: [diffusion, "agent*"]',
    "",
    "  - email: bob@example.org",
    "    name: Bob",
    "",
)


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_crlf_line_breaks_and_a_bom_are_kept(tmp_path: Path, bom: bytes) -> None:
    # Before: the round trip wrote the file back with LF (comment lines kept their CR) and
    # without its BOM, and the splice added an LF line into a CRLF file.
    path = tmp_path / "subscribers.yaml"
    path.write_bytes(bom + "\r\n".join(CRLF_FILE).encode())
    writer = SubscribersFile(path)
    assert writer.set_active("bob@example.org", False)  # the splice: a line under the email
    assert writer.update_fields("ada@example.org", {"keywords": ["a?", "world model"]})
    expected = list(CRLF_FILE)
    expected[6] = '    keywords: ["a?", world model]'
    expected.insert(9, "    active: false")
    assert path.read_bytes() == bom + "\r\n".join(expected).encode()  # every other byte kept
    subs = load_subscribers(path)
    assert subs.get("ada@example.org").keywords == ("a?", "world model")  # type: ignore[union-attr]
    assert subs.get("bob@example.org").active is False  # type: ignore[union-attr]


def test_a_changed_value_drops_the_comment_at_the_end_of_its_line(example: Path) -> None:
    """The comment after ``send_at: "06:30"`` describes 06:30: a save of 08:15 drops it (the
    lines after it stay); an unchanged value keeps its comment (the test above)."""
    before = example.read_text()
    assert SubscribersFile(example).update_fields("ada@example.org", {"send_at": "08:15"})
    out = example.read_text()
    assert '    send_at: "08:15"\n' in out and "06:30 in Europe/London" not in out
    removed = [ln for ln in before.splitlines() if ln not in out.splitlines()]
    added = [ln for ln in out.splitlines() if ln not in before.splitlines()]
    assert removed == [
        '    send_at: "06:30"              # 06:30 in Europe/London, whatever the server\'s zone'
    ] and added == ['    send_at: "08:15"']


def test_a_changed_value_drops_its_line_comment_in_an_entry_of_the_state_too() -> None:
    entry = (
        '  - email: a@example.org\n    send_at: "06:30"  # 06:30 here\n'
        "    max_papers: 3  # few\n    name: Ada  # her name\n"
    )
    patched = SetFields("a@example.org", {"send_at": "08:15", "name": "Ada L."}).patch(entry, {}, 2)
    assert patched == (  # a comment that does not quote the old value stays
        '  - email: a@example.org\n    send_at: "08:15"\n'
        "    max_papers: 3  # few\n    name: Ada L. # her name\n"  # at its column
    )
