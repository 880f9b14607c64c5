"""The subscribers file: loading, defaults, and every problem reported with its line."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from digest.errors import ConfigError
from digest.subscribers import (
    DEFAULT_MAX_PAPERS,
    DEFAULT_SEND_AT,
    DEFAULT_TIMEZONE,
    EXAMPLE_FILE,
    Subscriber,
    SubscriberList,
    load_subscribers,
)
from tests.conftest import PROJECT
from tests.factories import problems_of, write

# --- loading valid files ---------------------------------------------------------------------


def test_example_file_loads_and_shows_every_option() -> None:
    path = PROJECT / EXAMPLE_FILE
    subs = load_subscribers(path)
    assert [s.email for s in subs] == [
        "ada@example.org",
        "grace@example.org",
        "team@example.org",
        "alan@example.org",
    ]
    # every option appears (uncommented) somewhere in the example
    text = path.read_text(encoding="utf-8")
    active_lines = [line.split("#")[0] for line in text.splitlines()]
    for option in Subscriber.model_fields:
        assert any(f"{option}:" in line for line in active_lines), option
    ada = subs.get("ada@example.org")
    assert ada is not None
    assert ada.keywords == ("diffusion", "reinforcement learning", "agent*")
    assert ada.send_at == time(6, 30)
    assert ada.tz == ZoneInfo("Europe/London")
    assert ada.sources == ("hf",)
    team = subs.get("team@example.org")
    assert team is not None and team.frequency == "weekly" and team.weekday == "friday"
    assert [s.email for s in subs.active] == [
        "ada@example.org",
        "grace@example.org",
        "team@example.org",
    ]


def test_defaults_apply_and_subscriber_values_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults: {max_papers: 5, timezone: Asia/Tokyo, exclude: [survey], send_at: "08:15"}
        subscribers:
          - email: Ada@Example.ORG
            name: Ada
            keywords: [diffusion, "agent*"]
          - email: bob@example.org
            max_papers: 3
            exclude: []
            send_at: 06:05
        """,
    )
    subs = load_subscribers(path)
    assert isinstance(subs, SubscriberList)
    assert subs.path == path
    assert subs.defaults["max_papers"] == 5
    ada, bob = subs.subscribers
    assert ada.email == "ada@example.org"  # stored lower-cased
    assert (ada.max_papers, ada.timezone, ada.exclude) == (5, "Asia/Tokyo", ("survey",))
    assert ada.send_at == time(8, 15)
    assert (bob.max_papers, bob.exclude) == (3, ())
    assert bob.send_at == time(6, 5)  # unquoted HH:MM is a string in YAML 1.2
    assert bob.name is None and bob.keywords == ()


def test_get_is_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: ada@example.org\n")
    subs = load_subscribers(path)
    assert subs.get(" ADA@example.org ") is subs.subscribers[0]
    assert subs.get("nobody@example.org") is None


def test_builtin_defaults_and_unpersonalized_subscriber() -> None:
    sub = Subscriber.default()
    assert sub.keywords == () and sub.exclude == () and not sub.only_matching
    assert sub.max_papers == DEFAULT_MAX_PAPERS == 10
    assert sub.send_at == DEFAULT_SEND_AT == time(7, 0)
    assert sub.timezone == DEFAULT_TIMEZONE == "UTC"
    assert (sub.frequency, sub.weekday, sub.active, sub.send_empty) == (
        "daily",
        "monday",
        True,
        False,
    )
    assert sub.sources is None
    tailored = Subscriber.default(
        {"max_papers": 4, "keywords": ["x"], "only_matching": True, "exclude": ["survey"]}
    )
    assert (tailored.max_papers, tailored.keywords, tailored.only_matching) == (4, (), False)
    assert tailored.exclude == ("survey",)


def test_subscriber_is_frozen_and_hashable() -> None:
    sub = Subscriber(email="a@example.org", keywords=["x"])
    with pytest.raises(ValidationError):
        sub.max_papers = 3  # type: ignore[misc]
    assert len({sub, Subscriber(email="a@example.org", keywords=["x"])}) == 1


