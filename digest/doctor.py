"""``digest doctor``: will the big mailbox providers accept mail from the configured domains?

Since 2024 Gmail and Yahoo, and since May 2025 Microsoft (Outlook.com answers ``550 5.7.515``),
reject bulk mail (5,000+ messages a day to them) whose From domain lacks SPF, DKIM and a DMARC
record that SPF or DKIM aligns with; every sender needs forward-confirmed reverse DNS for its
sending IP and TLS. :func:`run_doctor` asks DNS what a receiver would ask (dnspython, through
the resolver the operator chooses) and talks to the relay, and returns one :class:`Finding` per
rule, each ``pass``, ``warn`` (cannot tell, or not required) or ``fail``, with the DNS record to
add:

============  ===================================================================================
check         passes when
============  ===================================================================================
SPF           the envelope domain (the From domain too, when it differs) publishes one
              ``v=spf1`` record (RFC 7208) and it authorizes the sending IP (pyspf evaluates it)
SPF lookups   evaluating it takes at most 10 DNS lookups and 2 void lookups (RFC 7208 §4.6.4)
DKIM          ``SELECTOR._domainkey.DOMAIN`` publishes the public key of
              ``DIGEST_DKIM_PRIVATE_KEY_PATH``, and a message signed with it verifies (dkimpy)
unsubscribe   the message has List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 one-click),
              both in the DKIM signature's ``h=`` list
DMARC         ``_dmarc.FROM-DOMAIN``, else ``_dmarc.ORGANIZATIONAL-DOMAIN`` (RFC 7489 §6.6.3,
              through the Public Suffix List bundled with ``publicsuffixlist``, never fetched)
              holds one valid ``v=DMARC1`` record
alignment     SPF (envelope domain) or DKIM (``d=``) passes and aligns with the From domain
MX            the envelope (bounce, VERP) domain has an MX record, or an A/AAAA record
PTR           the sending IP's reverse name resolves back to it (forward-confirmed)
STARTTLS      the relay offers STARTTLS (or speaks implicit TLS) and its certificate verifies
complaints    (the state, :func:`state_rate_findings`) each domain group's worst complaint rate
              of the last week is at most DIGEST_COMPLAINT_WARN_PERCENT (warn above; fail above
              DIGEST_COMPLAINT_PAUSE_PERCENT or while the group is paused)
hard bounce   each group's worst hard-bounce rate is at most 2 % (warn above)
============  ===================================================================================

The sending IP is ``DIGEST_SENDING_IP`` when set, else ``DIGEST_SMTP_HOST``'s address (resolved
through the chosen resolver). A relay on this machine or a private network is not what
receivers see, nor is a provider's submission host: set ``DIGEST_SENDING_IP`` to the public IP
the mail leaves from, otherwise the SPF coverage and PTR checks say ``warn`` (unknown).

Each DNS question waits at most ``timeout`` seconds and all of them together at most
:data:`DNS_BUDGET_TIMEOUTS` times that: a resolver that does not answer gives a timed-out
``fail`` for each check, never a hang.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import dataclasses
import functools
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from digest.addresses import ascii_domain
from digest.delivery.envelope import envelope_sender
from digest.errors import ConfigError, DeliveryError, StateError
from digest.message import build_message, make_message_id, sender_domain
from digest.render import RenderedEmail
from digest.reputation import (
    HARD_BOUNCE_WARN_PERCENT,
    GroupRate,
    check_rates,
    percent,
    recent_rates,
)
from digest.settings import Settings, is_loopback_host
from digest.state import SQLITE_SCHEME, Pause, open_state, redact_url

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT_S = 5.0
"""Longest one DNS question or one SMTP command of the doctor waits, seconds."""
DNS_BUDGET_TIMEOUTS = 4
"""All DNS questions of one run together take at most this many ``timeout``\\ s; the
questions left then are not asked and their checks fail as timed out."""
DNS_PORT = 53
SPF_MAX_LOOKUPS = 10
"""RFC 7208 §4.6.4: more DNS-querying terms than this make SPF a permerror."""
MIN_DKIM_KEY_BITS = 1024
"""Shortest RSA key receivers accept (RFC 8301 §3.2; Gmail asks for 2048)."""
TXT_SHOWN_CHARS = 120
"""Characters of a published record a line quotes; the rest is elided."""
UNMATCHABLE_IP = "0.0.0.1"
"""An IP no SPF record can mean (0.0.0.0/8 is "this network", never a sender): evaluating SPF
for it walks every term, so the lookups counted are all the record can take."""
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
"""RFC 1918, RFC 6598 (carrier-grade NAT) and RFC 4193 ranges: addresses receivers never see."""

BULK = "Gmail, Yahoo, Microsoft: required for bulk senders"
RULES = {
    "SPF": BULK,
    "SPF lookups": "RFC 7208 §4.6.4: more than 10 is a permerror, SPF then fails everywhere",
    "DKIM": BULK,
    "unsubscribe": "Gmail, Yahoo: one-click unsubscribe for bulk senders; RFC 8058 §4: signed",
    "DMARC": BULK + ", p=none is enough",
    "alignment": "Gmail, Yahoo, Microsoft: DMARC must pass for bulk senders; Microsoft "
    "answers 550 5.7.515",
    "MX": "RFC 5321 §6.1: bounces go to the envelope sender; receivers refuse a sender "
    "domain that cannot receive",
    "PTR": "Gmail, Yahoo: required for all senders",
    "STARTTLS": "Gmail: TLS required for all senders",
    "complaints": "Gmail: spam-complaint rate under 0.1 %, never 0.3 %; Yahoo, Microsoft alike",
    "hard bounce": "providers treat a list with over 2 % unknown users as unmaintained",
}
"""Who asks for each check, as the line's parenthesis says."""


