"""The first hour of a new operator, again (issue 25): each point as it was reported."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from pathlib import Path

import httpx
import pytest
import trustme

from digest.state import open_state
from tests.conftest import EXAMPLES
from tests.factories import make_workdir, run_cli
from tests.httpserver import LocalHTTPServer, closed_port
from tests.smtpserver import SMTPTestServer

DAY = "2026-08-20"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example set-up: ada follows `hf` only, grace the default (bundled) file source."""
    return make_workdir(
        tmp_path,
        monkeypatch,
        subscribers_yaml=(
            "subscribers:\n"
            "  - email: ada@example.org\n"
            "    sources: [hf]\n"
            "  - email: grace@example.org\n"
        ),
        sender="Daily Papers <papers@mylab.org>",
        http_retries=0,
        # hf is down unless a test serves it (never the internet).
        hf_api_url=f"http://127.0.0.1:{closed_port()}/api/daily_papers",
    )


def _statuses(state_url: str) -> dict[str, tuple[str, str | None]]:
    with open_state(state_url) as store:
        return {r.subscriber: (str(r.status), r.last_error) for r in store.list(edition=DAY)}


def test_one_subscribers_failing_source_holds_back_only_that_subscriber(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, state_env: str
) -> None:
    # hf is down: ada waits (owed, with the reason); grace gets the edition now.
    code, output = run_cli("send", "--date", DAY)
    assert code == 1, output
    assert "sent 1" in output and "deferred 1" in output
    assert "1 subscriber with sources hf stays owed" in output
    rows = _statuses(state_env)
    assert rows["grace@example.org"][0] == "sent"
    status, reason = rows["ada@example.org"]
    assert status == "owed" and reason is not None and "sources failed" in reason
    assert len(list((workdir / "outbox" / "new").iterdir())) == 1

    # hf answers again: ada gets it, once; grace is not sent a second copy.
    with LocalHTTPServer() as server:
        server.add(
            f"/api/daily_papers?date={DAY}",
            file=EXAMPLES / "hf-daily-papers" / f"{DAY}.json",
        )
        monkeypatch.setenv("DIGEST_HF_API_URL", server.url("/api/daily_papers"))
        code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert "sent 1, skipped 1" in output
    assert {s for s, _ in _statuses(state_env).values()} == {"sent"}
    assert len(list((workdir / "outbox" / "new").iterdir())) == 2


def test_when_every_source_fails_nothing_is_recorded_and_it_says_so(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, state_env: str
) -> None:
    monkeypatch.setenv("DIGEST_HF_API_URL", f"http://127.0.0.1:{closed_port()}/api/daily_papers")
    monkeypatch.setenv("DIGEST_SOURCES", "hf")
    code, output = run_cli("send", "--date", DAY)
    assert code == 1, output
    assert "every source failed" in output and "Traceback" not in output
    assert _statuses(state_env) == {}


def test_send_source_wins_over_a_subscribers_own_sources(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, state_env: str
) -> None:
    # As `send --help` says: --source replaces ada's own [hf] too (hf is down: not asked).
    monkeypatch.setenv("DIGEST_HF_API_URL", f"http://127.0.0.1:{closed_port()}/api/daily_papers")
    code, output = run_cli("send", "--date", DAY, "--source", f"file:{workdir / 'papers'}")
    assert code == 0, output
    assert "sent 2" in output
    assert {s for s, _ in _statuses(state_env).values()} == {"sent"}


# --- 2. the unsubscribe link must reach `digest serve` -----------------------------------------


