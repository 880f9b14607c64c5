"""A real SMTP server for tests (aiosmtpd), with TLS, AUTH, recording and fault injection.

In-process (a thread with its own event loop, on 127.0.0.1 and an ephemeral port)::

    with SMTPTestServer(security="starttls", cert=leaf, user="u", password="p",
                        rcpt_faults={"b@x.org": RcptFault(451, times=2)}) as server:
        ... settings.smtp_port = server.port ...
        assert [m.rcpt_tos for m in server.messages] == ...

As a separate process (for SIGKILL tests and benchmarks); prints ``READY <host> <port>`` on
stdout once listening, writes every accepted message to ``--spool`` (read it back with
:func:`read_spool`), stops on SIGTERM/SIGINT and then prints ``ACCEPTED <n>``::

    python tests/smtpserver.py --port 0 [--spool DIR] [--security starttls --cert-pem FILE]
        [--user U --password P] [--data-delay-ms 20] [--rcpt-fault addr=451:2]
        [--max-messages-per-connection N] [--data-stall 5]

or from Python: ``with ServerProcess(spool=DIR, data_delay_ms=20) as proc: proc.port``.
Without ``--spool`` (``ServerProcess(None)``) the child only counts: no disk writes and no
message kept in memory, so a benchmark measures the client, not the sink's disk;
:attr:`ServerProcess.accepted` holds the count after :meth:`ServerProcess.stop`.

Faults:

* ``rcpt_faults``: per-recipient reply to ``RCPT TO``: ``RcptFault(451, times=2)`` answers 451
  twice then accepts; ``RcptFault(550)`` refuses always.
* ``max_messages_per_connection``: after N accepted messages on one connection, the next
  ``MAIL FROM`` gets ``421`` and the server closes the connection (like a relay's per-session
  limit); a new connection starts counting again.
* ``data_stall_s`` (+ ``stall_times``): sleep that long before replying to the end of data; a
  client that gives up meanwhile closes the connection and the message is not recorded as
  accepted (it is listed in :attr:`SMTPTestServer.stalled`).
* ``data_delay_ms``: a fixed latency before the 250 to the end of data (benchmarks, concurrency).

Counters: :attr:`SMTPTestServer.connections` (total), :attr:`max_concurrent_connections`,
:attr:`max_concurrent_data` (simultaneous DATA transactions), and the ``on_message`` hook, called
in the server thread for every accepted message (e.g. to inspect the state file at that instant).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Security = Literal["none", "starttls", "tls"]

LOOPBACK = "127.0.0.1"
SERVER_IDLE_TIMEOUT_S = 60.0
"""aiosmtpd closes a silent client after this long, seconds."""
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class RcptFault:
    """The reply to ``RCPT TO:<address>``: ``code`` for the first ``times`` tries (None: always)."""

    code: int
    times: int | None = None
    message: str = ""

    def reply(self) -> str:
        if self.message:
            return f"{self.code} {self.message}"
        if 400 <= self.code < 500:
            return f"{self.code} 4.2.1 Mailbox temporarily unavailable, try later"
        return f"{self.code} 5.1.1 No such user here"


@dataclass(frozen=True)
class Received:
    """One message the server accepted (replied 250 to the end of data)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    connection: int
    tls: bool
    auth_user: str | None
    seq: int


@dataclass
class _Config:
    security: Security = "none"
    user: str | None = None
    password: str | None = None
    rcpt_faults: dict[str, RcptFault] = field(default_factory=dict)
    max_messages_per_connection: int | None = None
    data_stall_s: float = 0.0
    stall_times: int | None = None
    data_delay_ms: float = 0.0
    spool: Path | None = None
    idle_timeout_s: float = SERVER_IDLE_TIMEOUT_S
    size_limit: int | None = None


