"""The ``digest`` command line: a thin layer over :class:`digest.core.Digest`.

This is the only module that imports the CLI framework, and the one place where library
errors become one-line messages (with a traceback only under ``--debug``).

Exit codes: 0 success; 1 a delivery or source failed; 2 bad input (settings, subscribers file,
arguments); 3 the state file is locked by another sender; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
import typer.core
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from digest import __version__
from digest.core import Digest, default_edition_day, open_store
from digest.delivery import OutgoingMessage
from digest.errors import ConfigError, DigestError, StateError, StateLockedError
from digest.models import Edition, RunSummary
from digest.render.views import plural
from digest.settings import (
    SUBSCRIBERS_IN_STATE,
    Settings,
    configured_subscribers_path,
    load_settings,
    unknown_variables,
)
from digest.state import DeliveryStatus
from digest.subscribers import Subscriber, SubscriberList

if TYPE_CHECKING:
    from digest.reputation import GroupRate
    from digest.state import Pause

log = logging.getLogger("digest")

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130
DEFAULT_PREVIEW_DIR = Path("preview")
WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Personalized daily digests of trending ML papers, self-hosted.",
    pretty_exceptions_enable=False,
)
WIDE_CONSOLE = 200
"""Columns used for tables when stdout is not a terminal (a pipe or a file)."""
out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:
    out = Console(highlight=False, soft_wrap=True, width=WIDE_CONSOLE)
err = Console(stderr=True, highlight=False, soft_wrap=True)


_typer_type_label = typer.core.TyperOption.display_type_rich


def _type_label(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """The type column of an option in ``--help``: nothing for a flag, else its metavar.

    typer's rich help shows ``<bool>`` for flags (``--debug <bool>``), as if they took a
    value, and ``<str>`` / ``<list[str]>`` for the others; a flag takes none, and a metavar
    (``DATE``, ``EMAIL``) says what to give.
    """
    if self.is_flag or self.count:
        return None
    if self.metavar:
        return self.metavar
    return _typer_type_label(self, ctx)


typer.core.TyperOption.display_type_rich = _type_label  # type: ignore[method-assign]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"digest {__version__}")
        raise typer.Exit()


DEFAULT_ENV_FILE = Path(".env")
"""Read when it exists; a file named with ``--env-file`` must exist."""


class _Options:
    debug = False
    verbose = 0
    env_file: Path | None = DEFAULT_ENV_FILE
    env_file_given = False
    warned = False


_opts = _Options()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log detail (-vv: debug).")
    ] = 0,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Dotenv file with DIGEST_* settings (default: ./.env when it exists).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    _opts.debug = debug
    _opts.verbose = verbose
    _opts.env_file = env_file or DEFAULT_ENV_FILE
    _opts.env_file_given = env_file is not None
    _opts.warned = False


def _setup_logging(default: int) -> None:
    level = default
    if _opts.verbose == 1:
        level = min(default, logging.INFO)
    elif _opts.verbose >= 2 or _opts.debug:
        level = logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if level > logging.DEBUG:
        for noisy in ("httpx", "httpcore", "apscheduler", "mail.log"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit code (tracebacks: --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except DigestError as e:
        if _opts.debug:  # the traceback, then the same line and exit code as without --debug
            err.print("".join(traceback.format_exception(e)), markup=False, highlight=False, end="")
        if isinstance(e, StateLockedError):
            _fail(str(e), EXIT_LOCKED)
        if isinstance(e, ConfigError) and len(e.problems) > 1:
            for problem in e.problems:
                err.print(f"[bold red]error:[/] {problem}", markup=True, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        _fail(str(e), EXIT_BAD_INPUT if isinstance(e, ConfigError) else EXIT_FAILED)


def _settings(**overrides: Any) -> Settings:
    """The settings (env file, environment, ``overrides``); warns once about unknown names.

    Raises:
        ConfigError: a named ``--env-file`` does not exist, or a value is invalid.
    """
    _check_env_file()
    settings = load_settings(env_file=_opts.env_file, **overrides)
    if not _opts.warned:
        _opts.warned = True
        for line in unknown_variables(_opts.env_file):
            err.print(f"[bold yellow]warning:[/] {line}", markup=True, highlight=False)
    return settings


def _check_env_file() -> None:
    """A file named with ``--env-file`` must exist (./.env may be absent).

    Raises:
        ConfigError: it does not exist or is not a file.
    """
    path = _opts.env_file
    if _opts.env_file_given and path is not None and not path.is_file():
        raise ConfigError(f"--env-file {path}: no such file; give the path of your settings file")


def _sources_override(sources: list[str] | None) -> str | None:
    return ",".join(sources) if sources else None


def parse_edition(value: str | None, *, default_day: date) -> Edition:
    """``YYYY-MM-DD`` → daily edition; ``YYYY-Www`` → weekly; ``None`` → ``default_day``.

    Raises:
        ConfigError: neither form.
    """
    if value is None:
        return Edition.daily(default_day)
    week = WEEK_RE.match(value)
    try:
        if week:
            return Edition.weekly(int(week.group(1)), int(week.group(2)))
        return Edition.daily(date.fromisoformat(value))
    except ValueError:
        raise ConfigError(
            f"--date {value!r}: use YYYY-MM-DD (a daily edition) or YYYY-Www (a weekly one)"
        ) from None


def _find_subscriber(digest: Digest, email: str, *, flag: str = "--subscriber") -> Subscriber:
    found = digest.home.get(email)
    if found is None:
        raise ConfigError(f"{flag} {email}: not in {digest.home.name}")
    return found


SourceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--source",
        metavar="SPEC",
        help="Paper source (repeatable): hf, file:PATH, feed:URL; wins over DIGEST_SOURCES "
        "and a subscriber's own sources.",
    ),
]
DateOpt = Annotated[
    str | None,
    typer.Option("--date", metavar="DATE", help="YYYY-MM-DD or YYYY-Www; default yesterday (UTC)."),
]


@app.command()
def preview(
    date_: DateOpt = None,
    subscriber: Annotated[
        str | None,
        typer.Option(
            metavar="EMAIL", help="Render this subscriber's edition (default: unpersonalized)."
        ),
    ] = None,
    out_path: Annotated[
        str | None, typer.Option("--out", metavar="PATH", help="File to write, or '-' for stdout.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help="html, text or eml.")
    ] = "html",
    source: SourceOpt = None,
) -> None:
    """Render an edition locally. Sends nothing and records no delivery."""
    _setup_logging(logging.WARNING)
    with _errors():
        settings = _settings(sources=_sources_override(source))
        with Digest(settings) as digest:
            edition = parse_edition(date_, default_day=default_edition_day(digest.now()))
            sub = _find_subscriber(digest, subscriber) if subscriber else None
            # --source wins over the subscriber's own sources, as over DIGEST_SOURCES.
            own = sub.sources if sub and not source else None
            result = asyncio.run(digest.papers_for(edition, sources=own))
            for line in result.failed:
                err.print(f"warning: source {line}")
            made = digest.render_preview(edition, result.papers, sub, fmt)
            data = made.data
        if out_path == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return
        ext = {"html": "html", "text": "txt", "eml": "eml"}[fmt]
        who = f"-{sub.email}" if sub else ""
        path = Path(out_path) if out_path else DEFAULT_PREVIEW_DIR / f"{edition.key}{who}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.print(f"wrote {path} ({len(data):,} bytes): {_preview_count(made.shown, made.total)}")


def _preview_count(shown: int, total: int) -> str:
    """``8 of 15 papers`` (what the email holds, of the edition's), ``1 paper``, ``no papers``."""
    if shown == 0:
        return f"no papers (the edition has {total})" if total else "no papers"
    noun = "paper" if shown == 1 else "papers"
    return f"{shown} {noun}" if shown == total else f"{shown} of {total} papers"


@app.command()
def send(
    date_: DateOpt = None,
    subscriber: Annotated[
        list[str] | None,
        typer.Option(metavar="EMAIL", help="Only these subscribers (repeatable)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Rank and render, send nothing.")] = False,
    resend: Annotated[bool, typer.Option(help="Send even to those who have it.")] = False,
    retry_unknown: Annotated[
        bool,
        typer.Option(
            help="Resend editions left 'unknown' (a crash, a lost relay reply), same Message-ID."
        ),
    ] = False,
    source: SourceOpt = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="ADDRESS",
            help="Test send: one copy to this address only, recorded as a test in history.",
        ),
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="EMAIL",
            help="With --to: render as this subscriber (default: unpersonalized).",
        ),
    ] = None,
) -> None:
    """Send an edition to every active subscriber who has not had it.

    With --to ADDRESS, send one test copy instead (subject "[Test] ...", unsubscribe links of
    ADDRESS), rendered as the subscriber given by --as; it is recorded as test:DATE in history,
    never as anyone's edition.
    """
    _setup_logging(logging.WARNING)
    with _errors():
        if as_ is not None and to is None:
            raise ConfigError("--as needs --to ADDRESS (the address that gets the test copy)")
        if to is not None:
            used = [
                flag
                for flag, on in (
                    ("--subscriber", bool(subscriber)),
                    ("--dry-run", dry_run),
                    ("--resend", resend),
                    ("--retry-unknown", retry_unknown),
                )
                if on
            ]
            if used:
                raise ConfigError(f"--to sends one test copy; it cannot be combined with {used[0]}")
        settings = _settings(sources=_sources_override(source))
        with (
            open_store(settings) as store,
            store.sender_lock(purpose="send"),
            Digest(settings, store=store) as digest,
        ):
            edition = parse_edition(date_, default_day=default_edition_day(digest.now()))
            if to is not None:
                _test_send(digest, edition, to, as_, source)
                return
            # A daily edition goes to daily subscribers, a weekly one (YYYY-Www) to weekly ones,
            # read in chunks (a list in the state: a server-side cursor on PostgreSQL).
            subs = list(digest.home.stream(frequency=edition.frequency))
            if subscriber:
                wanted = {s.lower() for s in subscriber}
                missing = wanted - {s.email for s in subs}
                if missing:
                    raise ConfigError(
                        f"--subscriber {', '.join(sorted(missing))}: not in {digest.home.name}"
                    )
                subs = [s for s in subs if s.email in wanted]
            unknown = 0 if dry_run else digest.recover()
            summary = _with_progress(
                len(subs),
                settings.smtp_max_attempts,
                lambda on_result, on_retry: digest.send(
                    edition,
                    subs,
                    dry_run=dry_run,
                    resend=resend,
                    retry_unknown=retry_unknown,
                    on_result=on_result,
                    on_retry=on_retry,
                    sources=source,
                ),
            )
            summary.unknown = max(summary.unknown, unknown)
            where = (
                f"SMTP {settings.smtp_host}:{settings.effective_smtp_port}"
                if settings.smtp_host
                else f"Maildir {settings.outbox}"
            )
        _print_summary(edition, summary, where, dry_run)
        if not summary.ok:
            raise typer.Exit(EXIT_FAILED)


