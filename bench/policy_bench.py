"""Compiled-policy decisions per second on the US pack, against the same policy in Rego.

Run: ``.venv/bin/python bench/policy_bench.py [--seconds 0.5] [--runs 7]``

The realistic context is the hard case of the US pack: a Singapore company whose ultimate parent
is headquartered in China asks for 32 H100s for 12 h from Singapore and holds a licence covering
3A090.a/4A090.a in Singapore. Every rule is evaluated; d5-headquarters requires a licence, the
licence check runs, foreign-tenant adds its quota, the verdict is allow. A second context (a US
lab) is the common, licence-free case.

Baseline: the same decision written in Rego and evaluated in-process by ``regopy`` (rego-cpp,
an OPA-compatible engine; benchmark-only dependency, ``pip install regopy``) from a compiled
bundle. Two Rego figures are printed: the engine alone (input already a JSON string) and the
engine plus turning the request into JSON, which a real integration pays. Each figure is the
median of ``--runs`` timed runs; ratios are computed from medians measured in this same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gatekeeper.policy import input_from_attributes, load_policy_set  # noqa: E402

TODAY = datetime.date(2026, 11, 25)
LICENSE = {
    "id": "D1234567",
    "eccns": ["3A090.a", "4A090.a"],
    "countries": ["SG"],
    "expires": "2027-06-30",
    "max_tpp_hours": 5.0e7,
}
CONTEXTS: dict[str, dict[str, Any]] = {
    "sg-parent-cn-licensed": {
        "principal": {"subject": "alice", "tenant": "acme", "entity": "acme-sg", "issuer": "idp"},
        "entity": {
            "known": True,
            "id": "acme-sg",
            "country": "SG",
            "hq_country": "SG",
            "flags": [],
            "licenses": [LICENSE],
        },
        "ownership": {
            "affiliated": False,
            "listed_share": 0.0,
            "ultimate_parent": "acme-group",
            "parent_hq_country": "CN",
        },
        "geo": {"country": "SG", "asn": 7473, "ip": "203.0.113.7"},
        "compute": {
            "gpu_model": "H100-SXM",
            "gpus": 32,
            "hours": 12.0,
            "tpp": 15832.0,
            "eccn": "3A090.a",
            "controlled": True,
        },
        "request": {"route": "slurm-submit", "method": "POST", "purpose": "llm-training"},
    },
    "us-lab": {
        "principal": {"subject": "bob", "tenant": "lab", "entity": "us-lab", "issuer": "idp"},
        "entity": {"known": True, "id": "us-lab", "country": "US", "hq_country": "US"},
        "ownership": {"ultimate_parent": "us-lab", "parent_hq_country": "US"},
        "geo": {"country": "US", "asn": 7018},
        "compute": {
            "gpus": 64,
            "hours": 24.0,
            "tpp": 15832.0,
            "eccn": "3A090.a",
            "controlled": True,
        },
        "request": {"route": "slurm-submit", "method": "POST"},
    },
}

D5_OR_MACAU = [
    "AF",
    "BY",
    "CD",
    "CF",
    "CN",
    "CU",
    "ER",
    "HT",
    "IQ",
    "IR",
    "KP",
    "LB",
    "LY",
    "MM",
    "NI",
    "RU",
    "SD",
    "SO",
    "SS",
    "SY",
    "VE",
    "ZW",
    "MO",
    "HK",
]
WMD = [
    "nuclear-weapons",
    "nuclear-explosives",
    "unsafeguarded-nuclear",
    "chemical-weapons",
    "biological-weapons",
    "cbrn",
    "cbrn-weapons",
    "missiles",
    "rocket-systems",
    "uav-delivery-systems",
    "military-intelligence",
    "offensive-cyber",
]

REGO = """
package gk

import rego.v1

d5_or_macau := @D5@

wmd := @WMD@

controlled if input.compute.controlled == true

matched contains "listed-affiliate" if input.ownership.affiliated == true

matched contains "wmd-end-use" if lower(trim_space(input.request.purpose)) in wmd

anonymous if input.geo.anonymous == true

anonymous if input.geo.vpn == true

anonymous if input.geo.tor == true

anonymous if input.geo.proxy == true

anonymous if input.geo.hosting == true

matched contains "anonymizer" if {
    controlled
    anonymous
}

matched contains "d5-headquarters" if {
    controlled
    input.entity.hq_country in d5_or_macau
}

matched contains "d5-headquarters" if {
    controlled
    input.ownership.parent_hq_country in d5_or_macau
}

matched contains "d5-location" if {
    controlled
    input.geo.country in d5_or_macau
}

known if input.entity.known == true

matched contains "unknown-entity" if {
    input.compute.gpus != null
    not known
}

matched contains "foreign-tenant" if {
    known
    input.entity.country != null
    input.entity.country != "US"
}

matched contains "us-entity" if {
    known
    input.entity.country == "US"
}

deny_rules := [r | some r in ["listed-affiliate", "wmd-end-use", "anonymizer", "unknown-entity"]; r in matched]

license_rules := [r | some r in ["d5-headquarters", "d5-location"]; r in matched]

allow_rules := [r | some r in ["foreign-tenant", "us-entity"]; r in matched]

status := {"unknown-entity": 403}

geo_ok(lic) if not input.geo.country

geo_ok(lic) if input.geo.country == "internal"

geo_ok(lic) if input.geo.country in lic.countries