class Status(StrEnum):
    """A check's outcome: ``pass``; ``warn`` (cannot tell, or not required); ``fail``."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check.

    Attributes:
        status: pass, warn or fail.
        check: the rule's short name (``SPF``, ``DKIM``, ``DMARC``... see the module doc).
        subject: what was checked: a domain, a DNS name, an IP or ``host:port``.
        detail: what was found, one line (DNS data shown escaped and shortened).
        record: the DNS record to add or replace, ``NAME TYPE VALUE``, if one fixes it.
        advice: what else to do, if anything.
    """

    status: Status
    check: str
    subject: str
    detail: str
    record: str | None = None
    advice: str | None = None

    @property
    def rule(self) -> str:
        """Who requires this check (Gmail, Yahoo, Microsoft, an RFC)."""
        return RULES[self.check]

    def line(self) -> str:
        """``fail  DMARC        example.org: no record (RULE); add: NAME TXT "..."``."""
        text = f"{self.status:<4}  {self.check:<11}  {self.subject}: {self.detail} ({self.rule})"
        if self.record:
            text += f"; add: {self.record}"
        if self.advice:
            text += f"; {self.advice}"
        return _escape(text)  # every part quoting DNS data is escaped already: a safety net

    def to_json(self) -> dict[str, str | None]:
        """The finding as a JSON object (``rule`` included)."""
        return {**dataclasses.asdict(self), "status": str(self.status), "rule": self.rule}


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What :func:`run_doctor` found.

    Attributes:
        setup: one line naming the domains, the sending IP and the resolver checked.
        findings: one per check, in the order of the module doc.
    """

    setup: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(f.status is not Status.FAIL for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """``{"ok": ..., "setup": ..., "checks": [finding, ...]}``."""
        return {"ok": self.ok, "setup": self.setup, "checks": [f.to_json() for f in self.findings]}


# --- DNS ------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """One DNS question's answer.

    Attributes:
        values: the records (empty for NXDOMAIN or no data).
        error: why there is no answer (timeout, SERVFAIL, budget spent), else ``None``.
    """

    values: tuple[T, ...] = ()
    error: str | None = None


def parse_nameserver(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` of ``--nameserver`` → ``(ip, port)``.

    Args:
        value: ``192.0.2.53``, ``192.0.2.53:5353``, ``2001:db8::53`` or ``[2001:db8::53]:5353``.

    Raises:
        ConfigError: not an IP address with an optional port 1–65535.
    """
    text = value.strip()
    host, port = text, str(DNS_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            host = ""
        elif rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError(port)
    except ValueError:
        raise ConfigError(
            f"--nameserver {value!r}: give the resolver's IP address and optional port, "
            "e.g. 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:5353"
        ) from None
    return str(address), number


class DnsClient:
    """DNS questions through one resolver, each bounded in time, all of them too.

    Args:
        nameserver: ``(ip, port)`` of the resolver; ``None``: the system's (resolv.conf).
        timeout: longest one question waits, seconds.
        budget: longest all questions together take, seconds; afterwards none is asked.
        clock: monotonic seconds (tests may inject one).
    """

    def __init__(
        self,
        nameserver: tuple[str, int] | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self.where = f"{nameserver[0]}:{nameserver[1]}" if nameserver else "the system resolver"
        self.timeout = timeout
        self.budget = budget if budget is not None else DNS_BUDGET_TIMEOUTS * timeout
        self._clock = clock
        self._deadline = clock() + self.budget

    def query(self, name: str, rdtype: str) -> Answer[Any]:
        """The ``rdtype`` records of ``name`` (dnspython rdata objects).

        NXDOMAIN and an empty answer are both an empty :class:`Answer`; a timeout, a
        SERVFAIL/REFUSED or a spent budget are an answer with ``error`` set. Never raises.
        """
        left = self._deadline - self._clock()
        if left <= 0:
            return Answer(error=f"not asked: the {self.budget:g} s for DNS questions ran out")
        lifetime = min(self.timeout, left)
        try:
            answer = self._resolver.resolve(
                name, rdtype, lifetime=lifetime, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer()
        except dns.exception.Timeout:
            if lifetime < self.timeout:
                why = f"before the {self.budget:g} s for DNS questions ran out"
            else:
                why = f"within {lifetime:g} s"
            return Answer(error=f"no answer from {self.where} {why}")
        except dns.resolver.NoNameservers:
            return Answer(error=f"{self.where} could not answer (SERVFAIL or REFUSED)")
        except dns.exception.DNSException as e:
            return Answer(error=f"DNS error: {_show(str(e))}")
        return Answer(tuple(answer.rrset) if answer.rrset is not None else ())

    def txt(self, name: str) -> Answer[str]:
        """The TXT records of ``name``, each record's strings joined (RFC 7208 §3.3)."""
        answer = self.query(name, "TXT")
        texts = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer.values)
        return Answer(texts, answer.error)

    def addresses(self, name: str) -> Answer[IPAddress]:
        """The A and AAAA records of ``name``."""
        found: list[IPAddress] = []
        errors = []
        for rdtype in ("A", "AAAA"):
            answer = self.query(name, rdtype)
            found += [ipaddress.ip_address(r.address) for r in answer.values]
            if answer.error:
                errors.append(answer.error)
        return Answer(tuple(found), errors[0] if errors and not found else None)

    def mx(self, name: str) -> Answer[tuple[int, str]]:
        """The MX records of ``name``: ``(preference, exchange)``, exchange ``""`` for ``.``."""
        answer = self.query(name, "MX")
        return Answer(
            tuple(
                (r.preference, "" if r.exchange == dns.name.root else r.exchange.to_text(True))
                for r in answer.values
            ),
            answer.error,
        )

    def ptr(self, ip: IPAddress) -> Answer[str]:
        """The PTR names of ``ip``'s reverse name (``in-addr.arpa`` / ``ip6.arpa``)."""
        answer = self.query(dns.reversename.from_address(str(ip)).to_text(), "PTR")
        return Answer(
            tuple(r.target.to_text(omit_final_dot=True) for r in answer.values), answer.error
        )


# --- the Public Suffix List -----------------------------------------------------------------


@functools.cache
def _public_suffix_list() -> Any:
    # The list bundled with the package (publicsuffixlist reads its own file; updating it is a
    # separate, explicit command): never fetched at run time.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2) of ``domain``: ``news.lab.co.uk`` →
    ``lab.co.uk``, from the Public Suffix List bundled with ``publicsuffixlist`` (offline).

    A public suffix itself (``co.uk``) is its own organizational domain.
    """
    name = domain.lower().rstrip(".")
    found: str | None = _public_suffix_list().privatesuffix(name)
    return found or name


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1): ``s`` equal, ``r`` same org domain."""
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


# --- text -----------------------------------------------------------------------------------

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(text: str) -> str:
    """``text`` with its control characters and line separators escaped (``\\n``,
    ``\\x1b``, ``\\u2028``): one line that cannot drive a terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _show(text: str, limit: int = TXT_SHOWN_CHARS) -> str:
    """Outside data (DNS records, replies) made safe for one output line: escaped
    (:func:`_escape`), cut at ``limit`` characters."""
    text = _escape(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _txt_record(name: str, value: str) -> str:
    """``NAME TXT "VALUE"`` as a zone file line would write it."""
    return f'{name} TXT "{value}"'


def _domain_of(address: str) -> str:
    return ascii_domain(address.rpartition("@")[2]) if "@" in address else ""


# --- SPF (pyspf) ----------------------------------------------------------------------------

_SPF_CLIENT: contextvars.ContextVar[DnsClient | None] = contextvars.ContextVar(
    "digest_doctor_spf_client", default=None
)


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNS hook (``spf.DNSLookup``), answering through the doctor's :class:`DnsClient`.

    Returns what pyspf's own dnspython hook returns: ``[((name, qtype), value), ...]``.

    Raises:
        spf.TempError: the question timed out or the resolver failed.
    """
    import spf

    client = _SPF_CLIENT.get()
    if client is None:  # pyspf used elsewhere in this process: its own hook
        return _SPF_ORIGINAL_LOOKUP[0](name, qtype, strict, timeout)  # type: ignore[no-any-return]
    answer = client.query(name, qtype)
    if answer.error:
        raise spf.TempError(f"DNS {answer.error}")
    out: list[Any] = []
    for r in answer.values:
        if qtype in ("A", "AAAA"):
            value: Any = r.address
        elif qtype == "MX":
            value = (r.preference, r.exchange)
        elif qtype == "PTR":
            value = r.target.to_text(True)
        elif qtype in ("TXT", "SPF"):
            value = r.strings
        else:
            continue
        out.append(((name, qtype), value))
    return out


_SPF_ORIGINAL_LOOKUP: list[Callable[..., Any]] = []


@contextmanager
def _spf_through(client: DnsClient) -> Iterator[Any]:
    """pyspf, its DNS questions going to ``client`` (in this context only)."""
    import spf

    if not _SPF_ORIGINAL_LOOKUP:
        _SPF_ORIGINAL_LOOKUP.append(spf.DNSLookup)
        spf.DNSLookup = _spf_lookup
    token = _SPF_CLIENT.set(client)
    try:
        yield spf
    finally:
        _SPF_CLIENT.reset(token)


@dataclass(frozen=True, slots=True)
class SpfResult:
    """pyspf's verdict for one IP: ``result`` is pass, fail, softfail, neutral, none,
    permerror or temperror; ``lookups`` the DNS-querying terms evaluated; ``reason`` its
    explanation (for errors)."""

    result: str
    lookups: int
    reason: str


def evaluate_spf(
    client: DnsClient, ip: IPAddress | str, sender: str, *, strict: bool = True
) -> SpfResult:
    """Evaluate the SPF record of ``sender``'s domain for a connection from ``ip`` (RFC 7208
    §4, pyspf), asking ``client``.

    Args:
        client: the resolver.
        ip: the connecting IP.
        sender: the envelope sender (``MAIL FROM``); its domain's record is evaluated.
        strict: ``True`` as receivers do (the 11th lookup is a permerror); ``False`` goes on
            past the limits (up to 40 lookups), so ``lookups`` counts them all.
    """
    with _spf_through(client) as spf:
        domain = _domain_of(sender)
        query = spf.query(
            i=str(ip), s=sender, h=domain, strict=strict, timeout=client.timeout, querytime=0
        )
        result, _code, reason = query.check()
        return SpfResult(str(result), int(query.lookups), str(reason))


_SPF_RE = re.compile(r"^v=spf1(?:\s|$)", re.IGNORECASE)


# --- the checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendingIp:
    """The IP address receivers see the mail come from.

    Attributes:
        address: the IP, or ``None`` when unknown.
        source: where it came from (``DIGEST_SENDING_IP``, ``DIGEST_SMTP_HOST relay.x``), or
            why it is unknown.
    """

    address: IPAddress | None
    source: str


def _is_private(ip: IPAddress) -> bool:
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or any(ip.version == n.version and ip in n for n in PRIVATE_NETWORKS)
    )


def sending_ip(settings: Settings, client: DnsClient) -> SendingIp:
    """The sending IP: ``DIGEST_SENDING_IP``, else ``DIGEST_SMTP_HOST``'s first address
    (resolved through ``client``) unless it is loopback or private.

    Args:
        settings: DIGEST_SENDING_IP, DIGEST_SMTP_HOST.
        client: the resolver.
    """
    if settings.sending_ip is not None:
        return SendingIp(settings.sending_ip, "DIGEST_SENDING_IP")
    host = settings.smtp_host
    if not host:
        return SendingIp(None, "no DIGEST_SMTP_HOST and no DIGEST_SENDING_IP")
    set_it = "set DIGEST_SENDING_IP to the public IP your mail leaves from"
    try:
        ip: IPAddress = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if is_loopback_host(host.lower()):
            return SendingIp(None, f"the relay {host} is this machine; {set_it}")
        answer = client.addresses(host)
        if not answer.values:
            why = answer.error or "no A or AAAA record"
            return SendingIp(None, f"DIGEST_SMTP_HOST {host}: {why}; {set_it}")
        ip = answer.values[0]
    if _is_private(ip):
        return SendingIp(None, f"the relay {host} ({ip}) is on a private network; {set_it}")
    where = "DIGEST_SMTP_HOST" if str(ip) == host else f"DIGEST_SMTP_HOST {host}"
    return SendingIp(ip, where)


def _ip_term(ip: IPAddress) -> str:
    return f"ip{ip.version}:{ip}"


def _dkim_record(public_der: bytes) -> str:
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class _PrivateKey:
    modulus: int
    exponent: int
    bits: int
    public_der: bytes


def _read_private_key(path: Path) -> _PrivateKey:
    """The RSA key at ``path`` (PEM, PKCS#1 or PKCS#8) and its public half.

    Raises:
        ConfigError: unreadable, not PEM, or not RSA (the message never quotes the key).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"DIGEST_DKIM_PRIVATE_KEY_PATH: cannot read {path}: {e.strerror or e}"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"DIGEST_DKIM_PRIVATE_KEY_PATH: {path} is not an unencrypted PEM private key "
            f"({type(e).__name__})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"DIGEST_DKIM_PRIVATE_KEY_PATH: {path} is not an RSA key")
    public = key.public_key()
    numbers = public.public_numbers()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _PrivateKey(numbers.n, numbers.e, key.key_size, der)


def _tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` tag lists (DKIM RFC 6376 §3.2, DMARC RFC 7489 §6.4), names lower-cased."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            out.setdefault(name.strip().lower(), "".join(value.split()))
    return out


_SAMPLE = RenderedEmail(
    subject="digest doctor: a sample message",
    html="<p>A sample message built by digest doctor; it is never sent.</p>",
    text="A sample message built by digest doctor; it is never sent.\n",
    preheader="",
)


@dataclass
class _Doctor:
    """One run's state: the settings, the resolver, and what the checks learned."""

    settings: Settings
    client: DnsClient
    now: datetime
    from_domain: str = ""
    envelope: str = ""
    envelope_domain: str = ""
    ip: SendingIp = field(default_factory=lambda: SendingIp(None, ""))
    spf_pass: bool | None = None
    """Whether SPF passes for the sending IP (``None``: unknown)."""
    dkim_pass: bool = False
    dmarc_tags: dict[str, str] = field(default_factory=dict)
    sample: bytes | None = None
    sample_error: str | None = None

    def __post_init__(self) -> None:
        self.from_domain = ascii_domain(sender_domain(self.settings))
        self.envelope = envelope_sender(self.settings)
        self.envelope_domain = _domain_of(self.envelope) or self.from_domain
        self.ip = sending_ip(self.settings, self.client)
        try:
            self.sample = build_message(
                _SAMPLE,
                settings=self.settings,
                to_email=f"postmaster@{self.from_domain}",
                to_name=None,
                message_id=make_message_id(self.settings, "", "doctor"),
                date=self.now,
            )
        except (ConfigError, ValueError) as e:
            self.sample_error = str(e)

    # -- SPF --

    def spf(self) -> list[Finding]:
        domains = [self.envelope_domain]
        if self.from_domain != self.envelope_domain:
            domains.append(self.from_domain)
        out: list[Finding] = []
        for domain in domains:
            out += self._spf_domain(domain, envelope=domain == self.envelope_domain)
        return out

    def _spf_domain(self, domain: str, *, envelope: bool) -> list[Finding]:
        answer = self.client.txt(domain)
        ip = self.ip.address
        term = _ip_term(ip) if ip else "ip4:<your sending IP>"
        if answer.error:
            return [Finding(Status.FAIL, "SPF", domain, answer.error)]
        records = [t for t in answer.values if _SPF_RE.match(t)]
        # When the envelope domain differs, the From domain's SPF is not what receivers
        # check for this mail: its problems are warnings.
        bad = Status.FAIL if envelope else Status.WARN
        role = "" if envelope else " (From domain; SPF is checked on the envelope domain)"
        if not records:
            return [
                Finding(
                    bad,
                    "SPF",
                    domain,
                    "no SPF record" + role,
                    record=_txt_record(domain, f"v=spf1 {term} ~all"),
                )
            ]
        if len(records) > 1:
            return [
                Finding(
                    bad,
                    "SPF",
                    domain,
                    f"{len(records)} SPF records, receivers answer permerror (RFC 7208 §4.5); "
                    "merge them into one",
                )
            ]
        record = records[0]
        shown = _show(record)
        findings = []
        if not envelope:
            findings.append(Finding(Status.PASS, "SPF", domain, f"{shown}{role}"))
        elif ip is None:
            findings.append(
                Finding(
                    Status.WARN,
                    "SPF",
                    domain,
                    f"{shown}; cannot tell whether it covers the sending IP: {self.ip.source}",
                )
            )
        else:
            verdict = evaluate_spf(self.client, ip, self.envelope, strict=True)
            self.spf_pass = verdict.result == "pass"
            if self.spf_pass:
                findings.append(
                    Finding(
                        Status.PASS, "SPF", domain, f"{shown} covers {ip}, from {self.ip.source}"
                    )
                )
            elif verdict.result in ("permerror", "temperror"):
                self.spf_pass = False
                findings.append(
                    Finding(Status.FAIL, "SPF", domain, f"{shown}: {_show(verdict.reason)}")
                )
            else:
                rest = record[len("v=spf1") :].strip()
                findings.append(
                    Finding(
                        Status.FAIL,
                        "SPF",
                        domain,
                        f"{shown} does not cover {ip}, from {self.ip.source}: SPF {verdict.result}",
                        record=_txt_record(domain, f"v=spf1 {term} {rest}".strip()),
                    )
                )
        findings.append(self._spf_lookups(domain, bad))
        return findings

    def _spf_lookups(self, domain: str, bad: Status) -> Finding:
        sender = self.envelope if domain == self.envelope_domain else f"postmaster@{domain}"
        verdict = evaluate_spf(self.client, UNMATCHABLE_IP, sender, strict=False)
        if verdict.result == "temperror":
            return Finding(bad, "SPF lookups", domain, _show(verdict.reason))
        over = verdict.lookups > SPF_MAX_LOOKUPS
        if verdict.result == "permerror" and not over and "lookup" not in verdict.reason.lower():
            # A syntax error (reported on the SPF line) stops the count.
            return Finding(bad, "SPF lookups", domain, "cannot count: the record is a permerror")
        if verdict.result == "permerror" or over:
            count = f"{verdict.lookups} DNS lookups" if over else _show(verdict.reason)
            return Finding(
                bad,
                "SPF lookups",
                domain,
                f"{count} (the limit is {SPF_MAX_LOOKUPS} lookups, 2 void)",
                advice="replace include:, a and mx terms by the ip4:/ip6: ranges they stand "
                "for, or drop senders you no longer use",
            )
        return Finding(
            Status.PASS,
            "SPF lookups",
            domain,
            f"{verdict.lookups} of the {SPF_MAX_LOOKUPS} DNS lookups allowed",
        )

    # -- DKIM --

    def dkim(self) -> Finding:
        s = self.settings
        if not (s.dkim_selector and s.dkim_domain and s.dkim_private_key_path):
            return Finding(
                Status.WARN,
                "DKIM",
                self.from_domain,
                "digest does not sign (DIGEST_DKIM_SELECTOR, _DOMAIN, _PRIVATE_KEY_PATH unset); "
                "fine only if your relay signs with your From domain",
                advice="make a key (openssl genrsa -out dkim.pem 2048), set the three "
                "settings and run digest doctor again for the record to publish",
            )
        name = f"{s.dkim_selector}._domainkey.{ascii_domain(s.dkim_domain)}"
        try:
            ours = _read_private_key(s.dkim_private_key_path)
        except ConfigError as e:
            return Finding(Status.FAIL, "DKIM", name, str(e))
        wanted = _txt_record(name, _dkim_record(ours.public_der))
        answer = self.client.txt(name)
        if answer.error:
            return Finding(Status.FAIL, "DKIM", name, answer.error)
        if not answer.values:
            return Finding(Status.FAIL, "DKIM", name, "no DKIM key published", record=wanted)
        import dkim

        published = next((t for t in answer.values if "p=" in t), answer.values[0])
        tags = _tags(published)
        # RFC 6376 §3.6.1: k= key type, h= hash algorithms, s= service types, t= flags.
        refused = None
        if "p" in tags and not tags["p"]:
            refused = "the published key is revoked (empty p=)"
        elif tags.get("k", "rsa") != "rsa":
            refused = f"the published key is k={_show(tags['k'], 20)}; digest signs with RSA"
        elif "sha256" not in tags.get("h", "sha256").split(":"):
            refused = f"the record allows h={_show(tags['h'], 30)} only; digest signs rsa-sha256"
        elif not {"*", "email"} & set(tags.get("s", "*").split(":")):
            refused = f"the record is for s={_show(tags['s'], 30)}, not email"
        if refused:
            return Finding(Status.FAIL, "DKIM", name, refused, record=wanted)
        published_key = tags.get("p", "")
        try:
            if tags.get("v", "DKIM1") != "DKIM1":
                raise ValueError(f"v={tags['v']}, not DKIM1")
            pk = dkim.crypto.parse_public_key(base64.b64decode(published_key, validate=True))
        except (dkim.crypto.UnparsableKeyError, ValueError, TypeError, IndexError) as e:
            # dkimpy's ASN.1 parser lets some errors of hostile data through (IndexError).
            return Finding(
                Status.FAIL,
                "DKIM",
                name,
                f"the published record is unusable ({_show(str(e), 80)})",
                record=wanted,
            )
        if (pk["modulus"], pk["publicExponent"]) != (ours.modulus, ours.exponent):
            return Finding(
                Status.FAIL,
                "DKIM",
                name,
                f"the published key is not the public key of {s.dkim_private_key_path}",
                record=wanted,
            )
        if ours.bits < MIN_DKIM_KEY_BITS:
            return Finding(
                Status.FAIL,
                "DKIM",
                name,
                f"the key has {ours.bits} bits; receivers ignore keys under "
                f"{MIN_DKIM_KEY_BITS} bits",
                advice="make a 2048-bit key (openssl genrsa -out dkim.pem 2048)",
            )
        verified = self._verify_sample(dkim, name, published_key)
        if verified is not None:
            return Finding(Status.FAIL, "DKIM", name, verified)
        self.dkim_pass = True
        if "y" in tags.get("t", "").split(":"):
            return Finding(
                Status.WARN,
                "DKIM",
                name,
                "the key matches and a signed message verifies, but t=y (testing): receivers "
                "may treat the mail as unsigned (RFC 6376 §3.6.1)",
                record=wanted,
            )
        return Finding(
            Status.PASS,
            "DKIM",
            name,
            f"publishes the public key of {s.dkim_private_key_path}, {ours.bits}-bit RSA; "
            "a message signed with it verifies",
        )

    def _verify_sample(self, dkim: Any, name: str, published_key: str) -> str | None:
        """Why the sample message, signed with the configured key, does not verify against
        the key published at ``name`` (dkimpy), or ``None``. The record's other tags were
        checked by the caller (dkimpy does not read a list in s=)."""
        if self.sample is None:
            return f"cannot build a signed message: {self.sample_error}"
        record = f"v=DKIM1; k=rsa; p={published_key}".encode("ascii")

        def txt(asked: bytes, timeout: float = DEFAULT_TIMEOUT_S) -> bytes | None:
            return record if asked.decode("ascii", "replace").rstrip(".") == name else None

        checker = dkim.DKIM(self.sample, minkey=MIN_DKIM_KEY_BITS)
        try:
            if checker.verify(dnsfunc=txt):
                return None
            return "a message signed with the key does not verify"
        except dkim.DKIMException as e:
            return f"a message signed with the key does not verify ({_show(str(e), 80)})"

    def unsubscribe(self) -> Finding:
        subject = "List-Unsubscribe"
        if self.sample is None:
            return Finding(
                Status.FAIL, "unsubscribe", subject, f"cannot build a message: {self.sample_error}"
            )
        headers = BytesHeaderParser().parsebytes(self.sample)
        if headers["List-Unsubscribe"] is None:
            return Finding(
                Status.FAIL,
                "unsubscribe",
                subject,
                "the message has no List-Unsubscribe header",
                advice="set DIGEST_PUBLIC_URL=https://… (the web app's one-click link) or "
                "DIGEST_UNSUBSCRIBE_URL",
            )
        if headers["List-Unsubscribe-Post"] is None:
            return Finding(
                Status.FAIL,
                "unsubscribe",
                subject,
                "no List-Unsubscribe-Post: one-click (RFC 8058) needs an https:// link",
                advice="set DIGEST_PUBLIC_URL=https://… or an https:// DIGEST_UNSUBSCRIBE_URL",
            )
        signature = headers["DKIM-Signature"]
        if signature is None:
            return Finding(
                Status.WARN,
                "unsubscribe",
                subject,
                "List-Unsubscribe and List-Unsubscribe-Post present, but digest does not "
                "sign them (no DKIM)",
                advice="set DIGEST_DKIM_SELECTOR, _DOMAIN and _PRIVATE_KEY_PATH",
            )
        signed = {h.strip().lower() for h in _tags(str(signature)).get("h", "").split(":")}
        wanted = ("List-Unsubscribe", "List-Unsubscribe-Post")
        missing = [h for h in wanted if h.lower() not in signed]
        if missing:
            return Finding(
                Status.FAIL,
                "unsubscribe",
                subject,
                f"DKIM h= does not cover {' and '.join(missing)}",
            )
        return Finding(
            Status.PASS,
            "unsubscribe",
            subject,
            "one-click (List-Unsubscribe-Post); DKIM h= covers List-Unsubscribe and "
            "List-Unsubscribe-Post",
        )

    # -- DMARC --

    def dmarc(self) -> Finding:
        org = organizational_domain(self.from_domain)
        wanted = _txt_record(f"_dmarc.{org}", f"v=DMARC1; p=none; rua=mailto:dmarc@{org}")
        names = [f"_dmarc.{self.from_domain}"]
        if org != self.from_domain:
            names.append(f"_dmarc.{org}")
        for name in names:
            answer = self.client.txt(name)
            if answer.error:
                return Finding(Status.FAIL, "DMARC", name, answer.error)
            records = [t for t in answer.values if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t)]
            if not records:
                continue
            if len(records) > 1:
                return Finding(
                    Status.FAIL,
                    "DMARC",
                    name,
                    f"{len(records)} DMARC records: none applies (RFC 7489 §6.6.3); keep one",
                )
            record = records[0]
            tags = _tags(record)
            policy = tags.get("sp", tags.get("p")) if name != names[0] else tags.get("p")
            if policy not in ("none", "quarantine", "reject"):
                return Finding(
                    Status.FAIL,
                    "DMARC",
                    name,
                    f"{_show(record)}: no valid p= (none, quarantine or reject)",
                    record=wanted,
                )
            self.dmarc_tags = tags
            where = "" if name == names[0] else f" (organizational domain of {self.from_domain})"
            return Finding(Status.PASS, "DMARC", name, f"{_show(record)}{where}; policy {policy}")
        return Finding(
            Status.FAIL,
            "DMARC",
            self.from_domain,
            "no DMARC record at " + " or ".join(names),
            record=wanted,
        )

    def alignment(self) -> Finding:
        s = self.settings
        aspf = self.dmarc_tags.get("aspf", "r")
        adkim = self.dmarc_tags.get("adkim", "r")
        spf_aligned = _aligned(self.envelope_domain, self.from_domain, aspf)
        dkim_domain = ascii_domain(s.dkim_domain) if s.dkim_enabled and s.dkim_domain else None
        dkim_aligned = dkim_domain is not None and _aligned(dkim_domain, self.from_domain, adkim)
        spf_state = {True: "SPF passes", False: "SPF fails", None: "SPF unknown"}[self.spf_pass]
        spf_part = (
            f"envelope domain {self.envelope_domain} "
            f"{'aligned' if spf_aligned else 'not aligned'}, {spf_state}"
        )
        dkim_part = (
            f"DKIM d={dkim_domain} {'aligned' if dkim_aligned else 'not aligned'}, "
            f"{'verifies' if self.dkim_pass else 'does not verify'}"
            if dkim_domain
            else "no DKIM"
        )
        detail = f"{spf_part}; {dkim_part}"
        if (spf_aligned and self.spf_pass) or (dkim_aligned and self.dkim_pass):
            return Finding(Status.PASS, "alignment", self.from_domain, detail)
        if spf_aligned and self.spf_pass is None:
            return Finding(Status.WARN, "alignment", self.from_domain, detail)
        return Finding(
            Status.FAIL,
            "alignment",
            self.from_domain,
            detail + "; DMARC fails",
            advice=f"sign with DIGEST_DKIM_DOMAIN={self.from_domain} (and publish its key), "
            f"or send from an envelope address at {self.from_domain} whose SPF covers the "
            "sending IP",
        )

    # -- bounce domain, PTR --

    def mx(self) -> Finding:
        domain = self.envelope_domain
        answer = self.client.mx(domain)
        if answer.error:
            return Finding(Status.FAIL, "MX", domain, answer.error)
        if answer.values and all(host == "" for _, host in answer.values):
            return Finding(
                Status.FAIL,
                "MX",
                domain,
                "null MX (RFC 7505): the envelope domain accepts no mail, bounces are lost",
                record=f"{domain} MX 10 mail.{domain}",
            )
        if answer.values:
            shown = ", ".join(f"{p} {h}" for p, h in sorted(answer.values)[:3])
            return Finding(Status.PASS, "MX", domain, f"envelope domain; MX {_show(shown)}")
        addresses = self.client.addresses(domain)
        if addresses.values:
            return Finding(
                Status.PASS,
                "MX",
                domain,
                f"no MX; bounces go to its address {addresses.values[0]} (RFC 5321 §5.1)",
            )
        return Finding(
            Status.FAIL,
            "MX",
            domain,
            addresses.error or "neither MX nor A/AAAA: bounces cannot reach the envelope domain",
            record=f"{domain} MX 10 mail.{domain}" if not addresses.error else None,
        )

    def ptr(self) -> Finding:
        ip = self.ip.address
        if ip is None:
            return Finding(Status.WARN, "PTR", "sending IP", f"unknown: {self.ip.source}")
        reverse = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
        example = f"mail.{self.from_domain}"
        ask = (
            f"ask whoever owns {ip} (your hosting provider) to set its reverse DNS to a name "
            "that resolves back to it"
        )
        answer = self.client.ptr(ip)
        if answer.error:
            return Finding(Status.FAIL, "PTR", str(ip), answer.error)
        if not answer.values:
            return Finding(
                Status.FAIL,
                "PTR",
                str(ip),
                "no PTR record",
                record=f"{reverse} PTR {example}",
                advice=ask,
            )
        for name in answer.values:
            forward = self.client.addresses(name)
            if ip in forward.values:
                return Finding(
                    Status.PASS, "PTR", str(ip), f"PTR {_show(name)}, which resolves back to {ip}"
                )
        name = answer.values[0]
        return Finding(
            Status.FAIL,
            "PTR",
            str(ip),
            f"PTR {_show(name)}, which does not resolve back to {ip}",
            record=f"{_show(name)} {'A' if ip.version == 4 else 'AAAA'} {ip}",
        )