def test_empty_subscriber_list_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n")
    assert len(load_subscribers(path)) == 0


def test_numeric_keywords_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    keywords: [3d, 2024]\n")
    assert load_subscribers(path).subscribers[0].keywords == ("3d", "2024")


# --- problems, each with its line ------------------------------------------------------------


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "subs.yaml"
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: ")
    assert f"cp {EXAMPLE_FILE} {path}" in problem
    assert "\n" not in problem


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        subscribers:
          - email: ada@example.org
            keywrods: [diffusion]
        """,
    )
    assert problems_of(path) == [
        f"{path}:3: subscribers[0].keywrods: unknown key 'keywrods' (did you mean 'keywords'?)"
    ]


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    zzz: 1\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].zzz: unknown key 'zzz'; valid keys: ")
    assert "keywords" in problem


def test_unknown_top_level_and_defaults_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        default:
          max_papers: 3
        defaults:
          max_paper: 3
          email: x@example.org
        subscribers: []
        """,
    )
    assert problems_of(path) == [
        f"{path}:1: default: unknown key 'default' (did you mean 'defaults'?)",
        f"{path}:4: defaults.max_paper: unknown key 'max_paper' (did you mean 'max_papers'?)",
        f"{path}:5: defaults.email: 'email' cannot be a default; set it per subscriber",
    ]


def test_bad_email(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: ada.example.org\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:2: subscribers[0].email: invalid email address ")
    assert "'ada.example.org'" in problem


def test_missing_email_points_at_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n  - name: Bob\n")
    assert problems_of(path) == [
        f"{path}:3: subscribers[1].email: missing; every subscriber needs an email address"
    ]


def test_duplicate_email_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        subscribers:
          - email: ada@example.org
          - email: bob@example.org
          - name: again
            email: ADA@example.org
        """,
    )
    assert problems_of(path) == [
        f"{path}:5: subscribers[2].email: duplicate email ada@example.org "
        "(also at line 2, subscribers[0].email)"
    ]


def test_bad_timezone_with_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    timezone: Europe/Berln\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].timezone: unknown time zone ")
    assert "did you mean 'Europe/Berlin'?" in problem


@pytest.mark.parametrize("value", ['"25:00"', '"7am"', '"07:60"', '"07:00:00"', "true"])
def test_bad_send_at(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"subscribers:\n  - email: a@example.org\n    send_at: {value}\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].send_at: must be ")
    assert "HH:MM" in problem


def test_send_at_read_as_a_number_asks_for_quotes(tmp_path: Path) -> None:
    # A YAML 1.1 document turns an unquoted 07:30 into 450 (sexagesimal).
    path = write(
        tmp_path, "%YAML 1.1\n---\nsubscribers:\n  - email: a@example.org\n    send_at: 450\n"
    )
    (problem,) = problems_of(path)
    assert problem == (
        f'{path}:5: subscribers[0].send_at: must be a quoted "HH:MM" string, e.g. send_at: "07:30"'
    )


@pytest.mark.parametrize("value", ["1", "0", "5"])
def test_weekday_number_is_rejected(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path,
        f"subscribers:\n  - email: a@example.org\n    frequency: weekly\n    weekday: {value}\n",
    )
    assert problems_of(path) == [
        f"{path}:4: subscribers[0].weekday: use a day name (monday..sunday), not a number ({value})"
    ]


def test_weekday_name_case_and_typo(tmp_path: Path) -> None:
    ok = write(tmp_path, "subscribers:\n  - email: a@example.org\n    weekday: Friday\n")
    assert load_subscribers(ok).subscribers[0].weekday == "friday"
    bad = write(tmp_path, "subscribers:\n  - email: a@example.org\n    weekday: fridya\n", "b.yaml")
    (problem,) = problems_of(bad)
    assert problem.startswith(f"{bad}:3: subscribers[0].weekday: unknown weekday 'fridya'")
    assert "did you mean 'friday'?" in problem


def test_yaml_syntax_error_has_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        subscribers:
          - email: a@example.org
            keywords: [diffusion, agents
          - email: b@example.org
        """,
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:4: invalid YAML: ")
    assert "line 3" in problem  # where the unclosed list started
    assert "\n" not in problem


def test_duplicate_yaml_key_is_a_syntax_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    email: b@example.org\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f'{path}:3: invalid YAML: found duplicate key "email"')