class _Handler:
    """aiosmtpd hooks; runs in the server's event loop thread."""

    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    async def handle_RCPT(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.server._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.server
        config = owner.config
        with owner._lock:
            owner._in_data += 1
            owner.max_concurrent_data = max(owner.max_concurrent_data, owner._in_data)
        try:
            if config.data_delay_ms:
                await asyncio.sleep(config.data_delay_ms / 1000)
            if config.data_stall_s and owner._take_stall():
                try:
                    await asyncio.sleep(config.data_stall_s)
                finally:
                    # Cancelled when the client hangs up: not accepted, just noted.
                    with owner._lock:
                        owner.stalled.append(list(envelope.rcpt_tos))
                return "451 4.3.0 stalled"
            assert isinstance(smtp, _RecordingSMTP)
            received = owner._record(smtp, session, envelope)
            smtp.accepted_here += 1
            return f"250 2.0.0 OK queued as {received.seq}"
        finally:
            with owner._lock:
                owner._in_data -= 1


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP plus connection counting and the per-connection message limit."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = handler.server
        self.accepted_here = 0
        self.connection_no = 0
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if first and not self._counted:
            self._counted = True
            self.connection_no = self.owner._connected()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.owner._disconnected()
        super().connection_lost(error)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.owner.config.user is not None and not (self.session and self.session.authenticated):
            await self.push("530 5.7.0 Authentication required")
            return
        limit = self.owner.config.max_messages_per_connection
        if limit is not None and self.accepted_here >= limit:
            await self.push("421 4.7.0 Too many messages in this session, closing connection")
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_MAIL(arg)


class SMTPTestServer:
    """A threaded aiosmtpd server on ``127.0.0.1`` (ephemeral port); a context manager.

    Args:
        security: ``none`` (clear text), ``starttls`` (STARTTLS offered; required before AUTH
            and MAIL), ``tls`` (implicit TLS).
        cert: a ``trustme.LeafCert`` for the TLS modes (or pass ``ssl_context``).
        ssl_context: a server-side TLS context (alternative to ``cert``).
        user, password: accept AUTH PLAIN/LOGIN with exactly these; AUTH then required.
        rcpt_faults, max_messages_per_connection, data_stall_s, stall_times, data_delay_ms:
            the faults (see the module docstring).
        spool: also write each accepted message to this directory (see :func:`read_spool`).
        keep_messages: keep accepted messages in memory (:attr:`messages`); ``False`` only
            counts them (:attr:`accepted`), for long benchmark runs.
        on_message: called (in the server thread) with each accepted :class:`Received`.
        idle_timeout_s: close a connection silent for this long, seconds (aiosmtpd sends 421).
        size_limit: advertise ``SIZE`` with this limit, bytes (552 to a bigger ``MAIL FROM``);
            ``None``: no limit.
        host, port: where to listen (port 0 = ephemeral).
    """

    def __init__(
        self,
        *,
        security: Security = "none",
        cert: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        user: str | None = None,
        password: str | None = None,
        rcpt_faults: dict[str, RcptFault] | None = None,
        max_messages_per_connection: int | None = None,
        data_stall_s: float = 0.0,
        stall_times: int | None = None,
        data_delay_ms: float = 0.0,
        spool: Path | None = None,
        keep_messages: bool = True,
        on_message: Callable[[Received], None] | None = None,
        idle_timeout_s: float = SERVER_IDLE_TIMEOUT_S,
        size_limit: int | None = None,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        if security != "none" and cert is None and ssl_context is None:
            raise ValueError(f"security={security!r} needs cert= or ssl_context=")
        if ssl_context is None and cert is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ssl_context)
        self.ssl_context = ssl_context
        self.config = _Config(
            security=security,
            user=user,
            password=password,
            rcpt_faults={k.lower(): v for k, v in (rcpt_faults or {}).items()},
            max_messages_per_connection=max_messages_per_connection,
            data_stall_s=data_stall_s,
            stall_times=stall_times,
            data_delay_ms=data_delay_ms,
            spool=spool,
            idle_timeout_s=idle_timeout_s,
            size_limit=size_limit,
        )
        self.on_message = on_message
        self.keep_messages = keep_messages
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self.stalled: list[list[str]] = []
        self.rcpt_log: list[tuple[str, str]] = []
        self._rcpt_counts: dict[str, int] = {}
        self._stalls = 0
        self.connections = 0
        self._open = 0
        self.max_concurrent_connections = 0
        self._in_data = 0
        self.max_concurrent_data = 0
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True)

    # -- results (thread-safe snapshots) -------------------------------------------------
    @property
    def messages(self) -> list[Received]:
        """Every accepted message, in acceptance order."""
        with self._lock:
            return list(self._messages)

    @property
    def accepted(self) -> int:
        """How many messages were accepted (also counted when ``keep_messages`` is off)."""
        with self._lock:
            return self._seq

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SMTPTestServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        self._factory,
                        host=self.host,
                        port=self.port,
                        ssl=self.ssl_context if self.config.security == "tls" else None,
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(self._server.wait_closed())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="smtp-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(READY_TIMEOUT_S):
            raise TimeoutError("SMTP test server did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        def close_all() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.stop()

        loop.call_soon_threadsafe(close_all)
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- aiosmtpd wiring --------------------------------------------------------------------
    def _factory(self) -> SMTP:
        config = self.config
        kwargs: dict[str, Any] = {
            "hostname": "smtp.test",
            "timeout": config.idle_timeout_s,
            "data_size_limit": config.size_limit,
            "enable_SMTPUTF8": True,
            "decode_data": False,
        }
        if config.security == "starttls":
            kwargs.update(tls_context=self.ssl_context, require_starttls=True)
        if config.user is not None:
            # AUTH is enforced in _RecordingSMTP.smtp_MAIL: aiosmtpd's own auth_required needs
            # auth_require_tls, which only counts STARTTLS, not implicit TLS.
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=False,
                auth_require_tls=config.security == "starttls",
            )
        return _RecordingSMTP(_Handler(self), **kwargs)

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = (
            data.login.decode() == self.config.user
            and data.password.decode() == self.config.password
        )
        return AuthResult(success=ok, handled=False, auth_data=data.login.decode() if ok else None)

    def _connected(self) -> int:
        with self._lock:
            self.connections += 1
            self._open += 1
            self.max_concurrent_connections = max(self.max_concurrent_connections, self._open)
            return self.connections

    def _disconnected(self) -> None:
        with self._lock:
            self._open -= 1

    def _rcpt_reply(self, address: str) -> str | None:
        key = address.lower()
        with self._lock:
            fault = self.config.rcpt_faults.get(key)
            count = self._rcpt_counts.get(key, 0)
            self._rcpt_counts[key] = count + 1
            if fault is not None and (fault.times is None or count < fault.times):
                reply = fault.reply()
            else:
                reply = None
            self.rcpt_log.append((key, reply or "250 OK"))
        return reply

    def _take_stall(self) -> bool:
        with self._lock:
            times = self.config.stall_times
            if times is not None and self._stalls >= times:
                return False
            self._stalls += 1
            return True

    def _record(self, smtp: _RecordingSMTP, session: Session, envelope: Envelope) -> Received:
        data = envelope.original_content or b""
        with self._lock:
            self._seq += 1
            received = Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(data),
                connection=smtp.connection_no,
                tls=self.config.security == "tls" or session.ssl is not None,
                auth_user=session.auth_data if session.authenticated else None,
                seq=self._seq,
            )
            if self.keep_messages:
                self._messages.append(received)
        if self.config.spool is not None:
            _spool_write(self.config.spool, received)
        if self.on_message is not None:
            self.on_message(received)
        return received


