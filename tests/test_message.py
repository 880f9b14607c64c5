"""Message assembly: headers, MIME structure, unsubscribe tokens, DKIM, size budget."""

from __future__ import annotations

import email
import re
from datetime import UTC, date, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from digest.errors import ConfigError
from digest.message import (
    build_message,
    make_message_id,
    unsubscribe_url_for,
)
from digest.models import Edition, RankedPaper
from digest.render import EmailContext, RenderedEmail, Renderer
from digest.settings import Settings
from digest.tokens import Purpose, TokenSigner
from tests.factories import SECRET_KEY as SECRET
from tests.factories import FakeSubscriber, message_settings, papers_from_fixture

LARGEST_DAY = "2025-05-29.json"  # 36 papers, the biggest capture
SIZE_BUDGET = 100 * 1024
WHEN = datetime(2025, 5, 29, 6, 30, tzinfo=UTC)
ADA = FakeSubscriber(name="Ada Lovelace", keywords=("reasoning", "agent", "diffusion"))
settings = message_settings


def render(n: int, subscriber: FakeSubscriber | None = None) -> RenderedEmail:
    sub = subscriber or ADA
    papers = papers_from_fixture(LARGEST_DAY)
    chosen = []
    for p in papers[:n]:
        text = f"{p.title} {p.abstract}".lower()
        chosen.append(RankedPaper(p, 1.0, tuple(k for k in sub.keywords if k in text)))
    ctx = EmailContext(
        edition=Edition.daily(date(2025, 5, 29)),
        papers=chosen,
        subscriber=sub,
        unsubscribe_url=unsubscribe_url_for(settings(), sub.email),
        unsubscribe_mailto="unsubscribe@example.org",
        total_papers=len(papers),
    )
    return Renderer().render(ctx)


@pytest.fixture(scope="module")
def rendered() -> RenderedEmail:
    return render(10)