def _where(settings: Settings) -> str:
    if settings.smtp_host:
        return f"SMTP {settings.smtp_host}:{settings.effective_smtp_port}"
    return f"Maildir {settings.outbox}"


def _test_send(
    digest: Digest, edition: Edition, to: str, as_: str | None, source: list[str] | None
) -> None:
    from digest.pipeline.proof import send_proof

    sub = _find_subscriber(digest, as_, flag="--as") if as_ else None
    result = asyncio.run(send_proof(digest.deps, edition, to, sub, sources=source))
    for line in result.warnings:
        err.print(f"warning: {line}")
    for line in result.failed_sources:
        err.print(f"warning: source {line}")
    who = f" as {sub.email}" if sub else " (unpersonalized)"
    s = result.summary
    outcome = "sent" if s.sent else "failed" if s.failed else "deferred" if s.deferred else "?"
    out.print(
        f"test edition {edition.key}{who}: {outcome} to {result.recipient} "
        f"({_preview_count(result.shown, result.total)}, Message-ID {result.message_id}) "
        f"→ {_where(digest.settings)}; in history as {result.edition_key}"
    )
    for e in s.errors:
        err.print(f"  {e}")
    if not s.ok or not s.sent:
        raise typer.Exit(EXIT_FAILED)


PROGRESS_RATE_AFTER_S = 2.0
"""The progress line shows the rate and ETA once a send has run this long, seconds."""
RELAY = "the relay"
"""Who the progress line says it waits for when the whole pool backs off."""
REPLY_SHOWN_CHARS = 48
"""Characters of a relay's reply the progress line shows while waiting to retry."""


