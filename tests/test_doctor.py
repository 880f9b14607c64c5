"""``digest doctor`` (issue #24): each rule checked against a real DNS server (dnsmasq on
loopback) serving a zone that passes, and zones that each break one rule."""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import trustme

from digest.doctor import (
    DNS_BUDGET_TIMEOUTS,
    DnsClient,
    DoctorReport,
    Status,
    check_starttls,
    organizational_domain,
    parse_nameserver,
    run_doctor,
    sending_ip,
)
from digest.errors import ConfigError
from digest.settings import Settings
from tests.conftest import StartDns
from tests.dnsserver import SilentNameserver, Zone
from tests.factories import SECRET_KEY, make_dkim_key, make_settings, run_cli, use_settings
from tests.faultrelay import FaultRelay
from tests.smtpserver import SMTPTestServer

GOOD = "good.test"
IP = "192.0.2.10"
"""The sending IP of the good zone (DIGEST_SENDING_IP)."""
SELECTOR = "digest"


def good_zone(dkim_record: bytes) -> Zone:
    """Every rule passes: SPF through an include, DKIM key, DMARC, MX, forward-confirmed PTR."""
    return (
        Zone()
        .txt(GOOD, "v=spf1 include:_spf.good.test ~all")
        .txt(f"_spf.{GOOD}", f"v=spf1 ip4:{IP} -all")
        .txt(f"{SELECTOR}._domainkey.{GOOD}", dkim_record)
        .txt(f"_dmarc.{GOOD}", f"v=DMARC1; p=none; rua=mailto:dmarc@{GOOD}")
        .mx(GOOD, f"mx.{GOOD}")
        .a(f"mx.{GOOD}", "192.0.2.25")
        .a(f"mail.{GOOD}", IP)  # A + PTR
    )


def domain_values(key_path: Path) -> dict[str, Any]:
    """Settings of the good zone's sender: From papers@good.test, one-click links, DKIM."""
    return {
        "sender": f"Daily Papers <papers@{GOOD}>",
        "public_url": f"https://papers.{GOOD}",
        "secret_key": SECRET_KEY,
        "dkim_selector": SELECTOR,
        "dkim_domain": GOOD,
        "dkim_private_key_path": key_path,
    }


def good_values(key_path: Path, relay: SMTPTestServer, ca_file: Path) -> dict[str, Any]:
    """:func:`domain_values`, the sending IP, and a STARTTLS relay on loopback whose
    certificate the CA file verifies."""
    return {
        **domain_values(key_path),
        "sending_ip": IP,
        "smtp_host": "127.0.0.1",
        "smtp_port": relay.port,
        "smtp_security": "starttls",
        "smtp_ca_file": ca_file,
    }


@pytest.fixture
def relay(leaf: trustme.LeafCert) -> Iterator[SMTPTestServer]:
    """A relay on loopback offering STARTTLS (certificate for 127.0.0.1 from ``ca``)."""
    with SMTPTestServer(security="starttls", cert=leaf) as server:
        yield server


def doctor(server_ns: str, timeout: float = 5.0, **values: Any) -> DoctorReport:
    return run_doctor(make_settings(checked=False, **values), nameserver=server_ns, timeout=timeout)


def statuses(report: DoctorReport) -> dict[str, set[Status]]:
    out: dict[str, set[Status]] = {}
    for f in report.findings:
        out.setdefault(f.check, set()).add(f.status)
    return out