ENV_EXAMPLE = Path(__file__).parent.parent / ".env.example"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        # The old .env.example line: a placeholder that reaches nobody.
        ("https://example.org/unsubscribe?token={token}", "placeholder that reaches nobody"),
        # What validate used to suggest: on the app's host, but the app answers /u/TOKEN only.
        ("https://papers.mylab.org/unsubscribe?token={token}", "answers only"),
        ("https://papers.mylab.org/u?token={token}", "answers only"),
        ("https://lists.mylab.org/unsubscribe", "has no {token}"),
    ],
)
def test_validate_fails_when_the_unsubscribe_link_leads_nowhere(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, url: str, error: str
) -> None:
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_URL", url)
    code, output = run_cli("validate", "--offline")
    assert code == 2, output
    line = next(ln for ln in output.splitlines() if ln.startswith("error:"))
    assert line.startswith("error: DIGEST_UNSUBSCRIBE_URL:") and error in line
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "url",
    [
        None,  # the app's own link: DIGEST_PUBLIC_URL/u/{token}
        "https://papers.mylab.org/u/{token}",  # the same, spelled out
        "https://lists.mylab.org/unsubscribe?token={token}",  # your own handler elsewhere
    ],
)
def test_validate_accepts_a_link_that_reaches_a_handler(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    if url is not None:
        monkeypatch.setenv("DIGEST_UNSUBSCRIBE_URL", url)
    code, output = run_cli("validate", "--offline")
    assert code == 0, output


async def test_the_route_validate_accepts_is_the_one_digest_serve_answers(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from digest.message import unsubscribe_url_for
    from digest.settings import load_settings
    from digest.web.app import create_app

    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    settings = load_settings(env_file=None)
    link = unsubscribe_url_for(settings, "grace@example.org")
    assert link is not None and link.startswith("https://papers.mylab.org/u/")
    token = link.rsplit("/", 1)[1]
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://papers.mylab.org"
    ) as client:
        assert (await client.get(f"/u/{token}")).status_code == 200
        assert (await client.get(f"/unsubscribe?token={token}")).status_code == 404


def test_the_env_example_sets_no_unsubscribe_url() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert not [ln for ln in lines if ln.startswith("DIGEST_UNSUBSCRIBE_URL")]


# --- 3. validate passes only what works a minute later ------------------------------------------


def test_validate_connects_to_the_relay_and_fails_on_a_closed_port(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("DIGEST_SMTP_PORT", str(closed_port()))
    monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
    code, output = run_cli("validate")
    assert code == 1, output
    assert "error: relay 127.0.0.1:" in output and "NOT usable" in output
    assert "Traceback" not in output
    code, output = run_cli("validate", "--offline")  # --offline skips the relay
    assert code == 0, output


def test_validate_does_starttls_and_auth_like_a_send(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    leaf: trustme.LeafCert,
    ca_file: Path,
) -> None:
    (workdir / "subscribers.yaml").write_text("subscribers:\n  - email: grace@example.org\n")
    with SMTPTestServer(security="starttls", cert=leaf, user="papers", password="right") as relay:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(relay.port))
        monkeypatch.setenv("DIGEST_SMTP_USERNAME", "papers")
        monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "right")
        monkeypatch.setenv("DIGEST_SMTP_CA_FILE", str(ca_file))
        code, output = run_cli("validate")
        assert code == 0, output
        assert f"relay 127.0.0.1:{relay.port}: reachable (STARTTLS, AUTH as papers)" in output
        monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong")
        code, output = run_cli("validate")
        assert code == 1, output
        assert "NOT usable" in output and "wrong" not in output  # the password never shows
    assert relay.messages == []  # validate sends nothing


