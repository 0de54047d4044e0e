"""Every Prometheus metric gatekeeper exports, defined once (docs/reference.md).

With ``workers > 1`` the serve command sets ``PROMETHEUS_MULTIPROC_DIR`` before this module is
imported, so prometheus-client writes per-process files and ``/metrics`` aggregates them
(``render()`` picks the right collector). Label values are reason codes and rule ids: bounded sets.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REQUESTS = Counter(
    "gatekeeper_requests_total",
    "Requests answered by the gate, by route, final action and whether it was enforced.",
    ["route", "action", "enforced"],
)
DECISION_SECONDS = Histogram(
    "gatekeeper_decision_seconds",
    "The gate's own time per request (authn to audit), excluding the upstream.",
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "gatekeeper_stage_seconds",
    "Time spent in each pipeline stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "gatekeeper_upstream_seconds",
    "Time until the upstream answered with response headers.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
DENIALS = Counter(
    "gatekeeper_denials_total",
    "Blocked (or, in monitor mode, would-be-blocked) requests by reason code.",
    ["route", "reason"],
)
QUOTA_CONSUMED = Counter(
    "gatekeeper_quota_consumed_total",
    "Quota consumed by quota name and unit (refunds: gatekeeper_quota_refunded_total).",
    ["quota", "unit"],
)
QUOTA_REFUNDED = Counter(
    "gatekeeper_quota_refunded_total",
    "Quota given back (upstream answered >= 400 or was unreachable) by quota name and unit.",
    ["quota", "unit"],
)
QUOTA_LEASES = Counter(
    "gatekeeper_quota_leases_total",
    "Quota leases (stores/lease.py): granted, and returned (unused credit refunded).",
    ["event"],
)
QUOTA_REJECTED = Counter(
    "gatekeeper_quota_rejected_total",
    "Requests refused because a quota bucket was exhausted.",
    ["quota"],
)
AUDIT_RECORDS = Counter(
    "gatekeeper_audit_records_total",
    "Audit records written, by sink.",
    ["sink"],
)
AUDIT_COMMIT_SECONDS = Histogram(
    "gatekeeper_audit_commit_seconds",
    "Audit group commits: from taking the batch until every required sink holds it (chain, seal,"
    " writes, fsync). Each decision record waits for one before its request is forwarded.",
    buckets=_LATENCY_BUCKETS,
)
AUDIT_WRITE_SECONDS = Histogram(
    "gatekeeper_audit_write_seconds",
    "One group commit's write to one sink, as the event loop waits for it (file: the hand-off"
    " to the sink's thread, write and fsync; redis_stream: the XADD round trip).",
    ["sink"],
    buckets=_LATENCY_BUCKETS,
)
AUDIT_FSYNC_SECONDS = Histogram(
    "gatekeeper_audit_fsync_seconds",
    "The file sink's write + fsync of one group commit, timed on its own thread (the write alone"
    " with durability: buffered): the disk's part of gatekeeper_audit_write_seconds{sink=file}.",
    buckets=_LATENCY_BUCKETS,
)
AUDIT_BATCH_RECORDS = Histogram(
    "gatekeeper_audit_batch_records",
    "Lines (records and outcome lines, not seals) per audit group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
AUDIT_ERRORS = Counter(
    "gatekeeper_audit_errors_total",
    "Audit write failures, by sink.",
    ["sink"],
)
AUDIT_CHAIN_BREAKS = Counter(
    "gatekeeper_audit_chain_breaks_total",
    "Existing audit chains that did not verify at start, moved aside for a new chain.",
)
STORE_ERRORS = Counter(
    "gatekeeper_store_errors_total",
    "Quota store errors and timeouts.",
)
FAIL_OPEN = Counter(
    "gatekeeper_fail_open_total",
    "Requests allowed although a dependency failed (on_store_error: allow).",
)
POLICY_RELOADS = Counter(
    "gatekeeper_policy_reloads_total",
    "Reloads of policy, entities, keys and GeoIP databases, by result.",
    ["result"],
)
SCREENING_CHANGES = Counter(
    "gatekeeper_screening_changes_total",
    "Entities a reload of entity data changed (one screening audit record each), by what "
    "changed: added, removed, listed, affiliated, possibly_affiliated, ultimate_parent, "
    "parent_hq_country, flags.",
    ["change"],
)
SHADOW_DIVERGENCE = Counter(
    "gatekeeper_shadow_divergence_total",
    "Requests where a shadow policy's action differs from the enforced one.",
    ["policy", "active", "shadow"],
)
JWKS_FETCHES = Counter(
    "gatekeeper_jwks_fetches_total",
    "JWKS fetches from an issuer URL, by result.",
    ["issuer", "result"],
)
TOKEN_CACHE = Counter(
    "gatekeeper_token_cache_total",
    "Verified-token cache lookups by result (hit or miss).",
    ["result"],
)
INFO = Gauge(
    "gatekeeper_info",
    "Build and policy version of the running gate (value 1).",
    ["version", "policy_version"],
    multiprocess_mode="liveall",
)
_info_labels: set[tuple[str, str]] = set()


def set_info(version: str, policy_version: str) -> None:
    """``gatekeeper_info`` for the running policy only (at start and after each reload).

    The label sets of earlier policies are removed; with workers > 1 prometheus-client keeps a
    removed child's last value in this process's file, so it is set to 0 first and ``render``
    leaves info samples of 0 out.
    """
    current = (version, policy_version)
    for labels in _info_labels - {current}:
        INFO.labels(*labels).set(0)
        INFO.remove(*labels)
    INFO.labels(*current).set(1)
    _info_labels.clear()
    _info_labels.add(current)


IN_FLIGHT = Gauge(
    "gatekeeper_in_flight_requests",
    "Requests currently being handled.",
    multiprocess_mode="livesum",
)


# ------------------------------------------------------------------ per-request updates, buffered
#
# With workers > 1 every prometheus-client update writes an mmap'ed file (lock, getpid, pack),
# and a request makes about ten updates: a large share of a worker's CPU. The hot path instead
# adds to plain Python numbers here, and ``flush()`` moves them to the real metrics: whenever the
# handler goes idle (at most once per IDLE_FLUSH_S: ``Flusher``), every FLUSH_EVERY_S under load,
# before ``render()`` and at shutdown. Counters are summed until then (one ``inc`` per flush);
# histograms keep their observations and replay them with the public ``observe()`` (a histogram
# bucket cannot be raised by more than one through prometheus-client's public API), which moves
# that cost off the request's path but does not shrink it.

FLUSH_EVERY_S = 0.5
# When the gate goes idle it flushes at most once per this long (``Flusher.idle``).
IDLE_FLUSH_S = 0.05


class BufferedCounter:
    """A counter child whose increments are summed locally until ``flush()``."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            n, self.pending = self.pending, 0.0
            self.child.inc(n)


