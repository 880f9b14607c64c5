"""Settings: defaults, then ``.env``, then the environment (``DIGEST_`` prefix), then flags.

Every field maps to one environment variable, ``DIGEST_<FIELD>`` (``DIGEST_FROM`` for
:attr:`Settings.sender`). Secrets (SMTP password, secret key, DKIM key) are ``SecretStr``: they
never appear in ``repr()``, logs, errors or the state file.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    IPvAnyAddress,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.addresses import mailbox_problem
from digest.errors import ConfigError, field_message

DEFAULT_HF_API_URL = "https://huggingface.co/api/daily_papers"
DEFAULT_SUBSCRIBERS_PATH = Path("subscribers.yaml")
SUBSCRIBERS_IN_STATE = "state"
"""The DIGEST_SUBSCRIBERS value that keeps the list in the state store (exactly this)."""
DEFAULT_STATE_PATH = Path("digest-state.sqlite3")
DEFAULT_STATE_LEASE_S = 60.0
"""Default lease of a claim on a shared (PostgreSQL) state, seconds (as ``DEFAULT_LEASE_S``)."""
DEFAULT_OUTBOX = Path("outbox")
DEFAULT_SENDER = "Daily Papers <digest@localhost>"
DEFAULT_HTTP_TIMEOUT_S = 20.0
DEFAULT_HTTP_RETRIES = 3
DEFAULT_HTTP_DEADLINE_S = 120.0
"""Longest one source fetch may take, seconds: every attempt, backoff and Retry-After wait,
and reading the body (a server trickling bytes passes every read timeout, not this)."""
DEFAULT_HTTP_MAX_BYTES = 20 * 1024 * 1024
"""Largest source response accepted, bytes (20 MiB; a Daily Papers day is about 0.3 MB, an
arXiv RSS feed a few MB)."""
DEFAULT_SMTP_TIMEOUT_S = 30.0
DEFAULT_SMTP_DATA_TIMEOUT_S = 600.0
"""How long to wait for the reply to the final ``.`` of DATA, seconds: RFC 5321 §4.5.3.2.6
("DATA Termination: 10 minutes"). A relay may scan the message before it answers, and giving
up early does not save a copy: the message was sent and becomes ``unknown``."""
DEFAULT_SMTP_CONCURRENCY = 4
DEFAULT_SMTP_MAX_ATTEMPTS = 5
DEFAULT_SMTP_CONNECT_ATTEMPTS_PER_MINUTE = 6
"""While a relay refuses connections (421 greeting, dropped during set-up), the whole pool makes
at most this many connection attempts a minute (one every 10 s)."""
DEFAULT_SMTP_RETRY_BASE_S = 1.0
DEFAULT_SMTP_BREAKER_AFTER = 5
"""Messages in a row whose outcome is ``unknown`` (the reply to the end of data lost or
stalled) or whose attempt timed out, after which a run stops (circuit breaker): a relay that
loses every reply would otherwise turn a whole list into ``unknown``, and a stalled one would
hold each message for DIGEST_SMTP_DATA_TIMEOUT (200 messages, pool 4: about 8 hours)."""
DEFAULT_CATCHUP_HOURS = 12.0
DEFAULT_TICK_SECONDS = 60.0
DEFAULT_RENDER_WORKERS_MAX = 2
"""Default number of render processes for a large send: this many, or one fewer than the
CPUs (one core stays with the sending process: SMTP, TLS, state writes)."""
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080
DEFAULT_SIGNUP_PER_CLIENT_HOUR = 10
DEFAULT_SIGNUP_PER_ADDRESS_DAY = 3
DEFAULT_BOUNCE_HARD_LIMIT = 1
DEFAULT_BOUNCE_SOFT_LIMIT = 5.0
DEFAULT_BOUNCE_RESET_DAYS = 7.0
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_COMPLAINT_WARN_PERCENT = 0.1
"""Complaint rate above which the daemon warns, percent: Gmail's "keep it under 0.1 %"."""
DEFAULT_COMPLAINT_PAUSE_PERCENT = 0.3
"""Complaint rate above which the daemon pauses a domain group, percent: where Gmail starts to
refuse a bulk sender's mail ("never reach 0.3 %")."""
MAX_SHOWN_INPUT_CHARS = 60
"""Characters of a refused value an error message quotes."""
DEFAULT_BOUNCE_MAX_BYTES = 2_000_000
"""Largest bounce message read; a bigger one is kept aside unread (our editions are ~100 kB)."""
SMTP_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MIN_SECRET_KEY_CHARS = 32
"""Shortest DIGEST_SECRET_KEY accepted, characters (``secrets.token_urlsafe(32)`` gives 43)."""
MIN_SECRET_KEY_DISTINCT_CHARS = 8
"""Fewest different characters in DIGEST_SECRET_KEY: a random key of 32 characters has about
14 (hex) to 25 (base64); ``aaaa...`` or ``abab...`` is guessable whatever its length."""
EXAMPLE_SECRET_KEY = "change-me-to-a-long-random-string"
"""The placeholder of ``.env.example``: public, so refused as a key."""
SECRET_KEY_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

SmtpSecurity = Literal["starttls", "tls", "none"]
_SPACE_OR_CONTROL_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


class Settings(BaseSettings):
    """All of ``digest``'s settings. Environment variable names are ``DIGEST_`` + field name.

    Raises:
        pydantic.ValidationError: on construction with bad values; use :func:`load_settings`
            to get a :class:`~digest.errors.ConfigError` listing every problem instead.
    """

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- sources -------------------------------------------------------------------------
    sources: str = Field(
        "hf",
        description="Comma-separated paper sources: 'hf', 'file:PATH', 'feed:URL'.",
    )
    hf_api_url: str = Field(DEFAULT_HF_API_URL, description="Daily Papers API endpoint.")
    http_timeout: float = Field(DEFAULT_HTTP_TIMEOUT_S, gt=0, description="HTTP timeout, s.")
    http_retries: int = Field(
        DEFAULT_HTTP_RETRIES, ge=0, description="Retries on errors, 5xx and 429."
    )
    http_deadline: float = Field(
        DEFAULT_HTTP_DEADLINE_S,
        gt=0,
        description="Whole fetch of one source: attempts, waits (Retry-After), body; s.",
    )
    http_max_bytes: int = Field(
        DEFAULT_HTTP_MAX_BYTES, ge=1024, description="Largest source response, bytes."
    )

    # --- files ---------------------------------------------------------------------------
    subscribers: Path = Field(
        DEFAULT_SUBSCRIBERS_PATH,
        description=(
            "The subscriber list: a YAML file, or 'state' (exactly that): a table in the state "
            "(DIGEST_STATE_URL), edited with `digest subscribers import/export/edit`."
        ),
    )
    state_path: Path = Field(DEFAULT_STATE_PATH, description="SQLite state file.")
    state_url: SecretStr | None = Field(
        None,
        description=(
            "Where the state lives: 'sqlite:///path' (a file; default: DIGEST_STATE_PATH) or "
            "'postgresql://user@host/db' (shared by several senders and hosts). A secret: the "
            "URL may carry a password."
        ),
    )
    state_lease_seconds: float = Field(
        DEFAULT_STATE_LEASE_S,
        ge=1,
        description="PostgreSQL: how long a dead sender's claim lasts before it is 'unknown', s.",
    )
    outbox: Path = Field(DEFAULT_OUTBOX, description="Maildir used when no SMTP host is set.")
    templates_dir: Path | None = Field(None, description="Directory overriding the templates.")

    # --- message -------------------------------------------------------------------------
    sender: str = Field(
        DEFAULT_SENDER,
        validation_alias=AliasChoices("DIGEST_FROM", "sender"),
        description="From header, e.g. 'Daily Papers <papers@example.org>'.",
    )
    envelope_from: str | None = Field(
        None, description="Envelope sender (SMTP MAIL FROM, Return-Path); default: From address."
    )
    reply_to: str | None = Field(None, description="Optional Reply-To header.")
    list_name: str | None = Field(
        None,
        max_length=60,
        description=(
            "The list's name in subjects, the email, the web pages, the confirmation email and "
            "the Atom feed; default 'Daily Papers' ('Weekly Papers' for weekly editions)."
        ),
    )
    unsubscribe_url: str | None = Field(
        None,
        description=(
            "Only for an unsubscribe handler of your own: its HTTPS URL with '{token}' (and "
            "optionally '{email}'); default: DIGEST_PUBLIC_URL/u/{token}, which digest serve "
            "answers."
        ),
    )
    unsubscribe_mailto: str | None = Field(
        None, description="mailto address for List-Unsubscribe, e.g. 'unsubscribe@example.org'."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key signing the per-subscriber links (unsubscribe, preferences, confirm).",
    )
    secret_key_previous: SecretStr | None = Field(
        None, description="The key before a rotation: its links are still accepted."
    )
    public_url: str | None = Field(
        None,
        description=(
            "External base URL of `digest serve` (https://papers.example.org): every link in "
            "the email points at the app."
        ),
    )
    postal_address: str | None = Field(
        None, description="The sender's postal address, shown in the email footer (CAN-SPAM)."
    )
    site_url: str = Field(
        "https://huggingface.co/papers", description="Link shown in the email header."
    )

    # --- SMTP ----------------------------------------------------------------------------
    smtp_host: str | None = Field(None, description="SMTP relay; unset = write to Maildir.")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="Default by security.")
    smtp_username: str | None = Field(
        None, description="AUTH user name (AUTH only over TLS).", examples=["papers@example.org"]
    )
    smtp_password: SecretStr | None = Field(None, description="AUTH password (a secret).")
    smtp_security: SmtpSecurity = Field(
        "starttls",
        description=(
            "starttls (required, certificate checked), tls (implicit, port 465), none "
            "(loopback only unless DIGEST_SMTP_ALLOW_PLAINTEXT)."
        ),
    )
    smtp_timeout: float = Field(DEFAULT_SMTP_TIMEOUT_S, gt=0, description="Per operation, s.")
    smtp_data_timeout: float = Field(
        DEFAULT_SMTP_DATA_TIMEOUT_S, gt=0, description="Reply to the end of DATA, s."
    )
    smtp_concurrency: int = Field(
        DEFAULT_SMTP_CONCURRENCY, ge=1, le=64, description="Connections in the pool."
    )
    smtp_rate: float | None = Field(None, gt=0, description="Messages per second, whole pool.")
    smtp_max_attempts: int = Field(DEFAULT_SMTP_MAX_ATTEMPTS, ge=1, description="Per run.")
    smtp_connect_attempts_per_minute: int = Field(
        DEFAULT_SMTP_CONNECT_ATTEMPTS_PER_MINUTE,
        ge=1,
        description="Whole pool, while the relay refuses connections.",
    )
    smtp_retry_base: float = Field(DEFAULT_SMTP_RETRY_BASE_S, ge=0, description="Backoff, s.")
    smtp_breaker_after: int = Field(
        DEFAULT_SMTP_BREAKER_AFTER,
        ge=0,
        description="Stop a run after this many unknown or timed-out messages in a row; 0 = never.",
    )
    smtp_allow_plaintext: bool = Field(
        False, description="Allow security 'none' to a relay that is not on this machine."
    )
    smtp_ca_file: Path | None = Field(
        None, description="A private CA bundle for the relay's certificate (default: system)."
    )

    # --- DKIM ----------------------------------------------------------------------------
    dkim_selector: str | None = Field(
        None, description="DKIM selector (the key is published at SELECTOR._domainkey.DOMAIN)."
    )
    dkim_domain: str | None = Field(None, description="DKIM signing domain (d=).")
    dkim_private_key_path: Path | None = Field(
        None, description="The DKIM private key (PEM, readable by digest only)."
    )
    sending_ip: IPvAnyAddress | None = Field(
        None,
        description=(
            "The public IP address receivers see the mail come from, when it is not "
            "DIGEST_SMTP_HOST's (a relay on this machine, a provider's submission host); "
            "`digest doctor` checks SPF and reverse DNS for it."
        ),
    )

    # --- daemon --------------------------------------------------------------------------
    catchup_hours: float = Field(
        DEFAULT_CATCHUP_HOURS,
        ge=0,
        description="After downtime, send an edition at most this late, hours (later: skipped).",
    )
    tick_seconds: float = Field(DEFAULT_TICK_SECONDS, gt=0, description="Daemon period, s.")
    health_file: Path | None = Field(
        None, description="A file the daemon touches after each good tick (for monitoring)."
    )

    # --- bounces and complaints -------------------------------------------------------------
    bounce_maildir: Path | None = Field(
        None, description="Maildir of the bounce mailbox read by `digest bounces`."
    )
    bounce_imap_url: str | None = Field(
        None, description="imaps://USER@HOST[:PORT]/MAILBOX of the bounce mailbox (TLS only)."
    )
    bounce_imap_password: SecretStr | None = Field(
        None, description="The bounce mailbox's IMAP password (a secret)."
    )
    bounce_imap_ca_file: Path | None = Field(
        None, description="CA bundle for the IMAP server's certificate (default: system)."
    )
    bounce_on_tick: bool = Field(
        True, description="The daemon reads the bounce mailbox at every tick (when one is set)."
    )
    bounce_hard_limit: int = Field(
        DEFAULT_BOUNCE_HARD_LIMIT, ge=0, description="Hard bounces that suppress (0 = never)."
    )
    bounce_soft_limit: float = Field(
        DEFAULT_BOUNCE_SOFT_LIMIT, ge=0, description="Soft-bounce score that suppresses."
    )
    bounce_reset_days: float = Field(
        DEFAULT_BOUNCE_RESET_DAYS, gt=0, description="Quiet days after which the score resets."
    )
    bounce_suppress_complaints: bool = Field(True, description="One complaint suppresses.")
    bounce_max_bytes: int = Field(
        DEFAULT_BOUNCE_MAX_BYTES,
        ge=10_000,
        description="Largest bounce message read, bytes (a bigger one is kept aside unread).",
    )
    verp: bool = Field(
        False, description="Envelope sender bounces+TOKEN@domain naming subscriber and edition."
    )

    # --- web app (digest serve) ------------------------------------------------------------
    http_host: str = Field(DEFAULT_HTTP_HOST, description="Address `digest serve` listens on.")
    http_port: int | None = Field(
        None, ge=1, le=65535, description="Port; when set, `digest run` also serves the app."
    )
    signup: bool = Field(True, description="false: no sign-up form on the web app.")
    welcome: bool = Field(
        True,
        description=(
            "Send a welcome email on a confirmed sign-up and a resubscribe (what the list is, "
            "when the first edition comes, the preferences link); false: none."
        ),
    )
    signup_per_client_hour: int = Field(
        DEFAULT_SIGNUP_PER_CLIENT_HOUR, ge=1, description="Sign-ups per client address per hour."
    )
    signup_per_address_day: int = Field(
        DEFAULT_SIGNUP_PER_ADDRESS_DAY,
        ge=1,
        description="Confirmation emails per target address per 24 h.",
    )

    # --- monitoring and sender reputation ---------------------------------------------------
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "`digest run` also serves Prometheus metrics at /metrics on this port alone "
            "(the web app serves them on its own port too)."
        ),
    )
    metrics_host: str = Field(
        DEFAULT_METRICS_HOST, description="Address DIGEST_METRICS_PORT listens on."
    )
    metrics_allow: str = Field(
        "",
        description=(
            "Comma-separated IP addresses or networks (CIDR, e.g. 10.0.0.0/8) that may read "
            "/metrics besides loopback clients; others get 404."
        ),
    )
    complaint_warn_percent: float = Field(
        DEFAULT_COMPLAINT_WARN_PERCENT,
        ge=0,
        le=100,
        description=(
            "Complaint rate (ARF complaints ÷ delivered, per edition and domain group) above "
            "which the daemon logs a warning, percent; 0 = off."
        ),
    )
    complaint_pause_percent: float = Field(
        DEFAULT_COMPLAINT_PAUSE_PERCENT,
        ge=0,
        le=100,
        description=(
            "Complaint rate above which the daemon pauses sending to that domain group (gmail, "
            "outlook, yahoo, other) until `digest resume GROUP`, percent; 0 = never pause."
        ),
    )

    # --- ranking -------------------------------------------------------------------------
    embeddings: str = Field(
        "wordllama",
        description=(
            "Embedding model for interests and liked papers: 'wordllama' (bundled, offline), "
            "'sentence-transformers:/path/to/model' (optional extra), or 'off'."
        ),
    )
    vector_cache: Path | None = Field(
        None, description="Vector cache file; default: the state file's path + '.vectors'."
    )
    arxiv_api_url: str | None = Field(
        None,
        description=(
            "arXiv API query endpoint (https://export.arxiv.org/api/query) used to fetch a "
            "liked paper that no stored edition lists; unset: such a like is skipped."
        ),
    )
    orcid_api_url: str | None = Field(
        None,
        description=(
            "ORCID public API (https://pub.orcid.org/v3.0) for a subscriber's 'orcid:' works; "
            "unset: 'orcid:' is skipped with a warning."
        ),
    )
    semantic_scholar_api_url: str | None = Field(
        None,
        description=(
            "Semantic Scholar Graph API (https://api.semanticscholar.org/graph/v1) for a "
            "subscriber's 'semantic_scholar:' author papers; unset: skipped with a warning."
        ),
    )
    reader_cache: Path | None = Field(
        None,
        description=(
            "Reader cache file (parsed libraries, author lists, trained reader models); "
            "default: the state file's path + '.reader'."
        ),
    )

    # --- rendering -----------------------------------------------------------------------
    thumbnails: bool = Field(
        False,
        description="Show each paper's thumbnail (Hugging Face's, HTTPS only) above its title.",
    )
    render_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description=(
            "Processes that rank, render and build the messages of a large send "
            "(0 = in the sending process); default min(2, CPUs - 1)."
        ),
    )

    @property
    def vector_cache_path(self) -> Path:
        """The vector cache file: ``vector_cache``, else the state file's path + ``.vectors``."""
        return self.vector_cache or self.state_path.with_name(self.state_path.name + ".vectors")

    @property
    def reader_cache_path(self) -> Path:
        """The reader cache file: ``reader_cache``, else the state file's path + ``.reader``."""
        return self.reader_cache or self.state_path.with_name(self.state_path.name + ".reader")

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: str) -> str:
        specs = [s.strip() for s in value.split(",") if s.strip()]
        if not specs:
            raise ValueError("at least one source is required (e.g. 'hf' or 'file:PATH')")
        for spec in specs:
            if spec != "hf" and not spec.startswith(("file:", "feed:")):
                raise ValueError(f"unknown source {spec!r}: use 'hf', 'file:PATH' or 'feed:URL'")
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _check_metrics_allow(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def metrics_networks(self) -> tuple[IPNetwork, ...]:
        """The networks of ``metrics_allow`` (loopback clients are always allowed)."""
        return parse_networks(self.metrics_allow)

    @field_validator("secret_key", "secret_key_previous")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a key anyone could guess: the ``.env.example`` placeholder, or a short one."""
        if value is None:
            return None
        key = value.get_secret_value()
        if key.strip() == EXAMPLE_SECRET_KEY:
            raise PydanticCustomError(
                "placeholder_secret",
                "is the placeholder from .env.example, which anyone can read (and so forge "
                "unsubscribe and sign-up links); {hint}",
                {"hint": SECRET_KEY_HINT},
            )
        if len(key) < MIN_SECRET_KEY_CHARS:
            raise PydanticCustomError(
                "short_secret",
                "is {length} characters long, at least {minimum} are needed; {hint}",
                {"length": len(key), "minimum": MIN_SECRET_KEY_CHARS, "hint": SECRET_KEY_HINT},
            )
        weakness = _key_weakness(key)
        if weakness:
            raise PydanticCustomError(
                "weak_secret",
                "{weakness}: anyone could guess it (and forge links); {hint}",
                {"weakness": weakness, "hint": SECRET_KEY_HINT},
            )
        return value

    @field_validator("sender", "reply_to")
    @classmethod
    def _check_mailbox(cls, value: str | None) -> str | None:
        """One mailbox whose name, once decoded, is plain text (it goes into every header)."""
        if value is None:
            return None
        problem = mailbox_problem(value)
        if problem is not None:
            raise PydanticCustomError("mailbox", problem)
        return value

    @field_validator("envelope_from", "unsubscribe_mailto", "unsubscribe_url", "public_url")
    @classmethod
    def _check_one_word(cls, value: str | None) -> str | None:
        """An address or URL bound for a header or an SMTP command: no spaces, no controls."""
        if value is not None and _SPACE_OR_CONTROL_RE.search(value.strip()):
            raise PydanticCustomError(
                "spaces", "must not contain spaces, line breaks or control characters"
            )
        return value

    @field_validator("list_name")
    @classmethod
    def _check_list_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = " ".join(value.split())
        if not name or not name.isprintable() or any(c in name for c in '<>"\\'):
            raise ValueError("write a short plain name, e.g. 'Lab Papers' (no < > \" \\)")
        return name

    @field_validator("unsubscribe_url")
    @classmethod
    def _check_unsubscribe_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (RFC 8058 one-click needs HTTPS)")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError(
                "must be the app's base URL, e.g. https://papers.example.org (no query)"
            )
        return value

    @property
    def source_specs(self) -> list[str]:
        """The configured sources as a list, e.g. ``["hf", "file:examples/hf-daily-papers"]``."""
        return [s.strip() for s in self.sources.split(",") if s.strip()]

    @property
    def subscribers_in_state(self) -> bool:
        """Whether the subscriber list lives in the state (``DIGEST_SUBSCRIBERS=state``)."""
        return str(self.subscribers) == SUBSCRIBERS_IN_STATE

    @property
    def effective_state_url(self) -> str:
        """``state_url``'s value, or ``sqlite:///<state_path>`` when unset (the default file).

        Contains the password if the URL does: pass it only to :func:`digest.state.open_state`
        and show :func:`digest.redact.redact_url` of it.
        """
        if self.state_url is not None:
            return self.state_url.get_secret_value()
        return f"sqlite:///{self.state_path}"

    @property
    def effective_smtp_port(self) -> int:
        """``smtp_port`` or the default for ``smtp_security`` (587, 465, 25)."""
        return self.smtp_port or SMTP_DEFAULT_PORTS[self.smtp_security]

    @property
    def effective_render_workers(self) -> int:
        """``render_workers``, or ``min(DEFAULT_RENDER_WORKERS_MAX, CPUs - 1)`` when unset.

        0 means none: the sending process renders, on a thread. On 2 CPUs the default is one
        worker: with two, the workers, the sending process (and a relay on the same machine)
        compete for both cores and a send was slower (benchmarks/bench_send.py).
        """
        if self.render_workers is not None:
            return self.render_workers
        return max(0, min(DEFAULT_RENDER_WORKERS_MAX, (os.cpu_count() or 1) - 1))

    @property
    def dkim_enabled(self) -> bool:
        """True when selector, domain and key path are all set."""
        return bool(self.dkim_selector and self.dkim_domain and self.dkim_private_key_path)

    def problems(self) -> list[str]:
        """Cross-field problems that single-field validation cannot see; empty when fine."""
        out: list[str] = []
        if self.unsubscribe_url and "{token}" in self.unsubscribe_url and not self.secret_key:
            out.append("DIGEST_SECRET_KEY: required when DIGEST_UNSUBSCRIBE_URL uses {token}")
        if self.public_url and not self.secret_key:
            out.append("DIGEST_SECRET_KEY: required when DIGEST_PUBLIC_URL is set (signed links)")
        if self.verp and not self.secret_key:
            out.append("DIGEST_SECRET_KEY: required when DIGEST_VERP=true (signed VERP tokens)")
        if self.bounce_maildir and self.bounce_imap_url:
            out.append("DIGEST_BOUNCE_MAILDIR and DIGEST_BOUNCE_IMAP_URL are both set; keep one")
        if self.bounce_imap_url and self.bounce_imap_password is None:
            out.append("DIGEST_BOUNCE_IMAP_PASSWORD: required with DIGEST_BOUNCE_IMAP_URL")
        plaintext = self.smtp_security == "none" and not self.smtp_allow_plaintext
        if self.smtp_host and plaintext and not is_loopback_host(self.smtp_host):
            out.append(
                f"DIGEST_SMTP_SECURITY: 'none' sends the password and mail in clear text to "
                f"{self.smtp_host}; use starttls/tls or set DIGEST_SMTP_ALLOW_PLAINTEXT=true"
            )
        url = self.effective_state_url
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            out.append(
                "DIGEST_STATE_URL: must start with sqlite:/// (a file) or postgresql:// "
                "(a database)"
            )
        if bool(self.smtp_username) != bool(self.smtp_password):
            out.append("DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD must be set together")
        dkim = [self.dkim_selector, self.dkim_domain, self.dkim_private_key_path]
        if any(dkim) and not all(dkim):
            out.append(
                "DKIM needs all of DIGEST_DKIM_SELECTOR, DIGEST_DKIM_DOMAIN and "
                "DIGEST_DKIM_PRIVATE_KEY_PATH"
            )
        if self.smtp_ca_file and not self.smtp_ca_file.is_file():
            out.append(f"DIGEST_SMTP_CA_FILE: {self.smtp_ca_file} does not exist")
        if self.dkim_private_key_path and not self.dkim_private_key_path.is_file():
            out.append(f"DIGEST_DKIM_PRIVATE_KEY_PATH: {self.dkim_private_key_path} does not exist")
        return out


def _key_weakness(key: str) -> str | None:
    """What makes a long enough key guessable, or ``None``: only white space, one character
    repeated, fewer than :data:`MIN_SECRET_KEY_DISTINCT_CHARS` different characters, or a
    short pattern repeated (``0123456789abcdef0123456789abcdef``). The message never quotes
    the key."""
    if not key.strip():
        return "is only white space"
    distinct = len(set(key))
    if distinct == 1:
        return "is one character repeated"
    if distinct < MIN_SECRET_KEY_DISTINCT_CHARS:
        return (
            f"has only {distinct} different characters, at least "
            f"{MIN_SECRET_KEY_DISTINCT_CHARS} are needed"
        )
    period = _period(key)
    if period * 2 <= len(key):
        return f"repeats a pattern of {period} characters"
    return None


def _period(text: str) -> int:
    """The smallest ``p`` such that ``text[i] == text[i + p]`` wherever both exist (KMP's
    prefix function: linear, whatever the length)."""
    border = [0] * len(text)
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        border[i] = k + 1 if text[i] == text[k] else k
    return len(text) - (border[-1] if text else 0)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """The comma-separated IP addresses and networks of ``text`` (DIGEST_METRICS_ALLOW).

    ``10.0.0.0/8``, ``192.0.2.7`` (one address: ``/32``), ``2001:db8::/32``; blanks around
    items and empty items are ignored.

    Raises:
        ValueError: an item is not an IP address or network (a host name, a zone index, a
            network with host bits set); the message quotes it and says what to write.
    """
    out: list[IPNetwork] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            shown = _shown(item)
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{shown} is not an IP address or network: write addresses or CIDR "
                    "networks, comma-separated (10.0.0.0/8,192.0.2.7)"
                ) from None
            raise ValueError(f"{shown} has host bits set: write the network, {network}") from None
    return tuple(out)


def _shown(value: str) -> str:
    """``value`` for an error message: quoted (controls escaped), long ones cut."""
    if len(value) > MAX_SHOWN_INPUT_CHARS:
        value = value[:MAX_SHOWN_INPUT_CHARS] + "…"
    return repr(value)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, IPv6 bracketed or not) is this machine:
    ``localhost`` or a loopback address."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ENV_PREFIX = "DIGEST_"
_HINT_CUTOFF = 0.75
"""How alike (difflib ratio) an unknown name must be to a setting's to be suggested."""


def setting_names() -> dict[str, str]:
    """Every setting's environment variable (``DIGEST_SMTP_HOST``) → its field name."""
    names = {f"{ENV_PREFIX}{field.upper()}": field for field in Settings.model_fields}
    names["DIGEST_FROM"] = names.pop("DIGEST_SENDER")
    return names


def unknown_variables(
    env_file: str | Path | None = ".env", environ: Mapping[str, str] | None = None
) -> list[str]:
    """``DIGEST_*`` variables that are no setting (a typo is otherwise silently ignored).

    Looks at the environment and at ``env_file`` (python-dotenv's parser, as pydantic-settings
    reads it); names are compared upper-cased, as the settings read them.

    Returns:
        One line each, ``DIGEST_SMTP_HOSTNAME (in .env) is not a setting; did you mean
        DIGEST_SMTP_HOST?``, sorted by name.
    """
    known = setting_names()
    found: dict[str, str] = {}
    env = os.environ if environ is None else environ
    for name in env:
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            found.setdefault(name.upper(), "in the environment")
    if env_file is not None and Path(env_file).is_file():
        for name in dotenv_values(env_file):
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
                found.setdefault(name.upper(), f"in {env_file}")
    out = []
    for name, where in sorted(found.items()):
        bare = [k.removeprefix(ENV_PREFIX) for k in known]  # the prefix makes all alike
        close = difflib.get_close_matches(
            name.removeprefix(ENV_PREFIX), bare, n=1, cutoff=_HINT_CUTOFF
        )
        hint = (
            f"; did you mean {ENV_PREFIX}{close[0]}?"
            if close
            else "; see .env.example for the settings"
        )
        out.append(f"{name} ({where}) is not a setting{hint}")
    return out


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Build :class:`Settings` from defaults, ``env_file``, the environment and ``overrides``.

    Args:
        env_file: the dotenv file to read (missing is fine), or ``None`` for none.
        **overrides: values from command-line flags, by field name; ``None`` values are ignored.

    Returns:
        The validated settings.

    Raises:
        ConfigError: listing every invalid value at once, each as ``DIGEST_FIELD: message``.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(_env_file=env_file, **given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            env = "DIGEST_FROM" if name in ("sender", "DIGEST_FROM") else f"DIGEST_{name.upper()}"
            problems.append(f"{env}: {field_message(err)}")
        raise ConfigError(_summary(problems), problems) from None
    extra = settings.problems()
    if extra:
        raise ConfigError(_summary(extra), extra)
    return settings


class _SubscribersOnly(BaseSettings):
    """Just DIGEST_SUBSCRIBERS, read the same way as :class:`Settings` (other fields ignored)."""

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    subscribers: Path = DEFAULT_SUBSCRIBERS_PATH


def configured_subscribers_path(env_file: str | Path | None = ".env") -> Path:
    """The subscribers file the settings name, even when other settings are invalid.

    Args:
        env_file: the dotenv file to read, as for :func:`load_settings`.

    Returns:
        DIGEST_SUBSCRIBERS from the environment or ``env_file``, else the default
        (``subscribers.yaml``).

    Raises:
        ConfigError: DIGEST_SUBSCRIBERS itself is invalid.
    """
    try:
        return _SubscribersOnly(_env_file=env_file).subscribers
    except ValidationError as e:
        message = e.errors()[0]["msg"] if e.errors() else "invalid"
        raise ConfigError(f"DIGEST_SUBSCRIBERS: {message}") from None


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid settings: {problems[0]}"
    return f"invalid settings ({len(problems)} problems): " + "; ".join(problems)
