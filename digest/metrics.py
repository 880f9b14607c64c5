"""Prometheus metrics: this process's counters, and figures read from the shared state.

What a process counts, it reports through a :class:`Recorder`: the send path (SMTP replies,
send durations, SMTP-time bounces), the daemon (bounces read from the mailbox, fetches,
papers, what is due, the sender rates) and the web app's middleware (requests, sign-ups,
confirmations). :class:`Recorder` itself records nothing and imports nothing: it is what a
process that serves no metrics (``digest send``) passes around, so ``prometheus_client`` is
never loaded there nor in the render workers. :class:`Metrics` records into a registry of its
own (one per process, one per app in tests: nothing global), and adds the figures every
process shares, read from the state store at scrape time by :class:`StateCollector` (one
query, :meth:`~digest.state.StateBackend.state_figures`, over the editions of the daemon's
look-back, about two weeks: older rows are never sent again, and the query stays cheap).

======================================================  ==========================================
metric (type)                                           labels, meaning
======================================================  ==========================================
``digest_smtp_replies_total`` (counter)                 ``class`` 2xx/4xx/5xx, ``domain_group``
                                                        (:mod:`digest.providers`): relay replies
``digest_send_duration_seconds`` (histogram)            one SMTP transaction (or Maildir write)
``digest_bounces_total`` (counter)                      ``kind`` hard/soft/complaint: at SMTP
                                                        time and read from the bounce mailbox
``digest_source_last_success_timestamp_seconds``        ``source``: the last successful fetch
``digest_edition_papers`` (gauge)                       papers of the edition last collected
``digest_due_deliveries`` (gauge)                       (subscriber, edition) pairs due at the
                                                        last tick, not sent yet
``digest_oldest_due_age_seconds`` (gauge)               how late the oldest of them is
``digest_complaint_rate`` (gauge, ratio)                ``domain_group``: the highest complaint
                                                        rate of the recent editions
``digest_hard_bounce_rate`` (gauge, ratio)              ``domain_group``: the same, hard bounces
``digest_http_requests_total`` (counter)                ``route`` (template, never a token),
                                                        ``method``, ``status``
``digest_http_request_duration_seconds`` (histogram)    ``route``
``digest_signups_total``, ``digest_confirmations_total``  double opt-in sign-ups accepted,
                                                        confirmations
``digest_deliveries`` (gauge, state)                    ``status``: delivery rows of the
                                                        editions the daemon still looks at
``digest_oldest_owed_age_seconds`` (gauge, state)       age of the oldest ``owed`` one
``digest_suppressions`` (gauge, state)                  ``reason``: the active suppression list
``digest_sending_paused`` (gauge, state)                ``domain_group``: 1 while paused
``digest_state_up`` (gauge, state)                      1 if the state answered this scrape
======================================================  ==========================================

Plus the ``process_*`` and ``python_info`` metrics of ``prometheus_client``. Served at
``/metrics`` (:func:`metrics_route`) to loopback clients and the networks of
``DIGEST_METRICS_ALLOW``; others get 404.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from digest.clock import Clock, utc_now
from digest.errors import StateError
from digest.providers import GROUPS, domain_group
from digest.schedule import lookback_edition_keys
from digest.state import DeliveryStatus, StateBackend, SuppressionReason, redact_url

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from digest.settings import IPNetwork, Settings

log = logging.getLogger(__name__)

SEND_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Histogram buckets of one SMTP transaction, seconds (a relay on loopback: ~10 ms; the
longest, a DATA reply within DIGEST_SMTP_DATA_TIMEOUT: minutes)."""
HTTP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Histogram buckets of one web request, seconds."""
METHODS = frozenset({"GET", "HEAD", "POST"})
"""HTTP methods kept as a label value; any other is ``other`` (a client chooses the method:
its label values must not grow without bound)."""
EVENT_ROUTES = {("POST", "/subscribe"): "signup", ("POST", "/confirm/{token}"): "confirmation"}
"""Web requests that are a sign-up or a confirmation when answered 200."""
METRICS_PATH = "/metrics"


def reply_class(code: int) -> str | None:
    """``2xx``, ``4xx`` or ``5xx`` for an SMTP reply code; ``None`` for anything else."""
    if 200 <= code < 600 and code // 100 in (2, 4, 5):
        return f"{code // 100}xx"
    return None


def source_label(spec: str) -> str:
    """A source spec as a label: a ``feed:URL``'s URL without its secrets (userinfo password,
    ``token=``...: :func:`~digest.redact.redact_url`), the rest as written."""
    return redact_url(spec)


class Recorder:
    """What the send path, the daemon and the web app report; this base records nothing.

    Every method is cheap and never raises; :class:`Metrics` overrides them.
    """

    def smtp_reply(self, code: int | None, recipient: str) -> None:
        """The relay answered ``code`` (250, 451, 550...) for a message to ``recipient``."""

    def send_seconds(self, seconds: float) -> None:
        """One delivery attempt (an SMTP transaction, a Maildir write) took ``seconds``."""

    def bounce(self, kind: str, count: int = 1) -> None:
        """``count`` bounces of ``kind`` (``hard``, ``soft``, ``complaint``) were recorded."""

    def source_fetched(self, source: str, at: datetime) -> None:
        """``source`` (a spec) answered a fetch at ``at`` (aware)."""

    def edition_papers(self, count: int) -> None:
        """The edition just collected has ``count`` papers."""

    def due(self, pairs: int, oldest_age_s: float) -> None:
        """A tick found ``pairs`` deliveries due; the oldest was scheduled ``oldest_age_s`` ago."""

    def sender_rates(self, group: str, complaint_rate: float, hard_bounce_rate: float) -> None:
        """The highest complaint and hard-bounce rates (ratios) of ``group``'s recent editions."""

    def web_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """The web app answered ``status`` to ``method`` on ``route`` (its template) in
        ``seconds``."""


