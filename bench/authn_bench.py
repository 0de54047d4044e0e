"""Authn micro-benchmark: µs per authenticate() for RS256 / ES256, without and with the token cache.

Baseline, measured in the same run: a bare ``jwt.decode`` with the same key and checks (what
PyJWT alone costs), so the ratios show gatekeeper's own overhead and what the cache saves.

    .venv/bin/python bench/authn_bench.py [--ops 2000] [--runs 7]

Every figure is the median of ``--runs`` runs of ``--ops`` operations each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from multidict import CIMultiDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatekeeper.config import IdentityConfig, IssuerConfig
from gatekeeper.identity import Authenticator

ISS = "https://idp.bench/"
AUD = "gpu-gatekeeper"


def median_us(run: Callable[[], float], runs: int, ops: int) -> float:
    return statistics.median(run() for _ in range(runs)) / ops * 1e6


async def amedian_us(run: Callable[[], Awaitable[float]], runs: int, ops: int) -> float:
    samples = [await run() for _ in range(runs)]
    return statistics.median(samples) / ops * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    ops, runs = args.ops, args.runs

    rsa_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_priv = ec.generate_private_key(ec.SECP256R1())
    jwk_rsa = RSAAlgorithm.to_jwk(rsa_priv.public_key(), as_dict=True) | {"kid": "r1"}
    jwk_ec = ECAlgorithm.to_jwk(ec_priv.public_key(), as_dict=True) | {"kid": "e1"}
    tmp = Path(tempfile.mkdtemp(prefix="gk-authn-bench-"))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk_rsa, jwk_ec]}))
    issuer = IssuerConfig(
        issuer=ISS,
        audiences=(AUD,),
        algorithms=("RS256", "ES256"),
        jwks_file=str(tmp / "jwks.json"),
    )
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "iat": now,
        "exp": now + 3600,
        "org_id": "lab-1",
        "entity_id": "acme-us",
        "nationality": "US",
    }
    tokens = {
        "RS256": (jwt.encode(claims, rsa_priv, "RS256", headers={"kid": "r1"}), rsa_priv),
        "ES256": (jwt.encode(claims, ec_priv, "ES256", headers={"kid": "e1"}), ec_priv),
    }

    uncached = Authenticator(IdentityConfig(issuers=(issuer,), cache_size=0))
    cached = Authenticator(IdentityConfig(issuers=(issuer,), cache_size=10_000))
    await uncached.start()
    await cached.start()

    print(f"authn bench: median of {runs} runs x {ops} ops, µs per op (lower is better)")
    print(
        f"{'alg':6} {'jwt.decode':>11} {'authn nocache':>14} {'authn cache':>12} "
        f"{'overhead':>9} {'cache speedup':>14}"
    )
    for alg, (token, priv) in tokens.items():
        pub = priv.public_key()
        headers = CIMultiDict([("Authorization", f"Bearer {token}")])

        def bare(token: str = token, pub: object = pub, alg: str = alg) -> float:
            t0 = time.perf_counter()
            for _ in range(ops):
                jwt.decode(token, pub, algorithms=[alg], audience=AUD, issuer=ISS, leeway=30)
            return time.perf_counter() - t0

        def timed(
            a: Authenticator, h: CIMultiDict[str] = headers
        ) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                t0 = time.perf_counter()
                for _ in range(ops):
                    await a.authenticate(h)
                return time.perf_counter() - t0

            return run

        await cached.authenticate(headers)  # warm the cache entry
        base = median_us(bare, runs, ops)
        nocache = await amedian_us(timed(uncached), runs, ops)
        withcache = await amedian_us(timed(cached), runs, ops)
        print(
            f"{alg:6} {base:11.1f} {nocache:14.1f} {withcache:12.2f} "
            f"{nocache / base:8.2f}x {nocache / withcache:13.1f}x"
        )
    await uncached.close()
    await cached.close()


if __name__ == "__main__":
    asyncio.run(main())