def build(rendered: RenderedEmail, s: Settings | None = None, **kw: object) -> bytes:
    args: dict[str, object] = {
        "settings": s or settings(),
        "to_email": "ada@example.org",
        "to_name": "Ada Lovelace",
        "message_id": "<2025-05-29.abc@example.org>",
        "date": WHEN,
    }
    args.update(kw)
    return build_message(rendered, **args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def raw_headers(data: bytes) -> list[bytes]:
    """Header fields as raw lines, folded continuation lines joined (keeping the CRLF)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


# --- headers --------------------------------------------------------------------------------


def test_all_headers_present(rendered: RenderedEmail) -> None:
    msg = parse(build(rendered))
    assert msg["From"] == "Daily Papers <papers@example.org>"
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Subject"] == rendered.subject
    assert msg["Date"] == "Thu, 29 May 2025 06:30:00 +0000"
    assert msg["Date"].datetime == WHEN
    assert msg["Message-ID"] == "<2025-05-29.abc@example.org>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Reply-To"] == "help@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Id"] == "Daily Papers <papers.example.org>"
    token = TokenSigner(SECRET).make(Purpose.UNSUBSCRIBE, "ada@example.org")
    assert msg["List-Unsubscribe"] == (
        f"<https://digest.example.org/u/{token}?e=ada%40example.org&list=daily-papers-subscribers>"
        ", <mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_crlf_line_endings_only(rendered: RenderedEmail) -> None:
    data = build(rendered)
    assert b"\n" in data
    assert re.search(rb"(?<!\r)\n", data) is None
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


@pytest.mark.parametrize("dkim_on", [False, True])
def test_every_line_end_is_crlf_whatever_the_text_holds(
    dkim_on: bool, dkim_key: tuple[Path, bytes]
) -> None:
    # OutgoingMessage.crlf trusts this: the SMTP transport does not scan build_message's
    # output for bare CR or LF. Text and HTML with every line break str.splitlines knows, a
    # lone CR, a lone LF, CR LF pairs reversed, trailing spaces; a subject and a name with
    # the separators a header may carry.
    breaks = "\r", "\n", "\r\n", "\n\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"
    hostile = "".join(f"line {i} {b} " for i, b in enumerate((*breaks, "\u2028", "\u2029")))
    r = RenderedEmail(
        subject="A\u2028subject\x85with\x0bbreaks\tand tabs",
        html=f"<p>{hostile}</p>\r.\r\n.dot\n \r",
        text=f"{hostile} trailing   \n\r\r\n\n",
        preheader="",
    )
    key_path, _ = dkim_key
    s = settings(dkim_selector="s1", dkim_domain="example.org", dkim_private_key_path=key_path)
    data = build(r, s if dkim_on else None, to_name="Zo\u2028ë\x85 Name")
    assert data.count(b"\r\n") == data.count(b"\r") == data.count(b"\n") > 0
    assert data.startswith(b"DKIM-Signature:") is dkim_on


def test_long_list_unsubscribe_is_one_unfolded_unencoded_line(rendered: RenderedEmail) -> None:
    data = build(rendered)
    fields = {f.split(b":", 1)[0].lower(): f for f in raw_headers(data)}
    lu = fields[b"list-unsubscribe"]
    assert len(lu) > 78
    assert b"\r\n" not in lu
    assert lu.endswith(b"<mailto:unsubscribe@example.org?subject=unsubscribe>")


def test_no_encoded_words_in_ascii_headers(rendered: RenderedEmail) -> None:
    data = build(rendered)
    for field in raw_headers(data):
        name = field.split(b":", 1)[0].lower()
        if name in (b"subject",):  # non-ASCII: "·"
            continue
        assert b"=?" not in field, field
        assert b"\r\n" not in field or name == b"content-type", field


def test_non_ascii_subject_and_name_round_trip_with_short_encoded_words() -> None:
    r = RenderedEmail(
        subject="Daily Papers · May 29: Zetta ζ — Ünïcödé “quotes”, a rather long title that "
        "keeps going well beyond seventy-eight characters and 9 more",
        html="<p>hi</p>",
        text="hi",
        preheader="",
    )
    data = build(r, to_name="Zoë Ågård, Jr.")
    msg = parse(data)
    assert msg["Subject"] == r.subject
    assert msg["To"].addresses[0].display_name == "Zoë Ågård, Jr."
    assert msg["To"].addresses[0].addr_spec == "ada@example.org"
    for word in re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", data):
        assert len(word) <= 75  # RFC 2047 §2
    assert data.split(b"\r\n\r\n", 1)[0].isascii()


def test_mailto_only_has_no_one_click_and_nothing_without_either(
    rendered: RenderedEmail,
) -> None:
    msg = parse(build(rendered, settings(unsubscribe_url=None)))
    assert msg["List-Unsubscribe"] == "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] is None

    msg = parse(build(rendered, settings(unsubscribe_url=None, unsubscribe_mailto=None)))
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None
    assert msg["Reply-To"] == "help@example.org"


def test_naive_date_is_rejected(rendered: RenderedEmail) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build(rendered, date=datetime(2025, 5, 29, 6, 30))


def test_date_keeps_its_zone(rendered: RenderedEmail) -> None:
    cest = timezone(timedelta(hours=2))
    msg = parse(build(rendered, date=WHEN.astimezone(cest)))
    assert msg["Date"] == "Thu, 29 May 2025 08:30:00 +0200"


# --- MIME body ------------------------------------------------------------------------------


def test_multipart_alternative_text_first_html_last(rendered: RenderedEmail) -> None:
    data = build(rendered)
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    # the parsed parts keep the wire's CRLF line endings
    text = parts[0].get_content().replace("\r\n", "\n")
    html = parts[1].get_content().replace("\r\n", "\n")
    assert text == rendered.text
    assert html.rstrip("\n") == rendered.html.rstrip("\n")
    assert "▲" in text


def test_whole_message_fits_the_size_budget_on_the_largest_day() -> None:
    for n in (10, 25, 30):
        data = build(render(n))
        assert len(data) < SIZE_BUDGET, (n, len(data))
        assert len(parse(data).get_body(("html",)).get_content()) > n * 1000  # type: ignore[union-attr]


# --- ids and tokens -------------------------------------------------------------------------


def test_message_id_is_unique_and_uses_the_sender_domain() -> None:
    s = settings()
    # The recipient's local part holds letters that are not hex digits, so the fullmatch
    # below (random hex only) proves the address is not part of the id; a hex-only name such
    # as "ada" could appear in the random part by chance.
    ids = {make_message_id(s, "quinn@subscriber.test", "2025-05-29") for _ in range(100)}
    assert len(ids) == 100
    for mid in ids:
        assert re.fullmatch(r"<2025-05-29\.[0-9a-f]{24}@example\.org>", mid)
        assert "quinn" not in mid and "subscriber.test" not in mid
    weekly = make_message_id(s, "quinn@subscriber.test", "2025-W22")
    assert weekly.startswith("<2025-W22.")


def test_unsubscribe_url_for_fills_token_and_email() -> None:
    url = unsubscribe_url_for(settings(), "Bob+tag@example.org")
    assert url is not None
    token = url.split("/u/")[1].split("?")[0]
    signer = TokenSigner(SECRET)
    claims = signer.verify(Purpose.UNSUBSCRIBE, token, now=WHEN)
    assert signer.is_for(claims, "bob+tag@example.org")
    assert "bob" not in token
    assert "e=bob%2Btag%40example.org" in url
    assert unsubscribe_url_for(settings(unsubscribe_url=None), "a@b.org") is None
    plain = settings(unsubscribe_url="https://x.org/unsub", secret_key=None)
    assert unsubscribe_url_for(plain, "a@b.org") == "https://x.org/unsub"
    with pytest.raises(ConfigError, match="DIGEST_SECRET_KEY"):
        unsubscribe_url_for(settings(secret_key=None), "a@b.org")


def test_unsubscribe_url_is_signed_once_per_message_and_never_stale() -> None:
    # The body and the List-Unsubscribe header ask for the same URL in turn: the second ask
    # is answered from the last one, but only for the very same settings values and address.
    s = settings()
    email = "memo@example.org"
    first = unsubscribe_url_for(s, email)
    assert unsubscribe_url_for(s, email) == first
    other = unsubscribe_url_for(s, "other@example.org")
    assert other != first
    rotated = settings(secret_key="a different secret key of enough length!!")
    assert unsubscribe_url_for(rotated, email) != first
    assert unsubscribe_url_for(s, email) == first
    s.unsubscribe_url = "https://changed.example.org/u/{token}"  # the same object, changed
    assert (unsubscribe_url_for(s, email) or "").startswith("https://changed.example.org/u/")
    data = build(render(3), s, to_email=email)
    assert unsubscribe_url_for(s, email) in data.decode()


# --- DKIM -----------------------------------------------------------------------------------


def test_dkim_signature_verifies_covers_headers_and_breaks_on_change(
    rendered: RenderedEmail, dkim_key: tuple[Path, bytes]
) -> None:
    path, txt = dkim_key
    s = settings(dkim_selector="sel1", dkim_domain="example.org", dkim_private_key_path=path)
    data = build(rendered, s)
    assert data.startswith(b"DKIM-Signature: ")

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name == b"sel1._domainkey.example.org." else None

    assert dkim.verify(data, dnsfunc=dns)
    sig = parse(data)["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in "".join(str(sig).split()).split(";") if "=" in t)
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "example.org" and tags["s"] == "sel1"
    signed = set(tags["h"].lower().split(":"))
    for h in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        assert h in signed, h

    tampered = data.replace(b"\r\nSubject: Daily", b"\r\nSubject: Weekly", 1)
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=dns)
    body_tampered = data.replace(b"arxiv.org/abs", b"evil.example/abs", 1)
    assert body_tampered != data
    assert not dkim.verify(body_tampered, dnsfunc=dns)


def test_unreadable_dkim_key_is_a_config_error_without_key_material(
    rendered: RenderedEmail, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    s = settings(dkim_selector="sel1", dkim_domain="example.org", dkim_private_key_path=bad)
    with pytest.raises(ConfigError, match="DIGEST_DKIM_PRIVATE_KEY_PATH") as e:
        build(rendered, s)
    assert "not a key" not in str(e.value)
    bad.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        build(rendered, s)


# --- headers written directly: the same bytes as the email package's ----------------------

_TRICKY_NAMES = [
    None,
    "",
    "Reader 5",
    "Ada",
    "O'Brien",
    "José Núñez",
    "A. B. Smith",
    'Eve "the" Hacker',
    "=?utf-8?q?Ada?=",
    "a,b",
    "name (comment)",
    "x" * 200,
    "Ünïcödé " * 12,
    "日本語 の 名前",
    "back\\slash",
    "semi;colon",
    "at@sign",
    "#!$%&*+/=?^_`{|}~-",
]
_TRICKY_ADDRESSES = [
    "reader000001@bench.example.org",
    "a.b+tag@example.org",
    "ada@xn--bcher-kva.de",
    "x@localhost",
    "o'brien@example.org",
    "a..b@example.org",
    "-a-@sub-domain.example.org",
    "x@-bad.example.org",
    "x@1.2.3.4",
]


@pytest.mark.parametrize("email", _TRICKY_ADDRESSES)
@pytest.mark.parametrize("name", _TRICKY_NAMES)
def test_to_header_written_directly_is_the_email_packages(email: str, name: str | None) -> None:
    from email.headerregistry import Address

    from digest.message import _header, to_header

    collapsed = " ".join((name or "").split())
    try:
        expected = _header("To", Address(display_name=collapsed, addr_spec=email))
    except Exception as e:  # the email package refuses it: so must the direct path
        with pytest.raises(type(e)):
            to_header(email, name)
        return
    assert to_header(email, name) == expected


_TRICKY_VALUES = [
    ("Subject", "Daily Papers · Aug 18: A title and 9 more"),
    ("Subject", "Daily Papers: an ASCII subject"),
    ("Subject", "Daily Papers · " + "Ünïcödé title words " * 12),
    ("Subject", "A long ASCII subject " * 12),
    ("Subject", "A very long ASCII subject " * 45),
    ("Subject", "with =?utf-8?q?encoded?= word"),
    ("Subject", "double  space"),
    ("Subject", " leading space"),
    ("Subject", "tab\there"),
    ("Date", "Tue, 18 Aug 2026 07:30:00 +0000"),
    ("Date", "Tue, 18 Aug 2026 09:30:00 +0200"),
    ("Message-ID", "<2026-08-18.0123456789abcdef01234567@example.org>"),
    ("Message-ID", "<x@localhost>"),
    ("List-Unsubscribe", "<https://example.org/u/abc>, <mailto:u@example.org?subject=unsubscribe>"),
    ("List-Unsubscribe", "<https://example.org/u/" + "a" * 960 + ">"),
    ("List-Unsubscribe", "<https://example.org/u/" + "a" * 980 + ">"),
    ("List-Unsubscribe", "<https://example.org/u?t==?x?=>"),
    ("Content-Type", 'multipart/alternative; boundary="=_0123456789abcdef"'),
]


@pytest.mark.parametrize(("name", "value"), _TRICKY_VALUES)
def test_headers_written_directly_are_the_email_packages(name: str, value: str) -> None:
    from digest.message import _direct_header, _header, _subject_header

    assert _direct_header(name, value) == _header(name, value)
    if name == "Subject":
        assert _subject_header(value) == _header(name, value)


def test_plain_headers_skip_the_parser() -> None:
    from digest.message import _plain_header

    assert _plain_header("Date", "Tue, 18 Aug 2026 07:30:00 +0000") is not None
    assert _plain_header("Subject", "Daily Papers · x") is None  # non-ASCII: folded by email
    assert _plain_header("Subject", "x" * 1000) is None


def _qp_whole(text: str) -> bytes:
    """The reference: one b2a_qp call over the whole text (what _quoted_printable was)."""
    import binascii

    data = "\n".join(text.splitlines()).encode("utf-8") + b"\n"
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(
        b"\n", b"\r\n"
    )


def test_quoted_printable_line_by_line_is_byte_identical_to_the_whole_text() -> None:
    import random

    from digest.message import _quoted_printable

    rng = random.Random(13)
    alphabet = "ab =\t.é€🤖<>&\"'" + "x" * 20
    texts = ["", "\n", "\n\n\n", "a", "trailing space ", "trailing tab\t", "=", "." * 200]
    texts += ["crlf\r\nline\rbreaks\u2028and\x0bothers\x85end", " " * 80, "=" * 100]
    for _ in range(400):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 5, 75, 76, 77, 150))))
            for _ in range(rng.randint(0, 6))
        ]
        texts.append(rng.choice(("\n", "\r\n")).join(lines) + rng.choice(("", "\n", " \n")))
    for text in texts:
        assert _quoted_printable(text) == _qp_whole(text), repr(text)


def test_date_header_is_per_second_and_per_zone() -> None:
    # The Date header is formatted once per second: the same instant in another zone, or the
    # next second, is a header of its own.
    utc = datetime(2025, 5, 29, 5, 30, 1, 250_000, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=2)))

    def date_of(when: datetime) -> str:
        return str(parse(build(render(2), date=when))["Date"])

    assert date_of(utc) == "Thu, 29 May 2025 05:30:01 +0000"
    assert date_of(paris) == "Thu, 29 May 2025 07:30:01 +0200"
    assert date_of(utc + timedelta(microseconds=700_000)) == "Thu, 29 May 2025 05:30:01 +0000"
    assert date_of(utc + timedelta(seconds=1)) == "Thu, 29 May 2025 05:30:02 +0000"