NO_METRICS = Recorder()
"""The recorder of a process that serves no metrics."""


class Metrics(Recorder):
    """This process's Prometheus registry and instruments (see the module doc for the names).

    Attributes:
        registry: the ``prometheus_client`` registry of this process (or app).
    """

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self._lock = threading.Lock()
        self._state: StateCollector | None = None
        self._replies = Counter(
            "digest_smtp_replies",
            "SMTP replies to our messages by class and recipient domain group.",
            ["class", "domain_group"],
            registry=registry,
        )
        self._send = Histogram(
            "digest_send_duration_seconds",
            "Duration of one delivery attempt (SMTP transaction or Maildir write).",
            buckets=SEND_SECONDS_BUCKETS,
            registry=registry,
        )
        self._bounces = Counter(
            "digest_bounces",
            "Bounces and complaints recorded, by kind (SMTP time and bounce mailbox).",
            ["kind"],
            registry=registry,
        )
        self._fetched = Gauge(
            "digest_source_last_success_timestamp_seconds",
            "When each paper source last answered a fetch (Unix time).",
            ["source"],
            registry=registry,
        )
        self._papers = Gauge(
            "digest_edition_papers", "Papers of the edition last collected.", registry=registry
        )
        self._due = Gauge(
            "digest_due_deliveries",
            "Deliveries (subscriber, edition) due and not sent at the last daemon tick.",
            registry=registry,
        )
        self._oldest_due = Gauge(
            "digest_oldest_due_age_seconds",
            "How long ago the oldest delivery due at the last tick was scheduled.",
            registry=registry,
        )
        self._complaints = Gauge(
            "digest_complaint_rate",
            "Highest complaint rate (ARF complaints / delivered) of the recent editions.",
            ["domain_group"],
            registry=registry,
        )
        self._hard = Gauge(
            "digest_hard_bounce_rate",
            "Highest hard-bounce rate (hard bounces / attempted) of the recent editions.",
            ["domain_group"],
            registry=registry,
        )
        self._requests = Counter(
            "digest_http_requests",
            "Web requests by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "digest_http_request_duration_seconds",
            "Web request latency by route template.",
            ["route"],
            buckets=HTTP_SECONDS_BUCKETS,
            registry=registry,
        )
        self._events = {
            "signup": Counter(
                "digest_signups", "Double opt-in sign-ups accepted.", registry=registry
            ),
            "confirmation": Counter(
                "digest_confirmations", "Sign-ups confirmed.", registry=registry
            ),
        }

    # -- the state's figures -------------------------------------------------------------------
    def watch_state(self, store: StateBackend, *, now: Clock = utc_now) -> None:
        """Report ``store``'s figures at each scrape (:class:`StateCollector`); the first
        store wins (``digest run`` with the web app: both see the same state)."""
        with self._lock:
            if self._state is None:
                self._state = StateCollector(store, now=now)
                self.registry.register(self._state)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (reads the state: call on a thread)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    # -- Recorder ----------------------------------------------------------------------------
    def smtp_reply(self, code: int | None, recipient: str) -> None:
        klass = reply_class(code) if code is not None else None
        if klass is not None:
            self._replies.labels(klass, domain_group(recipient)).inc()

    def send_seconds(self, seconds: float) -> None:
        self._send.observe(seconds)

    def bounce(self, kind: str, count: int = 1) -> None:
        if count > 0:
            self._bounces.labels(kind).inc(count)

    def source_fetched(self, source: str, at: datetime) -> None:
        self._fetched.labels(source_label(source)).set(at.timestamp())

    def edition_papers(self, count: int) -> None:
        self._papers.set(count)

    def due(self, pairs: int, oldest_age_s: float) -> None:
        self._due.set(pairs)
        self._oldest_due.set(max(0.0, oldest_age_s))

    def sender_rates(self, group: str, complaint_rate: float, hard_bounce_rate: float) -> None:
        self._complaints.labels(group).set(complaint_rate)
        self._hard.labels(group).set(hard_bounce_rate)

    def web_request(self, method: str, route: str, status: int, seconds: float) -> None:
        shown = method if method in METHODS else "other"
        self._requests.labels(route, shown, str(status)).inc()
        self._latency.labels(route).observe(seconds)
        event = EVENT_ROUTES.get((method, route))
        if event is not None and status == 200:
            self._events[event].inc()


