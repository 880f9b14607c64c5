"""The built message against real tools: SpamAssassin and caniemail's data (doiuse-email).

* SpamAssassin (Debian's ``spamassassin``, local rules only: ``-t -L``) scores a message built
  exactly as ``digest send`` builds it. Allowed: ``HTML_MESSAGE`` (structural: there is an
  HTML part) and the rules caused by a message that never crossed a relay, ``NO_RECEIVED``
  and ``NO_RELAYS`` (informational, 0 points). Anything else fails, as does a score > 0.5.
* doiuse-email (npm, installed by ``.ci/run`` into ``.ci/node``) checks the rendered HTML
  against caniemail.com's data for Gmail, Outlook, Apple Mail and Yahoo. Every feature it
  reports as unsupported in one of them must be declared in the HTML template as a
  progressive enhancement with its fallback (``enhancement: FEATURE | CLIENTS | FALLBACK``).

Both tools must be present in CI (``CI`` set): a missing one fails the test there; elsewhere
it is skipped with the command that installs it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.models import Edition
from digest.pipeline.workers import build_for
from digest.ranking import rank
from digest.render import HTML_TEMPLATE, PACKAGED_TEMPLATES_DIR, EmailContext, Renderer
from digest.subscribers import Subscriber
from tests.conftest import PROJECT
from tests.factories import SECRET_KEY, make_settings, papers_from_fixture

DAY = Edition.daily(date(2026, 8, 20))
ADA = Subscriber(
    email="ada@example.org",
    name="Ada Lovelace",
    keywords=("robot*", "embodied", "reinforcement learning", "agent*"),
    max_papers=8,
)
ALLOWED_SPAMASSASSIN_RULES = {"HTML_MESSAGE", "NO_RECEIVED", "NO_RELAYS"}
MAX_SPAM_SCORE = 0.5
CLIENTS = ("gmail.*", "outlook.*", "apple-mail.*", "yahoo.*")
DOIUSE_CLI = PROJECT / ".ci" / "node" / "node_modules" / "doiuse-email" / "bin" / "cli.js"
TOOL_TIMEOUT_S = 120


def require(found: bool, what: str, install: str) -> None:
    """Skip (fail in CI) when a tool is missing."""
    if found:
        return
    message = f"{what} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def rendered(*, thumbnails: bool = False) -> tuple[Renderer, EmailContext]:
    papers = papers_from_fixture("2026-08-20.json")
    settings = make_settings(
        sender="Daily Papers <papers@mylab.org>",
        unsubscribe_url="https://papers.mylab.org/unsubscribe?token={token}",
        secret_key=SECRET_KEY,
        thumbnails=thumbnails,
    )
    ctx = EmailContext(
        edition=DAY,
        papers=rank(papers, ADA),
        subscriber=ADA,
        unsubscribe_url="https://papers.mylab.org/unsubscribe?token=abc",
        unsubscribe_mailto=None,
        total_papers=len(papers),
    )
    return Renderer(thumbnails=settings.thumbnails), ctx


def built_message() -> bytes:
    settings = make_settings(
        sender="Daily Papers <papers@mylab.org>",
        unsubscribe_url="https://papers.mylab.org/unsubscribe?token={token}",
        secret_key=SECRET_KEY,
    )
    renderer, ctx = rendered()
    out = renderer.render(ctx)
    _, data = build_for(settings, out, ADA, DAY, datetime(2026, 8, 21, 6, 30, tzinfo=UTC))
    return data


def built_welcome(tmp_path: Path) -> bytes:
    """The welcome email exactly as a confirmed sign-up gets it (its state in ``tmp_path``)."""
    from digest.core import Digest
    from digest.pipeline.welcome import build_welcome, welcome_key

    settings = make_settings(
        sender="Daily Papers <papers@mylab.org>",
        public_url="https://papers.mylab.org",
        secret_key=SECRET_KEY,
        state_path=tmp_path / "state.sqlite3",
    )
    with Digest(settings, now=lambda: datetime(2026, 8, 21, 6, 30, tzinfo=UTC)) as digest:
        return build_welcome(digest.deps, ADA, welcome_key("0123abcd"))[1]


def message_of(kind: str, tmp_path: Path) -> bytes:
    return built_message() if kind == "digest" else built_welcome(tmp_path)


@pytest.mark.parametrize("kind", ["digest", "welcome"])
def test_spamassassin_scores_the_message_clean(tmp_path: Path, kind: str) -> None:
    exe = shutil.which("spamassassin")
    require(exe is not None, "SpamAssassin", "apt-get install spamassassin")
    assert exe is not None
    done = subprocess.run(
        [exe, "-t", "-L"],
        input=message_of(kind, tmp_path),
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        env={**os.environ, "HOME": str(tmp_path)},  # its user_prefs go there, not to ~
        check=False,
    )
    report = done.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (.*?)(?=^\S)", report, re.M | re.S)
    assert status is not None, report[-2000:] + done.stderr.decode("utf-8", "replace")
    text = " ".join(status.group(1).split())
    score = float(re.search(r"score=(-?[\d.]+)", text).group(1))  # type: ignore[union-attr]
    tests = re.search(r"tests=(\S*)", text).group(1)  # type: ignore[union-attr]
    fired = {t for t in tests.split(",") if t and t != "none"}
    assert score <= MAX_SPAM_SCORE, text
    assert fired <= ALLOWED_SPAMASSASSIN_RULES, (fired - ALLOWED_SPAMASSASSIN_RULES, text)
    assert "HTML_FONT_LOW_CONTRAST" not in fired


def declared_enhancements(
    template: str = HTML_TEMPLATE,
) -> list[tuple[str, tuple[str, ...], str]]:
    """``(feature, client globs, fallback)`` declared in a packaged HTML template."""
    text = (PACKAGED_TEMPLATES_DIR / template).read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^\s*enhancement: (.+?) \| (.+?) \| (.+)$", text, re.M):
        clients = tuple(c.strip() for c in m.group(2).split(","))
        out.append((m.group(1).strip(), clients, m.group(3).strip()))
    return out


def doiuse(html: str, tmp_path: Path) -> dict[str, object]:
    node = shutil.which("node")
    require(node is not None, "node", "apt-get install nodejs npm")
    require(
        DOIUSE_CLI.is_file(),
        "doiuse-email",
        "npm install --prefix .ci/node doiuse-email@0.4.1, as .ci/run does",
    )
    assert node is not None
    page = tmp_path / "email.html"
    page.write_text(html, encoding="utf-8")
    done = subprocess.run(
        [node, str(DOIUSE_CLI), "--email-clients", ",".join(CLIENTS), str(page)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


UNSUPPORTED_RE = re.compile(r"^`(.+)` is not supported by `([^`]+)`$")


@pytest.mark.parametrize("kind", ["plain", "thumbnails", "welcome"])
def test_every_feature_unsupported_in_a_major_client_is_a_declared_enhancement(
    tmp_path: Path, kind: str
) -> None:
    if kind == "welcome":
        import email
        import email.policy

        message = email.message_from_bytes(built_welcome(tmp_path), policy=email.policy.default)
        part = message.get_body(("html",))  # type: ignore[attr-defined]
        html, template = part.get_content(), "welcome.html.j2"
    else:
        renderer, ctx = rendered(thumbnails=kind == "thumbnails")
        html, template = renderer.render(ctx).html, HTML_TEMPLATE
    result = doiuse(html, tmp_path)
    errors = result.get("errors") or []
    assert isinstance(errors, list)
    declared = declared_enhancements(template)
    assert declared, "the template declares no progressive enhancement"
    assert all(fallback for _, _, fallback in declared)
    undeclared = set()
    for error in errors:
        m = UNSUPPORTED_RE.match(str(error))
        assert m is not None, error  # an error of another shape is a finding too
        feature, client = m.groups()
        if not any(
            feature == f and any(fnmatch.fnmatchcase(client, g) for g in globs)
            for f, globs, _ in declared
        ):
            undeclared.add(f"{feature} in {client}")
    assert not undeclared, sorted(undeclared)


def test_the_checker_reports_an_undeclared_feature(tmp_path: Path) -> None:
    """The check above can fail: a feature no enhancement declares is reported."""
    html = "<!DOCTYPE html><html><body><div style='display:flex'>x</div></body></html>"
    result = doiuse(html, tmp_path)
    errors = [str(e) for e in result.get("errors") or []]  # type: ignore[attr-defined]
    assert any(e.startswith("`display:flex` is not supported by `outlook.windows`") for e in errors)
    assert not any(f == "display:flex" for f, _, _ in declared_enhancements())