class SendProgress:
    """What the send progress line says besides the count: retries, back-off, rate and ETA.

    Fed by ``Digest.send``'s ``on_result`` and ``on_retry`` callbacks; :meth:`status` is read
    at every refresh of the bar (so the back-off countdown moves).

    Args:
        total: subscribers in the send.
        max_attempts: ``DIGEST_SMTP_MAX_ATTEMPTS`` (shown as "attempt 2 of 5").
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self, total: int, max_attempts: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = total
        self.max_attempts = max_attempts
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.retries = 0
        self.waiting: dict[str, tuple[float, int, str]] = {}
        """By subscriber: (when the next attempt starts, that attempt's number, last reply)."""

    def result(self, email: str, _outcome: str) -> None:
        """One subscriber is finished (sent, failed, deferred or skipped)."""
        self.done += 1
        self.waiting.pop(email, None)
        self.waiting.pop(RELAY, None)  # something got through: the relay accepts again

    def retry(self, msg: OutgoingMessage | None, attempt: int, delay: float, reply: str) -> None:
        """Attempt ``attempt`` of ``msg`` failed transiently; the next starts in ``delay`` s.

        ``msg`` is ``None`` when the whole pool waits for a relay refusing connections.
        """
        self.retries += 1
        who = msg.subscriber if msg is not None else RELAY
        self.waiting[who] = (self.clock() + delay, attempt + 1, reply)

    def status(self) -> str:
        """``12.5 msg/s · ETA 0:41 · retry 2 of 5 for ada@… in 3 s (451 4.2.1 …) · 3 retries``."""
        now = self.clock()
        parts: list[str] = []
        elapsed = now - self.started
        if self.done and elapsed >= PROGRESS_RATE_AFTER_S:
            rate = self.done / elapsed
            left = max(self.total - self.done, 0) / rate
            parts.append(f"{rate:.1f} msg/s")
            parts.append(f"ETA {int(left) // 60}:{int(left) % 60:02d}")
        if self.waiting:
            email, (at, attempt, reply) = min(self.waiting.items(), key=lambda kv: kv[1][0])
            reply = " ".join(reply.split())
            if len(reply) > REPLY_SHOWN_CHARS:
                reply = reply[: REPLY_SHOWN_CHARS - 1] + "…"
            others = f" (+{len(self.waiting) - 1} more)" if len(self.waiting) > 1 else ""
            wait = f"in {max(at - now, 0):.0f} s after {reply}"
            if email == RELAY:
                parts.append(
                    f"back-off: the relay refuses connections; connection attempt {attempt} "
                    f"of {self.max_attempts} {wait}"
                )
            else:
                parts.append(
                    f"back-off: attempt {attempt} of {self.max_attempts} for {email}{others} {wait}"
                )
        if self.retries:
            parts.append(f"{self.retries} {'retry' if self.retries == 1 else 'retries'}")
        return " · ".join(parts)


class _StatusColumn(ProgressColumn):
    """The :class:`SendProgress` status as a column of the rich progress bar."""

    def __init__(self, state: SendProgress) -> None:
        super().__init__()
        self.state = state

    def render(self, task: Task) -> Text:
        return Text(self.state.status(), style="progress.description", no_wrap=True)


RunWithCallbacks = Callable[
    [Callable[[str, str], None], Callable[[OutgoingMessage | None, int, float, str], None]], Any
]


def _with_progress(total: int, max_attempts: int, run: RunWithCallbacks) -> RunSummary:
    state = SendProgress(total, max_attempts)
    if not err.is_terminal or total == 0:
        result: RunSummary = asyncio.run(run(state.result, state.retry))
        return result
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _StatusColumn(state),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("sending", total=total)

        def on_result(email: str, outcome: str) -> None:
            state.result(email, outcome)
            progress.advance(task)

        result = asyncio.run(run(on_result, state.retry))
    return result


def _print_summary(edition: Edition, s: RunSummary, where: str, dry_run: bool) -> None:
    verb = "would send" if dry_run else "sent"
    line = f"edition {edition.key}: {verb} {s.sent}, skipped {s.skipped}, failed {s.failed}"
    if s.bounced:
        plural = "s" if s.bounced > 1 else ""
        line += f" ({s.bounced} hard bounce{plural}, suppressed)"
    if s.deferred:
        line += f", deferred {s.deferred} (retried next run)"
    if s.unknown:
        line += f", unknown {s.unknown} (see `digest history`; resend with --retry-unknown)"
    if s.paused:
        line += f", paused {s.paused} (domain group paused: owed until `digest resume`)"
    out.print(f"{line} → {where}")
    for e in s.errors:
        err.print(f"  {e}")


EXAMPLE_SUBSCRIBERS = Path(__file__).parent / "examples" / "subscribers.example.yaml"


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write .env and subscribers.yaml.")
    ] = Path("."),
) -> None:
    """Start a set-up: a .env with every setting and a fresh secret key, and an example
    subscribers.yaml. Never overwrites a file."""
    from digest.envfile import write_starter

    with _errors():
        try:
            written = write_starter(directory, EXAMPLE_SUBSCRIBERS)
        except FileExistsError as e:
            raise ConfigError(
                f"{e}: already there; nothing was written (edit it, or init another directory)"
            ) from None
        for path in written:
            out.print(f"wrote {path}")
        out.print(
            "next: edit DIGEST_FROM (and DIGEST_SMTP_*, DIGEST_PUBLIC_URL) in .env and the "
            "subscribers in subscribers.yaml, then run `digest validate`"
        )


