"""The subscriber list's two homes (a YAML file, a table of the state): the same list, the same
rules, the same round trips; on SQLite and PostgreSQL (issue 22)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.state import StateBackend
from digest.subscribers import EXAMPLE_FILE, load_subscribers
from digest.subscribers import yaml as yaml_loader
from digest.subscribers.changes import (
    AddOrActivate,
    PutEntry,
    RemoveEntry,
    SetActive,
    SetFields,
    change_from_json,
    change_json,
)
from digest.subscribers.entries import split_list
from digest.subscribers.home import (
    EDIT_HEADER,
    FileHome,
    StateHome,
    SubscriberHome,
    add_subscriber,
    edit_entry,
)
from digest.subscribers.yaml import read_list
from tests.conftest import PROJECT, MakeStore
from tests.factories import list_yaml

EXAMPLE = (PROJECT / EXAMPLE_FILE).read_text(encoding="utf-8")

MakeHome = Callable[[str], SubscriberHome]


@pytest.fixture(params=["file", "state"])
def make_home(
    request: pytest.FixtureRequest, make_store: MakeStore, tmp_path: Path
) -> Iterator[MakeHome]:
    """``make_home(text)``: a home holding the list ``text`` (the file written as it is, or
    an empty state's list after ``import``); each state backend, each home."""
    homes: list[SubscriberHome] = []

    def make(text: str) -> SubscriberHome:
        store = make_store()
        home: SubscriberHome
        if request.param == "file":
            path = tmp_path / f"subscribers{len(homes)}.yaml"
            path.write_text(text, encoding="utf-8")
            home = FileHome(path, store)
        else:
            home = StateHome(store)
            home.import_list(text.encode(), Path("subscribers.yaml"))
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.close()


# -- the list as text ----------------------------------------------------------------------------

SHAPES = {
    "example": EXAMPLE,
    "crlf and a bom": "\ufeff" + EXAMPLE.replace("\n", "\r\n"),
    "no line break at the end": "subscribers:\n  - email: a@example.org\n    name: A",
    "column 0 items, keys after": (
        "subscribers:\n- email: a@example.org\n# c\n- email: b@example.org\nx_tail: 1\n"
    ),
    "empty": "# nobody yet\nsubscribers:\n",
    "comments at the list's column between entries": (
        "subscribers:\n  - email: a@example.org\n    # inside a\n\n  # before b\n"
        "  - email: b@example.org\n\n# after the list\n"
    ),
}


@pytest.mark.parametrize("text", SHAPES.values(), ids=SHAPES.keys())
def test_a_list_cuts_into_head_entries_and_tail_that_join_to_the_same_text(text: str) -> None:
    layout = split_list(text)
    assert layout is not None
    assert layout.head + "".join(layout.entries()) + layout.tail == text
    addresses = [e.split("email:")[1].split()[0].strip("\"'") for e in layout.entries()]
    assert all(layout.find(a.upper()) == i for i, a in enumerate(addresses))
    if "before b" in text:
        assert layout.entry(1).startswith("\n  # before b\n")  # its comment goes with it
        assert layout.tail == "\n# after the list\n"


def test_a_list_written_another_way_is_not_cut() -> None:
    assert split_list("subscribers: [{email: a@example.org}]\n") is None
    assert split_list("subscribers:\n  - email: a@example.org\nsubscribers:\n") is None


def test_changes_travel_as_json() -> None:
    for change in (
        SetActive("a@example.org", False),
        SetFields("a@example.org", {"keywords": ["x", "y?"], "name": None, "max_papers": 3}),
        AddOrActivate("a@example.org", "A", ("x",)),
        PutEntry("a@example.org", "  - email: a@example.org\n"),
        RemoveEntry("a@example.org"),
    ):
        assert change_from_json(change_json(change)) == change
    with pytest.raises(ValueError, match="not a subscriber change"):
        change_from_json('{"kind": "drop table"}')


# -- import and export ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [EXAMPLE, list_yaml(10_000)], ids=["example", "10,000"])
def test_export_gives_back_byte_for_byte_what_import_took(make_home: MakeHome, text: str) -> None:
    home = make_home(text)
    exported = home.export()
    assert exported == text
    again = home.import_list(exported.encode(), Path("exported.yaml"))
    assert (again.added, again.changed, again.deactivated) == (0, 0, 0)
    assert again.unchanged == len(load_subscribers_from(text))
    assert home.export() == text
    assert home.load().subscribers == load_subscribers_from(text)


def load_subscribers_from(text: str) -> list[object]:
    path = Path("from-text.yaml")
    path.write_text(text, encoding="utf-8")
    return list(load_subscribers(path).subscribers)


def test_import_counts_and_prune(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    edited = EXAMPLE.replace(
        "    timezone: America/New_York\n", "    timezone: America/Chicago\n"
    ).replace(
        "  - email: alan@example.org\n    keywords:", "  - email: bob@example.org\n    keywords:"
    )
    report = home.import_list(edited.encode(), Path("edited.yaml"), dry_run=True)
    assert (report.added, report.changed, report.unchanged, report.kept) == (1, 1, 2, 1)
    assert home.export() == EXAMPLE  # a dry run writes nothing
    report = home.import_list(edited.encode(), Path("edited.yaml"))
    assert (report.added, report.changed, report.unchanged, report.deactivated, report.kept) == (
        1,
        1,
        2,
        0,
        1,
    )
    assert home.get("alan@example.org") is not None  # left alone
    pruned = edited.replace("    active: false\n", "")  # bob active; alan paused already
    report = home.import_list(pruned.encode(), Path("pruned.yaml"), prune=True)
    assert (report.changed, report.deactivated, report.kept) == (1, 0, 1)
    without_ada = pruned.replace("  - email: ada@example.org", "  - email: ada2@example.org")
    report = home.import_list(without_ada.encode(), Path("x.yaml"), prune=True)
    assert (report.added, report.deactivated) == (1, 1)
    ada = home.get("ada@example.org")
    assert ada is not None and ada.active is False
    assert home.load().get("ada@example.org").active is False  # type: ignore[union-attr]


BAD_FILES = {
    "duplicate": (
        "subscribers:\n  - email: a@example.org\n  - email: A@Example.org\n",
        ["bad.yaml:3: subscribers[1].email: duplicate email a@example.org (also at line 2"],
    ),
    "every problem": (
        "subscribers:\n  - email: a@example.org\n    keywords: ['*']\n  - email: b@example.org\n"
        "    max_papers: 99999999999999999999999999\n    colour: red\n",
        [
            "bad.yaml:3: subscribers[0].keywords[0]:",
            "bad.yaml:5: subscribers[1].max_papers: must be a whole number",
            "bad.yaml:6: subscribers[1].colour: unknown key",
        ],
    ),
    "not yaml": ("subscribers:\n  - email: [a@example.org\n", ["bad.yaml:3: invalid YAML"]),
    "a nul": ("subscribers:\n  - email: a\x00@example.org\n", ["bad.yaml:2: invalid YAML"]),
    "a header injection": (
        'subscribers:\n  - email: a@example.org\n    name: "A\\r\\nBcc: all@example.org"\n',
        ["bad.yaml:3: subscribers[0].name:"],
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_with_every_problem_at_its_line_and_nothing_written(
    make_home: MakeHome, text: str, expected: list[str]
) -> None:
    home = make_home(EXAMPLE)
    for prune in (False, True):
        with pytest.raises(ConfigError) as refused:
            home.import_list(text.encode(), Path("bad.yaml"), prune=prune)
        problems = refused.value.problems
        assert len(problems) == len(expected), problems
        for problem, start in zip(problems, expected, strict=True):
            assert problem.startswith(start), problem
        assert home.export() == EXAMPLE


def test_bytes_that_are_not_utf8_are_refused(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    with pytest.raises(ConfigError, match=r"bad.yaml: not UTF-8 text \(bad byte at offset 25\)"):
        home.import_list(b"subscribers:\n  - email: a\xff@example.org\n", Path("bad.yaml"))
    assert home.export() == EXAMPLE


def test_a_list_written_another_way_is_imported_in_the_usual_form(make_home: MakeHome) -> None:
    home = make_home("subscribers:\n")
    flow = 'defaults: {max_papers: 3}\nsubscribers: [{email: a@example.org, keywords: ["x?"]}]\n'
    report = home.import_list(flow.encode(), Path("flow.yaml"))
    assert not report.layout_kept and report.added == 1
    exported = home.export()
    assert exported == (
        'defaults:\n  max_papers: 3\nsubscribers:\n  - email: a@example.org\n    keywords: ["x?"]\n'
    )
    assert home.import_list(exported.encode(), Path("again.yaml")).unchanged == 1


# -- one entry at a time -------------------------------------------------------------------------


def test_a_change_rewrites_one_entry_and_keeps_every_other_byte(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    assert home.apply(SetFields("Grace@example.org", {"keywords": ["a", "b?"], "max_papers": 3}))
    assert not home.apply(SetFields("grace@example.org", {"max_papers": 3}))  # already so
    assert home.apply(SetActive("team@example.org", False))
    assert home.apply(AddOrActivate("new@example.org", "New", ("x",)))
    text = home.export()
    grace = EXAMPLE.index("  # Only what matches")
    team = EXAMPLE.index("  # A weekly digest")
    assert text.startswith(EXAMPLE[:grace])  # ada and everything before: byte for byte
    assert '      - a\n      - "b?"\n    only_matching: true\n' in text
    assert text.endswith(
        "    active: false\n  - email: new@example.org\n    name: New\n    keywords: [x]\n"
    )
    assert EXAMPLE[team : team + 200] in text
    grace_now = home.get("grace@example.org")
    assert grace_now is not None and grace_now.keywords == ("a", "b?") and grace_now.max_papers == 3
    assert home.get("team@example.org").active is False  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"max_papers: must be a whole number from 1 to 1,000"):
        home.apply(SetFields("grace@example.org", {"max_papers": 0}))
    assert home.export() == text


def test_add_and_remove(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    added = add_subscriber(home, "Zed@Example.org", name="Zed", keywords=["agents"])
    assert added.email == "zed@example.org" and home.get("zed@example.org") == added
    with pytest.raises(ConfigError, match="already"):
        add_subscriber(home, "zed@example.org")
    with pytest.raises(ConfigError, match="name"):
        add_subscriber(home, "eve@example.org", name="Eve\r\nBcc: all@example.org")
    assert home.apply(RemoveEntry("zed@example.org"))
    assert not home.apply(RemoveEntry("zed@example.org"))
    assert home.export() == EXAMPLE


class Editor:
    """An editor that answers with each given edit in turn, keeping what it was shown."""

    def __init__(self, *edits: Callable[[str], str | None]) -> None:
        self.edits = list(edits)
        self.shown: list[str] = []

    def __call__(self, text: str) -> str | None:
        self.shown.append(text)
        return self.edits.pop(0)(text)


def test_edit_reopens_with_the_problems_until_the_entry_is_valid(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    editor = Editor(
        lambda t: t.replace("max_papers: 15", "max_papers: 0").replace(
            "frequency: weekly", "frequency: hourly"
        ),
        lambda t: t.replace("max_papers: 0", "max_papers: 12").replace("hourly", "weekly"),
    )
    assert edit_entry(home, "team@example.org", editor)
    first, second = editor.shown
    assert (
        first.startswith(EDIT_HEADER) and "- email: team@example.org\n  name: Lab list\n" in first
    )
    problems = [line for line in second.splitlines() if line.startswith(f"{EDIT_HEADER}  team@")]
    lines = second.splitlines()
    assert len(problems) == 2
    for problem, word in zip(problems, ("frequency", "max_papers"), strict=True):
        line = int(problem.split(":")[1])
        assert lines[line - 1].strip().startswith(word), (problem, lines[line - 1])
    assert home.export() == EXAMPLE.replace("max_papers: 15", "max_papers: 12")


def test_edit_left_unchanged_or_saved_again_unfixed_writes_nothing(make_home: MakeHome) -> None:
    home = make_home(EXAMPLE)
    assert not edit_entry(home, "team@example.org", Editor(lambda t: t))
    assert not edit_entry(home, "team@example.org", Editor(lambda t: None))  # not saved
    assert not edit_entry(home, "team@example.org", Editor(lambda t: EDIT_HEADER + "x\n"))
    broken = Editor(lambda t: t.replace("max_papers: 15", "max_papers: x"), lambda t: t)
    with pytest.raises(ConfigError, match="max_papers"):
        edit_entry(home, "team@example.org", broken)
    renamed = Editor(lambda t: t.replace("team@example.org", "lab@example.org"), lambda t: t)
    with pytest.raises(ConfigError, match="address cannot change"):
        edit_entry(home, "team@example.org", renamed)
    with pytest.raises(ConfigError, match="not on"):
        edit_entry(home, "nobody@example.org", Editor())
    assert home.export() == EXAMPLE


# -- the list in the state -----------------------------------------------------------------------


def test_readers_of_a_list_in_the_state_read_only_what_changed(make_store: MakeStore) -> None:
    home = StateHome(make_store())
    home.import_list(list_yaml(500).encode(), Path("list.yaml"))
    first = home.load()
    assert home.load() is first  # unchanged: one one-row query, nothing read
    assert home.apply(SetFields("r00009@lab.example.org", {"max_papers": 2}))
    second = home.load()
    changed = [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a is not b]
    assert changed == [9]  # every other subscriber is the object read before
    assert second.get("r00009@lab.example.org").max_papers == 2  # type: ignore[union-attr]
    assert home.apply(RemoveEntry("r00008@example.org"))
    assert len(home.load()) == 499  # a removal: read whole again
    weekly = list(home.stream(frequency="weekly"))
    assert [s.email for s in weekly] == [s.email for s in home.load() if s.frequency == "weekly"]


def test_two_writers_of_one_subscriber_lose_nothing_and_both_are_in_the_events(
    make_store: MakeStore,
) -> None:
    """Two hosts (two stores) saving the same subscriber's preferences at once: each save
    lands on the row the other left (the later commit wins a field both set), and each is
    in the events."""
    stores = [make_store(), make_store()]
    StateHome(stores[0]).import_list(EXAMPLE.encode(), Path("example.yaml"))
    homes = [StateHome(s) for s in stores]
    saves = 20

    def save(n: int) -> None:
        home, store = homes[n], stores[n]
        for i in range(saves):
            values = {"keywords": [f"host{n}-save{i}"], "max_papers": 1 + n}

            def record(changes: bool, values: dict[str, object] = values) -> None:
                store.record_event(
                    "grace@example.org", "preferences", actor=f"web{n}", detail=values
                )

            home.submit(SetFields("grace@example.org", values), record=record)

    threads = [threading.Thread(target=save, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [e for e in stores[0].events("grace@example.org") if e.action == "preferences"]
    assert len(events) == 2 * saves
    last = events[-1].detail
    grace = homes[0].get("grace@example.org")
    assert grace is not None
    assert (list(grace.keywords), grace.max_papers) == (last["keywords"], last["max_papers"])
    assert grace.name == "Grace Hopper"  # the rest of the entry is the file's
    assert stores[1].subscriber_list().version == 1 + 2 * saves


def test_a_crash_during_an_import_leaves_the_list_as_it_was(make_store: MakeStore) -> None:
    """In process: the import's one transaction fails at its commit (as a killed process's
    never commits); the list and its version are the old ones. (A real SIGKILL:
    tests/test_cli_subscribers.py.)"""
    store: StateBackend = make_store()
    home = StateHome(store)
    home.import_list(EXAMPLE.encode(), Path("example.yaml"))
    before = (home.export(), store.subscriber_list())

    def fail() -> None:
        raise RuntimeError("killed at the commit")

    store._db.on_commit = fail  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="killed"):
        home.import_list(list_yaml(300).encode(), Path("big.yaml"))
    store._db.on_commit = None  # type: ignore[attr-defined]
    assert (home.export(), store.subscriber_list()) == before


def test_a_file_follows_submitted_changes_in_order_and_drains(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """The web's way (submit): committed in the state's outbox, written by the background
    writer; an unsubscribe undone before it was written is not written; drain returns once
    everything is in the file."""
    store = make_store()
    path = tmp_path / "subscribers.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    home = FileHome(path, store)
    with home.file.locked():  # the writer waits: both changes are in the outbox together
        home.submit(
            SetActive("grace@example.org", False),
            record=lambda _: store.suppress(
                "grace@example.org", "unsubscribed", evidence="one-click", actor="web"
            ),
        )
        assert home.get("grace@example.org").active is False  # type: ignore[union-attr]
        home.submit(
            SetActive("grace@example.org", True),
            record=lambda _: store.unsuppress("grace@example.org", actor="web"),
        )
        home.submit(SetFields("ada@example.org", {"max_papers": 3}))
        assert len(store.list_changes()) == 3
        assert path.read_text() == EXAMPLE
    started = time.monotonic()
    assert home.drain(timeout=20)
    assert time.monotonic() - started < 10
    assert store.list_changes() == []
    assert path.read_text() == EXAMPLE.replace("max_papers: 8\n", "max_papers: 3\n")
    home.close()


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf and a bom"])
def test_an_entry_is_found_around_its_address_where_the_whole_list_has_it(crlf: bool) -> None:
    text = list_yaml(400)
    if crlf:
        text = "\ufeff" + text.replace("\n", "\r\n")
    layout = split_list(text)
    assert layout is not None and len(layout) == 400
    subs, _ = read_list(text.encode(), Path("list.yaml"))
    for i, sub in enumerate(subs):
        found = layout.locate(sub.email.upper())
        assert found is not None and found.index == i
        assert (found.start, found.stop) == layout.span(i)
    assert layout.locate("nobody@example.org") is None


def test_the_list_a_write_leaves_for_the_readers_is_the_files(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """A file home's writer tells the readers the list it wrote (each changed entry's
    subscriber is known), so they parse nothing: it must be what the file reads as."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(list_yaml(300), encoding="utf-8")
    home = FileHome(path, make_store())
    before = home.load()
    emails = [s.email for s in before]
    home.file.apply(
        [
            SetFields(emails[10], {"keywords": ["written", "back"]}),
            SetActive(emails[20], False),
            RemoveEntry(emails[30]),
            AddOrActivate("new@example.org", "New", ("x",)),
            SetFields("new@example.org", {"max_papers": 2}),
            RemoveEntry(emails[299]),
        ]
    )
    written = home.file.written
    assert written is not None
    fresh = yaml_loader._load(path.read_bytes(), path, None)[0]
    assert fresh is not None and written[1].subscribers == fresh.subscribers
    assert home.load().subscribers == fresh.subscribers


def test_a_change_another_process_wrote_is_not_waited_for(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """Two servers on one file (each with its writer): what one queued and the other wrote
    leaves the first one's pending changes; its drain returns at once."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    one, two = FileHome(path, make_store()), FileHome(path, make_store())
    with one.file.locked():
        assert one.submit(SetFields("grace@example.org", {"max_papers": 4}))
    two.write_pending()
    assert "max_papers: 4" in path.read_text()
    started = time.monotonic()
    assert one.drain(timeout=20) and time.monotonic() - started < 5
    one.close()
    two.close()


def test_a_row_made_invalid_in_the_database_is_every_problem_of_the_list(
    make_store: MakeStore,
) -> None:
    """A row someone changed by hand in the database is checked like the file: the list
    does not load (every problem, by address and field), as an invalid file does not."""
    store = make_store()
    home = StateHome(store)
    home.import_list(EXAMPLE.encode(), Path("example.yaml"))
    good = home.load()
    for email, fields in (
        ("grace@example.org", {"email": "grace@example.org", "max_papers": 0}),
        ("team@example.org", {"email": "team@example.org", "timezone": "Mars/Base"}),
    ):
        row = store.stored_subscriber(email)
        assert row is not None
        changed = dataclasses.replace(row, fields=fields)
        assert store.change_subscriber(changed, expect=row.version) is not None
    with pytest.raises(ConfigError) as refused:
        home.load()
    problems = refused.value.problems
    assert len(problems) == 2
    assert "grace@example.org: max_papers: must be a whole number from 1" in problems[0]
    assert "team@example.org: timezone: unknown time zone 'Mars/Base'" in problems[1]
    assert good.get("grace@example.org") is not None  # what a reader had stays its own