@pytest.mark.parametrize("key", ["? [{a: b}]\n    : c", "? [x, [{a: b}]]\n    : c"])
def test_a_key_holding_a_mapping_is_a_syntax_problem_not_a_crash(tmp_path: Path, key: str) -> None:
    # ruamel's constructor raised TypeError (unhashable type: 'dict'): a traceback.
    path = write(tmp_path, f"subscribers:\n  - email: a@example.org\n    {key}\n")
    for data in (path.read_bytes(), path.read_bytes().replace(b"\n", b"\r\n")):
        path.write_bytes(data)
        (problem,) = problems_of(path)
        assert problem == f"{path}:3: invalid YAML: found unhashable key (write 'key: value')"


@pytest.mark.parametrize(
    ("yaml_value", "index", "expected"),
    [
        ('[diffusion, ""]', 1, "empty keyword"),
        ('["   "]', 0, "empty keyword"),
        ('["*"]', 0, "has no word to match"),
        ('["* *"]', 0, "has no word to match"),
        ('["ag*ent"]', 0, "'*' is only allowed at the end of a word"),
        ('["*agent"]', 0, "'*' is only allowed at the end of a word"),
        ('["++"]', 0, "has no letter or digit"),
        ('["{x}*y"]', 0, "'{x}*y': '*' is only allowed"),
    ],
)
def test_bad_keywords(tmp_path: Path, yaml_value: str, index: int, expected: str) -> None:
    path = write(tmp_path, f"subscribers:\n  - email: a@example.org\n    keywords: {yaml_value}\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].keywords[{index}]: ")
    assert expected in problem


def test_keyword_problems_point_at_each_item_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        subscribers:
          - email: a@example.org
            exclude:
              - survey
              - ""
              - "*"
        """,
    )
    assert [p.split(": ")[0:2] for p in problems_of(path)] == [
        [f"{path}:5", "subscribers[0].exclude[1]"],
        [f"{path}:6", "subscribers[0].exclude[2]"],
    ]


def test_keywords_must_be_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    keywords: diffusion\n")
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"{path}:3: subscribers[0].keywords: must be a list, e.g. [diffusion]"
    )


def test_duplicate_keyword(tmp_path: Path) -> None:
    path = write(
        tmp_path, "subscribers:\n  - email: a@example.org\n    keywords: [Agents, agents]\n"
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].keywords: 'agents' is listed twice")


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("max_papers", "-1", "must be a whole number from 1 to 1,000, got -1"),
        ("max_papers", "0", "from 1 to 1,000, got 0"),
        ("max_papers", "1001", "from 1 to 1,000, got 1001"),
        ("max_papers", "2.5", "whole number from 1 to 1,000, got 2.5"),
        ("max_papers", '"8"', "whole number from 1 to 1,000, got '8'"),
        ("max_papers", "true", "whole number from 1 to 1,000, got true"),
        ("max_papers", "9" * 50, "got a number of 50 digits"),
        ("max_papers", "9" * 4300, "got '99999999999999999999'… (4,300 characters)"),
        ("max_papers", "9" * 5000, "got '99999999999999999999'… (5,000 characters)"),
        ("max_papers", "0x" + "f" * 5000, "(5,002 characters)"),
        ("min_upvotes", "-3", "must be a whole number from 0 to 1,000,000,000, got -3"),
        ("min_upvotes", "1_000_000_001", "from 0 to 1,000,000,000, got 1000000001"),
        ("active", "maybe", "must be true or false, got 'maybe'"),
        ("frequency", "dayly", "did you mean 'daily'?"),
        ("sources", "[hf, bogus]", "unknown source 'bogus'"),
        ("sources", "[]", "an empty list would send nothing"),
        ("name", '"Ada\\nBcc: x@example.org"', "must not contain line breaks"),
    ],
)
def test_bad_values(tmp_path: Path, option: str, value: str, expected: str) -> None:
    path = write(tmp_path, f"subscribers:\n  - email: a@example.org\n    {option}: {value}\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].{option}")
    assert expected in problem


def test_only_matching_needs_keywords(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    only_matching: true\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: subscribers[0].only_matching: only_matching is true")


def test_only_matching_from_defaults_is_fine_with_keywords_else_blames_the_entry(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
        defaults: {only_matching: true}
        subscribers:
          - email: a@example.org
            keywords: [diffusion]
          - email: b@example.org
        """,
    )
    assert problems_of(path) == [
        f"{path}:5: subscribers[1]: only_matching is true but there are no keywords, "
        "interests, likes or authors: nothing would ever be sent"
    ]