@app.command()
def validate(
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Do not check that the relay and the sources answer."),
    ] = False,
) -> None:
    """Check the settings and the subscribers file; exit 0 or list every problem.

    Placeholders left from the examples are warnings; a DIGEST_* variable that is no setting
    is an error (with a did-you-mean). Unless --offline, the SMTP relay is connected to (EHLO,
    STARTTLS, AUTH when configured, QUIT) and each configured source is asked for yesterday's
    papers once (exit 1 if one does not answer).
    """
    _setup_logging(logging.WARNING)
    problems: list[str] = []
    settings: Settings | None = None
    try:
        _check_env_file()
        settings = load_settings(env_file=_opts.env_file)
    except ConfigError as e:
        problems.extend(e.problems)
    problems.extend(unknown_variables(_opts.env_file))
    count = 0
    listed: list[Subscriber] = []
    subscribers_path = settings.subscribers if settings else None
    where = str(subscribers_path)
    in_state: SubscriberList | None = None  # a list read from the state
    try:
        from digest.subscribers import load_subscribers

        if subscribers_path is None:  # invalid settings: still the file DIGEST_SUBSCRIBERS names
            subscribers_path = configured_subscribers_path(_opts.env_file)
            where = str(subscribers_path)
        if settings is not None and settings.subscribers_in_state:
            in_state, where = _state_list(settings)
            listed = in_state.subscribers if in_state is not None else []
        elif str(subscribers_path) != SUBSCRIBERS_IN_STATE:
            listed = load_subscribers(subscribers_path).subscribers
        count = len(listed)
    except (ConfigError, StateError) as e:
        problems.extend(e.problems if isinstance(e, ConfigError) else [str(e)])
    if problems:
        for p in problems:
            err.print(f"[bold red]error:[/] {p}", markup=True, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    assert settings is not None
    from digest import checks

    link_errors = checks.unsubscribe_link_errors(settings)
    if link_errors:
        for line in link_errors:
            err.print(f"[bold red]error:[/] {line}", markup=True, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    state_list = in_state if settings.subscribers_in_state else None
    source_warnings = checks.subscriber_source_warnings(settings, state_list)
    if settings.subscribers_in_state and in_state is None:
        source_warnings = []
    for line in checks.placeholder_warnings(settings) + source_warnings:
        err.print(f"[bold yellow]warning:[/] {line}", markup=True, highlight=False)
    if not settings.subscribers_in_state or in_state is not None:
        for line in checks.smtputf8_notes(settings, state_list):
            out.print(f"note: {line}", markup=False, highlight=False)
    out.print(f"ok: settings valid, {plural(count, 'subscriber')} in {where}")
    from digest.state import describe_state

    state_ok, state_line = describe_state(settings.effective_state_url)
    if not state_ok:
        err.print(f"[bold red]error:[/] {state_line}", markup=True, highlight=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(state_line)
    for line in checks.missing_like_warnings(settings, listed):
        err.print(f"[bold yellow]warning:[/] {line}", markup=True, highlight=False)
    if offline:
        return
    relay_ok, relay_line = asyncio.run(checks.probe_relay(settings))
    if relay_ok:
        out.print(relay_line)
    else:
        err.print(f"[bold red]error:[/] {relay_line}", markup=True, highlight=False)
    day = default_edition_day(datetime.now(UTC))
    specs = checks.configured_specs(settings, state_list)
    probes = asyncio.run(checks.probe_sources(specs, settings, day))
    for probe in probes:
        if probe.ok:
            out.print(checks.describe_probe(probe))
        else:
            err.print(
                f"[bold red]error:[/] {checks.describe_probe(probe)}", markup=True, highlight=False
            )
    if checks.probe_failed(probes) or not relay_ok:
        raise typer.Exit(EXIT_FAILED)


def _state_list(settings: Settings) -> tuple[SubscriberList | None, str]:
    """For ``validate`` with ``DIGEST_SUBSCRIBERS=state``: the list in the state, if the state
    exists at the current schema (``None`` otherwise: nothing is created or migrated), and
    where it is.

    Raises:
        ConfigError: a subscriber in the state is invalid.
        StateError: the state cannot be read.
    """
    from digest.state import SCHEMA_VERSION, probe_state, redact_url
    from digest.subscribers.home import StateHome

    url = settings.effective_state_url
    where = f"the state {redact_url(url)}"
    if probe_state(url) != SCHEMA_VERSION:
        return None, where + " (not created or not migrated yet: import a list into it)"
    with open_store(settings) as store:
        home = StateHome(store)
        return home.load(), home.name


@app.command()
def doctor(
    nameserver: Annotated[
        str | None,
        typer.Option(
            metavar="HOST[:PORT]",
            help="The DNS resolver to ask (an IP address); default: the system's.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="Longest one DNS question or SMTP command waits (default 5)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Check the From and envelope domains against Gmail's, Yahoo's and Microsoft's sender
    rules: SPF, DKIM, DMARC and alignment, MX, PTR, STARTTLS, one-click unsubscribe; and
    the complaint and hard-bounce rates of the recent editions per domain group.

    One line per check (pass, warn or fail) with the DNS record to add; exit 1 if one fails.
    """
    _setup_logging(logging.WARNING)
    with _errors():
        import dataclasses

        from digest.doctor import describe, run_doctor, state_rate_findings

        settings = _settings()
        report = run_doctor(settings, nameserver=nameserver, timeout=timeout)
        rates = tuple(state_rate_findings(settings))
        report = dataclasses.replace(report, findings=report.findings + rates)
    if as_json:
        import json

        out.print_json(json.dumps(report.to_json()))
    else:
        out.print(report.setup, markup=False, highlight=False)
        for finding in report.findings:
            out.print(finding.line(), markup=False, highlight=False)
        out.print(describe(report.findings), markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


STATUSES = tuple(s.value for s in DeliveryStatus)

state_app = typer.Typer(
    no_args_is_help=True, help="The state store: move it to another backend (PostgreSQL)."
)
app.add_typer(state_app, name="state")


@state_app.command("migrate")
def state_migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="Target state URL: postgresql://user@host/db (empty), or sqlite:///path.",
        ),
    ],
) -> None:
    """Copy the current state (DIGEST_STATE_URL) with its history, suppression list and
    stored papers into an empty target, then verify the row counts."""
    _setup_logging(logging.WARNING)
    with _errors():
        from digest.redact import redact_url
        from digest.state import open_state
        from digest.state.migrate import migrate_state

        settings = _settings()
        if to == settings.effective_state_url:
            raise ConfigError("--to names the current state; give another URL")
        with (
            open_store(settings) as source,
            source.sender_lock(purpose="migrate"),
            open_state(to, lease_seconds=settings.state_lease_seconds) as target,
        ):
            copied = migrate_state(source, target)
        listing = ", ".join(f"{n} {table}" for table, n in copied.items())
        out.print(f"copied {source.url} → {redact_url(to)}: {listing} (counts verified)")
        out.print(f"now set DIGEST_STATE_URL={redact_url(to)} on every host")


@app.command()
def history(
    date_: Annotated[
        str | None,
        typer.Option("--date", "--edition", metavar="EDITION", help="Edition key."),
    ] = None,
    subscriber: Annotated[
        str | None, typer.Option(metavar="EMAIL", help="Only this subscriber.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help=", ".join(STATUSES) + ".")
    ] = None,
    summary: Annotated[
        bool,
        typer.Option(
            "--summary",
            help="Per edition: delivered, owed, unknown, failed by reply, skipped by reason.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --summary: one JSON array, for scripts.")
    ] = False,
) -> None:
    """Show what was sent, when, with which Message-ID; --summary: who was skipped, and why."""
    _setup_logging(logging.WARNING)
    if date_ is not None and not date_.isprintable():
        with _errors():
            raise ConfigError(
                f"--edition {date_!r}: an edition key is YYYY-MM-DD, YYYY-Www or test:DATE"
            )
    if summary:
        _history_summary(date_, subscriber, status, as_json)
        return
    with _errors():
        if as_json:
            raise ConfigError("--json goes with --summary")
        if status is not None and status not in STATUSES:
            raise ConfigError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
        settings = _settings()
        with Digest(settings) as digest:
            rows = digest.store.list(
                edition=date_,
                subscriber=subscriber.lower() if subscriber else None,
                statuses=[status] if status else None,
            )
            # Bounces and complaints next to the deliveries they are about.
            events = (
                []
                if status is not None
                else [
                    e
                    for e in digest.store.bounce_events(subscriber)
                    if date_ is None or e.edition == date_
                ]
            )
        lines: list[tuple[str, str, datetime, str, str, str, str]] = []
        for r in rows:
            when = r.sent_at or r.updated_at
            detail = history_detail(r.detail, r.last_code, r.last_error, sent=r.status == "sent")
            lines.append((r.edition, r.subscriber, when, "0", r.status, r.message_id or "", detail))
        for e in events:
            what = "complaint" if e.kind == "complaint" else f"bounce ({e.kind})"
            lines.append(
                (e.edition or "", e.address, e.at, "1", what, e.message_id or "", e.evidence)
            )
        lines.sort(key=lambda line: line[:4])
        table = Table(show_lines=False)
        for col in ("edition", "subscriber", "status", "when (UTC)", "Message-ID", "detail"):
            table.add_column(col, overflow="fold")
        for edition_key, who, when, _order, what, mid, detail in lines:
            table.add_row(edition_key, who, what, when.strftime("%Y-%m-%d %H:%M:%S"), mid, detail)
        out.print(table)
        out.print(f"{len(rows)} rows" + (f", {len(events)} bounces" if events else ""))


def _history_summary(
    edition: str | None, subscriber: str | None, status: str | None, as_json: bool
) -> None:
    """``digest history --summary``: one :class:`~digest.history.EditionSummary` each."""
    with _errors():
        from digest.history import edition_summaries

        for flag, given in (("--subscriber", subscriber), ("--status", status)):
            if given is not None:
                raise ConfigError(f"--summary counts every subscriber; drop {flag}")
        with open_store(_settings()) as store:
            summaries = edition_summaries(store, edition)
    if as_json:
        import json

        out.print_json(json.dumps([s.to_json() for s in summaries]))
        return
    if not summaries:
        out.print(f"no deliveries recorded for edition {edition}" if edition else "no deliveries")
        return
    for s in summaries:
        for line in s.lines():
            out.print(Text(line), highlight=False)


def history_detail(detail: str | None, code: int | None, error: str | None, *, sent: bool) -> str:
    """The detail column: the row's detail, then the last failure (its reply code once).

    A server reply stored as ``last_error`` already starts with its code (``550 5.1.1 …``);
    the code is only prefixed when it does not.
    """
    parts = [detail] if detail else []
    if error and not sent:
        if code is not None and not error.startswith(str(code)):
            error = f"{code} {error}"
        if error != detail:
            parts.append(error)
    return " ".join(parts)


@app.command()
def bounces() -> None:
    """Read the bounce mailbox (DSNs, ARF complaints) once; suppress per the bounce policy."""
    _setup_logging(logging.WARNING)
    with _errors():
        from digest.bounces.intake import run_intake
        from digest.redact import redact_url

        settings = _settings()
        if not settings.bounce_maildir and not settings.bounce_imap_url:
            raise ConfigError(
                "no bounce mailbox: set DIGEST_BOUNCE_MAILDIR (a Maildir) or "
                "DIGEST_BOUNCE_IMAP_URL (imaps://USER@HOST/MAILBOX)"
            )
        with (
            open_store(settings) as store,
            store.sender_lock(purpose="bounces"),
            Digest(settings, store=store) as digest,
        ):
            known = [s.email for s in digest.load_subscribers().subscribers]
            report = run_intake(settings, store, known=known, now=digest.now())
        assert report is not None
        where = settings.bounce_maildir or redact_url(settings.bounce_imap_url or "")
        out.print(
            f"bounce mailbox {where}: {report.messages} messages: {report.bounces} bounces, "
            f"{report.complaints} complaints, {report.ignored} ignored, "
            f"{len(report.unrecognised)} kept aside, {report.already} already processed; "
            f"{len(report.suppressed)} newly suppressed"
        )
        for address in report.suppressed:
            out.print(f"  suppressed {address}")
        for line in report.unrecognised:
            err.print(f"  kept aside: {line}")
        for line in report.errors:
            err.print(f"  left in the mailbox: {line}")
        if report.errors:
            raise typer.Exit(EXIT_FAILED)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid
        return "cli:unknown"


@app.command()
def suppress(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The address to stop mailing.")],
    reason: Annotated[
        str,
        typer.Option(metavar="REASON", help="manual, bounced, complained or unsubscribed."),
    ] = "manual",
    note: Annotated[
        str, typer.Option(metavar="TEXT", help="Why (kept as the evidence).")
    ] = "suppressed by the operator",
) -> None:
    """Put ADDRESS on the suppression list: no edition is sent to it, whatever the YAML says."""
    _setup_logging(logging.WARNING)
    with _errors():
        from digest.state import SuppressionReason

        reasons = [r.value for r in SuppressionReason]
        if reason not in reasons:
            raise ConfigError(f"--reason {reason!r}: use one of {', '.join(reasons)}")
        settings = _settings()
        with open_store(settings) as store:
            new = store.suppress(address, reason, evidence=note, actor=_actor())
            current = store.suppression(address)
        assert current is not None
        if new:
            out.print(f"suppressed {current.address} ({current.reason})")
        else:
            out.print(
                f"{current.address} was already suppressed ({current.reason}, since "
                f"{current.since:%Y-%m-%d %H:%M} UTC, by {current.actor})"
            )


@app.command()
def unsuppress(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The address to mail again.")],
) -> None:
    """Lift ADDRESS's suppression (kept in the history with who and when)."""
    _setup_logging(logging.WARNING)
    with _errors():
        settings = _settings()
        with open_store(settings) as store:
            previous = store.suppression(address)
            lifted = store.unsuppress(address, actor=_actor())
        if not lifted or previous is None:
            raise ConfigError(f"{address}: not on the suppression list")
        out.print(f"lifted the suppression of {previous.address} ({previous.reason})")


@app.command()
def resume(
    groups: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[GROUP]...",
            help="gmail, outlook, yahoo or other; default: every paused group.",
        ),
    ] = None,
) -> None:
    """Resume sending to a domain group the daemon paused (its complaint rate passed
    DIGEST_COMPLAINT_PAUSE_PERCENT); its owed subscribers are sent at the next tick."""
    _setup_logging(logging.WARNING)
    with _errors():
        from digest.providers import parse_group

        try:
            wanted = [str(parse_group(g)) for g in groups or ()]
        except ValueError as e:
            raise ConfigError(f"GROUP {e}") from None
        with open_store(_settings()) as store:
            before = store.pauses()
            lifted = store.resume_groups(wanted or None, actor=_actor())
        for group in lifted:
            pause = before[group]
            out.print(
                f"resumed {group} (paused since {pause.since:%Y-%m-%d %H:%M} UTC: "
                f"{pause.evidence})",
                markup=False,
                highlight=False,
            )
        for group in dict.fromkeys(wanted):
            if group not in lifted:
                out.print(f"{group} was not paused")
        if not wanted and not lifted:
            out.print("no domain group is paused")


subscribers_app = typer.Typer(
    invoke_without_command=True,
    help="The subscriber list: an overview (no command), or import, export, edit, add, remove.",
)
app.add_typer(subscribers_app, name="subscribers")


@subscribers_app.callback()
def subscribers(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STATUS",
            help="Only these (repeatable): active, paused, unsubscribed, bounced, complained, "
            "suppressed.",
        ),
    ] = None,
    frequency: Annotated[
        str | None, typer.Option(metavar="FREQ", help="Only daily or weekly.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    show: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="One subscriber's personal ranking: interests, likes, authors, and the "
            "👍/👎 learned from the email.",
        ),
    ] = None,
) -> None:
    """One line per subscriber: status, frequency, next send, last edition, bounce score.

    The list lives in DIGEST_SUBSCRIBERS: a YAML file, or `state` (a table of the state
    store); the commands below change it one entry at a time, the same way in both.
    """
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging(logging.WARNING)
    if show is not None:
        with _errors(), Digest(_settings()) as digest:
            for line in personal_report(digest, show):
                out.print(line, markup=False, highlight=False)
        return
    with _errors():
        import json

        from digest.bounces.policy import BouncePolicy
        from digest.subscribers.status import SubscriberStatus, filter_overview, overview

        known = [s.value for s in SubscriberStatus]
        bad = [s for s in status or [] if s not in known]
        if bad:
            raise ConfigError(f"--status {bad[0]!r}: use one of {', '.join(known)}")
        if frequency is not None and frequency not in ("daily", "weekly"):
            raise ConfigError(f"--frequency {frequency!r}: use daily or weekly")
        from digest.reputation import recent_rates

        settings = _settings()
        with Digest(settings) as digest:
            rows = overview(
                digest.load_subscribers().subscribers,
                digest.store,
                policy=BouncePolicy.from_settings(settings),
                now=digest.now(),
            )
            rates = recent_rates(digest.store, digest.now())
            pauses = digest.store.pauses()
        rows = filter_overview(rows, statuses=status or (), frequency=frequency)
        if as_json:
            out.print_json(json.dumps([r.to_json() for r in rows]))
            return
        table = Table(show_lines=False)
        columns = ("subscriber", "status", "frequency", "next send (local)", "last sent")
        for col in (*columns, "bounce score", "keywords", "why"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r.email,
                str(r.status),
                r.frequency,
                r.next_due.strftime("%Y-%m-%d %H:%M %Z") if r.next_due else "",
                r.last_sent or "",
                f"{r.bounce_score:g}" + (f" (+{r.hard_bounces} hard)" if r.hard_bounces else ""),
                ", ".join(r.keywords),
                r.why,
            )
        out.print(table)
        counts = {s: sum(1 for r in rows if r.status == s) for s in known}
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out.print(plural(len(rows), "subscriber") + (f": {parts}" if parts else ""))
        _print_rates(settings, rates, pauses)


def _print_rates(
    settings: Settings, rates: Sequence[GroupRate], pauses: Mapping[str, Pause]
) -> None:
    """The sender rates of the recent editions per domain group, and the paused groups."""
    from digest.reputation import percent

    if rates:
        table = Table(show_lines=False, title="complaint and hard-bounce rates, recent editions")
        for col in ("edition", "group", "delivered", "complaints", "hard bounces", "note"):
            table.add_column(col, overflow="fold")
        for r in rates:
            note = ""
            if r.complaints_above(settings.complaint_pause_percent):
                note = f"above {settings.complaint_pause_percent:g} %: pauses the group"
            elif r.complaints_above(settings.complaint_warn_percent):
                note = f"above {settings.complaint_warn_percent:g} %"
            table.add_row(
                r.edition,
                str(r.group),
                f"{r.delivered:,}",
                f"{r.complaints:,} ({percent(r.complaint_rate)})",
                f"{r.hard:,} ({percent(r.hard_bounce_rate)})",
                note,
            )
        out.print(table)
    for group, pause in sorted(pauses.items()):
        if pause.active:
            out.print(
                f"paused: {group} since {pause.since:%Y-%m-%d %H:%M} UTC ({pause.evidence}); "
                f"owed until `digest resume {group}`",
                markup=False,
                highlight=False,
            )


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A subscribers YAML file.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count; write nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Set active: false for entries of the list not in FILE."),
    ] = False,
) -> None:
    """Take FILE into the list: the whole file is validated first (every problem with its
    line; nothing is written on any), then written at once (one transaction). Entries of the
    list that FILE lacks are left as they are, unless --prune."""
    _setup_logging(logging.WARNING)
    with _errors():
        try:
            data = file.read_bytes()
        except OSError as e:
            raise ConfigError(f"{file}: cannot read it: {e.strerror or e}") from None
        with Digest(_settings()) as digest:
            report = digest.home.import_list(data, file, prune=prune, dry_run=dry_run)
            where = digest.home.name
        counts = (
            f"{report.added} added, {report.changed} changed, {report.unchanged} unchanged, "
            f"{report.deactivated} deactivated"
        )
        kept = f"; {report.kept} not in {file} left as they are" if report.kept else ""
        verb = "would import" if dry_run else "imported"
        out.print(f"{verb} {file} into {where}: {counts}{kept}", markup=False, highlight=False)
        if not report.layout_kept:
            out.print(
                f"note: {file}'s list is not written the usual way ('subscribers:' at the start "
                "of a line, then '- email: ...' items): its entries were written anew, without "
                "its comments",
                markup=False,
                highlight=False,
            )