covering := [lic.id |
    some lic in input.entity.licenses
    lic.expires >= input.today
    input.compute.eccn in lic.eccns
    input.entity.country in lic.countries
    geo_ok(lic)
    lic.max_tpp_hours - object.get(input.license_used, lic.id, 0) >= input.compute.tpp_hours
]

quotas := [q | some r in allow_rules; r == "foreign-tenant"; q := "foreign-monthly"]

decision := {"action": "deny", "rule": deny_rules[0], "reasons": deny_rules,
             "status": object.get(status, deny_rules[0], 451)} if {
    count(deny_rules) > 0
} else := {"action": "allow", "rule": license_rules[0],
           "reasons": array.concat(array.concat(license_rules, [concat(":", ["license", covering[0]])]), allow_rules),
           "status": null, "license": covering[0], "quotas": quotas} if {
    count(license_rules) > 0
    count(covering) > 0
} else := {"action": "require_license", "rule": license_rules[0], "reasons": license_rules,
           "status": 451} if {
    count(license_rules) > 0
} else := {"action": "allow", "rule": allow_rules[0], "reasons": allow_rules, "status": null,
           "quotas": quotas} if {
    count(allow_rules) > 0
} else := {"action": "deny", "rule": null, "reasons": ["default-action"], "status": 451}
""".replace("@D5@", json.dumps(sorted(D5_OR_MACAU)).replace("[", "{").replace("]", "}")).replace(
    "@WMD@", json.dumps(sorted(WMD)).replace("[", "{").replace("]", "}")
)


def rego_input(ctx: dict[str, Any]) -> dict[str, Any]:
    """The Rego input document for a context (what an integration would serialise)."""
    c = dict(ctx.get("compute", {}))
    if c:
        c["gpu_hours"] = c.get("gpus", 0) * c.get("hours", 0)
        c["tpp_hours"] = c["gpu_hours"] * c.get("tpp", 0)
    doc = {k: v for k, v in ctx.items() if k != "compute"}
    doc["compute"] = c
    doc.setdefault("entity", {}).setdefault("licenses", [])
    doc["today"] = TODAY.isoformat()
    doc["license_used"] = {}
    return doc


def measure(fn: Callable[[], object], seconds: float, runs: int) -> float:
    """Median seconds per call over ``runs`` runs of about ``seconds`` each."""
    n = 1
    while True:  # calibrate the batch size
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > seconds / 5:
            break
        n *= 2
    n = max(1, int(n * 5 * seconds / max(time.perf_counter() - t0, 1e-9) / 5))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per run")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    policy = load_policy_set([str(ROOT / "policies" / "us-remote-access.yaml")])
    try:
        import regopy
    except ImportError:
        print("regopy is not installed: .venv/bin/pip install regopy", file=sys.stderr)
        return 1
    rego = regopy.Interpreter()
    rego.add_module("gk", REGO)
    bundle = rego.build("data.gk.decision")

    print(f"policy {policy.name} ({len(policy.rules)} rules), version {policy.version[:19]}...")
    print(f"regopy {regopy.__version__}, median of {args.runs} runs x ~{args.seconds}s\n")
    header = f"{'context':24} {'engine':34} {'us/decision':>12} {'decisions/s':>12}"
    print(header)
    print("-" * len(header))
    worst_ratio = float("inf")
    worst_us = 0.0
    for name, ctx in CONTEXTS.items():
        inp = input_from_attributes(ctx, TODAY)
        ours = policy.evaluate(inp)
        doc = rego_input(ctx)
        term = json.dumps(doc)
        rego.set_input_term(term)
        theirs = json.loads(str(rego.query_bundle(bundle)))["expressions"][0]
        same = (theirs["action"], theirs["rule"], theirs["reasons"]) == (
            ours.action,
            ours.rule,
            ours.reasons,
        )
        if not same:
            print(f"MISMATCH on {name}: gatekeeper {ours} vs rego {theirs}", file=sys.stderr)
            return 1

        def rego_engine(term: str = term) -> object:
            rego.set_input_term(term)
            return rego.query_bundle(bundle)

        def rego_full(doc: dict[str, Any] = doc) -> object:
            rego.set_input_term(json.dumps(doc))
            return rego.query_bundle(bundle)

        rows = [
            ("gatekeeper compiled, trace off", lambda inp=inp: policy.evaluate(inp)),
            ("gatekeeper compiled, trace on", lambda inp=inp: policy.evaluate(inp, trace=True)),
            ("regopy bundle (engine only)", rego_engine),
            ("regopy bundle + JSON input", rego_full),
        ]
        timing = {}
        for label, fn in rows:
            t = measure(fn, args.seconds, args.runs)
            timing[label] = t
            print(f"{name:24} {label:34} {t * 1e6:12.2f} {1 / t:12,.0f}")
        ratio = timing["regopy bundle (engine only)"] / timing["gatekeeper compiled, trace off"]
        print(
            f"{name:24} {'ratio regopy/gatekeeper (trace off)':34} {ratio:12.1f}x"
            f"  (verdict: {ours.action} by {ours.rule})\n"
        )
        worst_ratio = min(worst_ratio, ratio)
        worst_us = max(worst_us, timing["gatekeeper compiled, trace off"] * 1e6)
    ok = worst_us <= 10 and worst_ratio >= 30
    print(
        f"goal <= 10 us/decision and >= 30x regopy: worst {worst_us:.2f} us, "
        f"worst ratio {worst_ratio:.1f}x -> {'MET' if ok else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
