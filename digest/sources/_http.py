"""One bounded HTTP GET with our timeout, retries and backoff; shared by ``hf`` and ``feed``.

Bounds (issue 8: a source must never hang a send or the daemon, nor fill the memory):

* ``timeout_s`` applies to each network operation (connect, each read, write);
* ``deadline_s`` bounds the whole fetch: every attempt, backoff and ``Retry-After`` wait, and
  the reading of the body. A server that trickles one byte a second passes every read timeout
  and is still cut off at the deadline;
* ``max_bytes`` bounds the body: a declared ``Content-Length`` above it is refused before the
  body is read, and a body that grows past it while streaming is abandoned at once. The limit
  counts decoded bytes (after gzip/deflate), so a compression bomb is cut off too.

Retried: connection errors, timeouts and other transport failures, 5xx replies, and
``429 Too Many Requests``. A 429 or 503 with ``Retry-After`` (delta-seconds or an HTTP-date,
RFC 9110 §10.2.3) is retried after that delay when it fits in what is left of the deadline;
otherwise the fetch fails at once instead of sleeping into the deadline. Not retried: other 4xx
replies (the request itself is wrong), a body over ``max_bytes``. Every failure ends as one
:class:`~digest.errors.SourceError` naming the URL and the last problem.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from digest import __version__
from digest.errors import SourceError
from digest.settings import (
    DEFAULT_HTTP_DEADLINE_S,
    DEFAULT_HTTP_MAX_BYTES,
    DEFAULT_HTTP_RETRIES,
    DEFAULT_HTTP_TIMEOUT_S,
    Settings,
)
from digest.sources._text import collapse_ws

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted paper digest; python-httpx)"
DEFAULT_RETRY_BASE_S = 1.0
"""First backoff delay in seconds; then doubled per retry (1 s, 2 s, 4 s...)."""
DEFAULT_RETRY_MAX_S = 30.0
"""Upper bound of one backoff delay, seconds."""
ERROR_BODY_CHARS = 200
"""How much of a 4xx reply's body goes into the error message, characters."""
ERROR_BODY_MAX_BYTES = 64 * 1024
"""How much of an error reply's body is read at most, bytes (the rest is not downloaded)."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose ``Retry-After`` header is honoured (RFC 9110 §10.2.3, RFC 6585 §4)."""


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How a source talks HTTP.

    Attributes:
        timeout_s: timeout of each network operation (connect, read, write), seconds.
        retries: retries after the first attempt on transport errors, 5xx and 429 (0 = one
            try).
        retry_base_s: first backoff delay, seconds, doubled on each retry; tests pass ``0``.
        retry_max_s: cap on one backoff delay, seconds.
        deadline_s: the whole fetch (all attempts, waits and the body), seconds.
        max_bytes: the largest body accepted, bytes (decoded).
    """

    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    retries: int = DEFAULT_HTTP_RETRIES
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    deadline_s: float = DEFAULT_HTTP_DEADLINE_S
    max_bytes: int = DEFAULT_HTTP_MAX_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Options from ``DIGEST_HTTP_TIMEOUT``, ``_RETRIES``, ``_DEADLINE``, ``_MAX_BYTES``."""
        return cls(
            timeout_s=settings.http_timeout,
            retries=settings.http_retries,
            deadline_s=settings.http_deadline,
            max_bytes=settings.http_max_bytes,
        )


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A fully read reply with a 2xx or 304 status.

    Attributes:
        url: the final URL (after redirects).
        status_code: 2xx or 304.
        headers: the response headers (case-insensitive).
        content: the body, decoded from any ``Content-Encoding``; at most ``max_bytes``.
    """

    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes


class _RetryableStatus(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status
        self.retry_after = retry_after


class _Refused(Exception):
    """A final answer, not retried: a 4xx (not 429), an unexpected status, a body too large."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatus | _Refused):
        return str(exc)
    text = collapse_ws(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _excerpt(body: bytes, encoding: str | None) -> str:
    try:
        text = collapse_ws(body.decode(encoding or "utf-8", errors="replace"))
    except LookupError:
        return ""
    if len(text) > ERROR_BODY_CHARS:
        text = text[:ERROR_BODY_CHARS] + "…"
    return f": {text}" if text else ""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for, seconds (RFC 9110 §10.2.3).

    Args:
        value: the header value: delta-seconds (``"120"``) or an HTTP-date
            (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
        now: the current time (UTC) for an HTTP-date; default the system clock.

    Returns:
        The delay, never negative (a date in the past is 0), or ``None`` when the header is
        absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def http_get(
    url: str,
    /,
    *,
    source: str,
    options: HttpOptions,
    client: httpx.AsyncClient | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpReply:
    """GET ``url`` within ``options``' bounds, with retries; redirects are followed.

    Args:
        url: the absolute http(s) URL.
        source: the source's name, for errors and logs.
        options: timeouts and the deadline (seconds), the size limit (bytes), the retry policy.
        client: a shared client (kept open); ``None`` makes a short-lived one for this call.
            Our timeout, deadline and size limit apply to each request either way.
        params: query parameters added to ``url``.
        headers: extra request headers (e.g. ``If-None-Match``).

    Returns:
        The reply, body read, with a 2xx or 304 status.

    Raises:
        SourceError: a 4xx reply other than 429 (at once); a body over ``options.max_bytes``
            (at once); no complete answer within ``options.deadline_s``; a ``Retry-After``
            beyond the deadline; transport errors / 5xx / 429 on every attempt.
    """
    full_url = str(httpx.URL(url, params=params))
    try:
        async with asyncio.timeout(options.deadline_s):
            if client is None:
                async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as own:
                    return await _get(
                        own, full_url, source=source, options=options, headers=headers
                    )
            return await _get(client, full_url, source=source, options=options, headers=headers)
    except TimeoutError:
        raise SourceError(
            source,
            f"GET {full_url}: no complete answer within {options.deadline_s:g} s "
            "(DIGEST_HTTP_DEADLINE); gave up",
        ) from None


async def _get(
    client: httpx.AsyncClient,
    url: str,
    *,
    source: str,
    options: HttpOptions,
    headers: Mapping[str, str] | None,
) -> HttpReply:
    attempts = options.retries + 1
    started = time.monotonic()
    backoff = wait_exponential(multiplier=options.retry_base_s, max=options.retry_max_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableStatus) and exc.retry_after is not None:
            return exc.retry_after
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "source %s: GET %s failed (attempt %d of %d: %s); retrying in %.1f s",
            source,
            url,
            state.attempt_number,
            attempts,
            _describe(exc) if exc else "?",
            delay,
        )

    retrying = AsyncRetrying(
        # A wait that would end past the deadline stops now rather than sleep into it.
        stop=stop_after_attempt(attempts) | stop_before_delay(options.deadline_s),
        wait=wait,
        retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
        before_sleep=before_sleep,
        reraise=True,
    )
    request_headers: dict[str, Any] = dict(headers or {})
    done = 0
    try:
        async for attempt in retrying:
            with attempt:
                done += 1
                reply = await _attempt(client, url, request_headers, options)
    except _RetryableStatus as e:
        waited = e.retry_after is not None and done < attempts
        if waited and e.retry_after is not None:
            left = options.deadline_s - (time.monotonic() - started)
            raise SourceError(
                source,
                f"GET {url}: {e}, asked to retry after {e.retry_after:g} s (Retry-After), "
                f"more than the {max(left, 0.0):.0f} s left of DIGEST_HTTP_DEADLINE "
                f"({options.deadline_s:g} s)",
            ) from e
        raise SourceError(source, _failed(url, done, e)) from e
    except httpx.TransportError as e:
        raise SourceError(source, _failed(url, done, e)) from e
    except _Refused as e:
        raise SourceError(source, f"GET {url}: {e}") from e
    except httpx.HTTPError as e:  # e.g. too many redirects, invalid URL
        raise SourceError(source, f"GET {url} failed: {_describe(e)}") from e
    return reply


def _failed(url: str, attempts: int, exc: BaseException) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return f"GET {url} failed after {tries}: {_describe(exc)}"


async def _attempt(
    client: httpx.AsyncClient, url: str, headers: dict[str, Any], options: HttpOptions
) -> HttpReply:
    """One request, the body streamed and bounded; raises for statuses that are not usable."""
    async with client.stream(
        "GET", url, headers=headers, timeout=options.timeout_s, follow_redirects=True
    ) as response:
        status = response.status_code
        if 200 <= status < 300:
            content = await _read_bounded(response, options.max_bytes)
            return HttpReply(str(response.url), status, response.headers, content)
        if status == 304:
            return HttpReply(str(response.url), status, response.headers, b"")
        if status >= 500 or status == 429:
            retry_after = None
            if status in RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _RetryableStatus(status, response.reason_phrase, retry_after)
        if 400 <= status < 500:
            body = await _read_bounded(response, ERROR_BODY_MAX_BYTES, truncate=True)
            raise _Refused(
                f"HTTP {status} {response.reason_phrase} (not retried)"
                f"{_excerpt(body, response.charset_encoding)}"
            )
        raise _Refused(f"unexpected HTTP {status} {response.reason_phrase}")


async def _read_bounded(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The body, read chunk by chunk; past ``limit`` bytes: raise, or stop if ``truncate``."""
    declared = response.headers.get("content-length", "").strip()
    # Content-Length counts encoded bytes: a compressed body is larger still once decoded.
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _Refused(
            f"the response is {int(declared):,} bytes (Content-Length), more than "
            f"DIGEST_HTTP_MAX_BYTES ({limit:,} bytes); refused without reading it (not retried)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                chunks.append(chunk[: limit - (size - len(chunk))])
                break
            raise _Refused(
                f"the response grew past DIGEST_HTTP_MAX_BYTES ({limit:,} bytes); "
                "stopped reading it (not retried)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
