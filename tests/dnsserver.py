"""A real DNS server for the tests: Debian's ``dnsmasq`` serving a test zone on loopback.

Build the records with :class:`Zone`, then serve them::

    zone = Zone().txt("good.test", "v=spf1 ip4:192.0.2.10 -all").mx("good.test", "mx.good.test")
    with DnsServer(zone) as server:
        ... run_doctor(settings, nameserver=server.nameserver) ...

``dnsmasq`` (package ``dnsmasq-base``; `.ci/run` installs it) runs in the foreground on
127.0.0.1 and a free port, with no system configuration (``--conf-file`` is the generated
file only, ``--no-resolv --no-hosts``) and no upstream: ``local=/#/`` makes every name it has
no record for NXDOMAIN (or no data), so no question ever leaves the machine.

Notes on dnsmasq's records: ``A``/``AAAA`` (``host-record``) also serve the PTR of the
address; a TXT value longer than 255 bytes is split into several strings (RFC 7208 §3.3), and
may hold any bytes (control characters, invalid UTF-8: hostile records); dnsmasq reads
configuration lines of fewer than 1,000 bytes, so a record's value stays under
:data:`MAX_LINE_BYTES`;
``MX`` to ``.`` is a null MX (RFC 7505).

:class:`SilentNameserver` is the opposite: a UDP socket on loopback that reads every question
and never answers (a resolver that hangs).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
MAX_LINE_BYTES = 990
"""Longest configuration line dnsmasq 2.90 reads (a longer one: "missing \"")."""
TXT_STRING_MAX = 255
"""Longest character-string in a TXT record, bytes (RFC 1035 §3.3)."""


def find_dnsmasq() -> str | None:
    """The ``dnsmasq`` binary (``/usr/sbin`` is often not on a user's PATH), or ``None``."""
    return shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")


_ESCAPES = {b'"': b'\\"', b"\\": b"\\\\", b"\t": b"\\t", b"\x1b": b"\\e", b"\b": b"\\b"}
_ESCAPES |= {b"\r": b"\\r", b"\n": b"\\n"}
"""dnsmasq's escapes in quoted strings (man dnsmasq, "CONFIG FILE"); other bytes go as they are."""


def _quoted(value: bytes) -> bytes:
    """One dnsmasq quoted string (``"``, ``\\`` and the control characters it knows escaped)."""
    return b'"' + b"".join(_ESCAPES.get(bytes([b]), bytes([b])) for b in value) + b'"'


class Zone:
    """DNS records for :class:`DnsServer`; each method adds one and returns the zone.

    Names are absolute without the final dot (``good.test``). Adding the same (name, type)
    again adds another record; :meth:`drop` removes every record of a name and type.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []
        """``(name, type, dnsmasq option value)`` in the order added."""

    def _add(self, name: str, rtype: str, value: str | bytes) -> Zone:
        data = value.encode("utf-8") if isinstance(value, str) else value
        self.records.append((name.lower(), rtype, data))
        return self

    def txt(self, name: str, *values: str | bytes) -> Zone:
        """One TXT record of ``name``; each value longer than 255 bytes is split."""
        strings: list[bytes] = []
        for value in values:
            data = value.encode("utf-8") if isinstance(value, str) else value
            chunks = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)]
            strings += [_quoted(c) for c in chunks or [b""]]
        line = name.encode("ascii") + b"," + b",".join(strings)
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"TXT {name}: {len(line)} bytes, dnsmasq reads {MAX_LINE_BYTES}")
        return self._add(name, "TXT", line)

    def a(self, name: str, address: str) -> Zone:
        """An A or AAAA record (and, as dnsmasq does, the PTR of ``address``)."""
        return self._add(name, "A", f"{name},{address}")

    def mx(self, domain: str, host: str, preference: int = 10) -> Zone:
        """An MX record; ``host="."`` is a null MX."""
        return self._add(domain, "MX", f"{domain},{host},{preference}")

    def ptr(self, address: str, name: str) -> Zone:
        """A PTR record for ``address`` (IPv4) pointing at ``name``."""
        reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
        return self._add(reverse, "PTR", f"{reverse},{name}")

    def drop(self, name: str, rtype: str) -> Zone:
        """Remove every ``rtype`` record of ``name``."""
        self.records = [r for r in self.records if (r[0], r[1]) != (name.lower(), rtype)]
        return self

    def conf(self) -> bytes:
        """The dnsmasq configuration file serving these records and nothing else."""
        option = {"TXT": b"txt-record", "A": b"host-record", "MX": b"mx-host", "PTR": b"ptr-record"}
        lines = [b"no-resolv", b"no-hosts", b"local=/#/"]
        lines += [option[rtype] + b"=" + value for _name, rtype, value in self.records]
        return b"\n".join(lines) + b"\n"


def _free_port() -> int:
    """A port free for both UDP and TCP on loopback (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for dnsmasq")


class DnsServer:
    """``dnsmasq`` serving ``zone`` on 127.0.0.1 and a free port; a context manager.

    Args:
        zone: the records.
        binary: the dnsmasq binary (default: :func:`find_dnsmasq`).

    Attributes:
        port: the UDP/TCP port.
        nameserver: ``127.0.0.1:PORT`` (what ``--nameserver`` takes).
    """

    def __init__(self, zone: Zone, binary: str | None = None) -> None:
        found = binary or find_dnsmasq()
        if found is None:
            raise RuntimeError("dnsmasq not installed (apt-get install dnsmasq-base)")
        self.binary = found
        self.zone = zone
        self.root = Path(tempfile.mkdtemp(prefix="digest-dns-"))
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> DnsServer:
        conf = self.root / "dnsmasq.conf"
        conf.write_bytes(self.zone.conf())
        conf.chmod(0o644)
        self.root.chmod(0o755)  # as root, dnsmasq reads its file as root, then drops to nobody
        self.port = _free_port()
        self._process = subprocess.Popen(
            [
                self.binary,
                "--keep-in-foreground",
                f"--conf-file={conf}",
                f"--port={self.port}",
                f"--listen-address={LOOPBACK}",
                "--bind-interfaces",
                "--pid-file=",
                "--log-facility=-",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Ask until dnsmasq answers (any answer), or raise with its error output."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        question = dns.message.make_query("ready.invalid", "A")
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read() if self._process.stderr else b""
                raise RuntimeError(f"dnsmasq exited: {err.decode(errors='replace')}")
            try:
                dns.query.udp(question, LOOPBACK, port=self.port, timeout=0.2)
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsmasq did not answer within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentNameserver:
    """A UDP socket on 127.0.0.1 that reads every question and never answers; a context
    manager. :attr:`questions` counts what it read.

    Attributes:
        port: its port; ``nameserver`` is ``127.0.0.1:PORT``.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.questions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    @property
    def nameserver(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.questions += 1

    def __enter__(self) -> SilentNameserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