def test_a_misspelled_setting_is_named_with_a_did_you_mean(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_HOSTNAME", "smtp.mylab.org")
    (workdir / ".env").write_text("DIGEST_SECRETKEY=abc\n")
    code, output = run_cli("validate", "--offline")
    assert code == 2, output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert any(
        "DIGEST_SMTP_HOSTNAME (in the environment) is not a setting; did you mean "
        "DIGEST_SMTP_HOST?" in e
        for e in errors
    ), output
    assert any("DIGEST_SECRETKEY (in .env)" in e and "DIGEST_SECRET_KEY?" in e for e in errors)
    # Other commands go on, and say it once.
    code, output = run_cli("send", "--date", DAY, "--dry-run", "--subscriber", "grace@example.org")
    assert code == 0, output
    assert output.count("warning: DIGEST_SMTP_HOSTNAME") == 1


def test_a_missing_env_file_is_an_error(workdir: Path) -> None:
    code, output = run_cli("--env-file", "/nonexistent/digest.env", "validate", "--offline")
    assert code == 2, output
    assert "error: --env-file /nonexistent/digest.env: no such file" in output
    code, output = run_cli("--env-file", "/nonexistent/digest.env", "send", "--dry-run")
    assert code == 2, output
    assert "Traceback" not in output


# --- 6. smaller things, each seen ----------------------------------------------------------------


def test_counts_say_one_subscriber_and_nothing_after_an_empty_colon(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "subscribers.yaml").write_text("subscribers:\n  - email: grace@example.org\n")
    code, output = run_cli("validate", "--offline")
    assert code == 0 and "ok: settings valid, 1 subscriber in" in output, output
    code, output = run_cli("subscribers", "--status", "suppressed")
    assert code == 0, output
    assert output.rstrip().splitlines()[-1] == "0 subscribers"


def test_a_test_send_to_a_special_use_domain_goes_with_a_warning(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPTestServer() as relay:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(relay.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        code, output = run_cli("send", "--date", DAY, "--to", "admin@lab.test")
        assert code == 0, output
        assert "warning: --to admin@lab.test: a special-use domain" in output
        assert [m.rcpt_tos for m in relay.messages] == [["admin@lab.test"]]
    code, output = run_cli("send", "--date", DAY, "--to", "not an address")
    assert code == 2 and "not an email address" in output


def test_the_real_list_and_its_lock_are_not_committed() -> None:
    import subprocess

    root = Path(__file__).parent.parent
    ignored = subprocess.run(
        ["git", "check-ignore", "subscribers.yaml", "subscribers.yaml.lock"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.stdout.split() == ["subscribers.yaml", "subscribers.yaml.lock"]


async def _app_get(paths: list[str]) -> list[httpx.Response]:
    """GET each path of `digest serve`'s app (in process), with the environment's settings."""
    from digest.settings import load_settings
    from digest.web.app import create_app

    app = create_app(load_settings(env_file=None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://papers.mylab.org"
    ) as client:
        return [await client.get(p) for p in paths]


def test_the_archive_invites_to_subscribe_and_the_feed_carries_the_papers(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import feedparser

    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    (workdir / "subscribers.yaml").write_text("subscribers:\n  - email: grace@example.org\n")
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    page, feed = asyncio.run(_app_get([f"/archive/{DAY}", "/archive.atom"]))
    assert page.status_code == 200
    # Not the email's footer: nobody can "reply to this message" on a web page.
    assert "reply to this message" not in page.text
    assert "You receive this because" not in page.text
    assert re.search(r'href="/"[^>]*>Subscribe</a>', page.text)
    parsed = feedparser.parse(feed.content)
    assert not parsed.bozo, parsed.bozo_exception
    [entry] = parsed.entries
    content = entry.content[0].value
    assert content.count("<li>") >= 5 and "https://arxiv.org/abs/" in content
    assert "<script" not in content


def test_the_list_has_the_name_the_lab_gives_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import email
    import email.policy

    monkeypatch.setenv("DIGEST_LIST_NAME", "Ada Lab Papers")
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    (workdir / "subscribers.yaml").write_text("subscribers:\n  - email: grace@example.org\n")
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    [path] = (workdir / "outbox" / "new").iterdir()
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert str(msg["Subject"]).startswith("Ada Lab Papers · Aug 20: ")
    html = msg.get_body(("html",))
    assert html is not None and "Ada Lab Papers" in html.get_content()
    assert "Daily Papers" not in str(msg["Subject"])
    home, feed = asyncio.run(_app_get(["/", "/archive.atom"]))
    assert "<title>Subscribe · Ada Lab Papers</title>" in home.text
    assert "<title>Ada Lab Papers</title>" in feed.text
    monkeypatch.setenv("DIGEST_LIST_NAME", "<b>")
    code, output = run_cli("validate", "--offline")
    assert code == 2 and "DIGEST_LIST_NAME" in output


async def test_the_confirmation_email_names_the_list(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import email
    import email.policy

    from digest.settings import load_settings
    from digest.web.app import create_app

    monkeypatch.setenv("DIGEST_LIST_NAME", "Ada Lab Papers")
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://papers.mylab.org")
    app = create_app(load_settings(env_file=None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://papers.mylab.org"
    ) as client:
        page = await client.get("/")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        answer = await client.post("/subscribe", data={"email": "new@example.org", "csrf": csrf[1]})
        assert answer.status_code == 200, answer.text
    [path] = (workdir / "outbox" / "new").iterdir()
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Confirm your subscription to Ada Lab Papers"
    body = msg.get_body(("plain",))
    assert body is not None and "Ada Lab Papers" in body.get_content()


def test_an_unknown_liked_paper_is_a_validate_warning_not_a_warning_at_every_send(
    workdir: Path,
) -> None:
    (workdir / "subscribers.yaml").write_text(
        "subscribers:\n  - email: grace@example.org\n    like: ['2101.99999']\n"
    )
    for _ in range(2):  # two sends: neither warns (it is said at INFO, -v)
        code, output = run_cli("send", "--date", DAY)
        assert code == 0 and "2101.99999" not in output, output
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    [line] = [ln for ln in output.splitlines() if "2101.99999" in ln]
    assert line.startswith("warning: grace@example.org: liked/disliked paper 2101.99999 is not")


def test_a_why_line_names_only_what_the_card_shows() -> None:
    from digest.models import Edition, Paper
    from digest.ranking import rank
    from digest.render import EmailContext, Renderer
    from digest.subscribers import Subscriber

    hidden = Paper(
        "2608.00001",
        "A Study of Grasping",
        abstract="We train robots to grasp cups.",
        ai_summary="Grasping cups with a learned policy.",  # shown instead of the abstract
        upvotes=3,
    )
    mixed = Paper(
        "2608.00002",
        "Video Diffusion at Scale",
        abstract="We also control robots.",
        ai_summary="A large video model.",
        upvotes=2,
    )
    sub = Subscriber(email="ada@example.org", keywords=("robot*", "video"))
    ranked = {r.paper.arxiv_id: r for r in rank([hidden, mixed], sub)}
    assert ranked["2608.00001"].why == "keyword: robots"  # the ranking saw it in the abstract
    assert ranked["2608.00002"].why == "keywords: robots, video"
    rendered = Renderer().render(
        EmailContext(
            edition=Edition.daily(date(2026, 8, 20)),
            papers=list(ranked.values()),
            subscriber=sub,
            unsubscribe_url=None,
            unsubscribe_mailto=None,
            total_papers=2,
        )
    )
    for part in (rendered.html, rendered.text):
        assert "keyword in the abstract: robot*" in part  # nothing on the card says "robots"
        assert "keyword: video" in part
        assert "robots, video" not in part and "keyword: robots" not in part


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("DIGEST_SMTP_CONCURRENCY", "0", "DIGEST_SMTP_CONCURRENCY: must be at least 1, got '0'"),
        ("DIGEST_SMTP_CONCURRENCY", "abc", "must be a whole number, got 'abc'"),
        ("DIGEST_VERP", "maybe", "DIGEST_VERP: must be true or false, got 'maybe'"),
        ("DIGEST_HTTP_TIMEOUT", "-1", "DIGEST_HTTP_TIMEOUT: must be more than 0, got '-1'"),
        ("DIGEST_SMTP_SECURITY", "ssl", "must be one of 'starttls', 'tls' or 'none', got 'ssl'"),
    ],
)
def test_a_bad_setting_is_said_in_the_fields_words(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    code, output = run_cli("validate", "--offline")
    assert code == 2, output
    assert said in output and "Input should" not in output