@subscribers_app.command("export")
def subscribers_export(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write here (default: standard output)."),
    ] = None,
) -> None:
    """Write the list as a subscribers YAML file, exactly as `import` takes it back."""
    _setup_logging(logging.WARNING)
    with _errors(), Digest(_settings()) as digest:
        text = digest.home.export()
        if out_file is None:
            sys.stdout.write(text)
            return
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--out {out_file}: cannot write it: {e.strerror or e}") from None
        count = len(digest.load_subscribers())
        err.print(f"wrote {plural(count, 'subscriber')} to {out_file}", highlight=False)


@subscribers_app.command("edit")
def subscribers_edit(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber to edit.")],
) -> None:
    """Open EMAIL's entry in $EDITOR as YAML; on save it is validated with the file's rules
    (reopened with the problems on top until it is valid) and written as one entry."""
    _setup_logging(logging.WARNING)
    with _errors(), Digest(_settings()) as digest:
        from digest.subscribers.home import edit_entry

        def editor(text: str) -> str | None:
            edited: str | None = click.edit(text, extension=".yaml", require_save=True)
            return edited

        changed = edit_entry(digest.home, email, editor, record=_cli_event(digest, email, "edit"))
        out.print(f"{'updated' if changed else 'unchanged'}: {email}", highlight=False)


