"""Every Prometheus metric gatekeeper exports, defined once (CONTRACT §7).

With ``workers > 1`` the serve command sets ``PROMETHEUS_MULTIPROC_DIR`` before this module is
imported, so prometheus-client writes per-process files and ``/metrics`` aggregates them
(``render()`` picks the right collector). Label values are reason codes and rule ids: bounded sets.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

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
AUDIT_ERRORS = Counter(
    "gatekeeper_audit_errors_total",
    "Audit write failures, by sink.",
    ["sink"],
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
IN_FLIGHT = Gauge(
    "gatekeeper_in_flight_requests",
    "Requests currently being handled.",
    multiprocess_mode="livesum",
)


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``, aggregated across workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