# -- the spool: accepted messages on disk, readable from another process -----------------------


def _spool_write(spool: Path, received: Received) -> None:
    """Write ``<seq>.json`` (envelope) then ``<seq>.eml`` (bytes), each atomically (rename)."""
    stem = f"{received.seq:08d}"
    meta = asdict(received)
    del meta["data"]
    for name, content in (
        (f"{stem}.json", json.dumps(meta).encode()),
        (f"{stem}.eml", received.data),
    ):
        tmp = spool / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, spool / name)


def read_spool(spool: Path) -> list[Received]:
    """Every message written to ``spool`` by a server (any process), in acceptance order."""
    out: list[Received] = []
    for eml in sorted(spool.glob("*.eml")):
        meta = json.loads(eml.with_suffix(".json").read_text())
        out.append(Received(data=eml.read_bytes(), **meta))
    return out


# -- running as a separate process --------------------------------------------------------------


class ServerProcess:
    """``python tests/smtpserver.py ...`` as a child process; a context manager.

    Args:
        spool: where the child writes accepted messages (read with :meth:`messages`);
            ``None``: the child only counts them (:attr:`accepted`, set by :meth:`stop`).
        security, cert_pem, user, password, data_delay_ms, data_stall_s,
        max_messages_per_connection, rcpt_faults: as for :class:`SMTPTestServer`;
            ``cert_pem`` is a PEM file with the private key and certificate chain.
    """

    def __init__(
        self,
        spool: Path | None,
        *,
        security: Security = "none",
        cert_pem: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        data_delay_ms: float = 0.0,
        data_stall_s: float = 0.0,
        max_messages_per_connection: int | None = None,
        rcpt_faults: dict[str, RcptFault] | None = None,
    ) -> None:
        self.spool = spool
        args = [sys.executable, str(Path(__file__).resolve()), "--port", "0"]
        if spool is not None:
            args += ["--spool", str(spool)]
        args += ["--security", security]
        if cert_pem is not None:
            args += ["--cert-pem", str(cert_pem)]
        if user is not None and password is not None:
            args += ["--user", user, "--password", password]
        if data_delay_ms:
            args += ["--data-delay-ms", str(data_delay_ms)]
        if data_stall_s:
            args += ["--data-stall", str(data_stall_s)]
        if max_messages_per_connection is not None:
            args += ["--max-messages-per-connection", str(max_messages_per_connection)]
        for address, fault in (rcpt_faults or {}).items():
            times = "" if fault.times is None else f":{fault.times}"
            args += ["--rcpt-fault", f"{address}={fault.code}{times}"]
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.host = LOOPBACK
        self.port = 0
        self.accepted: int | None = None
        """Messages the child accepted, read from its ``ACCEPTED <n>`` line at :meth:`stop`."""

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"SMTP server process did not start: {line!r}")
        self.host, self.port = line[1], int(line[2])
        return self

    def messages(self) -> list[Received]:
        if self.spool is None:
            raise ValueError("ServerProcess(spool=None) keeps no messages; see .accepted")
        return read_spool(self.spool)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            for line in self.proc.stdout.read().split("\n"):
                if line.startswith("ACCEPTED "):
                    self.accepted = int(line.split()[1])
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_fault(text: str) -> tuple[str, RcptFault]:
    address, _, spec = text.partition("=")
    code, _, times = spec.partition(":")
    return address, RcptFault(int(code), int(times) if times else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral (printed)")
    parser.add_argument("--spool", type=Path, help="accepted messages go here (default: count)")
    parser.add_argument("--security", choices=["none", "starttls", "tls"], default="none")
    parser.add_argument("--cert-pem", type=Path, help="PEM with private key + cert chain")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--data-delay-ms", type=float, default=0.0)
    parser.add_argument("--data-stall", type=float, default=0.0, help="seconds")
    parser.add_argument("--max-messages-per-connection", type=int)
    parser.add_argument("--rcpt-fault", action="append", default=[], help="addr=code[:times]")
    args = parser.parse_args(argv)

    context = None
    if args.cert_pem is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert_pem)
    server = SMTPTestServer(
        security=args.security,
        ssl_context=context,
        user=args.user,
        password=args.password,
        rcpt_faults=dict(_parse_fault(f) for f in args.rcpt_fault),
        max_messages_per_connection=args.max_messages_per_connection,
        data_stall_s=args.data_stall,
        data_delay_ms=args.data_delay_ms,
        spool=args.spool,
        keep_messages=False,  # nobody can read them from another process: only the spool
        host=args.host,
        port=args.port,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with server:
        print(f"READY {server.host} {server.port}", flush=True)
        while not done.wait(0.5):
            pass
    print(f"ACCEPTED {server.accepted}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