@subscribers_app.command("add")
def subscribers_add(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The new subscriber.")],
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Display name.")] = None,
    keywords: Annotated[
        list[str] | None,
        typer.Option(
            "--keywords", metavar="WORDS", help="Keywords (repeatable, or comma-separated)."
        ),
    ] = None,
) -> None:
    """Add EMAIL to the list (for scripts); an address on the list already is an error."""
    _setup_logging(logging.WARNING)
    with _errors(), Digest(_settings()) as digest:
        from digest.subscribers.home import add_subscriber

        words = [w.strip() for given in keywords or () for w in given.split(",") if w.strip()]
        added = add_subscriber(
            digest.home, email, name=name, keywords=words, record=_cli_event(digest, email, "add")
        )
        out.print(f"added {added.email} to {digest.home.name}", highlight=False)


@subscribers_app.command("remove")
def subscribers_remove(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber to remove.")],
) -> None:
    """Remove EMAIL's entry from the list (its history and suppressions stay)."""
    _setup_logging(logging.WARNING)
    with _errors(), Digest(_settings()) as digest:
        from digest.subscribers.changes import RemoveEntry

        record = _cli_event(digest, email, "remove")
        if not digest.home.apply(RemoveEntry(email), record=record):
            raise ConfigError(f"{email}: not on {digest.home.name}")
        out.print(f"removed {email} from {digest.home.name}", highlight=False)