class StateCollector:
    """A custom collector: the figures every process shares, read from the state per scrape.

    One query (:meth:`~digest.state.StateBackend.state_figures`). A state that does not
    answer makes ``digest_state_up`` 0 (logged once until it answers again); the scrape
    still succeeds with this process's own metrics.

    Args:
        store: the state store.
        now: the clock (aware UTC) for the ages.
    """

    def __init__(self, store: StateBackend, *, now: Clock = utc_now) -> None:
        self.store = store
        self.now = now
        self._failing = False

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by the registry at each scrape)."""
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("digest_state_up", "1 if the state store answered this scrape.")
        now = self.now()
        try:
            figures = self.store.state_figures(lookback_edition_keys(now))
        except StateError as e:
            if not self._failing:
                log.warning("metrics: the state store did not answer: %s", e)
            self._failing = True
            up.add_metric([], 0)
            yield up
            return
        if self._failing:
            log.info("metrics: the state store answers again")
        self._failing = False
        up.add_metric([], 1)
        yield up
        rows = GaugeMetricFamily(
            "digest_deliveries",
            "Delivery rows of the editions the daemon still looks at, by status.",
            labels=["status"],
        )
        for status in DeliveryStatus:
            rows.add_metric([status.value], figures.statuses.get(status.value, 0))
        yield rows
        oldest = figures.oldest_owed
        yield GaugeMetricFamily(
            "digest_oldest_owed_age_seconds",
            "Age of the oldest owed delivery row of those editions (0: none owed).",
            value=(now - oldest).total_seconds() if oldest is not None else 0.0,
        )
        suppressed = GaugeMetricFamily(
            "digest_suppressions", "Active suppressions by reason.", labels=["reason"]
        )
        for reason in SuppressionReason:
            suppressed.add_metric([reason.value], figures.suppressions.get(reason.value, 0))
        yield suppressed
        paused = GaugeMetricFamily(
            "digest_sending_paused",
            "1 while sending to a recipient domain group is paused (digest resume).",
            labels=["domain_group"],
        )
        for group in GROUPS:
            paused.add_metric([group.value], 1 if group.value in figures.paused else 0)
        yield paused


# -- serving /metrics ------------------------------------------------------------------------------


def client_allowed(host: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether a client at ``host`` may read ``/metrics``: a loopback address, or one in
    ``networks`` (DIGEST_METRICS_ALLOW). An IPv4-mapped IPv6 address counts as its IPv4
    address; anything that is not an IP address (a Unix socket, none) is refused."""
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in network for network in networks)


def metrics_route(metrics: Metrics, settings: Settings) -> Route:
    """``GET /metrics``: the registry in the Prometheus text format, to allowed clients only
    (:func:`client_allowed`; the others get 404, as if there were no such page)."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Route

    networks = settings.metrics_networks

    async def endpoint(request: Request) -> Response:
        if not client_allowed(request.client.host if request.client else None, networks):
            raise HTTPException(404)
        body = await asyncio.to_thread(metrics.exposition)
        headers = {"Cache-Control": "no-store"}
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)

    return Route(METRICS_PATH, endpoint, methods=["GET"])
