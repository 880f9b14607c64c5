"""A raw asyncio SMTP relay for the faults aiosmtpd cannot inject.

It speaks just enough SMTP (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and does
what a test tells it at the two points where real relays fail in ways that matter:

* at connect: ``connect_reply="421 4.3.2 busy"`` answers every connection with that line and
  hangs up (a relay shedding load);
* at the ``DATA`` command: ``at_data="drop"`` hangs up before the 354 (nothing of the message
  was sent), ``"stall"`` never answers (the client times out), or a callable ``(n) -> action``
  for the n-th ``DATA`` command;
* after the final ``.`` of DATA: ``after_data`` is ``"ok"`` (250), ``"drop"`` (the message
  has arrived, then the connection is closed without a reply) or ``"stall"`` (no reply, the
  connection stays open until the client gives up), or a callable ``(n) -> action`` for the
  n-th message (0-based) of the relay's life;
* after ``QUIT``: ``after_quit="close"`` (221, then hang up) or ``"stall"`` (221, then read
  nothing more and keep the connection until the relay stops: a TLS client's close_notify is
  never answered).

With ``tls=`` (a server ``ssl.SSLContext``) it offers ``STARTTLS`` and upgrades on it.

Every message whose data arrived completely is recorded in :attr:`FaultRelay.received`, replied
to or not: that is what a mailbox behind the relay would get ("copies received").

Runs on 127.0.0.1 in a thread with its own event loop (a context manager), so it serves a
``digest`` run in the test's own loop or in a child process alike::

    with FaultRelay(after_data="drop", extensions=("SMTPUTF8",)) as relay:
        ... smtp_settings(relay) ...
    assert len(relay.received) == 1
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
LINE_LIMIT = 64 * 1024
BUSY = "421 4.3.2 Service busy, try again later"
"""A relay shedding load, as ``connect_reply``: 421, service not available (a transient 4xx)."""

Action = str
"""What to do after the end of data: ``ok``, ``drop`` or ``stall``."""


@dataclass(frozen=True)
class Arrived:
    """One message whose data reached the relay (whatever the relay then replied)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    connection: int
    action: Action


class FaultRelay:
    """A misbehaving SMTP relay on loopback (ephemeral port).

    Args:
        after_data: the action after the end of data, or ``(n) -> action`` per message.
        at_data: ``ok``, ``drop`` or ``stall`` (no reply until the client hangs up) at the
            ``DATA`` command, or ``(n) -> action``.
        connect_reply: if set, the whole reply to every new connection (e.g. a 421), after
            which the relay closes it.
        extensions: EHLO keywords to advertise (``SMTPUTF8``, ``8BITMIME``, ``SIZE 1000000``).
        tls: a server TLS context: ``STARTTLS`` is offered and upgrades the connection.
        after_quit: ``close`` or ``stall`` (see the module docstring).

    Attributes:
        port: where it listens, once started.
        connections: connections accepted so far.
        received: every message whose data arrived (see the module docstring).
        replied: how many end-of-data replies (250) were sent.
    """

    def __init__(
        self,
        *,
        after_data: Action | Callable[[int], Action] = "ok",
        at_data: Action | Callable[[int], Action] = "ok",
        connect_reply: str | None = None,
        extensions: tuple[str, ...] = ("8BITMIME",),
        tls: ssl.SSLContext | None = None,
        after_quit: Action = "close",
    ) -> None:
        self.tls = tls
        self.after_quit = after_quit
        self._after_data = after_data
        self._at_data = at_data
        self.data_commands = 0
        self.connect_reply = connect_reply
        self.connect_reply_for: Callable[[int], str | None] | None = None
        """If set, ``(n) -> reply or None`` for the n-th connection (1-based): overrides
        ``connect_reply``."""
        self.extensions = extensions
        self.port = 0
        self.connections = 0
        self.received: list[Arrived] = []
        self.replied = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> FaultRelay:
        self._thread = threading.Thread(target=self._run, name="fault-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("fault relay did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, LOOPBACK, 0, limit=LINE_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    # -- counters ---------------------------------------------------------------------------
    def copies(self, address: str) -> int:
        """How many messages for ``address`` arrived (replied to or not)."""
        with self._lock:
            return sum(address in m.rcpt_tos for m in self.received)

    def _action(self) -> Action:
        with self._lock:
            n = len(self.received)
        return self._after_data(n) if callable(self._after_data) else self._after_data

    # -- the protocol -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            connection = self.connections
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        try:
            refusal = (
                self.connect_reply_for(connection)
                if self.connect_reply_for is not None
                else self.connect_reply
            )
            if refusal is not None:
                writer.write(refusal.encode() + b"\r\n")
                await writer.drain()
                return
            await self._session(reader, writer, connection)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        reply("220 fault-relay ESMTP")
        mail_from, options, rcpts = "", (), []  # type: ignore[var-annotated]
        while True:
            line = await reader.readline()
            if not line:
                return
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            verb = text[:4].upper()
            if verb in ("EHLO", "HELO"):
                if verb == "HELO" or not self.extensions:
                    reply("250 fault-relay")
                else:
                    writer.write(b"250-fault-relay\r\n")
                    offered = (*self.extensions, "STARTTLS") if self.tls else self.extensions
                    for i, ext in enumerate(offered):
                        sep = " " if i == len(offered) - 1 else "-"
                        reply(f"250{sep}{ext}")
            elif verb == "STAR" and self.tls is not None:
                reply("220 2.0.0 Ready to start TLS")
                await writer.drain()
                await writer.start_tls(self.tls)
            elif verb == "MAIL":
                address, _, rest = text[len("MAIL FROM:") :].partition(">")
                mail_from, options, rcpts = address.strip(" <"), tuple(rest.split()), []
                reply("250 2.1.0 OK")
            elif verb == "RCPT":
                rcpts.append(text[len("RCPT TO:") :].strip().strip("<>"))
                reply("250 2.1.5 OK")
            elif verb == "DATA":
                with self._lock:
                    n, self.data_commands = self.data_commands, self.data_commands + 1
                at_data = self._at_data(n) if callable(self._at_data) else self._at_data
                if at_data == "drop":
                    return
                if at_data == "stall":  # no 354: nothing sent yet, the client times out
                    await reader.read()
                    return
                reply("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                data = await self._read_data(reader)
                action = self._action()
                with self._lock:
                    self.received.append(
                        Arrived(mail_from, tuple(rcpts), data, options, connection, action)
                    )
                if action == "drop":
                    return
                if action == "stall":
                    await reader.read()  # until the client hangs up
                    return
                with self._lock:
                    self.replied += 1
                reply("250 2.0.0 OK queued")
            elif verb == "RSET":
                mail_from, options, rcpts = "", (), []
                reply("250 2.0.0 OK")
            elif verb == "NOOP":
                reply("250 2.0.0 OK")
            elif verb == "QUIT":
                reply("221 2.0.0 Bye")
                await writer.drain()
                if self.after_quit == "stall" and self._stop is not None:
                    writer.transport.pause_reading()  # not even TLS's close_notify is read
                    await self._stop.wait()
                return
            else:
                reply("502 5.5.2 Command not recognized")
            await writer.drain()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("client closed during DATA")
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)
