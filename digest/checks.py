"""What ``digest validate`` checks beyond parsing: placeholders left from the examples, and
whether the paper sources answer.

Parsing errors (bad values, unknown keys) come from :func:`digest.settings.load_settings` and
:func:`digest.subscribers.load_subscribers`; this module looks at values that parse but are
not what a real deployment should send with:

* a ``From``, envelope sender or unsubscribe address at a domain reserved
  for documentation (RFC 2606 / RFC 6761: ``example.org``, ``example.com``, ``example.net``,
  ``*.example``, ``*.test``, ``*.invalid``) or at ``localhost`` (the built-in default From):
  mail from there fails SPF/DMARC or cannot be answered (warnings);
* an unsubscribe link that leads nowhere (:func:`unsubscribe_link_errors`): an error, since
  every email would carry it;
* a subscriber's own ``sources`` that are not among ``DIGEST_SOURCES``: legal (they are used
  *instead of* DIGEST_SOURCES for that subscriber), but easy to miss when ``DIGEST_SOURCES``
  points at local files and that subscriber's edition still goes to the network.

:func:`probe_sources` fetches one day from each source once, without retries, so ``validate``
can say whether each is reachable (``--offline`` skips it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from urllib.parse import urlsplit

from digest.addresses import needs_smtputf8
from digest.errors import ConfigError, SourceError
from digest.settings import Settings
from digest.sources import build_source
from digest.subscribers import Subscriber, SubscriberList, load_subscribers

RESERVED_DOMAINS = ("example.org", "example.com", "example.net", "localhost")
"""Domains reserved for documentation or this machine (RFC 2606, RFC 6761)."""
RESERVED_TLDS = (".example", ".test", ".invalid", ".localhost")
"""Top-level domains reserved for documentation and testing (RFC 2606)."""
PROBE_TIMEOUT_S = 10.0
"""Longest a reachability probe waits for one source, seconds (no retries)."""


def is_placeholder_domain(domain: str) -> bool:
    """Whether ``domain`` is reserved (``example.org``, ``x.example``, ``localhost``...)."""
    d = domain.strip().rstrip(".").lower()
    return (
        d in RESERVED_DOMAINS
        or d.endswith(RESERVED_TLDS)
        or d.endswith(tuple("." + r for r in RESERVED_DOMAINS))
    )


def _domain_of_address(value: str) -> str:
    address = parseaddr(value)[1] or value
    return address.rpartition("@")[2]


def placeholder_warnings(settings: Settings) -> list[str]:
    """Settings that still carry an example value, one line each with what to put instead.

    Args:
        settings: validated settings.

    Returns:
        Lines ``DIGEST_NAME: ... ; set ...`` (empty when none). The secret key is checked by
        the settings themselves (an error, not a warning).
    """
    out: list[str] = []
    sender = parseaddr(settings.sender)[1] or settings.sender
    if is_placeholder_domain(_domain_of_address(settings.sender)):
        out.append(
            f"DIGEST_FROM: {sender} is a placeholder address; set it to an address at your own "
            'domain, e.g. DIGEST_FROM="Daily Papers <papers@yourlab.org>" (receivers check '
            "SPF/DKIM/DMARC against that domain)"
        )
    if settings.envelope_from and is_placeholder_domain(_domain_of_address(settings.envelope_from)):
        out.append(
            f"DIGEST_ENVELOPE_FROM: {settings.envelope_from} is a placeholder address; bounces "
            "go there: use a mailbox at your domain that you read (or `digest bounces` reads)"
        )
    if settings.unsubscribe_mailto:
        address = settings.unsubscribe_mailto.removeprefix("mailto:").split("?", 1)[0]
        if is_placeholder_domain(_domain_of_address(address)):
            out.append(
                f"DIGEST_UNSUBSCRIBE_MAILTO: {address} is a placeholder address; set it to a "
                "mailbox at your domain that you read, or remove it"
            )
    return out


UNSUBSCRIBE_ROUTE = "/u/{token}"
"""The path of ``digest serve``'s unsubscribe page and RFC 8058 one-click endpoint."""