def _cli_event(digest: Digest, email: str, action: str) -> Callable[[bool], None]:
    """The state writes of a CLI change: an event by ``cli:USER``, if the list changed."""

    def record(changes: bool) -> None:
        if changes:
            digest.store.record_event(email, action, actor=_actor())

    return record


def personal_report(digest: Digest, address: str) -> list[str]:
    """The lines of ``digest subscribers --show ADDRESS``.

    Raises:
        ConfigError: the address is not in the subscribers file.
    """
    sub = _find_subscriber(digest, address, flag="--show")
    learned = digest.store.feedback(sub.email).get(sub.email)
    likes = learned.likes if learned else ()
    dislikes = learned.dislikes if learned else ()
    papers = digest.store.find_papers([*sub.like, *sub.dislike, *likes, *dislikes])

    def named(ids: Sequence[str]) -> str:
        if not ids:
            return "none"
        return "; ".join(f"{i} {papers[i].title}" if i in papers else i for i in ids)

    return [
        f"{sub.email}" + (f" ({sub.name})" if sub.name else ""),
        f"keywords: {', '.join(sub.keywords) or 'none'}",
        f"interests: {' | '.join(sub.interests) or 'none'}",
        f"authors: {', '.join(sub.authors) or 'none'}",
        f"like (subscribers file): {named(sub.like)}",
        f"dislike (subscribers file): {named(sub.dislike)}",
        f"👍 learned from the email: {named(likes)}",
        f"👎 learned from the email: {named(dislikes)}",
        f"never the same paper twice: {'yes' if sub.no_repeat else 'no (no_repeat: false)'}",
    ]