def the(report: DoctorReport, check: str) -> str:
    """The one line of ``check``."""
    lines = [f.line() for f in report.findings if f.check == check]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_good_domain_passes_every_check(
    dns_server: StartDns, dkim_key: tuple[Path, bytes], relay: SMTPTestServer, ca_file: Path
) -> None:
    key_path, record = dkim_key
    server = dns_server(good_zone(record))
    report = doctor(server.nameserver, **good_values(key_path, relay, ca_file))
    assert report.ok
    assert [f.check for f in report.findings] == [
        "SPF",
        "SPF lookups",
        "DKIM",
        "unsubscribe",
        "DMARC",
        "alignment",
        "MX",
        "PTR",
        "STARTTLS",
    ]
    assert all(f.status is Status.PASS for f in report.findings), report.findings
    assert the(report, "SPF").startswith(
        "pass  SPF          good.test: v=spf1 include:_spf.good.test ~all covers 192.0.2.10"
    )
    assert "1 of the 10 DNS lookups" in the(report, "SPF lookups")
    assert "2048-bit RSA; a message signed with it verifies" in the(report, "DKIM")
    assert "DKIM h= covers List-Unsubscribe and List-Unsubscribe-Post" in the(report, "unsubscribe")
    assert "_dmarc.good.test: v=DMARC1; p=none" in the(report, "DMARC")
    assert "PTR mail.good.test, which resolves back to 192.0.2.10" in the(report, "PTR")
    assert "offers STARTTLS; certificate verified" in the(report, "STARTTLS")
    assert "Gmail, Yahoo, Microsoft" in the(report, "DMARC")
    assert relay.connections >= 1


@dataclass
class Lab:
    """What a test case may break: the zone, the settings, a directory, and the port of a
    relay that offers no STARTTLS."""

    zone: Zone
    values: dict[str, Any]
    tmp: Path
    plain_port: int


Break = Callable[[Lab], None]


def _no_spf(lab: Lab) -> None:
    lab.zone.drop(GOOD, "TXT")


def _spf_elsewhere(lab: Lab) -> None:
    lab.zone.drop(f"_spf.{GOOD}", "TXT").txt(f"_spf.{GOOD}", "v=spf1 ip4:198.51.100.7 -all")


def _two_spf(lab: Lab) -> None:
    lab.zone.txt(GOOD, "v=spf1 ip4:192.0.2.10 -all")


def _eleven_includes(lab: Lab) -> None:
    includes = " ".join(f"include:l{i}.{GOOD}" for i in range(11))
    lab.zone.drop(GOOD, "TXT").txt(GOOD, f"v=spf1 ip4:{IP} {includes} -all")
    for i in range(11):
        lab.zone.txt(f"l{i}.{GOOD}", "v=spf1 ip4:198.51.100.0/24 -all")


def _no_dkim_key(lab: Lab) -> None:
    lab.zone.drop(f"{SELECTOR}._domainkey.{GOOD}", "TXT")


def _other_dkim_key(lab: Lab) -> None:
    other = make_dkim_key(lab.tmp / "other.pem")
    lab.zone.drop(f"{SELECTOR}._domainkey.{GOOD}", "TXT").txt(
        f"{SELECTOR}._domainkey.{GOOD}", other
    )


def _revoked_dkim_key(lab: Lab) -> None:
    name = f"{SELECTOR}._domainkey.{GOOD}"
    lab.zone.drop(name, "TXT").txt(name, "v=DKIM1; k=rsa; p=")


def _no_one_click(lab: Lab) -> None:
    lab.values["public_url"] = None
    lab.values["unsubscribe_mailto"] = f"unsubscribe@{GOOD}"


def _no_dmarc(lab: Lab) -> None:
    lab.zone.drop(f"_dmarc.{GOOD}", "TXT")


def _dmarc_without_policy(lab: Lab) -> None:
    lab.zone.drop(f"_dmarc.{GOOD}", "TXT").txt(f"_dmarc.{GOOD}", f"v=DMARC1; rua=mailto:d@{GOOD}")


def _nothing_aligned(lab: Lab) -> None:
    # Envelope and DKIM at another organization's domain: each passes for itself, neither
    # aligns with From good.test.
    other = make_dkim_key(lab.tmp / "other.pem")
    lab.zone.txt("other.test", f"v=spf1 ip4:{IP} -all").txt(
        f"{SELECTOR}._domainkey.other.test", other
    )
    lab.zone.mx("other.test", "mx.other.test")
    lab.values.update(
        envelope_from="bounces@other.test",
        dkim_domain="other.test",
        dkim_private_key_path=lab.tmp / "other.pem",
    )


def _no_mx(lab: Lab) -> None:
    lab.zone.drop(GOOD, "MX")


def _null_mx(lab: Lab) -> None:
    lab.zone.drop(GOOD, "MX").mx(GOOD, ".", 0)


def _no_ptr(lab: Lab) -> None:
    lab.zone.drop(f"mail.{GOOD}", "A")