def unsubscribe_link_errors(settings: Settings) -> list[str]:
    """Why the List-Unsubscribe link of every email would lead nowhere, one line each.

    ``DIGEST_UNSUBSCRIBE_URL`` overrides the app's link (``DIGEST_PUBLIC_URL`` + ``/u/{token}``):

    * at a documentation domain (``example.org``...), it reaches nobody;
    * on the web app's own host, it must be the app's route ``/u/{token}`` (the app answers
      nothing else: ``/unsubscribe?token=...`` is a 404);
    * without ``{token}`` (and without ``{email}``), nothing tells whom to unsubscribe.

    Returns:
        ``DIGEST_UNSUBSCRIBE_URL: ...; what to do`` lines (empty when the link works).
    """
    url = settings.unsubscribe_url
    if not url:
        return []
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    fix = (
        "remove DIGEST_UNSUBSCRIBE_URL and set DIGEST_PUBLIC_URL to where `digest serve` "
        "answers: the emails then link to DIGEST_PUBLIC_URL" + UNSUBSCRIBE_ROUTE
    )
    if is_placeholder_domain(host):
        return [f"DIGEST_UNSUBSCRIBE_URL: {host} is a placeholder that reaches nobody; {fix}"]
    out: list[str] = []
    public = settings.public_url
    app = urlsplit(public) if public else None
    if public and app and (app.hostname or "").lower() == host and app.port == parts.port:
        route = (app.path.rstrip("/") + UNSUBSCRIBE_ROUTE).replace("{token}", "")
        if "{token}" not in parts.path or parts.path.replace("{token}", "") != route:
            out.append(
                f"DIGEST_UNSUBSCRIBE_URL: {url} is on the web app's host but `digest serve` "
                f"answers only {public.rstrip('/')}{UNSUBSCRIBE_ROUTE}; {fix}"
            )
    if "{token}" not in url and "{email}" not in url:
        out.append(
            f"DIGEST_UNSUBSCRIBE_URL: {url} has no {{token}} (nor {{email}}): every email "
            "would carry the same link; put {token} where your handler reads it"
        )
    return out


def missing_like_warnings(settings: Settings, subscribers: Sequence[Subscriber]) -> list[str]:
    """``like:``/``dislike:`` ids that no stored edition or liked paper holds, one line each.

    A send ignores such an id (logged at INFO, once per process): ``validate`` is where it is
    said as a warning, once. Read only when the state exists with the current schema (nothing
    is created or migrated here).
    """
    wanted = {pid for sub in subscribers for pid in (*sub.like, *sub.dislike)}
    if not wanted:
        return []
    from digest.state import SCHEMA_VERSION, describe_state, open_state

    ok, line = describe_state(settings.effective_state_url)
    if not ok or f"schema version {SCHEMA_VERSION} (current)" not in line:
        return []
    with open_state(settings.effective_state_url) as store:
        found = store.find_papers(wanted)
    how = (
        "arXiv does not know it"
        if settings.arxiv_api_url
        else "set DIGEST_ARXIV_API_URL to fetch it at the next send"
    )
    return [
        f"{sub.email}: liked/disliked paper {pid} is not among the stored papers ({how}); "
        "ranking ignores it"
        for sub in subscribers
        for pid in dict.fromkeys((*sub.like, *sub.dislike))
        if pid not in found
    ]


def subscriber_source_warnings(
    settings: Settings, subscribers: SubscriberList | None = None
) -> list[str]:
    """Subscribers whose own ``sources`` are not among ``DIGEST_SOURCES``, one line each.

    Runs the subscribers file's ``known_sources`` check; call it only once the file loads
    without errors (any problem it reports is then about ``sources``). With ``subscribers``
    (a list read from the state), looks at those instead.

    Returns:
        ``file:line: subscribers[i].sources[j]: 'hf' is not a configured source
        (DIGEST_SOURCES: ...); this subscriber's papers come from it instead`` lines
        (``ADDRESS: sources: …`` for a list in the state).
    """
    tail = (
        "; this subscriber's papers come from their own sources instead of "
        "DIGEST_SOURCES (`--source` overrides both for preview)"
    )
    if subscribers is not None:
        known = settings.source_specs
        return [
            f"{sub.email}: sources: {spec!r} is not a configured source "
            f"(DIGEST_SOURCES: {', '.join(known)}){tail}"
            for sub in subscribers
            for spec in sub.sources or ()
            if spec not in known
        ]
    try:
        load_subscribers(settings.subscribers, known_sources=settings.source_specs)
    except ConfigError as e:
        return [f"{p}{tail}" for p in e.problems]
    return []


def smtputf8_notes(settings: Settings, subscribers: SubscriberList | None = None) -> list[str]:
    """Subscribers whose address needs SMTPUTF8 (RFC 6531: a non-ASCII local part), one line each.

    Such an address is sent only through a relay that advertises SMTPUTF8; with any other
    relay that subscriber is recorded ``failed`` ("relay does not offer SMTPUTF8") and the
    others are sent. An IDN domain (``ada@bücher.de``) needs nothing: it goes out in its
    IDNA form. Call it only once the subscribers file loads without errors (or pass the
    list: ``subscribers``).

    Returns:
        ``file: josé@example.org needs SMTPUTF8 ...`` lines, in file order.
    """
    if subscribers is None:
        subscribers = load_subscribers(settings.subscribers)
    return [
        f"{subscribers.path}: {sub.email} needs SMTPUTF8 (RFC 6531, non-ASCII local part): "
        "sent only if the relay offers it, else recorded failed"
        for sub in subscribers
        if needs_smtputf8(sub.email)
    ]