@app.command()
def papers(
    date_: DateOpt = None,
    source: SourceOpt = None,
    refetch: Annotated[
        bool,
        typer.Option(
            "--refetch", help="Ask the sources again and replace the days stored in the state file."
        ),
    ] = False,
) -> None:
    """List an edition's papers: the stored copy of each day, else what the sources answer."""
    _setup_logging(logging.WARNING)
    with _errors():
        settings = _settings(sources=_sources_override(source))
        with Digest(settings) as digest:
            edition = parse_edition(date_, default_day=default_edition_day(digest.now()))
            result = asyncio.run(digest.papers_for(edition, refetch=refetch))
        for day in result.days:
            count = "" if day.count is None else f"{day.count} papers, "
            line = f"{day.day.isoformat()} {day.source}: {count}{day.how}"
            if day.count is None:
                err.print(Text("error: ", style="bold red") + Text(line), highlight=False)
            else:
                out.print(Text(line), highlight=False)
        table = Table(show_lines=False)
        for col in ("arXiv id", "upvotes", "title", "source"):
            table.add_column(col, overflow="fold")
        for paper in result.papers:
            votes = "" if paper.upvotes is None else str(paper.upvotes)
            # Text(): titles are outside data, never rich markup.
            table.add_row(Text(paper.arxiv_id), votes, Text(paper.title), Text(paper.source))
        out.print(table)
        out.print(f"edition {edition.key}: {len(result.papers)} papers")
        if result.failed:
            raise typer.Exit(EXIT_FAILED)


@app.command()
def run() -> None:
    """Run the daemon: send each subscriber's edition at their hour; catch up after downtime."""
    _setup_logging(logging.INFO)
    with _errors():
        from digest.daemon import run as run_daemon

        settings = _settings()
        code = run_daemon(settings)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default DIGEST_HTTP_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port (default DIGEST_HTTP_PORT, else 8080).")
    ] = None,
) -> None:
    """Serve the web app: one-click unsubscribe, preferences, sign-up, archive."""
    _setup_logging(logging.INFO)
    with _errors():
        from digest.web import serve as serve_web

        serve_web(_settings(), host=host, port=port)


def main() -> None:
    """Console-script entry point (``digest``)."""
    app()