async def check_starttls(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S) -> Finding:
    """Whether the relay offers STARTTLS (or speaks implicit TLS) and its certificate verifies.

    With DIGEST_SMTP_SECURITY ``starttls`` or ``tls`` this is the connection ``digest send``
    makes (TLS, then AUTH when configured; :class:`~digest.delivery.smtp.SmtpTransport`);
    with ``none`` it says EHLO and looks for STARTTLS. Each SMTP command waits at most
    ``timeout`` seconds.
    """
    host = settings.smtp_host
    if not host:
        return Finding(
            Status.WARN,
            "STARTTLS",
            "relay",
            "no relay (DIGEST_SMTP_HOST unset): messages go to the Maildir",
        )
    from aiosmtplib import SMTP, SMTPException

    from digest.delivery.smtp import SmtpTransport

    where = f"{host}:{settings.effective_smtp_port}"
    probe = settings.model_copy(update={"smtp_timeout": timeout})
    if settings.smtp_security != "none":
        try:
            transport = await SmtpTransport.connect(probe)
        except (DeliveryError, ConfigError) as e:
            return Finding(Status.FAIL, "STARTTLS", where, _show(str(e), 300))
        await transport.close()
        how = "offers STARTTLS" if settings.smtp_security == "starttls" else "implicit TLS"
        return Finding(Status.PASS, "STARTTLS", where, f"{how}; certificate verified")
    smtp = SMTP(hostname=host, port=settings.effective_smtp_port, timeout=timeout, start_tls=False)
    try:
        await smtp.connect()
        await smtp.ehlo()
        offered = smtp.supports_extension("starttls")
        await smtp.quit()
    except (SMTPException, OSError) as e:
        smtp.close()
        return Finding(Status.FAIL, "STARTTLS", where, f"cannot talk to the relay: {_show(str(e))}")
    if offered:
        return Finding(
            Status.PASS,
            "STARTTLS",
            where,
            "offers STARTTLS (digest uses it with DIGEST_SMTP_SECURITY=starttls)",
        )
    local = is_loopback_host(host)
    return Finding(
        Status.WARN if local else Status.FAIL,
        "STARTTLS",
        where,
        "does not offer STARTTLS"
        + (": fine for a relay on this machine if it uses TLS towards receivers" if local else ""),
        advice="Postfix: smtp_tls_security_level = may" if local else None,
    )