def _ptr_not_confirmed(lab: Lab) -> None:
    lab.zone.drop(f"mail.{GOOD}", "A").ptr(IP, f"mail.{GOOD}")


def _relay_without_starttls(lab: Lab) -> None:
    lab.values["smtp_port"] = lab.plain_port


@pytest.mark.parametrize(
    ("breaks", "check", "says", "record"),
    [
        pytest.param(
            _no_spf, "SPF", "no SPF record", 'good.test TXT "v=spf1 ip4:192.0.2.10 ~all"', id="spf"
        ),
        pytest.param(
            _spf_elsewhere,
            "SPF",
            "does not cover 192.0.2.10, from DIGEST_SENDING_IP: SPF softfail",
            'good.test TXT "v=spf1 ip4:192.0.2.10 include:_spf.good.test ~all"',
            id="spf-coverage",
        ),
        pytest.param(_two_spf, "SPF", "2 SPF records", None, id="spf-two-records"),
        pytest.param(
            _eleven_includes,
            "SPF lookups",
            "11 DNS lookups (the limit is 10 lookups, 2 void)",
            None,
            id="spf-lookups",
        ),
        pytest.param(_no_dkim_key, "DKIM", "no DKIM key published", "DKIM", id="dkim-missing"),
        pytest.param(
            _other_dkim_key, "DKIM", "the published key is not the public key of", "DKIM", id="dkim"
        ),
        pytest.param(_revoked_dkim_key, "DKIM", "revoked", "DKIM", id="dkim-revoked"),
        pytest.param(
            _no_one_click, "unsubscribe", "no List-Unsubscribe-Post", None, id="one-click"
        ),
        pytest.param(
            _no_dmarc,
            "DMARC",
            "no DMARC record at _dmarc.good.test",
            '_dmarc.good.test TXT "v=DMARC1; p=none; rua=mailto:dmarc@good.test"',
            id="dmarc",
        ),
        pytest.param(
            _dmarc_without_policy, "DMARC", "no valid p=", "_dmarc.good.test", id="dmarc-policy"
        ),
        pytest.param(
            _nothing_aligned,
            "alignment",
            "envelope domain other.test not aligned, SPF passes; DKIM d=other.test not aligned",
            None,
            id="alignment",
        ),
        pytest.param(
            _no_mx, "MX", "neither MX nor A/AAAA", "good.test MX 10 mail.good.test", id="mx"
        ),
        pytest.param(_null_mx, "MX", "null MX (RFC 7505)", None, id="null-mx"),
        pytest.param(
            _no_ptr, "PTR", "no PTR record", "10.2.0.192.in-addr.arpa PTR mail.good.test", id="ptr"
        ),
        pytest.param(
            _ptr_not_confirmed,
            "PTR",
            "PTR mail.good.test, which does not resolve back to 192.0.2.10",
            "mail.good.test A 192.0.2.10",
            id="ptr-forward",
        ),
        pytest.param(
            _relay_without_starttls, "STARTTLS", "does not offer STARTTLS", None, id="starttls"
        ),
    ],
)
def test_a_zone_breaking_one_rule_fails_that_check_alone(
    breaks: Break,
    check: str,
    says: str,
    record: str | None,
    dns_server: StartDns,
    dkim_key: tuple[Path, bytes],
    relay: SMTPTestServer,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    key_path, dkim_record = dkim_key
    with SMTPTestServer(security="none") as plain:
        lab = Lab(
            good_zone(dkim_record), good_values(key_path, relay, ca_file), tmp_path, plain.port
        )
        breaks(lab)
        report = doctor(dns_server(lab.zone).nameserver, **lab.values)
    assert not report.ok
    failed = {f.check for f in report.findings if f.status is Status.FAIL}
    assert failed == {check}, [f.line() for f in report.findings]
    assert all(f.status is Status.PASS for f in report.findings if f.check != check)
    line = next(f.line() for f in report.findings if f.status is Status.FAIL)
    assert line.startswith(f"fail  {check}")
    assert says in line
    if record == "DKIM":  # the record to publish is the public key of the configured key
        assert f'; add: digest._domainkey.good.test TXT "{dkim_record.decode()}"' in line
    elif record is not None:
        assert f"; add: {record}" in line


def test_the_cli_exits_0_for_a_good_zone_and_1_for_a_bad_one_with_json(
    dns_server: StartDns,
    dkim_key: tuple[Path, bytes],
    relay: SMTPTestServer,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_path, record = dkim_key
    use_settings(monkeypatch, **good_values(key_path, relay, ca_file))
    good = dns_server(good_zone(record))
    code, output = run_cli("doctor", "--nameserver", good.nameserver)
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith("From domain good.test, envelope domain good.test, sending IP ")
    assert sum(line.startswith("pass  ") for line in lines) == 10
    assert lines[-2].startswith("pass  complaints   every group: nothing delivered recently yet")
    assert lines[-1] == "10 pass, 0 warn, 0 fail"

    bad = dns_server(good_zone(record).drop(f"_dmarc.{GOOD}", "TXT"))
    code, output = run_cli("doctor", "--nameserver", bad.nameserver, "--json")
    assert code == 1, output
    data = json.loads(output)
    assert data["ok"] is False
    dmarc = next(c for c in data["checks"] if c["check"] == "DMARC")
    assert dmarc["status"] == "fail"
    assert dmarc["record"] == '_dmarc.good.test TXT "v=DMARC1; p=none; rua=mailto:dmarc@good.test"'
    assert dmarc["rule"].startswith("Gmail, Yahoo, Microsoft")


def test_a_resolver_that_never_answers_gives_timeouts_within_a_bounded_time(
    dkim_key: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path, _ = dkim_key
    use_settings(monkeypatch, **domain_values(key_path))  # no relay, no sending IP
    timeout = 0.5
    with SilentNameserver() as silent:
        started = time.monotonic()
        code, output = run_cli("doctor", "--nameserver", silent.nameserver, "--timeout", "0.5")
        took = time.monotonic() - started
    assert code == 1, output
    assert silent.questions >= 1
    # The DNS questions share DNS_BUDGET_TIMEOUTS timeouts (+ start-up, key parsing).
    assert took < DNS_BUDGET_TIMEOUTS * timeout + 3.0, took
    lines = {line.split()[1]: line for line in output.splitlines() if line[:4] in ("pass", "fail")}
    for check in ("SPF", "DKIM", "DMARC", "MX"):
        assert lines[check].startswith("fail"), output
        line = lines[check]
        assert f"no answer from {silent.nameserver} " in line or "not asked" in line
        assert "within 0.5 s" in line or "the 2 s for DNS questions ran out" in line
    assert "sending IP unknown" in output
    assert "Traceback" not in output


def test_the_relay_ip_comes_from_dns_and_private_or_loopback_relays_are_unknown(
    dns_server: StartDns,
) -> None:
    server = dns_server(Zone().a(f"relay.{GOOD}", IP).a(f"inside.{GOOD}", "10.1.2.3"))
    client = DnsClient(parse_nameserver(server.nameserver), timeout=2.0)

    def ip_of(**values: Any) -> tuple[str | None, str]:
        found = sending_ip(make_settings(checked=False, **values), client)
        return (str(found.address) if found.address else None), found.source

    assert ip_of(smtp_host=f"relay.{GOOD}") == (IP, f"DIGEST_SMTP_HOST relay.{GOOD}")
    assert ip_of(smtp_host="198.51.100.7") == ("198.51.100.7", "DIGEST_SMTP_HOST")
    assert ip_of(smtp_host=f"relay.{GOOD}", sending_ip="203.0.113.5") == (
        "203.0.113.5",
        "DIGEST_SENDING_IP",
    )
    for host in ("127.0.0.1", "localhost", f"inside.{GOOD}", "[::1]", "192.168.1.1"):
        address, why = ip_of(smtp_host=host)
        assert address is None and "DIGEST_SENDING_IP" in why, (host, why)
    address, why = ip_of(smtp_host=f"nowhere.{GOOD}")
    assert address is None and "no A or AAAA record" in why
    assert ip_of() == (None, "no DIGEST_SMTP_HOST and no DIGEST_SENDING_IP")


def test_without_a_known_sending_ip_spf_and_ptr_warn_and_the_spf_record_is_still_counted(
    dns_server: StartDns, dkim_key: tuple[Path, bytes], relay: SMTPTestServer, ca_file: Path
) -> None:
    key_path, record = dkim_key
    values = good_values(key_path, relay, ca_file)
    del values["sending_ip"]  # the relay is 127.0.0.1: not what receivers see
    report = doctor(dns_server(good_zone(record)).nameserver, **values)
    assert statuses(report)["SPF"] == {Status.WARN}
    assert "cannot tell whether it covers the sending IP" in the(report, "SPF")
    assert statuses(report)["SPF lookups"] == {Status.PASS}
    assert statuses(report)["PTR"] == {Status.WARN}
    # DKIM alone aligns: DMARC passes.
    assert statuses(report)["alignment"] == {Status.PASS}
    assert report.ok


def test_without_dkim_the_doctor_warns_and_alignment_rests_on_spf(
    dns_server: StartDns, dkim_key: tuple[Path, bytes], relay: SMTPTestServer, ca_file: Path
) -> None:
    key_path, record = dkim_key
    values = good_values(key_path, relay, ca_file)
    for name in ("dkim_selector", "dkim_domain", "dkim_private_key_path"):
        del values[name]
    report = doctor(dns_server(good_zone(record)).nameserver, **values)
    assert statuses(report)["DKIM"] == {Status.WARN}
    assert statuses(report)["unsubscribe"] == {Status.WARN}
    assert "no DKIM" in the(report, "alignment")
    assert statuses(report)["alignment"] == {Status.PASS}


def test_the_envelope_domain_is_checked_for_spf_and_mx_and_the_from_domain_only_warns(
    dns_server: StartDns, dkim_key: tuple[Path, bytes], relay: SMTPTestServer, ca_file: Path
) -> None:
    # VERP at a subdomain: bounces+TOKEN@bounce.good.test; SPF and MX are the subdomain's,
    # and relaxed alignment holds (same organizational domain).
    key_path, record = dkim_key
    zone = good_zone(record).drop(GOOD, "TXT").drop(GOOD, "MX")
    zone.txt(f"bounce.{GOOD}", f"v=spf1 ip4:{IP} -all").mx(f"bounce.{GOOD}", f"mx.{GOOD}")
    values = {**good_values(key_path, relay, ca_file), "envelope_from": f"bounces@bounce.{GOOD}"}
    report = doctor(dns_server(zone).nameserver, verp=True, **values)
    spf = [f for f in report.findings if f.check == "SPF"]
    assert [(f.subject, f.status) for f in spf] == [
        (f"bounce.{GOOD}", Status.PASS),
        (GOOD, Status.WARN),
    ]
    assert "no SPF record (From domain; SPF is checked on the envelope domain)" in spf[1].detail
    assert the(report, "MX").startswith("pass  MX           bounce.good.test")
    assert "envelope domain bounce.good.test aligned, SPF passes" in the(report, "alignment")
    assert report.setup.startswith(
        "From domain good.test, envelope domain bounce.good.test (VERP), sending IP 192.0.2.10"
    )
    assert report.ok


@pytest.mark.parametrize(
    ("zone", "found"),
    [
        (Zone().txt("_dmarc.lab.co.uk", "v=DMARC1; p=reject"), "pass"),
        # Not at the public suffix: co.uk is not the organizational domain of lab.co.uk.
        (Zone().txt("_dmarc.co.uk", "v=DMARC1; p=reject"), "fail"),
        (Zone().txt("_dmarc.news.lab.co.uk", "v=DMARC1; p=quarantine"), "pass"),
    ],
)
def test_dmarc_falls_back_to_the_organizational_domain_from_the_public_suffix_list(
    zone: Zone, found: str, dns_server: StartDns
) -> None:
    report = doctor(
        dns_server(zone).nameserver, sender="p@news.lab.co.uk", public_url="https://x.lab.co.uk"
    )
    line = the(report, "DMARC")
    assert line.startswith(f"{found}  DMARC"), line
    if found == "fail":
        assert "no DMARC record at _dmarc.news.lab.co.uk or _dmarc.lab.co.uk" in line
        assert '; add: _dmarc.lab.co.uk TXT "v=DMARC1; p=none' in line
    elif "_dmarc.lab.co.uk" in line:
        assert "(organizational domain of news.lab.co.uk); policy reject" in line


def test_organizational_domains_come_from_the_bundled_list() -> None:
    assert organizational_domain("news.lab.co.uk") == "lab.co.uk"
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("Papers.Example.ORG.") == "example.org"
    assert organizational_domain("co.uk") == "co.uk"
    assert organizational_domain("good.test") == "good.test"


def test_the_public_suffix_list_is_never_fetched() -> None:
    # A fresh interpreter in which opening any socket raises (an audit hook, not a mock):
    # loading the list and finding organizational domains must not try the network.
    code = (
        "import sys\n"
        "def deny(event, args):\n"
        "    if event.startswith(('socket.', 'urllib.')):\n"
        "        raise RuntimeError('network: ' + event)\n"
        "sys.addaudithook(deny)\n"
        "from digest.doctor import organizational_domain\n"
        "print(organizational_domain('news.lab.co.uk'), organizational_domain('x.y.github.io'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lab.co.uk", "y.github.io"]


def test_hostile_records_stay_on_one_escaped_line_and_fail_cleanly(
    dns_server: StartDns, dkim_key: tuple[Path, bytes], relay: SMTPTestServer, ca_file: Path
) -> None:
    key_path, record = dkim_key
    zone = good_zone(record)
    zone.drop(GOOD, "TXT").txt(GOOD, b"v=spf1 \x1b[31mred\n\xff\xfe -all " + b"a" * 800)
    name = f"{SELECTOR}._domainkey.{GOOD}"
    zone.drop(name, "TXT").txt(name, "v=DKIM1; k=rsa; p=!!not base64\n\x1b]0;title\x07")
    zone.drop(f"_dmarc.{GOOD}", "TXT").txt(f"_dmarc.{GOOD}", "v=DMARC1; p=none\r\nInjected: 1")
    report = doctor(dns_server(zone).nameserver, **good_values(key_path, relay, ca_file))
    for f in report.findings:
        line = f.line()
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
        assert len(line) < 800, line
    assert statuses(report)["SPF"] == {Status.FAIL}
    assert "\\x1b[31mred\\n" in the(report, "SPF")
    dkim = the(report, "DKIM")
    assert dkim.startswith("fail  DKIM") and "the published record is unusable" in dkim
    dmarc = the(report, "DMARC")  # "none\r\nInjected: 1" is no policy
    assert dmarc.startswith("fail  DMARC") and "p=none\\r\\nInjected: 1: no valid p=" in dmarc


@pytest.mark.parametrize(
    ("published", "status", "says"),
    [
        ("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "fail", "k=ed25519"),
        ("v=DKIM1; h=sha1; p={key}", "fail", "the record allows h=sha1 only"),
        ("v=DKIM1; s=tlsrpt; p={key}", "fail", "the record is for s=tlsrpt, not email"),
        ("v=DKIM2; p={key}", "fail", "the published record is unusable (v=DKIM2, not DKIM1)"),
        ("v=DKIM1; p=MIIB", "fail", "the published record is unusable"),
        ("v=DKIM1; t=y; p={key}", "warn", "but t=y (testing)"),
        ("v=DKIM1; t=s; h=sha1:sha256; s=email:*; p={key}", "pass", "a message signed with"),
    ],
)
def test_what_a_dkim_record_may_say(
    published: str, status: str, says: str, dns_server: StartDns, dkim_key: tuple[Path, bytes]
) -> None:
    key_path, record = dkim_key
    key = record.decode().partition("p=")[2]
    zone = Zone().txt(f"{SELECTOR}._domainkey.{GOOD}", published.replace("{key}", key))
    report = doctor(dns_server(zone).nameserver, **domain_values(key_path))
    line = the(report, "DKIM")
    assert line.startswith(f"{status}  DKIM") and says in line, line
    if status != "pass":
        assert f'add: digest._domainkey.good.test TXT "{record.decode()}"' in line


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        (" 192.0.2.53:5353 ", ("192.0.2.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("[::1]", ("::1", 53)),
    ],
)
def test_nameserver_forms(value: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "",
        "dns.example",
        "192.0.2.53:0",
        "192.0.2.53:65536",
        "192.0.2.53:dns",
        "192.0.2.53:53:1",
        "[::1",
        "[::1]53",
        "[::1]:",
        "1.2.3.4; rm -rf /",
        "\x1b[31m",
        "999.1.1.1",
    ],
)
def test_a_bad_nameserver_is_one_line_and_exit_2(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"^--nameserver .*: give the resolver's IP address"):
        parse_nameserver(value)
    use_settings(monkeypatch, sender=f"papers@{GOOD}")
    code, output = run_cli("doctor", "--nameserver", value)
    assert code == 2, output
    assert output.startswith("error: --nameserver ") and output.count("\n") == 1, output


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--timeout", "0"], {}, "--timeout 0.0: give a number of seconds above 0"),
        (["--timeout", "-1"], {}, "--timeout -1.0: give a number of seconds above 0"),
        ([], {"sending_ip": "not-an-ip"}, "DIGEST_SENDING_IP: "),
        ([], {"sending_ip": "192.0.2.300"}, "DIGEST_SENDING_IP: "),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_settings(monkeypatch, sender=f"papers@{GOOD}", **env)
    code, output = run_cli("doctor", "--nameserver", "127.0.0.1:9", *args)
    assert code == 2, output
    assert output.startswith(f"error: {says}") or f"error: invalid settings: {says}" in output
    assert "Traceback" not in output


def test_sending_ip_is_a_setting_validated_as_an_ip() -> None:
    assert str(make_settings(sending_ip="2001:db8::25").sending_ip) == "2001:db8::25"
    with pytest.raises(ConfigError, match="DIGEST_SENDING_IP"):
        make_settings(sending_ip="mail.example.org")


@pytest.mark.parametrize(
    ("relay_security", "settings_security", "status", "says"),
    [
        ("starttls", "none", Status.PASS, "offers STARTTLS (digest uses it with"),
        ("none", "none", Status.WARN, "does not offer STARTTLS: fine for a relay on this"),
        ("tls", "tls", Status.PASS, "implicit TLS; certificate verified"),
    ],
)
def test_starttls_by_security_setting(
    relay_security: str,
    settings_security: str,
    status: Status,
    says: str,
    leaf: trustme.LeafCert,
    ca_file: Path,
) -> None:
    cert = leaf if relay_security != "none" else None
    with SMTPTestServer(security=relay_security, cert=cert) as server:  # type: ignore[arg-type]
        settings: Settings = make_settings(
            checked=False,
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security=settings_security,
            smtp_ca_file=ca_file,
        )
        finding = asyncio.run(check_starttls(settings, timeout=5.0))
    assert finding.status is status, finding
    assert says in finding.detail


def test_an_untrusted_relay_certificate_fails_starttls(
    dns_server: StartDns, leaf: trustme.LeafCert
) -> None:
    with SMTPTestServer(security="starttls", cert=leaf) as server:
        report = doctor(
            dns_server(Zone()).nameserver,
            timeout=2.0,
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security="starttls",
        )
    line = the(report, "STARTTLS")
    assert line.startswith("fail  STARTTLS") and "is not trusted" in line


def test_probing_a_relay_that_never_ends_its_tls_session_leaves_no_socket_open(
    leaf: trustme.LeafCert, ca_file: Path
) -> None:
    # After QUIT the relay never answers the client's TLS close_notify. A graceful TLS close
    # would wait for it, the probe's event loop ends meanwhile, and the socket stayed open
    # until the garbage collector found it (ResourceWarning: unclosed transport).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    with FaultRelay(tls=context, after_quit="stall") as relay:
        settings = make_settings(
            checked=False,
            smtp_host="127.0.0.1",
            smtp_port=relay.port,
            smtp_security="starttls",
            smtp_ca_file=ca_file,
        )
        finding = asyncio.run(check_starttls(settings, timeout=5.0))
        assert finding.status is Status.PASS, finding
        ours = psutil.Process().net_connections(kind="tcp")
        still_open = [c for c in ours if c.raddr and c.raddr.port == relay.port]
        assert still_open == []
    gc.collect()