@dataclass(frozen=True, slots=True)
class SourceProbe:
    """The answer of one source to one fetch.

    Attributes:
        spec: the source spec (``hf``, ``file:PATH``, ``feed:URL``).
        ok: whether it answered with usable data.
        papers: how many papers it listed for ``day`` (0 when not ``ok``).
        day: the UTC day asked for.
        seconds: how long the fetch took.
        error: why it failed (one line, without the ``source NAME:`` prefix), or ``""``.
    """

    spec: str
    ok: bool
    papers: int
    day: date
    seconds: float
    error: str = ""


def configured_specs(settings: Settings, subscribers: SubscriberList | None = None) -> list[str]:
    """``DIGEST_SOURCES`` then every subscriber's own sources not among them, in file order.

    A subscribers file that does not load contributes nothing (validate reports it); with
    ``subscribers`` (a list read from the state), those.
    """
    specs = list(dict.fromkeys(settings.source_specs))
    if subscribers is not None:
        subs = subscribers
    else:
        try:
            subs = load_subscribers(settings.subscribers)
        except ConfigError:
            return specs
    for sub in subs.subscribers:
        for spec in sub.sources or ():
            if spec not in specs:
                specs.append(spec)
    return specs


async def probe_sources(
    specs: Iterable[str], settings: Settings, day: date, *, timeout: float = PROBE_TIMEOUT_S
) -> list[SourceProbe]:
    """Fetch ``day`` once from each source (no retries, at most ``timeout`` seconds each).

    Nothing is stored (no state file is opened). One source failing does not stop the others.

    Args:
        specs: source specs.
        settings: HTTP settings (``hf_api_url``, ``http_timeout``); retries are turned off.
        day: the UTC day to ask for (``validate`` asks for yesterday's).
        timeout: seconds per source.

    Returns:
        One :class:`SourceProbe` per spec, in order.
    """
    quick = settings.model_copy(
        update={"http_retries": 0, "http_timeout": min(settings.http_timeout, timeout)}
    )

    async def one(spec: str) -> SourceProbe:
        started = time.monotonic()
        try:
            source = build_source(spec, quick)
            papers = await asyncio.wait_for(source.fetch(day), timeout)
        except SourceError as e:
            return SourceProbe(spec, False, 0, day, time.monotonic() - started, e.detail)
        except ConfigError as e:
            return SourceProbe(spec, False, 0, day, time.monotonic() - started, str(e))
        except TimeoutError:
            error = f"no answer within {timeout:g} s"
            return SourceProbe(spec, False, 0, day, time.monotonic() - started, error)
        return SourceProbe(spec, True, len(papers), day, time.monotonic() - started)

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


async def probe_relay(settings: Settings) -> tuple[bool, str]:
    """Connect to the SMTP relay as a send would (EHLO, STARTTLS, AUTH when configured), then
    QUIT: ``(ok, line)``. Without ``DIGEST_SMTP_HOST`` the Maildir is used: nothing to probe.

    Never raises for the relay's faults: they are the line (one try, ``smtp_timeout`` seconds
    per step).
    """
    if not settings.smtp_host:
        return True, f"delivery: Maildir {settings.outbox} (no DIGEST_SMTP_HOST)"
    from digest.delivery.smtp import SmtpTransport
    from digest.errors import DeliveryError

    where = f"relay {settings.smtp_host}:{settings.effective_smtp_port}"
    try:
        transport = await SmtpTransport.connect(settings)
    except DeliveryError as e:
        return False, f"{where}: NOT usable: {e}"
    await transport.close()
    how = {"starttls": "STARTTLS", "tls": "TLS", "none": "no TLS"}[settings.smtp_security]
    auth = f", AUTH as {settings.smtp_username}" if settings.smtp_username else ""
    return True, f"{where}: reachable ({how}{auth})"


def describe_probe(probe: SourceProbe) -> str:
    """One line for ``validate``: ``source hf: reachable (29 papers on 2026-08-20, 0.4 s)``."""
    if probe.ok:
        noun = "paper" if probe.papers == 1 else "papers"
        return (
            f"source {probe.spec}: reachable ({probe.papers} {noun} on {probe.day.isoformat()}, "
            f"{probe.seconds:.1f} s)"
        )
    return f"source {probe.spec}: NOT reachable: {probe.error}"


def probe_failed(probes: Sequence[SourceProbe]) -> bool:
    """Whether any probe failed."""
    return any(not p.ok for p in probes)