def test_bad_default_is_reported_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          max_papers: -2
        subscribers:
          - email: a@example.org
          - email: b@example.org
          - email: c@example.org
            max_papers: 4
        """,
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:2: defaults.max_papers: ")


def test_sources_checked_against_configured_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        subscribers:
          - email: a@example.org
            sources: [hf, "feed:https://example.org/rss"]
        """,
    )
    assert problems_of(path, known_sources=["hf"]) == [
        f"{path}:3: subscribers[0].sources[1]: 'feed:https://example.org/rss' is not a "
        "configured source (DIGEST_SOURCES: hf)"
    ]
    assert load_subscribers(path).subscribers[0].sources == ("hf", "feed:https://example.org/rss")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ":1: the file is empty"),
        ("# only a comment\n", ":1: the file is empty"),
        ("- email: a@example.org\n", ":1: expected a mapping with 'subscribers:'"),
        ("defaults: {}\n", ":1: missing 'subscribers:' list"),
        ("subscribers: ada@example.org\n", ":1: subscribers: must be a list of subscribers"),
        ("subscribers:\n  - ada@example.org\n", ":2: subscribers[0]: expected a mapping"),
    ],
)
def test_wrong_shapes(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}{expected}")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"subscribers:\n  - email: \xff@example.org\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: not UTF-8 text")


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          timezone: Mars/Olympus
        subscribers:
          - email: ada@example.org
            keywrods: [x]
            send_at: "7pm"
          - email: not-an-address
            weekday: 3
          - email: bob@example.org
            max_papers: -1
          - email: ADA@example.org
        """,
    )
    problems = problems_of(path)
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:2", "defaults.timezone"],
        [f"{path}:5", "subscribers[0].keywrods"],
        [f"{path}:6", "subscribers[0].send_at"],
        [f"{path}:7", "subscribers[1].email"],
        [f"{path}:8", "subscribers[1].weekday"],
        [f"{path}:10", "subscribers[2].max_papers"],
        [f"{path}:11", "subscribers[3].email"],
    ]
    with pytest.raises(ConfigError) as info:
        load_subscribers(path)
    assert str(info.value).startswith(f"{path}: 7 problems: {problems[0]}; ")
    assert str(info.value).endswith("; and 2 more")


# --- re-reading ----------------------------------------------------------------------------


def test_reload_sees_every_edit_even_of_the_same_size(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n    max_papers: 3\n")
    assert load_subscribers(path).subscribers[0].max_papers == 3
    write(tmp_path, "subscribers:\n  - email: a@example.org\n    max_papers: 4\n")
    assert load_subscribers(path).subscribers[0].max_papers == 4
    write(tmp_path, "subscribers:\n  - email: a@example.org\n    max_papers: 0\n")
    assert len(problems_of(path)) == 1
    assert len(problems_of(path)) == 1  # an unchanged bad file raises again
    write(tmp_path, "subscribers:\n  - email: a@example.org\n    max_papers: 5\n")
    assert load_subscribers(path).subscribers[0].max_papers == 5


def test_cached_result_is_not_shared_mutable_state(tmp_path: Path) -> None:
    path = write(tmp_path, "subscribers:\n  - email: a@example.org\n")
    first = load_subscribers(path)
    first.subscribers.clear()
    assert len(load_subscribers(path)) == 1