def run_doctor(
    settings: Settings,
    *,
    nameserver: str | None = None,
    timeout: float | None = None,
    now: datetime | None = None,
) -> DoctorReport:
    """Check the From and envelope domains, the DKIM key, the sending IP and the relay.

    Args:
        settings: DIGEST_FROM, _ENVELOPE_FROM, _DKIM_*, _SMTP_*, _SENDING_IP, the unsubscribe
            settings (a sample message is built, never sent).
        nameserver: ``HOST[:PORT]`` of the resolver to ask (see :func:`parse_nameserver`);
            ``None``: the system's.
        timeout: longest one DNS question or SMTP command waits, seconds (> 0; default
            :data:`DEFAULT_TIMEOUT_S`); all DNS questions together take at most
            :data:`DNS_BUDGET_TIMEOUTS` times that.
        now: the sample message's Date (aware); default the current time.

    Returns:
        The findings in the order of the module doc; ``report.ok`` is False when one failed.

    Raises:
        ConfigError: ``nameserver`` or ``timeout`` is invalid.
    """
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_S
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout {timeout}: give a number of seconds above 0")
    server = parse_nameserver(nameserver) if nameserver is not None else None
    client = DnsClient(server, timeout=timeout)
    doctor = _Doctor(settings, client, now or datetime.now(UTC))
    checks: list[tuple[str, Callable[[], Finding | list[Finding]]]] = [
        ("SPF", doctor.spf),
        ("DKIM", doctor.dkim),
        ("unsubscribe", doctor.unsubscribe),
        ("DMARC", doctor.dmarc),
        ("alignment", doctor.alignment),
        ("MX", doctor.mx),
        ("PTR", doctor.ptr),
        ("STARTTLS", lambda: asyncio.run(check_starttls(settings, timeout=timeout))),
    ]
    findings: list[Finding] = []
    for name, check in checks:
        try:
            found = check()
        except Exception as e:
            # A bug, or data no check foresaw: that check fails, the others still run.
            log.debug("digest doctor: the %s check failed", name, exc_info=True)
            found = Finding(
                Status.FAIL,
                name,
                "?",
                f"unexpected error ({type(e).__name__}: {_show(str(e), 80)}); -vv shows where",
            )
        findings += found if isinstance(found, list) else [found]
    ip = doctor.ip.address
    setup = (
        f"From domain {doctor.from_domain}, envelope domain {doctor.envelope_domain}"
        f"{' (VERP)' if settings.verp else ''}, sending IP "
        f"{f'{ip} ({doctor.ip.source})' if ip else 'unknown'}, asking {client.where}"
    )
    return DoctorReport(setup, tuple(findings))


