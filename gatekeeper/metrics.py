"""Every Prometheus metric gatekeeper exports, defined once (docs/reference.md).

With ``workers > 1`` the serve command sets ``PROMETHEUS_MULTIPROC_DIR`` before this module is
imported, so prometheus-client writes per-process files and ``/metrics`` aggregates them
(``render()`` picks the right collector). Label values are reason codes and rule ids: bounded sets.
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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

# ------------------------------------------------------------------------------- histograms
#
# A request makes about ten histogram observations (the decision, each stage, the upstream).
# prometheus-client's ``Histogram.observe`` takes two locks, and with workers > 1 writes two
# values into an mmap'ed file each time; its public API cannot raise a bucket by more than one,
# so buffering observations and replaying them later moves that cost but does not shrink it.
# The gate's histograms therefore keep their own cells (a count per bucket and the sum: what a
# Prometheus histogram is) and are exported by a collector of their own (``LocalHistogram``),
# through the public ``HistogramMetricFamily``. With workers > 1 ``flush()`` writes each
# process's cells that changed into a hidden gauge (``multiprocess_mode="sum"``, so the files
# of every worker, live or gone, add up as histogram files do), and ``render()`` turns those
# gauges back into the histograms: a few file writes per flush instead of two per observation.

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_SUM_CELL = "sum"
# Every LocalHistogram by the name of its hidden gauge (``flush`` and ``render`` go through them).
_HISTOGRAMS: dict[str, LocalHistogram] = {}


class HistogramCells:
    """One label set of a ``LocalHistogram``: observations per bucket and their sum."""

    __slots__ = ("bounds", "counts", "created", "first", "total", "written")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.first = bounds[0]
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()
        # What this process last wrote to its multiprocess file (counts, then the sum).
        self.written: list[float] = [0.0] * (len(bounds) + 1)

    def observe(self, amount: float) -> None:
        # A bound belongs to its own bucket (le: less or equal), as in prometheus-client. Most
        # stage times fall in the first bucket: one comparison instead of a bisection.
        if amount <= self.first:
            self.counts[0] += 1
        else:
            self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class LocalHistogram(Collector):
    """A Prometheus histogram whose cells are plain numbers of this process (see above).

    ``labels(*values).observe(x)`` and, without label names, ``observe(x)``, as with
    prometheus-client's ``Histogram``; the exposition is the same (buckets, count, sum, and
    ``_created`` in a single process).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = _LATENCY_BUCKETS,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if bounds[-1] != math.inf:
            bounds += (math.inf,)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        self.les = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        self.children: dict[tuple[str, ...], HistogramCells] = {}
        self._by_value: dict[str, HistogramCells] = {}  # children by their one label value
        self._cells_gauge: Gauge | None = None
        if not self.labelnames:
            self.labels()  # an unlabelled histogram is exported from the start, at zero
        _HISTOGRAMS[self.cells_name] = self
        if registry is not None:
            registry.register(self)

    @property
    def cells_name(self) -> str:
        """The hidden gauge that holds each process's cells with workers > 1."""
        return self.name + "_cells"

    def labels(self, *values: str) -> HistogramCells:
        try:
            return self.children[values]
        except KeyError:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}") from None
            cells = self.children[values] = HistogramCells(self.bounds)
            return cells

    def observe(self, amount: float) -> None:
        self.children[()].observe(amount)

    def observe_each(self, amounts: Mapping[str, float]) -> None:
        """``labels(value).observe(amount)`` for each ``value: amount`` (one label name): the
        stage times of a request in one call, with ``HistogramCells.observe`` written out."""
        by_value = self._by_value
        bounds = self.bounds
        first = bounds[0]
        for value, amount in amounts.items():
            cells = by_value.get(value)
            if cells is None:
                cells = by_value[value] = self.labels(value)
            if amount <= first:
                cells.counts[0] += 1
            else:
                cells.counts[bisect_left(bounds, amount)] += 1
            cells.total += amount

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cells in self.children.items():
            family.add_metric(list(values), self._cumulative(cells.counts), cells.total)
            labels = dict(zip(self.labelnames, values, strict=True))
            family.add_sample(self.name + "_created", labels, cells.created)
        yield family

    def _cumulative(self, counts: Iterable[float]) -> list[tuple[str, float]]:
        return list(zip(self.les, accumulate(float(n) for n in counts), strict=True))

    def write_cells(self) -> None:
        """With workers > 1: this process's cells that changed since the last call, to its file."""
        for values, cells in self.children.items():
            now = [*cells.counts, cells.total]
            if now == cells.written:
                continue
            if self._cells_gauge is None:
                self._cells_gauge = Gauge(
                    self.cells_name,
                    self.documentation,
                    [*self.labelnames, "cell"],
                    multiprocess_mode="sum",
                    registry=None,
                )
            for i, (value, was) in enumerate(zip(now, cells.written, strict=True)):
                if value != was:
                    cell = self.les[i] if i < len(self.les) else _SUM_CELL
                    self._cells_gauge.labels(*values, cell).set(value)
            cells.written = now

    def from_cells(self, cells_metric: Metric) -> Metric:
        """The histogram from the summed hidden gauges of every process (``render``)."""
        found: dict[tuple[str, ...], dict[str, float]] = {}
        for sample in cells_metric.samples:
            labels = sample.labels
            key = tuple(labels[n] for n in self.labelnames)
            found.setdefault(key, {})[labels["cell"]] = sample.value
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cells in found.items():
            counts = [cells.get(le, 0.0) for le in self.les]
            family.add_metric(list(values), self._cumulative(counts), cells.get(_SUM_CELL, 0.0))
        return family