class BufferedHistogram:
    """A histogram child whose observations are kept locally until ``flush()``.

    ``flush()`` replays them in order through the child's public ``observe()``, so buckets,
    count and sum are exactly what direct observations give (also when prometheus-client writes
    per-process files for ``workers > 1``). At most ``MAX_PENDING`` are kept: the one that
    reaches it flushes at once, so memory stays bounded under any load.
    """

    __slots__ = ("child", "pending")

    MAX_PENDING = 4096

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending: list[float] = []

    def observe(self, amount: float) -> None:
        pending = self.pending
        pending.append(amount)
        if len(pending) >= self.MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        observe = self.child.observe
        for amount in pending:
            observe(amount)


_buffers: dict[tuple[Any, tuple[str, ...]], BufferedCounter | BufferedHistogram] = {}


def buffered(metric: Any, *labels: str) -> Any:
    """The buffered child of ``metric`` for ``labels`` (cached: label sets are bounded).

    Keyed by ``(metric, labels)``: the call's own argument tuple, not a new flattened one.
    """
    try:
        return _buffers[metric, labels]
    except KeyError:
        pass
    child = metric.labels(*labels) if labels else metric
    buf = BufferedHistogram(child) if isinstance(metric, Histogram) else BufferedCounter(child)
    _buffers[metric, labels] = buf
    return buf


def flush() -> None:
    """Move every buffered update to the real metrics (shared files when multiprocess)."""
    for buf in list(_buffers.values()):
        buf.flush()


class Flusher:
    """When the buffered updates reach the shared metrics, for one request handler.

    Every ``FLUSH_EVERY_S`` while requests keep coming (``busy()`` arms the timer), and when the
    handler goes idle (``idle()``) — at most once per ``IDLE_FLUSH_S``, a timer taking an idle
    moment that comes sooner. At a few hundred requests a second the gate idles after almost every
    request, and a flush each time cost a dozen histogram and counter flushes per request; so a
    scrape of another worker's metrics is at most ``IDLE_FLUSH_S`` behind once the gate is idle
    (the scraped process flushes its own in ``render()``). ``before_flush`` runs first (the
    in-flight gauge).
    """

    def __init__(
        self,
        before_flush: Callable[[], None],
        *,
        every_s: float = FLUSH_EVERY_S,
        idle_every_s: float = IDLE_FLUSH_S,
    ) -> None:
        self.before_flush = before_flush
        self.every_s = every_s
        self.idle_every_s = idle_every_s
        self.flushes = 0
        self._periodic: asyncio.TimerHandle | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self._flushed_at = -math.inf

    def busy(self) -> None:
        """A request started: make sure the periodic flush is running."""
        if self._periodic is None:
            self._periodic = asyncio.get_running_loop().call_later(self.every_s, self._tick)

    def idle(self) -> None:
        """No request in flight: flush now, or once ``idle_every_s`` after the last flush."""
        if self._deferred is not None:
            return
        wait = self._flushed_at + self.idle_every_s - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._deferred_flush)

    def flush(self) -> None:
        self.before_flush()
        flush()
        self.flushes += 1
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Stop the timers and flush what is left."""
        for timer in (self._periodic, self._deferred):
            if timer is not None:
                timer.cancel()
        self._periodic = self._deferred = None
        self.flush()

    def _tick(self) -> None:
        self.flush()
        self._periodic = asyncio.get_running_loop().call_later(self.every_s, self._tick)

    def _deferred_flush(self) -> None:
        self._deferred = None
        self.flush()


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``, aggregated across workers when multiprocess."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        registry.register(_CurrentInfo(_mp.MultiProcessCollector(None)))  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class _CurrentInfo(Collector):
    """The multiprocess samples without ``gatekeeper_info`` series of earlier policies (0)."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        for metric in self.inner.collect():
            if metric.name == "gatekeeper_info":
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric
