"""End to end in a real browser: sign-up → confirm (link from the received email) →
preferences → unsubscribe, with Debian's Chromium driven by Playwright (headless).

Screenshots of every page are kept under the test's tmp dir and copied to
``test-artifacts/web/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.state import open_state
from tests.factories import make_settings, messages, send_edition
from tests.webserver import free_port, listed, running_app, seed_list

CHROMIUM = Path(os.environ.get("DIGEST_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
TIMEOUT_MS = 30_000

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 800, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


class Shots:
    """Numbered full-page screenshots in ``tmp_path/shots`` and ``test-artifacts/web``."""

    def __init__(self, page: Any, tmp_path: Path) -> None:
        self.page = page
        self.dir = tmp_path / "shots"
        self.dir.mkdir()
        self.n = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, ARTIFACTS / path.name)
        return path


def test_sign_up_confirm_preferences_unsubscribe_in_chromium(
    env: dict[str, Any],
    subscribers_home: str,
    tmp_path: Path,
    browser_page: Any,
) -> None:
    """In both homes of the list (issue 22): the file, and the state's table."""
    page = browser_page
    port = free_port()
    public = f"http://127.0.0.1:{port}"  # the links in the emails and pages point here
    home = {"subscribers": "state"} if subscribers_home == "state" else {}
    settings = make_settings(
        **{**env, "public_url": public, **home},
        postal_address="Lab of Papers · 1 Main St · Springfield",
    )
    if settings.subscribers_in_state:
        seed_list(settings, (tmp_path / "subscribers.yaml").read_text())
    shots = Shots(page, tmp_path)
    with running_app(settings, port=port) as base:
        assert base == public

        # 1. Sign up, with an invalid address first: the error is shown next to the field.
        page.goto(base + "/")
        shots.take("signup")
        page.fill("#email", "not an address")
        page.click("button[type=submit]")
        assert page.locator("#email-error").is_visible()
        shots.take("signup-error")
        page.fill("#email", "grace@example.org")
        page.fill("#name", "Grace")
        page.fill("#keywords", "diffusion, video")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Check your inbox")
        shots.take("signup-sent")
        assert listed(settings, "grace@example.org") is None

        # 2. Confirm with the link from the email that arrived in the Maildir.
        [mail] = messages(settings)
        body = mail.get_body(("plain",))
        assert body is not None
        link = re.search(re.escape(public) + r"/confirm/[A-Za-z0-9_-]+", body.get_content())
        assert link is not None
        page.goto(link.group(0))
        shots.take("confirm")
        page.click("button[type=submit]")
        page.wait_for_selector("text=You're subscribed")
        shots.take("confirmed")
        grace = listed(settings, "grace@example.org")
        assert grace is not None and grace.active and grace.keywords == ("diffusion", "video")

        # 3. Preferences: a bad value first (error next to it), then a good one.
        page.click("text=Choose your keywords")
        page.wait_for_selector("text=Your preferences")
        shots.take("preferences")
        page.fill("#max_papers", "0")
        page.fill("#timezone", "Mars/Base")
        page.click("button[type=submit]")
        assert page.locator("#max_papers-error").is_visible()
        assert page.locator("#timezone-error").is_visible()
        shots.take("preferences-errors")
        page.fill("#max_papers", "4")
        page.fill("#timezone", "Europe/Paris")
        page.select_option("#frequency", "weekly")
        page.select_option("#weekday", "friday")
        page.fill("#keywords", "diffusion, world model")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Saved.")
        shots.take("preferences-saved")
        grace = listed(settings, "grace@example.org")
        assert grace is not None
        assert (grace.max_papers, grace.timezone, grace.frequency, grace.weekday) == (
            4,
            "Europe/Paris",
            "weekly",
            "friday",
        )
        assert grace.keywords == ("diffusion", "world model")

        # 4. Unsubscribe from the preferences page's link: a page, then one button.
        page.click("text=Unsubscribe")
        page.wait_for_selector("text=Stop sending the digest")
        assert re.search(r"g\*\*\*@e\*\*\*\.org", page.content())
        shots.take("unsubscribe")
        assert listed(settings, "grace@example.org").active  # type: ignore[union-attr]
        page.click("button[type=submit]")
        page.wait_for_selector("text=You're unsubscribed")
        shots.take("unsubscribed")
        assert listed(settings, "grace@example.org").active is False  # type: ignore[union-attr]

        # 5. The archive (after an edition went out) in the browser.
        page.goto(base + "/archive")
        shots.take("archive-empty")
    assert len(list(shots.dir.glob("*.png"))) == shots.n


async def test_archive_edition_renders_in_chromium(
    env: dict[str, Any],
    tmp_path: Path,
) -> None:
    settings = make_settings(**env)
    await send_edition(settings)
    with running_app(settings) as base:
        import asyncio

        def browse() -> None:
            with playwright_sync.sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                try:
                    page = browser.new_page(viewport={"width": 800, "height": 900})
                    page.set_default_timeout(TIMEOUT_MS)
                    page.goto(base + "/archive")
                    page.click("ul.editions a")
                    page.wait_for_selector("text=trending papers")
                    shots = Shots(page, tmp_path)
                    shots.n = 20
                    shots.take("archive-edition")
                finally:
                    browser.close()

        await asyncio.to_thread(browse)


def test_the_preferences_page_fits_a_375_px_phone(
    env: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Issue 25: at 375 px the time zone field showed "Europ" of "Europe/London"."""
    from digest.message import preferences_url_for

    (tmp_path / "subscribers.yaml").write_text(
        "subscribers:\n"
        "  - email: ada@example.org\n"
        "    timezone: America/Los_Angeles\n"
        "    send_at: '06:30'\n"
    )
    settings = make_settings(**env)
    url = preferences_url_for(settings, "ada@example.org")
    assert url is not None
    with (
        running_app(settings) as base,
        playwright_sync.sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(base + url[len(settings.public_url or "") :])
            shots = Shots(page, tmp_path)
            shots.n = 30
            shots.take("preferences-375px")
            for field in ("timezone", "send_at", "max_papers", "keywords", "frequency"):
                box = page.eval_on_selector(
                    f"#{field}",
                    "el => ({sw: el.scrollWidth, cw: el.clientWidth, right: "
                    "el.getBoundingClientRect().right})",
                )
                assert box["sw"] <= box["cw"], (field, box)  # the whole value is visible
                assert box["right"] <= 375, (field, box)  # and nothing leaves the screen
            assert page.eval_on_selector("body", "b => b.scrollWidth") <= 375
        finally:
            browser.close()


def test_onboarding_rate_preferences_reset_in_chromium(
    env: dict[str, Any],
    tmp_path: Path,
    browser_page: Any,
) -> None:
    """Issue 23: the page of papers to rate (plain forms, no script) → 👍/👎 → what shapes
    the ranking on the preferences page → reset what was learned."""
    from datetime import UTC, datetime

    from digest.message import preferences_url_for
    from tests.factories import FakeClock

    page = browser_page
    settings = make_settings(**env)
    url = preferences_url_for(settings, "ada@example.org")
    assert url is not None
    # The day after the fixture day 2026-08-20: its 15 papers are the ones to rate.
    clock = FakeClock(datetime(2026, 8, 21, 8, 0, tzinfo=UTC))
    shots = Shots(page, tmp_path)
    shots.n = 40
    with running_app(settings, now=clock) as base:
        prefs = base + url[len(settings.public_url or "") :]
        page.goto(prefs + "/rate")
        page.wait_for_selector("text=Rate a few papers")
        assert page.locator("script").count() == 0
        assert page.locator("ol.rate > li").count() == 10
        shots.take("rate")
        papers = page.locator("ol.rate > li")
        papers.nth(0).locator("input[value=like]").check()
        papers.nth(1).locator("input[value=like]").check()
        papers.nth(2).locator("input[value=dislike]").check()
        page.click("text=Save my ratings")
        page.wait_for_selector("text=Saved 3 ratings")
        shots.take("rated")
        with open_state(settings.effective_state_url) as store:
            fb = store.feedback("ada@example.org")["ada@example.org"]
        assert (len(fb.likes), len(fb.dislikes)) == (2, 1)

        page.click("text=Back to your preferences")
        page.wait_for_selector("text=What shapes your ranking")
        rated = page.locator("#influences li")
        assert rated.count() == 3
        assert rated.filter(has_text="👍").count() == 2
        shots.take("shaping")
        page.click("text=Reset what was learned")
        page.wait_for_selector("text=Reset: 3 ratings")
        assert page.locator("#influences li").count() == 0
        shots.take("reset")
    with open_state(settings.effective_state_url) as store:
        assert [e.action for e in store.events("ada@example.org")] == ["reset"]