def state_rate_findings(settings: Settings, *, now: datetime | None = None) -> list[Finding]:
    """:func:`sender_rate_findings` of the configured state; nothing is created (a state file
    that does not exist yet has delivered nothing), and a state that cannot be read is one
    ``warn`` finding (the DNS checks stand on their own).
    """
    url = settings.effective_state_url
    if url.startswith(SQLITE_SCHEME) and not Path(url[len(SQLITE_SCHEME) :]).exists():
        return sender_rate_findings(settings, [], {})
    try:
        with open_state(url, lease_seconds=settings.state_lease_seconds) as store:
            rates = recent_rates(store, now or datetime.now(UTC))
            pauses = store.pauses()
    except (StateError, ConfigError) as e:
        return [Finding(Status.WARN, "complaints", redact_url(url), f"state not read: {e}")]
    return sender_rate_findings(settings, rates, pauses)


def sender_rate_findings(
    settings: Settings, rates: Sequence[GroupRate], pauses: Mapping[str, Pause]
) -> list[Finding]:
    """One ``complaints`` and one ``hard bounce`` finding per domain group with deliveries
    in the recent editions (:func:`~digest.reputation.recent_rates`), from its worst edition.

    ``complaints``: fail while the group is paused or above DIGEST_COMPLAINT_PAUSE_PERCENT,
    warn above DIGEST_COMPLAINT_WARN_PERCENT. ``hard bounce``: warn above
    :data:`~digest.reputation.HARD_BOUNCE_WARN_PERCENT`.
    """
    checked = check_rates(
        rates,
        pauses,
        warn_percent=settings.complaint_warn_percent,
        pause_percent=settings.complaint_pause_percent,
    )
    if not checked.worst:
        return [Finding(Status.PASS, "complaints", "every group", "nothing delivered recently yet")]
    out: list[Finding] = []
    for group, worst in checked.worst.items():
        pause = pauses.get(group)
        status = Status.PASS
        advice = None
        if worst.complaints_above(settings.complaint_warn_percent):
            status = Status.WARN
        if (pause is not None and pause.active) or worst.complaints_above(
            settings.complaint_pause_percent
        ):
            status = Status.FAIL
            advice = (
                "find out why readers complain (consent, frequency, content), then "
                f"`digest resume {group}`"
            )
        detail = f"worst recent edition {worst.edition}: {worst.figures()}"
        if pause is not None and pause.active:
            detail += f"; sending paused since {pause.since:%Y-%m-%d %H:%M} UTC"
        out.append(Finding(status, "complaints", str(group), detail, advice=advice))
        hard = checked.worst_hard[group]
        rate = hard.hard_bounce_rate
        out.append(
            Finding(
                Status.WARN if rate * 100 > HARD_BOUNCE_WARN_PERCENT else Status.PASS,
                "hard bounce",
                str(group),
                f"worst recent edition {hard.edition}: {hard.hard:,} of "
                f"{hard.delivered + hard.failed:,} attempted ({percent(rate)})",
            )
        )
    return out


def describe(findings: Sequence[Finding]) -> str:
    """``3 pass, 1 warn, 2 fail``."""
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    return ", ".join(f"{n} {s}" for s, n in counts.items())