REQUESTS = Counter(
    "gatekeeper_requests_total",
    "Requests answered by the gate, by route, final action and whether it was enforced.",
    ["route", "action", "enforced"],
)
DECISION_SECONDS = LocalHistogram(
    "gatekeeper_decision_seconds",
    "The gate's own time per request (authn to audit), excluding the upstream.",
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = LocalHistogram(
    "gatekeeper_stage_seconds",
    "Time spent in each pipeline stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = LocalHistogram(
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
AUDIT_COMMIT_SECONDS = LocalHistogram(
    "gatekeeper_audit_commit_seconds",
    "Audit group commits: from taking the batch until every required sink holds it (chain, seal,"
    " writes, fsync). Each decision record waits for one before its request is forwarded.",
    buckets=_LATENCY_BUCKETS,
)
AUDIT_WRITE_SECONDS = LocalHistogram(
    "gatekeeper_audit_write_seconds",
    "One group commit's write to one sink, as the event loop waits for it (file: the hand-off"
    " to the sink's thread, write and fsync; redis_stream: the XADD round trip).",
    ["sink"],
    buckets=_LATENCY_BUCKETS,
)
AUDIT_FSYNC_SECONDS = LocalHistogram(
    "gatekeeper_audit_fsync_seconds",
    "The file sink's write + fsync of one group commit, timed on its own thread (the write alone"
    " with durability: buffered): the disk's part of gatekeeper_audit_write_seconds{sink=file}.",
    buckets=_LATENCY_BUCKETS,
)
AUDIT_BATCH_RECORDS = LocalHistogram(
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
# With workers > 1 every prometheus-client update writes an mmap'ed file (lock, getpid, pack).
# The hot path instead adds to plain Python numbers, and ``flush()`` moves them to the shared
# metrics: when the proxy's handler says so (``flusher.Flusher``), before ``render()`` and at
# shutdown. Counters are summed until then
# (one ``inc`` per flush); histograms are ``LocalHistogram`` cells already, and a flush writes
# those that changed to this process's file when there is one.


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


_buffers: dict[tuple[Any, tuple[str, ...]], Any] = {}


def buffered(metric: Any, *labels: str) -> Any:
    """The buffered child of ``metric`` for ``labels`` (cached: label sets are bounded): a
    ``BufferedCounter``, or a ``LocalHistogram``'s own cells.

    Keyed by ``(metric, labels)``: the call's own argument tuple, not a new flattened one.
    """
    try:
        return _buffers[metric, labels]
    except KeyError:
        pass
    if isinstance(metric, LocalHistogram):
        buf: Any = metric.labels(*labels)
    else:
        buf = BufferedCounter(metric.labels(*labels) if labels else metric)
    _buffers[metric, labels] = buf
    return buf


def flush() -> None:
    """Move every buffered update to the real metrics (shared files when multiprocess)."""
    for buf in list(_buffers.values()):
        if isinstance(buf, BufferedCounter):
            buf.flush()
    if MULTIPROCESS:
        for histogram in _HISTOGRAMS.values():
            histogram.write_cells()


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``, aggregated across workers when multiprocess."""
    flush()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        registry.register(multiprocess_collector())
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def multiprocess_collector(path: str | None = None) -> Collector:
    """Every worker's samples from the files in ``path`` (default: the multiprocess dir)."""
    return _CurrentInfo(_mp.MultiProcessCollector(None, path=path))  # type: ignore[no-untyped-call]


class _CurrentInfo(Collector):
    """The multiprocess samples without ``gatekeeper_info`` series of earlier policies (0), and
    the histograms rebuilt from their hidden gauges (``LocalHistogram.from_cells``)."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        for metric in self.inner.collect():
            if metric.name == "gatekeeper_info":
                metric.samples = [s for s in metric.samples if s.value != 0]
            histogram = _HISTOGRAMS.get(metric.name)
            yield metric if histogram is None else histogram.from_cells(metric)
