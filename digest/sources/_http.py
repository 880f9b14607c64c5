"""One HTTP GET with our timeout, retries and exponential backoff; shared by ``hf`` and ``feed``.

Retried: connection errors, timeouts and other transport failures, and 5xx replies. Not
retried: 4xx replies (the request itself is wrong; retrying cannot help). Every failure ends as
one :class:`~digest.errors.SourceError` naming the URL and the last problem.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from digest import __version__
from digest.errors import SourceError
from digest.settings import DEFAULT_HTTP_RETRIES, DEFAULT_HTTP_TIMEOUT_S, Settings
from digest.sources._text import collapse_ws

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted paper digest; python-httpx)"
DEFAULT_RETRY_BASE_S = 1.0
"""First backoff delay in seconds; then doubled per retry (1 s, 2 s, 4 s...)."""
DEFAULT_RETRY_MAX_S = 30.0
"""Upper bound of one backoff delay, seconds."""
ERROR_BODY_CHARS = 200
"""How much of a 4xx reply's body goes into the error message, characters."""


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How a source talks HTTP.

    Attributes:
        timeout_s: timeout of each network operation (connect, read, write), seconds.
        retries: retries after the first attempt on transport errors and 5xx (0 = one try).
        retry_base_s: first backoff delay, seconds, doubled on each retry; tests pass ``0``.
        retry_max_s: cap on one backoff delay, seconds.
    """

    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    retries: int = DEFAULT_HTTP_RETRIES
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Options from ``settings.http_timeout`` (seconds) and ``settings.http_retries``."""
        return cls(timeout_s=settings.http_timeout, retries=settings.http_retries)


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code} {response.reason_phrase}".strip())
        self.response = response


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatus):
        return str(exc)
    text = collapse_ws(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _body_excerpt(response: httpx.Response) -> str:
    try:
        text = collapse_ws(response.text)
    except (UnicodeDecodeError, LookupError):
        return ""
    if len(text) > ERROR_BODY_CHARS:
        text = text[:ERROR_BODY_CHARS] + "…"
    return f": {text}" if text else ""


async def http_get(
    url: str,
    /,
    *,
    source: str,
    options: HttpOptions,
    client: httpx.AsyncClient | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """GET ``url`` with retries; redirects are followed.

    Args:
        url: the absolute http(s) URL.
        source: the source's name, for errors and logs.
        options: timeout (seconds) and retry policy.
        client: a shared client (kept open); ``None`` makes a short-lived one for this call.
            Our timeout applies to each request either way.
        params: query parameters added to ``url``.
        headers: extra request headers (e.g. ``If-None-Match``).

    Returns:
        The response, body read, with a 2xx or 304 status.

    Raises:
        SourceError: a 4xx reply (at once), or transport errors / 5xx replies on every attempt.
    """
    full_url = str(httpx.URL(url, params=params))
    if client is None:
        async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as own:
            return await _get(own, full_url, source=source, options=options, headers=headers)
    return await _get(client, full_url, source=source, options=options, headers=headers)


async def _get(
    client: httpx.AsyncClient,
    url: str,
    *,
    source: str,
    options: HttpOptions,
    headers: Mapping[str, str] | None,
) -> httpx.Response:
    attempts = options.retries + 1

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
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=options.retry_base_s, max=options.retry_max_s),
        retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
        before_sleep=before_sleep,
        reraise=True,
    )
    request_headers: dict[str, Any] = dict(headers or {})
    try:
        async for attempt in retrying:
            with attempt:
                response = await client.get(
                    url,
                    headers=request_headers,
                    timeout=options.timeout_s,
                    follow_redirects=True,
                )
                if response.status_code >= 500:
                    raise _RetryableStatus(response)
    except (httpx.TransportError, _RetryableStatus) as e:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise SourceError(source, f"GET {url} failed after {tries}: {_describe(e)}") from e
    except httpx.HTTPError as e:  # e.g. too many redirects, invalid URL
        raise SourceError(source, f"GET {url} failed: {_describe(e)}") from e

    status = response.status_code
    if 200 <= status < 300 or status == 304:
        return response
    if 400 <= status < 500:
        raise SourceError(
            source,
            f"GET {url}: HTTP {status} {response.reason_phrase} (not retried)"
            f"{_body_excerpt(response)}",
        )
    raise SourceError(source, f"GET {url}: unexpected HTTP {status} {response.reason_phrase}")
