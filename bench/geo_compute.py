"""Micro-benchmark of the geo and compute stages' hot paths.

Prints medians of several runs (µs per call):
- GeoIP lookup on the built-in GeoLite2-City database: cache hit vs cache miss, against the raw
  ``maxminddb`` ``get()`` measured in the same run (the baseline: what a lookup costs unwrapped).
- Slurm body measurement (JSON parse + #SBATCH script + catalog), against a bare ``json.loads``
  of the same body (the baseline): the same body again and again (the adapter's memos of
  scripts, GPU strings and paths hit), and bodies whose script differs every time (they miss).
Run: .venv/bin/python bench/geo_compute.py
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import maxminddb
from slurm_measure import slurm_body

from gatekeeper.adapters import measure
from gatekeeper.config import GeoConfig, RouteConfig
from gatekeeper.geo import GeoResolver, builtin_country_db
from gatekeeper.gpus import load_gpu_catalog

RUNS = 7


def per_call_us(fn: Callable[[int], object], n: int) -> float:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    rng = random.Random(7)
    n = 20_000
    ips = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(n * RUNS)
    ]
    raw = maxminddb.open_database(builtin_country_db(), maxminddb.MODE_AUTO)
    base = per_call_us(lambda i: raw.get(ips[i]), n)

    miss_resolver = GeoResolver(GeoConfig(country_db="builtin", cache_size=0))
    miss = per_call_us(lambda i: miss_resolver.lookup(ips[i]), n)
    hit_resolver = GeoResolver(GeoConfig(country_db="builtin", cache_size=65_536))
    hot = ips[:1000]
    for ip in hot:
        hit_resolver.lookup(ip)
    hit = per_call_us(lambda i: hit_resolver.lookup(hot[i % 1000]), n)
    print(f"geo  raw maxminddb get (baseline)   {base:8.2f} µs")
    print(f"geo  lookup, cache miss             {miss:8.2f} µs  ({miss / base:.2f}x baseline)")
    print(f"geo  lookup, cache hit              {hit:8.2f} µs  ({hit / base:.2f}x baseline)")

    catalog = load_gpu_catalog(None)
    route = RouteConfig(
        name="s", upstream="http://127.0.0.1:1", adapter="slurm", gpu_model="H100-SXM"
    )
    body = slurm_body("srun python train.py")
    m = 5_000
    jbase = per_call_us(lambda i: json.loads(body), m)
    slurm = per_call_us(
        lambda i: measure(route, "POST", "/slurm/v0.0.41/job/submit", {}, body, catalog), m
    )
    print(f"slurm json.loads of body (baseline) {jbase:8.2f} µs  ({len(body)} bytes)")
    print(f"slurm measure() per body            {slurm:8.2f} µs  ({slurm / jbase:.2f}x baseline)")
    # every call a script not seen before: one body per call of every run
    fresh = iter([slurm_body(f"srun python train.py --seed {i}") for i in range(2 * m * RUNS)])
    jmiss = per_call_us(lambda i: json.loads(next(fresh)), m)
    miss = per_call_us(
        lambda i: measure(route, "POST", "/slurm/v0.0.41/job/submit", {}, next(fresh), catalog),
        m,
    )
    print(f"slurm json.loads, fresh scripts     {jmiss:8.2f} µs")
    print(f"slurm measure(), fresh scripts      {miss:8.2f} µs  ({miss / jmiss:.2f}x baseline)")
    miss_resolver.close()
    hit_resolver.close()
    raw.close()


if __name__ == "__main__":
    main()
