"""Scale benchmark for the entity registry: load + resolve generated FtM files, then look up.

    .venv/bin/python bench/ownership_scale.py                 # 100k (3 runs) and 1M (1 run)
    .venv/bin/python bench/ownership_scale.py --sizes 100000 --runs 5

Each size runs in a fresh subprocess so peak RSS (``resource.getrusage``) belongs to that size
alone. The generated graph looks like real corporate data: a quarter of the entities are persons,
companies sit in groups of 16 (a majority-owned hierarchy under person-owned roots), minority
cross-holdings between groups (which make cycles) top the edges up to 1.5 per entity, 0.5% of the
entities carry a listing topic, and percentages are free text in every shape the parser accepts.
Goal at 1M entities / 1.5M edges: < 60 s, < 3 GB, lookup < 5 us. The baseline is the smallest size;
the ratios show how time and memory grow.

The data carries what published data carries: 2% of the holdings have no percentage (a holding of
unknown size), 10% a ``startDate``, 3% an ``endDate`` in the past (they no longer count), and each
entity a ``datasets`` list. Then a *reload* is measured the way the gate does it: a second version
of the file (0.1% of the companies with a listing toggled, 0.1% of the holdings ended) is loaded
while the first registry is still alive, and the two are compared for re-screening
(``screening.diff``). ``reload_peak_rss_mb`` is the process's peak with both registries at once —
what a replica needs as headroom for a reload.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import orjson

GROUP = 16
DATASETS = (
    ["ext_gleif"],
    ["ext_ru_egrul"],
    ["us_ofac_sdn", "us_trade_csl"],
    ["eu_fsf", "gb_fcdo_sanctions", "ch_seco_sanctions"],
    ["ext_cy_companies"],
    ["permid", "ext_gleif"],
)
PCT_FORMATS = ("{:g}%", "{:g}", "{:g} %", "{:g}".replace(".", ","))


def _pct(rng: random.Random, share: float) -> str:
    if share > 50 and rng.random() < 0.02:
        return "majority"
    if share > 50 and rng.random() < 0.02:
        return "> 50"
    text = rng.choice(PCT_FORMATS).format(share)
    return text.replace(".", ",") if rng.random() < 0.1 else text


def generate(path: str, n: int, seed: int = 7) -> tuple[int, int]:
    """Write an FtM file of ``n`` entities and ``1.5 n`` Ownership edges; returns the counts."""
    rng = random.Random(seed)
    persons = n // 4
    companies = n - persons
    target_edges = n * 3 // 2
    room = [100] * companies  # equity left to hand out per company, so nothing is over-owned
    edges = 0
    countries = ("US", "SG", "CN", "DE", "GB", "HK", "RU", "JP", "IN", "AE", "NL", "MO")
    with open(path, "wb") as fh:
        w = fh.write
        for p in range(persons):
            topics = ["sanction"] if rng.random() < 0.005 else []
            rec = {
                "id": f"P{p}",
                "schema": "Person",
                "properties": {
                    "name": [f"Person {p}"],
                    "nationality": [rng.choice(countries).lower()],
                    "topics": topics,
                },
                "datasets": rng.choice(DATASETS),
            }
            w(orjson.dumps(rec) + b"\n")

        def edge(owner: str, asset: int, share: int) -> None:
            nonlocal edges
            room[asset] -= share
            props: dict[str, list[str]] = {"owner": [owner], "asset": [f"C{asset}"]}
            r = rng.random()
            if r >= 0.02:
                props["percentage"] = [_pct(rng, share)]  # else: a holding of unknown size
            if r < 0.10:
                props["startDate"] = [f"{rng.randint(1995, 2020)}-{rng.randint(1, 12):02d}"]
            if 0.10 <= r < 0.13:
                props["endDate"] = [str(rng.randint(2000, 2019))]
            rec = {"id": f"O{edges}", "schema": "Ownership", "properties": props}
            w(orjson.dumps(rec) + b"\n")
            edges += 1

        for c in range(companies):
            r = rng.random()
            topics = ["export.control"] if r < 0.003 else ["sanction"] if r < 0.005 else []
            country = rng.choice(countries).lower()
            rec = {
                "id": f"C{c}",
                "schema": rng.choice(("Company", "Company", "Organization", "LegalEntity")),
                "properties": {
                    "name": [f"Company {c} Ltd"],
                    "jurisdiction": [country],
                    "mainCountry": [rng.choice((country, rng.choice(countries).lower()))],
                    "topics": topics,
                },
                "datasets": rng.choice(DATASETS),
            }
            w(orjson.dumps(rec) + b"\n")
            k = c % GROUP
            if k == 0:  # group root: owned by one or two persons
                s1 = rng.randint(30, 100)
                edge(f"P{rng.randrange(persons)}", c, s1)
                if s1 < 100:
                    edge(f"P{rng.randrange(persons)}", c, rng.randint(1, 100 - s1))
            else:  # inside the group: an earlier member holds 30-100%, maybe a second owner
                s1 = rng.randint(30, 100)
                first = c - rng.randint(1, k)
                edge(f"C{first}", c, s1)
                if s1 < 100 and rng.random() < 0.9:
                    s2 = rng.randint(1, 100 - s1)
                    second = c - rng.randint(1, k)
                    if second != first and rng.random() < 0.5:
                        edge(f"C{second}", c, s2)
                    else:
                        edge(f"P{rng.randrange(persons)}", c, s2)
        # Minority cross-holdings between groups (these create cycles) up to 1.5 edges/entity.
        while edges < target_edges:
            a = rng.randrange(companies)
            o = rng.randrange(companies)
            if o // GROUP == a // GROUP or room[a] < 2:
                continue
            edge(f"C{o}", a, rng.randint(1, min(10, room[a] - 1)))
    return n, edges


def next_version(path: str, out: str, every: int = 1000) -> None:
    """A next list version: every ``every``-th company's listing toggled, every ``every``-th
    holding ended."""
    companies = holdings = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            if b'"schema":"Ownership"' in line:
                holdings += 1
                if holdings % every == 0:
                    rec = orjson.loads(line)
                    rec["properties"]["endDate"] = ["2021-01-01"]
                    line = orjson.dumps(rec) + b"\n"
            elif b'"id":"C' in line:
                companies += 1
                if companies % every == 0:
                    rec = orjson.loads(line)
                    props = rec["properties"]
                    props["topics"] = [] if props.get("topics") else ["sanction"]
                    line = orjson.dumps(rec) + b"\n"
            dst.write(line)


def run_one(n: int, path: str) -> dict[str, float]:
    """Load and resolve ``path`` in this process; measure time, peak RSS and lookup cost, then
    a reload (the next version loaded beside the first) and its re-screening diff."""
    from gatekeeper.config import EntitiesConfig, EntitySource
    from gatekeeper.ownership import load_registry
    from gatekeeper.ownership.screening import diff

    cfg = EntitiesConfig(sources=(EntitySource(path=path, format="ftm"),))
    c0 = time.process_time()
    t0 = time.perf_counter()
    reg = load_registry(cfg)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0  # CPU time: far less sensitive to a busy machine than wall
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = random.Random(1)
    ids = [f"ftm:C{rng.randrange(n * 3 // 4)}" for _ in range(200_000)]
    profile = reg.profile
    batches = []
    for _ in range(5):
        t = time.perf_counter()
        for i in ids:
            profile(i)
        batches.append((time.perf_counter() - t) / len(ids) * 1e6)
    unknown = [f"ftm:X{i}" for i in range(200_000)]
    t = time.perf_counter()
    for i in unknown:
        profile(i)
    unknown_us = (time.perf_counter() - t) / len(unknown) * 1e6
    s = reg.stats
    cfg2 = EntitiesConfig(sources=(EntitySource(path=path + ".v2", format="ftm"),))
    t = time.perf_counter()
    c = time.process_time()
    reg2 = load_registry(cfg2)  # the old registry is still alive, as during a reload
    reload_s = time.perf_counter() - t
    reload_cpu = time.process_time() - c
    reload_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    c = time.process_time()
    changes = diff(reg, reg2)
    diff_s = time.perf_counter() - t
    diff_cpu = time.process_time() - c
    return {
        "entities": len(reg),
        "edges": s["edges"],
        "affiliated": s["affiliated"],
        "bad_rows": s["sources"][0]["bad_rows"],
        "bo_truncated": s["beneficial_truncated"],
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "load_seconds": s["load_seconds"],
        "resolve_seconds": s["resolve_seconds"],
        "peak_rss_mb": rss_mb,
        "lookup_us": statistics.median(batches),
        "unknown_lookup_us": unknown_us,
        "possibly_affiliated": s["possibly_affiliated"],
        "reload_seconds": reload_s,
        "reload_cpu_seconds": reload_cpu,
        "diff_cpu_seconds": diff_cpu,
        "reload_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "reload_load_peak_rss_mb": reload_rss_mb,
        "diff_seconds": diff_s,
        "screening_changes": len(changes),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--runs", type=int, default=0, help="runs per size (default 3 <1M, 1 at 1M)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.file)))
        return
    tmp = tempfile.mkdtemp(prefix="gk-ownership-bench-")
    results: dict[int, dict[str, float]] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        path = os.path.join(tmp, f"ftm-{n}.jsonl")
        t = time.perf_counter()
        _, edges = generate(path, n)
        next_version(path, path + ".v2")
        size_mb = os.path.getsize(path) / 1e6
        print(
            f"generated {n:,} entities, {edges:,} edges, {size_mb:.0f} MB in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )
        runs = args.runs or (1 if n >= 1_000_000 else 3)
        samples = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--file", path],
                check=True,
                capture_output=True,
                text=True,
            )
            samples.append(json.loads(out.stdout))
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        results[n] = med
        print(
            f"n={n:>9,}  runs={runs}  load+resolve {med['seconds']:.1f} s "
            f"(load {med['load_seconds']:.1f} s, resolve {med['resolve_seconds']:.1f} s; "
            f"CPU {med['cpu_seconds']:.1f} s)  "
            f"peak RSS {med['peak_rss_mb']:.0f} MB  lookup {med['lookup_us']:.2f} us  "
            f"unknown {med['unknown_lookup_us']:.2f} us  affiliated {med['affiliated']:.0f}  "
            f"bad rows {med['bad_rows']:.0f}  bo truncated {med['bo_truncated']:.0f}  "
            f"possibly affiliated {med['possibly_affiliated']:.0f}",
            flush=True,
        )
        print(
            f"  reload: second version loaded beside the first in {med['reload_seconds']:.1f} s "
            f"(CPU {med['reload_cpu_seconds']:.1f} s), peak RSS with both "
            f"{med['reload_peak_rss_mb']:.0f} MB; re-screening diff {med['diff_seconds']:.1f} s "
            f"(CPU {med['diff_cpu_seconds']:.1f} s), {med['screening_changes']:.0f} entities "
            "changed",
            flush=True,
        )
        os.unlink(path)
        os.unlink(path + ".v2")
    sizes = sorted(results)
    base = results[sizes[0]]
    for n in sizes[1:]:
        r = results[n]
        print(
            f"growth {sizes[0]:,} -> {n:,} (x{n / sizes[0]:g}): time x{r['seconds'] / base['seconds']:.2f}"
            f"  RSS x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
            f"  lookup x{r['lookup_us'] / base['lookup_us']:.2f}"
        )
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
