"""Reading the bounce mailbox: ``digest bounces`` and, when configured, every daemon tick.

The mailbox is a Maildir (``DIGEST_BOUNCE_MAILDIR``) or an IMAP mailbox over TLS
(``DIGEST_BOUNCE_IMAP_URL``, password ``DIGEST_BOUNCE_IMAP_PASSWORD``). Each message is:

1. read and keyed by the SHA-256 of its bytes; a key already in the state store
   (:meth:`~digest.state.StateBackend.processed`) was handled before a crash interrupted the
   move: it is only moved now, never counted again;
2. parsed (:func:`digest.bounces.dsn.parse_bounce`);
3. matched to our delivery (:func:`match_bounce`, below): by the VERP address it was
   delivered to, or by the original ``Message-ID`` (:meth:`StateBackend.find_message`)
   together with the recipient it names;
4. recorded: the bounces, new scores, suppressions (:mod:`digest.bounces.policy`) and the
   processed key, in one transaction;
5. moved, only after that commit: to the ``Processed`` folder, or, when it could not be read
   or matched, to ``Unrecognised`` (kept aside, counted and reported, never deleted).

A crash between 3 and 4 leaves the message unprocessed (it is read again); a crash between 4
and 5 leaves it processed but unmoved (step 1 moves it). So each message counts exactly once.

Who may suppress whom. Anyone can write to the bounce mailbox, so a message counts only
with proof that it was written from the message we sent, which only the subscriber's mail
system (and whoever the subscriber shows it to) has seen:

* **VERP** (``DIGEST_VERP=true``): it was delivered to a valid VERP address of ours (a token
  signed with DIGEST_SECRET_KEY naming the subscriber and the edition). It counts for that
  delivery's subscriber whatever address it names (an address the subscriber forwards to);
  an unreadable message to a VERP address counts as a soft bounce.
* **Message-ID** (VERP on or off): it quotes the ``Message-ID`` of one of our deliveries
  (``<EDITION.RANDOM@domain>``, 96 random bits: it cannot be guessed) *and* names that
  delivery's subscriber as the failed recipient. A DSN that quotes our ``Message-ID`` but
  names another address (where the subscriber forwards to, or another subscriber) is kept
  aside: without VERP, a forward cannot be told from one subscriber's message used against
  another address.
* **Complaints** (ARF) need our ``Message-ID`` only: feedback loops often redact or mask the
  recipient, and whoever holds the message holds its one-click unsubscribe link (RFC 8058)
  as well, so counting the complaint gives them nothing more. (One who has only the
  ``Message-ID``, from the ``References`` of a reply the subscriber made public, has the
  subscriber's address from it too: requiring the recipient would not stop them.) The
  complaint counts for the subscriber the message was sent to, never for an address it
  names. One that quotes no ``Message-ID`` of ours (and reached no VERP address) never
  counts.
* Anything else (a DSN, complaint or text bounce naming a subscriber we mailed an hour ago
  but quoting no ``Message-ID`` of ours) is kept aside in ``Unrecognised`` and suppresses
  nobody.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from digest.bounces.dsn import ParsedBounce, Recipient, ReportKind, parse_bounce
from digest.bounces.policy import BounceInput, BouncePolicy, plan
from digest.bounces.verp import parse_verp
from digest.delivery.envelope import envelope_sender
from digest.errors import ConfigError, StateError
from digest.settings import Settings
from digest.state import BounceKind, Delivery, ProcessedMessage, StateBackend
from digest.tokens import TokenSigner

log = logging.getLogger(__name__)

PROCESSED_FOLDER = "Processed"
"""Where handled messages go (a Maildir++ sub-folder ``.Processed``, or an IMAP mailbox)."""
UNRECOGNISED_FOLDER = "Unrecognised"
"""Where messages that could not be read or matched are kept aside."""
IMAP_TIMEOUT_S = 30.0
"""IMAP socket timeout, seconds."""
IMAP_FETCH_BATCH = 50
"""Messages fetched per IMAP ``FETCH``."""
_READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class MailboxItem:
    """One message of the bounce mailbox.

    Attributes:
        name: where it is (a Maildir file name, ``imap UID 42``), for logs.
        key: ``sha256:<hex>`` of its bytes (or an IMAP size-based key when not fetched).
        data: its bytes, at most ``max_bytes + 1`` of them (more means "too large").
        handle: the mailbox's own reference (a path, a UID).
        size: the message's size in bytes when known and larger than ``data``.
    """

    name: str
    key: str
    data: bytes
    handle: Any
    size: int | None = None


class Mailbox(Protocol):
    """A bounce mailbox: list messages, then move each one after its result is committed."""

    def items(self) -> Iterator[MailboxItem]:
        """The messages waiting, oldest first."""
        ...

    def move(self, item: MailboxItem, folder: str) -> None:
        """Move ``item`` to ``folder`` (:data:`PROCESSED_FOLDER` / :data:`UNRECOGNISED_FOLDER`)."""
        ...

    def close(self) -> None:
        """Release the mailbox (log out)."""
        ...


@dataclass
class IntakeReport:
    """What one pass over the bounce mailbox did.

    Attributes:
        messages: messages seen.
        bounces: hard and soft bounces recorded.
        complaints: complaints recorded.
        ignored: delay warnings and success notices (moved to Processed, nothing recorded).
        already: messages already processed before a crash (only moved now).
        by_kind: bounces and complaints recorded, by kind (``hard``, ``soft``, ``complaint``).
        suppressed: addresses newly put on the suppression list.
        unrecognised: ``name: why`` of each message kept aside.
        errors: ``name: error`` of messages left in place (read again next time).
    """

    messages: int = 0
    bounces: int = 0
    complaints: int = 0
    ignored: int = 0
    already: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    suppressed: list[str] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- mailboxes ---------------------------------------------------------------------------------


def _read_limited(path: Path, max_bytes: int) -> tuple[str, bytes]:
    """``(sha256 key of the whole file, its first max_bytes + 1 bytes)``."""
    digest = hashlib.sha256()
    head = bytearray()
    with path.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
            if len(head) <= max_bytes:
                head.extend(chunk[: max_bytes + 1 - len(head)])
    return f"sha256:{digest.hexdigest()}", bytes(head)


class MaildirBox:
    """A Maildir bounce mailbox (``new/`` and ``cur/``); folders are Maildir++ sub-folders.

    Args:
        path: the Maildir (with ``new/``, ``cur/``, ``tmp/``).
        max_bytes: messages are read up to this size (more: "too large").

    Raises:
        ConfigError: ``path`` is not a Maildir.
    """

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise ConfigError(
                f"DIGEST_BOUNCE_MAILDIR: {path} is not a Maildir (no new/ and cur/ in it)"
            )
        self.path = path
        self.max_bytes = max_bytes

    def items(self) -> Iterator[MailboxItem]:
        """Files of ``new/`` then ``cur/`` in name order (Maildir names start with the time)."""
        for sub in ("new", "cur"):
            for entry in sorted((self.path / sub).iterdir()):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    key, data = _read_limited(entry, self.max_bytes)
                except FileNotFoundError:  # moved meanwhile by another reader
                    continue
                yield MailboxItem(f"{sub}/{entry.name}", key, data, entry)

    def _folder(self, folder: str) -> Path:
        root = self.path / f".{folder}"
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "maildirfolder").touch()
        return root

    def move(self, item: MailboxItem, folder: str) -> None:
        """Rename the file into ``.<folder>/cur/`` (marked seen); atomic on one filesystem."""
        source: Path = item.handle
        name = source.name if ":2," in source.name else f"{source.name}:2,S"
        os.replace(source, self._folder(folder) / "cur" / name)

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True, slots=True)
class ImapLocation:
    """Where the IMAP bounce mailbox is (from ``DIGEST_BOUNCE_IMAP_URL``).

    Attributes:
        host: server host name.
        port: TLS port (default 993).
        user: login name.
        mailbox: the mailbox read (default ``INBOX``).
    """

    host: str
    port: int
    user: str
    mailbox: str

    @classmethod
    def parse(cls, url: str) -> ImapLocation:
        """Parse ``imaps://USER@HOST[:PORT][/MAILBOX]``.

        Raises:
            ConfigError: not ``imaps://`` (TLS is required), no user or host, a password in
                the URL (put it in DIGEST_BOUNCE_IMAP_PASSWORD), or a bad port.
        """
        parts = urllib.parse.urlsplit(url.strip())
        where = "DIGEST_BOUNCE_IMAP_URL"
        if parts.scheme != "imaps":
            raise ConfigError(
                f"{where}: must start with imaps:// (IMAP over TLS, port 993); got "
                f"{parts.scheme or 'no scheme'}://"
            )
        if parts.password is not None:
            raise ConfigError(
                f"{where}: must not contain the password; set DIGEST_BOUNCE_IMAP_PASSWORD"
            )
        try:
            port = parts.port or 993
        except ValueError:
            raise ConfigError(f"{where}: bad port") from None
        if not parts.hostname or not parts.username:
            raise ConfigError(f"{where}: needs a user and a host: imaps://USER@HOST/MAILBOX")
        mailbox = urllib.parse.unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(parts.hostname, port, urllib.parse.unquote(parts.username), mailbox)


class ImapBox:
    """An IMAP bounce mailbox over TLS (imapclient); folders are mailboxes created on demand.

    Args:
        location: host, port, user, mailbox.
        password: the login password (a secret: never logged).
        ca_file: CA bundle for the server certificate (default: the system's).
        max_bytes: larger messages are not fetched ("too large").
        timeout: socket timeout, seconds.

    Raises:
        ConfigError: TLS, login or mailbox selection failed (one line, no password).
    """

    def __init__(
        self,
        location: ImapLocation,
        password: str,
        *,
        ca_file: Path | None,
        max_bytes: int,
        timeout: float = IMAP_TIMEOUT_S,
    ) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError

        self.location = location
        self.max_bytes = max_bytes
        where = f"IMAP server {location.host}:{location.port}"
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"DIGEST_BOUNCE_IMAP_CA_FILE: cannot load {ca_file}: {e}") from e
        try:
            self._client = IMAPClient(
                location.host, port=location.port, ssl=True, ssl_context=context, timeout=timeout
            )
        except (OSError, ssl.SSLError, IMAPClientError) as e:
            raise ConfigError(f"{where}: cannot connect over TLS: {e}") from e
        try:
            self._client.login(location.user, password)
            info = self._client.select_folder(location.mailbox)
        except (OSError, IMAPClientError) as e:
            self._client.shutdown()
            reason = "login refused" if "login" in str(e).lower() else str(e)
            raise ConfigError(f"{where}: {reason} (user {location.user})") from e
        self._validity = int(info.get(b"UIDVALIDITY", 0))
        self._folders: set[str] = set()

    def items(self) -> Iterator[MailboxItem]:
        """Messages not flagged deleted, by UID; bodies fetched with ``BODY.PEEK[]``."""
        client = self._client
        uids = sorted(client.search(["NOT", "DELETED"]))
        for start in range(0, len(uids), IMAP_FETCH_BATCH):
            chunk = uids[start : start + IMAP_FETCH_BATCH]
            sizes = client.fetch(chunk, ["RFC822.SIZE"])
            small = [
                u for u in chunk if int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) <= self.max_bytes
            ]
            bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
            for uid in chunk:
                name = f"imap UID {uid}"
                if uid in bodies:
                    data = bytes(bodies[uid].get(b"BODY[]") or b"")
                    key = f"sha256:{hashlib.sha256(data).hexdigest()}"
                else:  # too large: not fetched; the key names the message in this mailbox
                    size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                    key = f"imap:{self._validity}:{uid}:{size}"
                    yield MailboxItem(name, key, b"", uid, size=size)
                    continue
                yield MailboxItem(name, key, data, uid)

    def _ensure(self, folder: str) -> None:
        if folder in self._folders:
            return
        if not self._client.folder_exists(folder):
            self._client.create_folder(folder)
        self._folders.add(folder)

    def move(self, item: MailboxItem, folder: str) -> None:
        """``MOVE`` (RFC 6851), or ``COPY`` + ``\\Deleted`` + ``UID EXPUNGE``."""
        client = self._client
        self._ensure(folder)
        if client.has_capability("MOVE"):
            client.move([item.handle], folder)
            return
        client.copy([item.handle], folder)
        client.add_flags([item.handle], [b"\\Deleted"])
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([item.handle])
        else:
            client.expunge()

    def close(self) -> None:
        """Log out (never raises)."""
        try:
            self._client.logout()
        except Exception:  # already gone
            log.debug("IMAP logout failed", exc_info=True)


def open_mailbox(settings: Settings) -> Mailbox | None:
    """The configured bounce mailbox, or ``None`` when neither Maildir nor IMAP is set.

    Raises:
        ConfigError: both are set, the Maildir does not exist, or IMAP cannot be opened.
    """
    if settings.bounce_maildir and settings.bounce_imap_url:
        raise ConfigError("DIGEST_BOUNCE_MAILDIR and DIGEST_BOUNCE_IMAP_URL are both set; keep one")
    if settings.bounce_maildir:
        return MaildirBox(settings.bounce_maildir, max_bytes=settings.bounce_max_bytes)
    if settings.bounce_imap_url:
        location = ImapLocation.parse(settings.bounce_imap_url)
        if settings.bounce_imap_password is None:
            raise ConfigError("DIGEST_BOUNCE_IMAP_PASSWORD: required with DIGEST_BOUNCE_IMAP_URL")
        return ImapBox(
            location,
            settings.bounce_imap_password.get_secret_value(),
            ca_file=settings.bounce_imap_ca_file,
            max_bytes=settings.bounce_max_bytes,
        )
    return None


# -- processing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    """How bounces are tied to deliveries.

    Attributes:
        envelope_from: the plain envelope sender (VERP base), or ``None`` without VERP.
        signer: the VERP token signer, or ``None`` without VERP.
        known: candidate subscriber addresses for VERP references.
    """

    envelope_from: str | None
    signer: TokenSigner | None
    known: tuple[str, ...]


MAX_NAMED_IN_PROBLEM = 3
"""Addresses a "kept aside" line names at most (a forged message may name hundreds)."""


def _verp_delivery(
    store: StateBackend, parsed: ParsedBounce, matcher: Matcher, now: datetime
) -> Delivery | None:
    """The delivery named by a valid VERP address the bounce was delivered to, if any."""
    if matcher.signer is None or not matcher.envelope_from:
        return None
    for address in parsed.envelope_to:
        verp = parse_verp(address, matcher.envelope_from, matcher.signer, matcher.known, now=now)
        if verp is None:
            continue
        row = store.get(verp.subscriber, verp.edition)
        if row is not None:
            return row
    return None


def _named(recipients: Iterable[Recipient]) -> str:
    addresses = list(dict.fromkeys(r.address for r in recipients if r.address))
    if not addresses:
        return "no address"
    shown = ", ".join(addresses[:MAX_NAMED_IN_PROBLEM])
    more = len(addresses) - MAX_NAMED_IN_PROBLEM
    return f"{shown} and {more} more" if more > 0 else shown


def _counted(delivery: Delivery, recipient: Recipient, how: str) -> BounceInput:
    evidence = f"{recipient.evidence} (matched by {how})"
    return BounceInput(
        delivery.subscriber, recipient.kind, delivery.edition, delivery.message_id, evidence
    )


def match_bounce(
    store: StateBackend, parsed: ParsedBounce, matcher: Matcher, *, now: datetime
) -> tuple[list[BounceInput], list[str]]:
    """Tie a parsed bounce to our delivery, only on proof that it was written from our message.

    The rules (the module docstring says why): a valid VERP address it was delivered to
    (:mod:`digest.bounces.verp`); else a ``Message-ID`` of ours (``parsed.original_message_ids``
    looked up with :meth:`StateBackend.find_message`) and, for a bounce, that delivery's
    subscriber among the named recipients (a complaint needs only the ``Message-ID``).
    Nothing else counts: an address we mailed is no proof.

    Args:
        store: the state store (deliveries).
        parsed: the bounce (:func:`digest.bounces.dsn.parse_bounce`).
        matcher: VERP settings and the subscriber addresses.
        now: the current time (aware), for the VERP token check.

    Returns:
        ``(bounces to record, problems)``: at most one bounce (our messages have one
        recipient); problems only when there is none, saying why (one line each): the
        message is then kept aside.
    """
    verp = _verp_delivery(store, parsed, matcher, now)
    if verp is not None:
        if not parsed.recipients:
            # Only our VERP address received it: a bounce we cannot read (or an auto-reply,
            # RFC 3834 sends those to the envelope sender too), so it counts as a soft bounce.
            return [
                BounceInput(
                    verp.subscriber,
                    BounceKind.SOFT,
                    verp.edition,
                    verp.message_id,
                    "unreadable message to the VERP address (counted as a soft bounce)",
                )
            ], []
        # The VERP address names the delivery; the DSN may name where it was forwarded.
        named = [r for r in parsed.recipients if r.address == verp.subscriber]
        return [_counted(verp, (named or list(parsed.recipients))[0], "VERP")], []
    ours: list[Delivery] = []
    for mid in parsed.original_message_ids:
        found = store.find_message(mid)
        if found is not None and found not in ours:
            ours.append(found)
    if not ours:
        why = f"names {_named(parsed.recipients)} but quotes no Message-ID of ours"
        if matcher.signer is not None:
            why += " and reached no VERP address of ours"
        return [], [why]
    for delivery in ours:
        for r in parsed.recipients:
            if r.address == delivery.subscriber:
                return [_counted(delivery, r, "Message-ID")], []
    complaint = next((r for r in parsed.recipients if r.kind is BounceKind.COMPLAINT), None)
    if complaint is not None:  # the recipient redacted or masked by the feedback loop
        recipient = complaint
        if complaint.address:
            recipient = replace(
                complaint, diagnostic=f"{complaint.diagnostic}, names {complaint.address}"
            )
        return [_counted(ours[0], recipient, "Message-ID")], []
    sent_to = ", ".join(d.subscriber for d in ours)
    if not parsed.recipients:
        return [], [f"quotes our Message-ID of the message sent to {sent_to}, names no recipient"]
    return [], [
        f"quotes our Message-ID of the message sent to {sent_to} but names "
        f"{_named(parsed.recipients)} (a bounce counts only for the subscriber it was sent to)"
    ]


def process_mailbox(
    store: StateBackend,
    box: Mailbox,
    *,
    policy: BouncePolicy,
    matcher: Matcher,
    max_bytes: int,
    now: datetime,
) -> IntakeReport:
    """Read every waiting message once (see the module docstring for the order of steps).

    One message's failure never stops the others: it is logged (one line), counted in
    ``errors`` and left in place to be read again.

    Raises:
        StateError: the state store failed (nothing after the failing message is read).
    """
    report = IntakeReport()
    for item in box.items():
        report.messages += 1
        try:
            _one(
                store,
                box,
                item,
                report,
                policy=policy,
                matcher=matcher,
                max_bytes=max_bytes,
                now=now,
            )
        except StateError:
            raise
        except Exception as e:  # a mailbox error, or a bug: keep the message, go on
            log.warning("bounce message %s: left in the mailbox: %s", item.name, e)
            report.errors.append(f"{item.name}: {e}")
    return report


def _one(
    store: StateBackend,
    box: Mailbox,
    item: MailboxItem,
    report: IntakeReport,
    *,
    policy: BouncePolicy,
    matcher: Matcher,
    max_bytes: int,
    now: datetime,
) -> None:
    done = store.processed(item.key)
    if done is not None:  # committed before a crash; only the move was missing
        report.already += 1
        box.move(item, UNRECOGNISED_FOLDER if done.outcome == "unrecognised" else PROCESSED_FOLDER)
        return
    if item.size is not None and item.size > max_bytes:  # not fetched
        parsed = ParsedBounce(
            ReportKind.UNRECOGNISED,
            problem=f"too large ({item.size:,} bytes, limit {max_bytes:,}); not read",
        )
    else:
        parsed = parse_bounce(item.data, max_bytes=max_bytes)

    def keep_aside(why: str) -> None:
        log.warning("bounce message %s: kept aside in %s: %s", item.name, UNRECOGNISED_FOLDER, why)
        store.mark_processed(
            ProcessedMessage(item.key, parsed.message_id, now, "unrecognised", why[:500])
        )
        box.move(item, UNRECOGNISED_FOLDER)
        report.unrecognised.append(f"{item.name}: {why}")

    if parsed.kind is ReportKind.UNRECOGNISED and not (matcher.signer and parsed.envelope_to):
        keep_aside(parsed.problem)
        return
    if parsed.kind is ReportKind.IGNORED:
        log.info("bounce message %s: %s; nothing recorded", item.name, parsed.problem)
        store.mark_processed(
            ProcessedMessage(item.key, parsed.message_id, now, "ignored", parsed.problem)
        )
        box.move(item, PROCESSED_FOLDER)
        report.ignored += 1
        return
    inputs, problems = match_bounce(store, parsed, matcher, now=now)
    if not inputs:
        if parsed.kind is ReportKind.UNRECOGNISED:
            keep_aside(parsed.problem)
        else:
            keep_aside(f"{parsed.kind} that matches no delivery of ours: " + "; ".join(problems))
        return
    rows = plan(store, inputs, policy=policy, source="bounces", now=now)
    complaint = any(i.kind is BounceKind.COMPLAINT for i in inputs)
    outcome = "complaint" if complaint else "bounce"
    detail = "; ".join(f"{i.kind} {i.address}" for i in inputs)
    added = store.record_bounces(
        rows, processed=ProcessedMessage(item.key, parsed.message_id, now, outcome, detail[:500])
    )
    for item_input, new in zip(inputs, added, strict=True):
        kind = str(item_input.kind)
        report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
        if item_input.kind is BounceKind.COMPLAINT:
            report.complaints += 1
        else:
            report.bounces += 1
        if new:
            report.suppressed.append(item_input.address)
        log.info(
            "bounce message %s: %s for %s (edition %s)%s",
            item.name,
            item_input.kind,
            item_input.address,
            item_input.edition,
            "; suppressed" if new else "",
        )
    box.move(item, PROCESSED_FOLDER)


def matcher_for(settings: Settings, known: Iterable[str]) -> Matcher:
    """The :class:`Matcher` of the settings (VERP when DIGEST_VERP and a secret key are set)."""
    signer = None
    envelope = envelope_sender(settings)
    if settings.verp and settings.secret_key is not None:
        signer = TokenSigner.from_settings(settings)
    return Matcher(envelope_from=envelope if signer else None, signer=signer, known=tuple(known))


def run_intake(
    settings: Settings, store: StateBackend, *, known: Iterable[str], now: datetime
) -> IntakeReport | None:
    """Open the configured bounce mailbox and process it; ``None`` if none is configured.

    Args:
        settings: mailbox, policy and VERP settings.
        store: the state store (the caller holds the sender lock).
        known: subscriber addresses (to resolve VERP references).
        now: the time to record (aware).

    Raises:
        ConfigError: the mailbox cannot be opened.
        StateError: the state store failed.
    """
    box = open_mailbox(settings)
    if box is None:
        return None
    try:
        return process_mailbox(
            store,
            box,
            policy=BouncePolicy.from_settings(settings),
            matcher=matcher_for(settings, known),
            max_bytes=settings.bounce_max_bytes,
            now=now,
        )
    finally:
        box.close()


__all__ = [
    "PROCESSED_FOLDER",
    "UNRECOGNISED_FOLDER",
    "ImapBox",
    "ImapLocation",
    "IntakeReport",
    "Mailbox",
    "MailboxItem",
    "MaildirBox",
    "Matcher",
    "match_bounce",
    "matcher_for",
    "open_mailbox",
    "process_mailbox",
    "run_intake",
]
